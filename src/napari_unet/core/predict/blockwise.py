"""Blockwise prediction: memory bounded by a block, whatever the image size.

For each time point the image is cut into blocks (:mod:`napari_unet.core.predict.blocks`). A block's
window is predicted tile by tile, post-processed over the block and its halo, and only its core
is written out. Per-pixel outputs (classes, probabilities) are then done; object labels are
numbered per block first, written to a scratch array (``out`` itself when its dtype is wide
enough), joined across seams (:mod:`.stitching`) and renumbered block by block.
The same functions run one block on a dask worker (:mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.axes import WindowView, to_axes
from napari_unet.core.io.results import OBJECT_DTYPE, result_dtype
from napari_unet.core.memory import (
    MAX_BLOCK_EDGE_2D,
    MAX_BLOCK_VOXELS_3D,
    MEMORY_OPTION,
    format_bytes,
    plan_memory,
    post_bytes_per_pixel,
    process_rss_bytes,
    reachable_bytes,
)
from napari_unet.core.predict.blocks import (
    AxisGeometry,
    Block,
    BlockGrid,
    Seam,
    choose_core_shape,
    seam_slab,
)
from napari_unet.core.predict.inference import OutOfMemoryForTile
from napari_unet.core.predict.options import BLOCK_OPTION
from napari_unet.core.predict.postprocess import (
    activate,
    class_channels,
    object_labeller,
    semantic_labels,
)
from napari_unet.core.predict.slice_join import join_slices
from napari_unet.core.predict.stitching import BlockLabels, merge_tables
from napari_unet.core.progress import (
    CancelToken,
    ProgressCallback,
    WorkCounter,
    check_cancelled,
)

if TYPE_CHECKING:
    from napari_unet.core.models.registry import ModelDescription
    from napari_unet.core.predict.engine import Engine
    from napari_unet.core.predict.inference import RunSettings
    from napari_unet.core.predict.request import Request

DEFAULT_HALO = (2, 32, 32)
"""Post-processing context of object labels per side of a block: (Z slices, Y, X pixels)."""
SLAB_WIDTH = 8
"""Pixels on each side of a seam that two blocks compare to join objects."""


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of every time point, the seams between them, and which seams each block has."""

    grid: BlockGrid
    seams: list[Seam]
    slab_width: tuple[int, int, int]
    volumetric: bool
    """Whether post-processing runs in 3D (a 3D model, or objects joined across slices)."""
    seams_by_block: dict[tuple[int, ...], list[int]]
    """Numbers of the seams each block takes part in."""

    def slab(self, block: Block, number: int) -> tuple[slice, ...]:
        """Return what ``block`` compares with its neighbour at seam ``number``."""
        seam = self.seams[number]
        return seam_slab(block, seam, self.slab_width[seam.axis])

    def seams_of(self, block: Block) -> list[int]:
        """Numbers of the seams ``block`` takes part in."""
        return self.seams_by_block.get(block.index, [])


def block_halo(engine: Engine, instances: bool) -> tuple[int, int, int]:
    """Post-processing context per side of a block: objects need some, per-pixel outputs none."""
    return tuple(h if instances else 0 for h in (engine.options.halo or DEFAULT_HALO))  # type: ignore[return-value]


def check_block_shape(engine: Engine, spatial_shape: tuple[int, ...], kind: str) -> None:
    """Refuse a ``block_shape`` that cannot work on this image, before any work starts.

    Its maps alone must fit the memory (``memory_limit``, else all the free memory), and
    objects joined across a Z split need blocks at least as deep as the seam slab.
    """
    block = engine.options.block_shape
    if block is None:
        return
    core = tuple(min(b, n) for b, n in zip(block, spatial_shape, strict=True))
    config = engine.model.description.architecture
    needed = math.prod(core) * post_bytes_per_pixel(config, kind)
    room = (engine.memory_limit or reachable_bytes()) - process_rss_bytes()
    if needed > room:
        source = MEMORY_OPTION if engine.memory_limit else "the free memory"
        raise ValueError(
            f"{BLOCK_OPTION} {block} needs at least {format_bytes(needed)} for "
            f"one block of this image; {source} leaves {format_bytes(max(0, room))}: give "
            "a smaller block, or leave it out to size blocks to the memory"
        )
    slab = min(SLAB_WIDTH, block_halo(engine, True)[0])
    if kind == "instances" and core[0] < min(slab, spatial_shape[0]):
        raise ValueError(
            f"{BLOCK_OPTION} {block}: objects are joined across blocks in Z "
            f"through {slab} slices on each side, so blocks need at least {slab} slices"
        )


