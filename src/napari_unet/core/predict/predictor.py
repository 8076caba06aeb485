"""Prediction of any image size: :class:`Predictor` and :func:`segment`.

One engine behind the Python API, the CLI and the napari widget. The image is cut into blocks
(:mod:`.blocks`) whose memory is bounded whatever the image size; each block's
window is read tile by tile (numpy, memory-mapped TIFF, zarr or dask alike), normalised as the
model card says (statistics computed once for the whole image), batched through the network
under ``torch.inference_mode`` with channels-last memory and autocast, blended
(:mod:`.tiling`) and post-processed; :mod:`.blockwise` runs
the blocks here or on a dask cluster and joins objects across blocks.

Defaults follow the hardware and the network: tiles are as large as the memory limit allows
(usually a block's whole window: no overlap work at all), and on a device out of memory the
batch, then the tile, is halved, and finally the CPU takes over, each time with a warning.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_unet.core.axes import CanonicalView
from napari_unet.core.device import (
    available_devices,
    memory_budget_bytes,
    resolve_device,
    resolve_precision,
)
from napari_unet.core.memory import (
    check_memory_limit,
    forward_bytes_per_pixel,
    plan_memory,
)
from napari_unet.core.models.network import UNet
from napari_unet.core.models.registry import Model, load_model
from napari_unet.core.predict.blockwise import check_block_shape, predict_blockwise
from napari_unet.core.predict.inference import (
    RunSettings,
    forward,
    inference_network,
    symmetry_averaging,
)
from napari_unet.core.predict.object_size import predict_at_object_size
from napari_unet.core.predict.options import (
    OVERLAP_OPTION,
    TILE_OPTION,
    PredictOptions,
    per_axis,
    with_options,
)
from napari_unet.core.predict.request import Request, build_request
from napari_unet.core.predict.tiling import Tile, TileGrid, plan_axis
from napari_unet.core.progress import CancelToken, ProgressCallback
from napari_unet.names import DEFAULT_MODEL, OUTPUTS, Output

__all__ = [
    "DEFAULT_MODEL",
    "OUTPUTS",
    "Predictor",
    "available_devices",
    "resolve_device",
    "segment",
]

CPU_BATCH_PIXELS = 2**20
"""On the CPU, larger batches are no faster (they fall out of cache) and make progress jump."""
SMALLEST_TILE_EDGE = 32
"""The out-of-memory ladder stops shrinking tiles below this edge (then CPU, then an error)."""


@dataclass(frozen=True)
class _Job:
    """Where one tile of one slice (2D model) or of the volume (3D model) goes."""

    z: int | None
    tile: Tile


class Predictor:
    """A model loaded once on a device, ready to segment images of any size.

    Parameters
    ----------
    model
        A built-in or saved model name, a model folder, or a loaded :class:`Model`.
    device
        ``"auto"`` (cuda > mps > cpu), or a torch device name.
    tile_shape
        Largest network input per spatial axis (an int for all axes); by default as large
        as the memory limit allows. At least the network's smallest input; more than a
        block's window means the whole window.
    overlap
        Output pixels neighbouring tiles share, per axis; by default the network's
        receptive-field radius plus one pooling cell. Tiles drop all but a pooling cell of it
        at their inner edges and blend the rest; ``2 * context + 2**depth`` makes the result
        identical to an untiled pass. Blocks never need it: they read their full context.
    batch_size
        Tiles per forward pass; by default as many as fit the memory budget. More than a
        block's tiles runs them all at once (halved on a device that runs out of memory).
    precision
        ``"auto"`` (bf16 on CPUs with bf16 hardware, bf16/fp16 on GPUs), ``"fp32"``,
        ``"bf16"`` or ``"fp16"``.
    memory_limit
        Bytes (or ``"2GB"``) the whole process may reach; blocks and tiles are sized to it.
        By default what the process holds plus a quarter of the free memory, at most 4 GiB more.
        More than the machine's RAM becomes what the process can reach (with a warning); less
        than the process holds plus 128 MiB, or not a finite positive size, is refused.
    block_shape
        Output pixels per block and spatial axis (``(Z, Y, X)`` or one int); by default the
        largest that fits ``memory_limit`` (at most 1024 a side in 2D). At least 16 in Y and
        X; a block whose maps cannot fit the memory is refused before any work.
    halo
        Post-processing context per side of a block, in pixels: ``(Z, Y, X)`` or one int; by
        default 32 in Y and X and 2 slices in Z for objects, nothing for per-pixel outputs.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model = DEFAULT_MODEL,
        *,
        options: PredictOptions | None = None,
        **changes: Any,
    ) -> None:
        # Every option is checked before the model loads: a bad option costs nothing.
        self.options = with_options(options, changes)
        """The checked options (a dask worker builds the same Predictor from them)."""
        self.model = load_model(model)
        self.device = resolve_device(self.options.device)
        dims = self.model.description.spatial_dims
        self.tile_shape = per_axis(self.options.tile_shape, dims, TILE_OPTION)
        _check_tile_minimum(self.tile_shape, self.model)
        self.overlap = per_axis(self.options.overlap, dims, OVERLAP_OPTION)
        augment = self.options.test_time_augmentation
        self.test_time_augmentation = (
            self.model.description.test_time_augmentation if augment is None else augment
        )
        """Whether tiles are averaged over the 8 symmetries of the plane (option, else card)."""
        limit = self.options.memory_limit
        self.memory_limit = None if limit is None else check_memory_limit(limit)
        self._autocast_dtype = resolve_precision(self.options.precision, self.device)
        self.network = inference_network(self.model.network, self.device)

    @property
    def batch_size(self) -> int | None:
        """Tiles per forward pass as asked (``None``: as many as fit the memory)."""
        return self.options.batch_size

    # -- what to do ---------------------------------------------------------------------------

    def predict(
        self,
        image: Any,
        axes: str | None = None,
        output: Output | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        out: Any = None,
        channel: int | None = None,
        client: Any = None,
        diameter: float | None = None,
    ) -> Any:
        """Segment ``image`` (any array-like); return labels or probabilities (or ``out``).

        ``output``, ``channel`` and ``diameter`` default to the Predictor's options. Labels
        have the image's axes without C. Probabilities are float32 with the class axis first,
        then the image's axes without C. ``channel`` picks one channel of a multichannel
        image for a one-channel model. ``client`` (a ``dask.distributed`` client) runs the
        blocks on its workers: the image and ``out`` must then be arrays the workers can open
        themselves (zarr). Raises :class:`Cancelled` when ``cancel`` is set; nothing is
        written to ``out`` after that point. ``diameter`` (the objects' typical size, pixels)
        rescales the image to the model's training object size and the result back
        (:mod:`.object_size`).
        """
        output = output or self.options.output
        channel = self.options.channel if channel is None else channel
        diameter = self.options.diameter if diameter is None else diameter
        if diameter is not None:
            options = {"progress": progress, "cancel": cancel, "channel": channel, "client": client}
            return predict_at_object_size(self, image, axes, diameter, output, out, **options)
        return self.run(self.request(image, axes, output, channel), progress, cancel, out, client)

    def run(
        self,
        request: Request,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        out: Any = None,
        client: Any = None,
    ) -> Any:
        """Carry out a checked :meth:`request` here, block by block, or on a dask cluster."""
        if out is not None and tuple(out.shape) != request.out_shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; expected {request.out_shape}")
        if client is not None:  # dask is imported only for a cluster run
            from napari_unet.core.predict.distributed import predict_on_cluster

            return predict_on_cluster(self, request, client, out, progress, cancel)
        return predict_blockwise(self, request, out, progress, cancel)

    def request(
        self, image: Any, axes: str | None, output: str = "labels", channel: int | None = None
    ) -> Request:
        """Check the image and options against the model; compute the normalisation once."""

        def check_blocks(spatial_shape: tuple[int, ...], kind: str) -> None:
            check_block_shape(self, spatial_shape, kind)

        return build_request(self.model, image, axes, output, channel, check_blocks)

    def settings(self, kind: str, device: str | None = None) -> RunSettings:
        """Return one call's device, network and memory sizes, from the Predictor's own.

        Another ``device`` (the CPU, when a GPU ran out of memory) gets its own network copy,
        precision and memory budget.
        """
        config = self.model.description.architecture
        if device is None or device == self.device:
            device, network, autocast_dtype = self.device, self.network, self._autocast_dtype
        else:
            network = inference_network(self.model.network, device)
            autocast_dtype = resolve_precision(self.options.precision, device)
        half = autocast_dtype is not None
        if device == "cpu":
            forward = plan_memory(self.memory_limit, config, half, kind).forward_pixels
        else:
            forward = memory_budget_bytes(device) // forward_bytes_per_pixel(config, half)
        return RunSettings(
            device,
            network,
            autocast_dtype,
            self.tile_shape,
            self.options.batch_size,
            max(1, forward),
            symmetry_averaging(self.model.description, self.test_time_augmentation),
        )

    # -- one block's window, tile by tile ------------------------------------------------------

    def plan(self, spatial_shape: Sequence[int], settings: RunSettings | None = None) -> TileGrid:
        """Plan the tile grid for one slice (2D model) or volume (3D model) of ``spatial_shape``."""
        settings = settings or self.settings("semantic")
        network: UNet = settings.network
        dims = len(spatial_shape)
        context, multiple = network.context, network.size_multiple
        same = network.same_padding
        if self.overlap is not None:
            overlaps = self.overlap
        else:
            default = _round_up(context + multiple, multiple) if same else 0
            overlaps = (default,) * dims
        halos = tuple(max(0, o - multiple) // 2 if same else 0 for o in overlaps)
        max_tiles = settings.tile_shape or self._memory_tile_shape(spatial_shape, settings)
        return TileGrid(
            [
                plan_axis(network, n, max_tile, overlap, halo)
                for n, max_tile, overlap, halo in zip(
                    spatial_shape, max_tiles, overlaps, halos, strict=True
                )
            ]
        )

    def _memory_tile_shape(
        self, spatial_shape: Sequence[int], settings: RunSettings
    ) -> tuple[int, ...]:
        """Largest tile per axis within the memory budget, short axes first taken whole."""
        network = settings.network
        context = 0 if network.same_padding else network.context
        needed = [network.valid_input_size(n + 2 * context) for n in spatial_shape]
        budget, result = float(settings.forward_pixels), list(needed)
        order = sorted(range(len(needed)), key=lambda axis: needed[axis])
        for position, axis in enumerate(order):
            side = budget ** (1 / (len(order) - position))
            result[axis] = max(1, min(needed[axis], int(side)))
            budget /= result[axis]
        return tuple(result)

    def _batch_size(self, grid: TileGrid, jobs: int, settings: RunSettings) -> int:
        if settings.batch_size is not None:
            return settings.batch_size
        pixels = settings.forward_pixels
        if settings.device == "cpu":
            pixels = min(pixels, CPU_BATCH_PIXELS)
        return max(1, min(jobs, pixels // math.prod(grid.tile_shape)))

    def window_logits(
        self,
        view: CanonicalView,
        request: Request,
        settings: RunSettings,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Blended logits ``(K, Z, Y, X)`` of a one-time-point view (a block's window).

        ``on_batch(tiles)`` is called after each forward pass (progress and cancellation).
        """
        _, _, z_len, y_len, x_len = view.shape
        volume_model = self.model.description.spatial_dims == 3
        grid = self.plan((z_len, y_len, x_len) if volume_model else (y_len, x_len), settings)
        zs: list[int | None] = [None] if volume_model else list(range(z_len))
        jobs = [_Job(z, tile) for z in zs for tile in grid.tiles()]
        batch = self._batch_size(grid, len(jobs), settings)
        batches = [jobs[i : i + batch] for i in range(0, len(jobs), batch)]
        classes = self.model.description.architecture.out_channels
        logits_sum = np.zeros((classes, z_len, y_len, x_len), np.float32)
        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming: Future[np.ndarray] | None = reader.submit(
                self._read_batch, view, request, batches[0], grid
            )
            for number, jobs_now in enumerate(batches):
                assert upcoming is not None
                inputs = upcoming.result()
                upcoming = (
                    reader.submit(self._read_batch, view, request, batches[number + 1], grid)
                    if number + 1 < len(batches)
                    else None
                )
                logits = forward(inputs, settings)
                for job, tile_logits in zip(jobs_now, logits, strict=True):
                    _accumulate(logits_sum, job, tile_logits, grid)
                if on_batch is not None:
                    on_batch(len(jobs_now))
        return logits_sum

    def tiles_per_window(self, shape: tuple[int, int, int], settings: RunSettings) -> int:
        """How many tiles a window of ``(Z, Y, X)`` takes (progress totals)."""
        if self.model.description.spatial_dims == 3:
            return len(self.plan(shape, settings))
        return shape[0] * len(self.plan(shape[1:], settings))

    def _read_batch(
        self, view: CanonicalView, request: Request, jobs: list[_Job], grid: TileGrid
    ) -> np.ndarray:
        """Read and normalise a batch of tiles into one float32 array ``(B, C, *tile)``."""
        n_channels = self.model.description.in_channels
        batch = np.empty((len(jobs), n_channels, *grid.tile_shape), np.float32)
        for slot, job in zip(batch, jobs, strict=True):
            lead: tuple[slice, ...] = (slice(0, 1), request.channels)
            if job.z is not None:
                lead += (slice(job.z, job.z + 1),)
            block = _read_block(view, lead, job.tile.source)
            request.normalizer(block.reshape(1, *slot.shape), out=slot[np.newaxis])
        return batch

    def smaller_settings(self, settings: RunSettings, window: Sequence[int]) -> RunSettings:
        """Step down the out-of-memory ladder: smaller tiles, then the CPU, then an error.

        Every rung shrinks the largest tile the plan may use or moves to another device, so the
        ladder always ends.
        """
        dims = self.model.description.spatial_dims
        spatial = tuple(window) if dims == 3 else tuple(window[1:])
        tile_pixels = math.prod(self.plan(spatial, settings).tile_shape)
        smallest = max(settings.network.valid_input_size(1), SMALLEST_TILE_EDGE) ** dims
        cap = min(tile_pixels, settings.forward_pixels) // 2
        smaller = replace(settings, tile_shape=None, batch_size=1, forward_pixels=max(1, cap))
        # The overlap may force a tile larger than the cap: only a tile that really shrank is
        # a step down; otherwise move on to the next rung.
        if cap >= smallest and math.prod(self.plan(spatial, smaller).tile_shape) < tile_pixels:
            warnings.warn(
                f"napari-unet: out of memory on {settings.device} with one tile of "
                f"{tile_pixels} pixels; retrying with smaller tiles",
                RuntimeWarning,
                stacklevel=3,
            )
            return smaller
        if settings.device != "cpu":
            warnings.warn(
                f"napari-unet: out of memory on {settings.device} even with small tiles; "
                "continuing on the CPU",
                RuntimeWarning,
                stacklevel=3,
            )
            return self.settings("semantic", device="cpu")
        raise MemoryError(
            f"out of memory on the CPU even with tiles of {tile_pixels} pixels; free memory "
            "or lower memory_limit/--memory so that smaller blocks are used"
        )


def segment(
    image: Any,
    model: str | os.PathLike[str] | Model = DEFAULT_MODEL,
    *,
    options: PredictOptions | None = None,
    axes: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    out: Any = None,
    client: Any = None,
    **changes: Any,
) -> Any:
    """Segment an image with a U-Net and return a label image (or probabilities).

    ``image`` is a numpy, dask or zarr array or a memory-mapped TIFF, read block by block.
    ``axes`` are letters from ``TCZYX`` (inferred when ``None``: see
    :data:`napari_unet.core.axes.INFERENCE_RULE`). ``options`` (a :class:`PredictOptions`)
    and any of its fields as keywords say how: ``output`` is ``"labels"`` (the model's own
    kind), ``"instances"``, ``"semantic"`` or ``"probabilities"``; ``diameter`` (pixels)
    segments at the model's training object size; tiles, blocks, memory, device and
    precision are sized for you unless given. ``out`` (e.g. a zarr array on disk) receives
    the result block by block, so nothing image-sized is held in memory. ``client`` runs the
    blocks on a ``dask.distributed`` cluster. :class:`Predictor` keeps a model loaded
    between calls.
    """
    predictor = Predictor(model, options=with_options(options, changes))
    return predictor.predict(image, axes, progress=progress, cancel=cancel, out=out, client=client)


def _check_tile_minimum(tile_shape: tuple[int, ...] | None, model: Model) -> None:
    """Refuse a tile smaller than any input the network accepts, naming that smallest input."""
    smallest = model.network.valid_input_size(1)
    if tile_shape is not None and min(tile_shape) < smallest:
        raise ValueError(
            f"{TILE_OPTION} {tile_shape} is smaller than the smallest input model "
            f"{model.name!r} accepts ({smallest} pixels a side); give at least {smallest}, or "
            "leave it out to size tiles to the memory"
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _read_block(
    view: CanonicalView, lead: tuple[slice, ...], sources: tuple[np.ndarray | slice, ...]
) -> np.ndarray:
    """Read one tile: its bounding box from the source, then mirror where it leaves the image."""
    slices, takes = [], []
    for source in sources:
        if isinstance(source, slice):
            slices.append(source)
            takes.append(None)
        else:
            low = int(source.min())
            slices.append(slice(low, int(source.max()) + 1))
            takes.append(source - low)
    block = view.read((*lead, *slices))
    first = block.ndim - len(sources)
    for offset, take in enumerate(takes):
        if take is not None:
            block = np.take(block, take, axis=first + offset)
    return block


def _accumulate(logits_sum: np.ndarray, job: _Job, logits: np.ndarray, grid: TileGrid) -> None:
    """Add one tile's weighted, cropped logits into the window's ``(K, Z, Y, X)`` sum."""
    tile = job.tile
    cropped = logits[(slice(None), *tile.crop)]
    weights = grid.weights(tile)
    if weights is not None:
        cropped = cropped * weights
    if job.z is None:
        logits_sum[(slice(None), *tile.target)] += cropped
    else:
        logits_sum[(slice(None), job.z, *tile.target)] += cropped
