"""Sliding-window prediction of any image size: :class:`Predictor` and :func:`segment`.

One engine behind the Python API, the CLI and the napari widget. It reads the image tile by
tile (numpy, memory-mapped TIFF, zarr or dask alike), normalises each tile as the model card
says, batches tiles through the network under ``torch.inference_mode`` with channels-last
memory and autocast, blends the tiles' logits (see :mod:`napari_unet.core.tiling`) and turns
them into labels or probabilities one slice or volume at a time.

Defaults follow the hardware and the network: tiles are as large as the device's free
memory allows (often the whole image: no overlap work at all), the overlap follows the
network's receptive field, and on a device out of memory the batch, then the tile, is
halved, and finally the CPU takes over, each time with a warning.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from napari_unet.core.axes import CanonicalView, normalize_axes, to_axes
from napari_unet.core.device import (
    autocast,
    available_devices,
    is_out_of_memory,
    memory_budget_bytes,
    resolve_device,
    resolve_precision,
)
from napari_unet.core.models import Model, load_model
from napari_unet.core.network import UNet
from napari_unet.core.normalize import Normalizer, check_dtype, fit_normalizer
from napari_unet.core.postprocess import instance_labels, semantic_labels
from napari_unet.core.progress import CancelToken, ProgressCallback, check_cancelled
from napari_unet.core.tiling import Tile, TileGrid, plan_axis

__all__ = [
    "DEFAULT_MODEL",
    "OUTPUTS",
    "Predictor",
    "available_devices",
    "resolve_device",
    "segment",
]

DEFAULT_MODEL = "nuclei"
Output = Literal["labels", "instances", "semantic", "probabilities"]
OUTPUTS = ("labels", "instances", "semantic", "probabilities")
CPU_BATCH_PIXELS = 2**22
"""On the CPU, larger batches are no faster (they fall out of cache): at most this many pixels."""


class _OutOfMemory(Exception):
    """One tile alone did not fit: the caller shrinks tiles or changes device and starts over."""


@dataclass(frozen=True)
class _Job:
    """Where one tile of one item (a slice or a volume) comes from and where it goes."""

    t: int
    z: int | None  # the slice of a 2D model on a stack; None for a 3D model
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
        as the device's free memory allows.
    overlap
        Output pixels neighbouring tiles share, per axis; by default the network's
        receptive-field radius plus one pooling cell. Tiles drop all but a pooling cell of it
        at their inner edges and blend the rest; ``2 * context + 2**depth`` makes the result
        identical to an untiled pass.
    batch_size
        Tiles per forward pass; by default as many as fit the memory budget.
    precision
        ``"auto"`` (bf16 on CPUs with bf16 hardware, bf16/fp16 on GPUs), ``"fp32"``,
        ``"bf16"`` or ``"fp16"``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Model = DEFAULT_MODEL,
        device: str = "auto",
        tile_shape: int | Sequence[int] | None = None,
        overlap: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.model = load_model(model)
        self.device = resolve_device(device)
        self.precision = precision
        dims = self.model.description.spatial_dims
        self.tile_shape = _per_axis(tile_shape, dims, "tile_shape", minimum=1)
        self.overlap = _per_axis(overlap, dims, "overlap", minimum=0)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self._tile_pixels_cap: int | None = None
        self._prepare()

    def _prepare(self) -> None:
        self._autocast_dtype = resolve_precision(self.precision, self.device)
        self.network = inference_network(self.model.network, self.device)
        dims = self.model.description.spatial_dims
        self._memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d

    def predict(
        self,
        image: Any,
        axes: str | None = None,
        output: Output = "labels",
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        out: Any = None,
        channel: int | None = None,
    ) -> Any:
        """Segment ``image`` (any array-like); return labels or probabilities (or ``out``).

        Labels have the image's axes without C. Probabilities are float32 with the class
        axis first, then the image's axes without C. ``channel`` picks one channel of a
        multichannel image for a one-channel model. Raises :class:`Cancelled` when
        ``cancel`` is set; nothing is written to ``out`` after that point.
        """
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; not {output!r}")
        description = self.model.description
        shape = tuple(int(n) for n in image.shape)
        check_dtype(np.dtype(image.dtype))
        axes = normalize_axes(axes, shape, description)
        view, channels = self._channels(CanonicalView(image, axes), axes, channel)
        if description.spatial_dims == 3 and "Z" not in axes:
            raise ValueError(
                f"model {description.name!r} is 3D but the image (shape {shape}, axes {axes}) "
                "has no Z axis"
            )
        if 0 in shape:
            raise ValueError(f"the image is empty: shape {shape}")
        kind = description.output_kind if output == "labels" else output
        plain_axes = axes.replace("C", "")
        out_axes = "C" + plain_axes if kind == "probabilities" else plain_axes
        sizes = dict(zip(axes, shape, strict=True))
        sizes["C"] = description.architecture.out_channels
        out_shape = tuple(sizes[letter] for letter in out_axes)
        if out is not None and tuple(out.shape) != out_shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; expected {out_shape}")
        normalizer = fit_normalizer(view, description.normalization, channels)
        while True:
            try:
                return self._run(
                    view, channels, normalizer, kind, out_axes, out_shape, out, progress, cancel
                )
            except _OutOfMemory:
                self._recover_from_out_of_memory(view)

    def _channels(
        self, view: CanonicalView, axes: str, channel: int | None
    ) -> tuple[CanonicalView, slice]:
        """Select ``channel`` and match the model's channel count, as training did.

        A colour image goes to a one-channel model as the mean of its channels (unless the
        card's ``normalization["rgb"]`` says otherwise); a gray image is repeated for a
        multi-channel model.
        """
        expected = self.model.description.in_channels
        have = view.shape[1]
        selected = slice(None)
        if channel is not None:
            if "C" not in axes:
                raise ValueError(
                    f"channel={channel} given, but the image (axes {axes}) has no C axis"
                )
            if not -have <= channel < have:
                raise ValueError(f"channel={channel} is out of range for {have} channels")
            channel %= have
            have, selected = 1, slice(channel, channel + 1)
        if have == expected:
            return view, selected
        if expected == 1 and self.model.description.normalization.get("rgb", "mean") == "mean":
            return _MatchedChannels(view, expected, "mean"), selected
        if have == 1:
            return _MatchedChannels(view, expected, "repeat"), selected
        raise ValueError(
            f"model {self.model.name!r} expects {expected} channel(s); the image "
            f"(shape {tuple(view.source.shape)}, axes {axes}) has {have}; pass channel=N "
            "to segment one of them"
        )

    # -- the sliding window ------------------------------------------------------------------

    def plan(self, spatial_shape: Sequence[int]) -> TileGrid:
        """Plan the tile grid for one slice (2D model) or volume (3D model) of ``spatial_shape``."""
        network: UNet = self.network
        dims = len(spatial_shape)
        context, multiple = network.context, network.size_multiple
        same = network.config.padding == "same"
        if self.overlap is not None:
            overlaps = self.overlap
        else:
            default = _round_up(context + multiple, multiple) if same else 0
            overlaps = (default,) * dims
        halos = tuple(max(0, o - multiple) // 2 if same else 0 for o in overlaps)
        max_tiles = self.tile_shape or self._memory_tile_shape(spatial_shape)
        return TileGrid(
            [
                plan_axis(network, n, max_tile, overlap, halo)
                for n, max_tile, overlap, halo in zip(
                    spatial_shape, max_tiles, overlaps, halos, strict=True
                )
            ]
        )

    def _bytes_per_pixel(self) -> int:
        """Estimate the memory one input pixel costs in a forward pass, with a safety margin.

        Measured on CPU: about 20 bytes per base channel in bf16 and 40 in fp32.
        """
        config = self.model.description.architecture
        per_channel = 40 if self._autocast_dtype is None else 24
        return int(1.5 * per_channel * config.base_channels) + 8 * (
            config.in_channels + config.out_channels
        )

    def _max_tile_pixels(self) -> int:
        pixels = memory_budget_bytes(self.device) // self._bytes_per_pixel()
        if self._tile_pixels_cap is not None:
            pixels = min(pixels, self._tile_pixels_cap)
        return max(1, pixels)

    def _memory_tile_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Largest tile per axis within the memory budget, short axes first taken whole."""
        network = self.network
        context = 0 if network.config.padding == "same" else network.context
        needed = [network.valid_input_size(n + 2 * context) for n in spatial_shape]
        budget, result = float(self._max_tile_pixels()), list(needed)
        order = sorted(range(len(needed)), key=lambda axis: needed[axis])
        for position, axis in enumerate(order):
            side = budget ** (1 / (len(order) - position))
            result[axis] = max(1, min(needed[axis], int(side)))
            budget /= result[axis]
        return tuple(result)

    def _batch_size(self, grid: TileGrid, jobs: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        tile_pixels = math.prod(grid.tile_shape)
        pixels = self._max_tile_pixels()
        if self.device == "cpu":
            pixels = min(pixels, CPU_BATCH_PIXELS)
        return max(1, min(jobs, pixels // tile_pixels))

    def _run(
        self,
        view: CanonicalView,
        channels: slice,
        normalizer: Normalizer,
        kind: str,
        out_axes: str,
        out_shape: tuple[int, ...],
        out: Any,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> Any:
        t_len, _, z_len, y_len, x_len = view.shape
        volume_model = self.model.description.spatial_dims == 3
        spatial = (z_len, y_len, x_len) if volume_model else (y_len, x_len)
        grid = self.plan(spatial)
        tiles = list(grid.tiles())
        items = (
            [(t, None) for t in range(t_len)]
            if volume_model
            else [(t, z) for t in range(t_len) for z in range(z_len)]
        )
        # Instances of a 2D model on a stack are found in 3D, so objects keep one label across
        # slices: that needs the whole stack's logits; anything else is finished per slice.
        whole_stacks = volume_model or (kind == "instances" and z_len > 1)
        jobs = [_Job(t, z, tile) for t, z in items for tile in tiles]
        batch = self._batch_size(grid, len(jobs))
        batches = [jobs[i : i + batch] for i in range(0, len(jobs), batch)]
        pending = {
            key: len(tiles) * (z_len if whole_stacks and not volume_model else 1)
            for key in {(t, None if whole_stacks else z) for t, z in items}
        }
        classes = self.model.description.architecture.out_channels
        unit_shape = (classes, z_len if whole_stacks else 1, y_len, x_len)
        accumulators: dict[tuple[int, int | None], np.ndarray] = {}
        result = out
        done, total = 0, len(jobs)
        if progress is not None:
            progress(0, total)
        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming: Future[np.ndarray] | None = reader.submit(
                self._read_batch, view, channels, normalizer, batches[0], grid
            )
            for number, jobs_now in enumerate(batches):
                check_cancelled(cancel)
                assert upcoming is not None
                inputs = upcoming.result()
                upcoming = (
                    reader.submit(
                        self._read_batch, view, channels, normalizer, batches[number + 1], grid
                    )
                    if number + 1 < len(batches)
                    else None
                )
                logits = self._forward(inputs)
                for job, tile_logits in zip(jobs_now, logits, strict=True):
                    key = (job.t, None if whole_stacks else job.z)
                    accumulator = accumulators.get(key)
                    if accumulator is None:
                        accumulator = accumulators[key] = np.zeros(unit_shape, np.float32)
                    _accumulate(accumulator, job, tile_logits, grid, volume_model, whole_stacks)
                    pending[key] -= 1
                    if pending[key] == 0:
                        finished = self._finish(accumulators.pop(key), kind)
                        result = _store(
                            result, out is None, finished, key, kind, out_axes, out_shape
                        )
                done += len(jobs_now)
                if progress is not None:
                    progress(done, total)
        return result

    def _read_batch(
        self,
        view: CanonicalView,
        channels: slice,
        normalizer: Normalizer,
        jobs: list[_Job],
        grid: TileGrid,
    ) -> np.ndarray:
        """Read and normalise a batch of tiles into one float32 array ``(B, C, *tile)``."""
        n_channels = self.model.description.in_channels
        batch = np.empty((len(jobs), n_channels, *grid.tile_shape), np.float32)
        for slot, job in zip(batch, jobs, strict=True):
            lead = (slice(job.t, job.t + 1), channels)
            if job.z is not None:
                lead += (slice(job.z, job.z + 1),)
            block = _read_block(view, lead, job.tile.source)
            normalizer(block.reshape(1, *slot.shape), out=slot[np.newaxis])
        return batch

    def _forward(self, inputs: np.ndarray) -> np.ndarray:
        """Logits ``(B, K, *tile_out)`` as float32 numpy; halves the batch when out of memory."""
        try:
            with torch.inference_mode(), autocast(self.device, self._autocast_dtype):
                x = torch.from_numpy(inputs).to(self.device)
                x = x.contiguous(memory_format=self._memory_format)
                return self.network(x).float().cpu().numpy()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            _free_device_memory(self.device)
            if len(inputs) == 1:
                raise _OutOfMemory from error
            half = (len(inputs) + 1) // 2
            warnings.warn(
                f"napari-unet: out of memory on {self.device} with {len(inputs)} tiles per "
                f"batch; retrying with {half}",
                RuntimeWarning,
                stacklevel=2,
            )
            self.batch_size = half
            return np.concatenate([self._forward(inputs[:half]), self._forward(inputs[half:])])

    def _recover_from_out_of_memory(self, view: CanonicalView) -> None:
        """One tile did not fit: halve the tile, or when tiles are already small, use the CPU."""
        spatial = view.shape[2:] if self.model.description.spatial_dims == 3 else view.shape[3:]
        tile_pixels = math.prod(self.plan(spatial).tile_shape)
        smallest = self.network.valid_input_size(1) ** self.model.description.spatial_dims
        if tile_pixels // 2 >= max(smallest, 32**self.model.description.spatial_dims):
            self._tile_pixels_cap = tile_pixels // 2
            self.tile_shape = None
            warnings.warn(
                f"napari-unet: out of memory on {self.device} with one tile of {tile_pixels} "
                "pixels; retrying with smaller tiles",
                RuntimeWarning,
                stacklevel=3,
            )
        elif self.device != "cpu":
            warnings.warn(
                f"napari-unet: out of memory on {self.device} even with small tiles; "
                "continuing on the CPU",
                RuntimeWarning,
                stacklevel=3,
            )
            self.device, self._tile_pixels_cap = "cpu", None
            self._prepare()
        else:
            raise MemoryError("out of memory on the CPU even with the smallest tiles")

    def _finish(self, logits: np.ndarray, kind: str) -> np.ndarray:
        """Turn one slice's or volume's ``(K, Z, Y, X)`` logits into the requested output."""
        if kind == "semantic":
            return semantic_labels(logits)
        probabilities = torch.from_numpy(logits).softmax(dim=0).numpy()
        if kind == "probabilities":
            return probabilities
        squeeze = probabilities.shape[1] == 1
        labels = instance_labels(
            probabilities[:, 0] if squeeze else probabilities,
            **self.model.description.postprocess,
        )
        return labels[np.newaxis] if squeeze else labels


def segment(
    image: Any,
    model: str | os.PathLike[str] | Model = DEFAULT_MODEL,
    *,
    axes: str | None = None,
    tile_shape: int | Sequence[int] | None = None,
    overlap: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    output: Output = "labels",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    out: Any = None,
    precision: str = "auto",
    channel: int | None = None,
) -> Any:
    """Segment an image with a U-Net and return a label image (or probabilities).

    ``image`` is a numpy, dask or zarr array or a memory-mapped TIFF, read tile by tile.
    ``axes`` are letters from ``TCZYX`` (inferred when ``None``: see
    :data:`napari_unet.core.axes.INFERENCE_RULE`). ``output`` is ``"labels"`` (the model's
    own kind), ``"instances"``, ``"semantic"`` or ``"probabilities"``. The rest is
    documented on :class:`Predictor`, which keeps a model loaded between calls.
    """
    predictor = Predictor(
        model,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        batch_size=batch_size,
        precision=precision,
    )
    return predictor.predict(
        image,
        axes=axes,
        output=output,
        progress=progress,
        cancel=cancel,
        out=out,
        channel=channel,
    )


def inference_network(network: UNet, device: str) -> UNet:
    """Copy ``network`` for prediction: eval mode, on ``device``, channels-last memory.

    Batch norm is folded into the convolution before it: one pass over the data, not two.
    """
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i, (conv, norm) in enumerate(itertools.pairwise(layers)):
                if isinstance(conv, nn.Conv2d | nn.Conv3d) and isinstance(
                    norm, nn.BatchNorm2d | nn.BatchNorm3d
                ):
                    module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
                    module[i + 1] = nn.Identity()
    memory_format = torch.channels_last if network.spatial_dims == 2 else torch.channels_last_3d
    return network.to(device).to(memory_format=memory_format)


class _MatchedChannels(CanonicalView):
    """A view that averages channels into one, or repeats one channel, on every read."""

    def __init__(self, view: CanonicalView, channels: int, how: str) -> None:
        super().__init__(view.source, view.axes)
        self.shape = (*self.shape[:1], channels, *self.shape[2:])
        self.channels, self.how = channels, how

    def read(self, block: tuple[slice, ...]) -> np.ndarray:
        """Read the block with all source channels selected, then match the channel count."""
        data = super().read(block)
        if self.how == "mean":
            return data.mean(axis=1, keepdims=True, dtype=np.float32)
        return np.repeat(data, self.channels, axis=1)


def _per_axis(
    value: int | Sequence[int] | None, dims: int, name: str, minimum: int
) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = (int(value),) * dims if isinstance(value, int | np.integer) else tuple(map(int, value))
    if len(values) != dims or any(v < minimum for v in values):
        raise ValueError(
            f"{name} must be an integer >= {minimum} or {dims} of them (one per spatial axis "
            f"of the model); got {value!r}"
        )
    return values


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


def _accumulate(
    accumulator: np.ndarray,
    job: _Job,
    logits: np.ndarray,
    grid: TileGrid,
    volume_model: bool,
    whole_stacks: bool,
) -> None:
    """Add one tile's weighted, cropped logits into its slice's or volume's accumulator."""
    tile = job.tile
    cropped = logits[(slice(None), *tile.crop)]
    weights = grid.weights(tile)
    if weights is not None:
        cropped = cropped * weights
    if volume_model:
        accumulator[(slice(None), *tile.target)] += cropped
    else:
        z = job.z if whole_stacks else 0
        accumulator[(slice(None), z, *tile.target)] += cropped


def _store(
    result: Any,
    owned: bool,
    finished: np.ndarray,
    key: tuple[int, int | None],
    kind: str,
    out_axes: str,
    out_shape: tuple[int, ...],
) -> Any:
    """Write one finished slice or volume into the result.

    Our own result is allocated on first use in the first slice's dtype and widened if a later
    slice needs more (more objects); a caller's ``out`` is written as it is.
    """
    t, z = key
    finished_axes = "CZYX" if kind == "probabilities" else "ZYX"
    index, remaining = [], ""
    for letter in out_axes:
        if letter == "T":
            index.append(t)
        elif letter == "Z" and z is not None:
            index.append(slice(z, z + 1))
            remaining += letter
        else:
            index.append(slice(None))
            remaining += letter
    data = to_axes(finished, finished_axes, remaining)
    if result is None:
        result = np.empty(out_shape, data.dtype)
    elif owned and not np.can_cast(data.dtype, result.dtype):
        result = result.astype(np.promote_types(result.dtype, data.dtype))
    result[tuple(index)] = data
    return result


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