def plan_blocks(
    engine: Engine, request: Request, settings: RunSettings, align: tuple[int, ...] | None
) -> BlockPlan:
    """Cut the image's ``(Z, Y, X)`` into blocks that fit the memory limit (or ``block_shape``)."""
    description = engine.model.description
    network = settings.network
    volume_model = description.spatial_dims == 3
    instances = request.kind == "instances"
    halo = block_halo(engine, instances)
    shape = request.spatial_shape
    context, multiple = network.context, network.size_multiple
    geometry = [
        AxisGeometry(context if volume_model else 0, multiple if volume_model else 1, halo[0]),
        AxisGeometry(context, multiple, halo[1]),
        AxisGeometry(context, multiple, halo[2]),
    ]
    three_d = volume_model or (instances and shape[0] > 1)
    if engine.options.block_shape is not None:  # whole chunks, so no two blocks write one chunk
        core = tuple(
            -(-size // step) * step
            for size, step in zip(engine.options.block_shape, align or (1, 1, 1), strict=False)
        )
    else:
        memory = plan_memory(
            engine.memory_limit,
            description.architecture,
            settings.autocast_dtype is not None,
            request.kind,
        )
        core = choose_core_shape(
            shape,
            geometry,
            region_pixels=memory.block_pixels,
            window_pixels=settings.forward_pixels,
            network_axes=(volume_model, True, True),
            max_edge=None if three_d else MAX_BLOCK_EDGE_2D,
            max_core_pixels=MAX_BLOCK_VOXELS_3D if three_d else None,
            align=align,
        )
    grid = BlockGrid(shape, core, geometry)
    width = tuple(min(SLAB_WIDTH, h) for h in halo)
    seams = grid.seams() if instances else []
    if seams and min(width[seam.axis] for seam in seams) < 1:
        raise ValueError("object labels need a halo of at least 1 pixel on every split axis")
    by_block: dict[tuple[int, ...], list[int]] = {}
    for number, seam in enumerate(seams):
        by_block.setdefault(seam.lower, []).append(number)
        by_block.setdefault(seam.upper, []).append(number)
    return BlockPlan(grid, seams, width, three_d, by_block)  # type: ignore[arg-type]


def predict_blockwise(
    engine: Engine,
    request: Request,
    out: Any,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> Any:
    """Run every block here; return ``out`` or a new numpy array.

    A 2D block is post-processed and written in a background thread while the next block's
    window goes through the network, so the cores the network leaves idle are used; the memory
    plan gives each of the two its own half of the limit. 3D blocks take turns.
    """
    check_out_dtype(out, request, engine.model.description.architecture.out_channels)
    settings = engine.settings(request.kind)
    plan = plan_blocks(engine, request, settings, spatial_chunks(out, request.out_axes))
    blocks = plan.grid.blocks()
    total = request.times * sum(
        engine.tiles_per_window(_lengths(block.window), settings) for block in blocks
    )
    counter = WorkCounter(total, progress, cancel)
    target = out if out is not None else np.zeros(request.out_shape, result_dtype(request.kind))
    z_halo = plan.grid.geometry[0].halo
    two_d = engine.model.description.spatial_dims == 2
    slices = SliceCache(2 * z_halo) if two_d and z_halo and plan.grid.counts[0] > 1 else None
    most_objects = 0
    with (
        scratch_for(target, request, plan) as scratch,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-finish") as finisher,
    ):
        for t in range(request.times):
            results: dict[tuple[int, ...], BlockLabels] = {}
            pending: Future[BlockLabels | None] | None = None
            for block in blocks:
                check_cancelled(cancel)
                logits, settings = block_logits(
                    engine, request, settings, t, block, counter.add, slices
                )
                if pending is not None:
                    _collect(results, pending.result())
                pending = finisher.submit(
                    finish_block, engine, request, plan, t, block, logits, scratch
                )
                del logits
                if plan.volumetric:  # a 3D block's maps are large: never two at once
                    _collect(results, pending.result())
                    pending = None
            if pending is not None:
                _collect(results, pending.result())
            if request.kind == "instances":
                count = renumber(request, plan, t, blocks, results, scratch, target, engine)
                most_objects = max(most_objects, count)
    if out is None and request.kind == "instances":
        return target.astype(np.min_scalar_type(most_objects))
    return target


def block_logits(
    engine: Engine,
    request: Request,
    settings: RunSettings,
    t: int,
    block: Block,
    on_batch: Callable[[int], None] | None,
    slices: SliceCache | None = None,
) -> tuple[np.ndarray, RunSettings]:
    """Return the logits of a block's window, and the settings to go on with.

    The out-of-memory ladder may have moved on (smaller tiles, the CPU) for later blocks.
    With ``slices`` (a 2D model on a stack), slices the previous block already predicted are
    taken from it instead of going through the network again.
    """
    window = block.window
    reused = slices.take(t, window) if slices is not None else None
    if reused is not None and on_batch is not None:
        on_batch(reused.shape[1] * engine.tiles_per_window((1, *_lengths(window)[1:]), settings))
    start = window[0].start + (0 if reused is None else reused.shape[1])
    view = WindowView(request.view, t, (slice(start, window[0].stop), *window[1:]))
    logits = reused
    while start < window[0].stop:
        try:
            new = engine.window_logits(view, request, settings, on_batch)
            logits = new if reused is None else np.concatenate([reused, new], axis=1)
            break
        except OutOfMemoryForTile:
            settings = engine.smaller_settings(settings, _lengths(window))
    assert logits is not None
    if slices is not None:
        slices.keep(t, window, logits)
    return logits, settings


@dataclass
class SliceCache:
    """The last slices of the previous block's window, for the next block along Z to reuse.

    Blocks of a 2D model on a stack overlap in Z by their halo; the network sees each slice on
    its own, so those slices' logits are the same for both blocks.
    """

    keep_slices: int
    _key: tuple[Any, ...] | None = None
    _first: int = 0
    _logits: np.ndarray | None = None

    def take(self, t: int, window: tuple[slice, ...]) -> np.ndarray | None:
        """Return the cached logits of ``window``'s first slices, if the last block left them."""
        if self._logits is None or self._key != (t, window[1:]):
            return None
        end = self._first + self._logits.shape[1]
        if not self._first <= window[0].start < end:
            return None
        return self._logits[
            :, window[0].start - self._first : min(end, window[0].stop) - self._first
        ]

    def keep(self, t: int, window: tuple[slice, ...], logits: np.ndarray) -> None:
        """Keep the last slices of this window's logits (a copy: the block's own are freed)."""
        count = min(self.keep_slices, logits.shape[1])
        self._key, self._first = (t, window[1:]), window[0].stop - count
        self._logits = logits[:, logits.shape[1] - count :].copy() if count else None


def finish_block(
    engine: Engine,
    request: Request,
    plan: BlockPlan,
    t: int,
    block: Block,
    logits: np.ndarray,
    target: Any,
) -> BlockLabels | None:
    """Post-process a block's window logits, write its core; return what stitching needs."""
    region = logits[(slice(None), *block.region_in_window())]
    del logits
    finished = finish(region, request.kind, engine.model.description)
    del region
    core = finished[(Ellipsis, *block.core_in_region())]
    write_core(target, request, t, block, core)
    if request.kind != "instances":
        del finished, core
        release_freed_memory()
        return None
    count = int(finished.max(initial=0))
    slabs = {
        number: np.ascontiguousarray(finished[plan.slab(block, number)])
        for number in plan.seams_of(block)
    }
    sizes = np.bincount(core.ravel(), minlength=count + 1).astype(np.int64)
    del finished, core
    release_freed_memory()
    return BlockLabels(block.index, count, sizes, slabs)


def release_freed_memory() -> None:
    """Hand memory freed by a block back to the system (glibc keeps it otherwise).

    Two threads allocate block-sized arrays; without this, glibc's per-thread arenas keep what
    they freed and the resident size creeps up block after block.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def _collect(results: dict[tuple[int, ...], BlockLabels], labels: BlockLabels | None) -> None:
    if labels is not None:
        results[labels.index] = labels


def finish(logits: np.ndarray, kind: str, description: ModelDescription) -> np.ndarray:
    """Turn a region's ``(K, Z, Y, X)`` logits into classes, probabilities or object labels.

    A 3D model's objects are labelled in 3D; a 2D model's slice by slice, then joined across
    slices by overlap (:mod:`napari_unet.core.predict.slice_join`).
    """
    if kind == "semantic":
        return semantic_labels(logits[: class_channels(description)])
    probabilities = activate(logits, description)
    if kind == "probabilities":
        return probabilities
    del logits
    labeller, thresholds = object_labeller(description)
    label = partial(labeller, **thresholds)
    if description.spatial_dims == 3:
        return label(probabilities)
    slices = np.stack([label(probabilities[:, z]) for z in range(probabilities.shape[1])])
    return slices if slices.shape[0] == 1 else join_slices(slices)


def renumber(
    request: Request,
    plan: BlockPlan,
    t: int,
    blocks: list[Block],
    results: dict[tuple[int, ...], BlockLabels],
    scratch: Any,
    target: Any,
    engine: Engine,
) -> int:
    """Join one time point's objects across seams and write final labels block by block."""
    tables, count = join_objects(plan, blocks, results, engine)
    check_label_capacity(target, count)
    for block in blocks:
        remap_block(scratch, target, request, t, block, tables[block.index])
    return count


def join_objects(
    plan: BlockPlan,
    blocks: list[Block],
    results: dict[tuple[int, ...], BlockLabels],
    engine: Engine,
) -> tuple[dict[tuple[int, ...], np.ndarray], int]:
    """Lookup tables per block after merging objects across seams and dropping small ones."""
    min_size = int(engine.model.description.postprocess.get("min_size", 1))
    return merge_tables(
        [block.index for block in blocks],
        results,
        [(seam.lower, seam.upper) for seam in plan.seams],
        min_size,
    )


def remap_block(
    scratch: Any, target: Any, request: Request, t: int, block: Block, table: np.ndarray
) -> None:
    """Replace a block's own labels by the image's final ones."""
    local = read_core(scratch, request, t, block)
    write_core(target, request, t, block, table[local].astype(target.dtype))


def output_index(out_axes: str, t: int, block: Block) -> tuple[tuple[Any, ...], str]:
    """Where a block's core goes in an output of ``out_axes``, and the axes its data keeps."""
    spatial = dict(zip("ZYX", block.core, strict=True))
    index: list[Any] = []
    kept = ""
    for letter in out_axes:
        if letter == "T":
            index.append(t)
        elif letter == "C":
            index.append(slice(None))
            kept += letter
        else:
            index.append(spatial[letter])
            kept += letter
    return tuple(index), kept


def write_core(target: Any, request: Request, t: int, block: Block, data: np.ndarray) -> None:
    """Write a block's core (``(Z, Y, X)`` or ``(C, Z, Y, X)``) into ``target``."""
    index, kept = output_index(request.out_axes, t, block)
    axes = "CZYX" if data.ndim == 4 else "ZYX"
    target[index] = to_axes(data, axes, kept)


def read_core(source: Any, request: Request, t: int, block: Block) -> np.ndarray:
    """Read back a block's core from a labels array in ``(Z, Y, X)`` order."""
    index, kept = output_index(request.out_axes, t, block)
    data = np.asarray(source[index])
    return to_axes(data, kept, "ZYX")


def check_out_dtype(out: Any, request: Request, classes: int) -> None:
    """Refuse an ``out`` that cannot hold what would be written into it, before any work."""
    if out is None:
        return
    dtype = np.dtype(out.dtype)
    if request.kind == "probabilities":
        if dtype.kind != "f":
            raise ValueError(f"out must have a float dtype for probabilities, not {dtype}")
        return
    if dtype.kind not in "iu":
        raise ValueError(
            f"out has dtype {dtype}, which cannot hold labels; use an unsigned integer "
            "dtype (uint16 or uint32 for objects)"
        )
    if request.kind == "semantic" and classes - 1 > np.iinfo(dtype).max:
        raise ValueError(f"out ({dtype}) cannot hold {classes} classes")


def check_label_capacity(target: Any, count: int) -> None:
    """Raise before writing when ``target``'s dtype cannot number ``count`` objects."""
    dtype = np.dtype(target.dtype)
    if count > np.iinfo(dtype).max:
        raise OverflowError(
            f"out ({dtype}) cannot hold {count} objects (at most {np.iinfo(dtype).max}); "
            f"use {np.min_scalar_type(count)} or wider"
        )


def spatial_chunks(out: Any, out_axes: str) -> tuple[int, int, int] | None:
    """Return the ``(Z, Y, X)`` chunks of a chunked ``out`` (zarr, dask), else ``None``."""
    chunks = getattr(out, "chunks", None)
    if out is None or chunks is None:
        return None
    if chunks and isinstance(chunks[0], tuple):  # dask: chunk sizes per block
        chunks = tuple(sizes[0] for sizes in chunks)
    by_letter = dict(zip(out_axes, chunks, strict=False))
    return tuple(int(by_letter.get(letter, 1)) for letter in "ZYX")  # type: ignore[return-value]


@contextlib.contextmanager
def scratch_for(
    target: Any, request: Request, plan: BlockPlan, shared: bool = False
) -> Iterator[Any]:
    """Where blocks write their own object numbers before renumbering.

    ``target`` itself when it is a wide integer array; else a temporary zarr array on disk
    (memory stays bounded) or, without zarr, a numpy array. ``shared`` (a cluster): the store
    goes beside ``target``'s, where every worker reaches it, and zarr is required.
    """
    dtype = np.dtype(target.dtype)
    if request.kind != "instances" or (dtype.kind in "iu" and dtype.itemsize >= 4):
        yield target
        return
    if not shared and importlib.util.find_spec("zarr") is None:
        yield np.zeros(request.out_shape, OBJECT_DTYPE)
        return
    zarr = require_zarr()
    folder = store_folder(target) if shared else None
    with tempfile.TemporaryDirectory(prefix=".napari-unet-scratch-", dir=folder) as scratch:
        yield zarr.create_array(
            store=scratch,
            shape=request.out_shape,
            chunks=output_chunks(request, plan.grid.core_shape),
            dtype=OBJECT_DTYPE,
            fill_value=0,
        )


def output_chunks(request: Request, core_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Chunks of an array we create: one block's core (1024 a side before planning), whole C."""
    core = dict(zip("ZYX", core_shape, strict=True)) if core_shape else {}
    sizes = dict(zip(request.out_axes, request.out_shape, strict=True))
    return tuple(
        1 if letter == "T" else sizes[letter] if letter == "C" else core.get(letter, 1024)
        for letter in request.out_axes
    )


def require_zarr() -> Any:
    """Import zarr, or say which extra brings it."""
    try:
        import zarr
    except ImportError as error:
        raise ImportError("this writes zarr: pip install 'napari-unet-segment[zarr]'") from error
    return zarr


def store_folder(array: Any) -> str | None:
    """Return the folder of a zarr array's local store, if it has one."""
    root = getattr(getattr(array, "store", None), "root", None)
    return None if root is None else os.fspath(root)


def _lengths(window: tuple[slice, ...]) -> tuple[int, int, int]:
    z, y, x = (part.stop - part.start for part in window)
    return z, y, x
