"""Axis letters of an image (``"ZYX"``, ``"TCZYX"``...): inference, checks, and a lazy view.

The engine works on one canonical order, ``TCZYX``. :class:`CanonicalView` presents any
accepted input in that order without reading it: each read asks the source (numpy, memmap,
dask, zarr) for exactly the block it needs and transposes only that block.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.stains import hematoxylin

if TYPE_CHECKING:
    from napari_unet.core.models.registry import ModelDescription

CANONICAL = "TCZYX"
ACCEPTED = "YX, CYX or YXC, ZYX, TYX, TZYX, TCZYX, or any order of T, C, Z, Y, X with Y and X"

INFERENCE_RULE = """\
Axes are inferred from the number of dimensions, and from the channels the model expects (k):
- 2 dims: YX.
- 3 dims: YXC if the last length is k > 1, or 3 or 4 (RGB/RGBA) and smaller than the others;
  CYX if the first length is k > 1; otherwise ZYX.
- 4 dims: ZYXC if the last length is k > 1 or 3/4 as above; CZYX if the first length is k > 1;
  ZCYX if the second length is k > 1; otherwise TZYX.
- 5 dims: TZCYX if the third length is k > 1 and the second is not; otherwise TCZYX.
Pass ``axes=`` to override; a file's own axes (ImageJ, OME) are used when it has them."""


def infer_axes(shape: tuple[int, ...], model: ModelDescription | None = None) -> str:
    """Guess axis letters for an array of ``shape`` (the rule is :data:`INFERENCE_RULE`)."""
    k = model.in_channels if model is not None else 1
    ndim = len(shape)

    def channels_last() -> bool:
        last = shape[-1]
        return (k > 1 and last == k) or (last in (3, 4) and last < min(shape[-3:-1]))

    if ndim == 2:
        return "YX"
    if ndim == 3:
        if channels_last():
            return "YXC"
        return "CYX" if k > 1 and shape[0] == k else "ZYX"
    if ndim == 4:
        if channels_last():
            return "ZYXC"
        if k > 1 and shape[0] == k:
            return "CZYX"
        return "ZCYX" if k > 1 and shape[1] == k else "TZYX"
    if ndim == 5:
        return "TZCYX" if k > 1 and shape[2] == k and shape[1] != k else "TCZYX"
    raise ValueError(
        f"cannot segment an image of shape {shape} ({ndim} dims); accepted: {ACCEPTED}"
    )


def normalize_axes(axes: str | None, shape: tuple[int, ...], model: ModelDescription | None) -> str:
    """Validate ``axes`` against ``shape`` (inferring them if ``None``); return them upper-case.

    ImageJ/OME letters map onto ours: ``S`` (samples, i.e. RGB) is C, ``Q``/``I`` are Z.
    """
    if axes is None:
        return infer_axes(tuple(shape), model)
    letters = axes.upper().replace("S", "C").replace("Q", "Z").replace("I", "Z")
    problem = None
    if len(letters) != len(shape):
        problem = f"axes {axes!r} name {len(letters)} dims"
    elif len(set(letters)) != len(letters):
        problem = f"axes {axes!r} repeat a letter"
    elif not set(letters) <= set(CANONICAL):
        problem = f"axes {axes!r} use letters other than T, C, Z, Y, X"
    elif not {"Y", "X"} <= set(letters):
        problem = f"axes {axes!r} lack Y or X"
    if problem:
        raise ValueError(f"image of shape {tuple(shape)}: {problem}; accepted: {ACCEPTED}")
    return letters


def canonical_shape(shape: tuple[int, ...], axes: str) -> tuple[int, int, int, int, int]:
    """Return the ``(T, C, Z, Y, X)`` lengths, 1 for axes the image does not have."""
    sizes = dict(zip(axes, shape, strict=True))
    t, c, z, y, x = (sizes.get(letter, 1) for letter in CANONICAL)
    return t, c, z, y, x


def to_axes(array: np.ndarray, axes_from: str, axes_to: str) -> np.ndarray:
    """Reorder a numpy array between axis orders, dropping length-1 axes that ``axes_to`` lacks."""
    drop = tuple(i for i, letter in enumerate(axes_from) if letter not in axes_to)
    array = array.reshape([n for i, n in enumerate(array.shape) if i not in drop])
    kept = "".join(letter for letter in axes_from if letter in axes_to)
    array = array.transpose([kept.index(letter) for letter in axes_to if letter in kept])
    present = "".join(letter for letter in axes_to if letter in kept)
    return array.reshape([array.shape[present.index(c)] if c in present else 1 for c in axes_to])


class CanonicalView:
    """A read-only ``(T, C, Z, Y, X)`` view of any array-like, read block by block.

    ``read`` takes one slice per canonical axis and returns a numpy array of that block only,
    so memory-mapped, zarr and dask inputs are never loaded whole.
    """

    def __init__(self, source: Any, axes: str) -> None:
        self.source = source
        self.axes = axes
        self.shape = canonical_shape(tuple(source.shape), axes)
        self.dtype = np.dtype(source.dtype)

    def read(self, block: tuple[slice, ...]) -> np.ndarray:
        """Read ``block`` (five slices, canonical order) as a numpy array in canonical order."""
        by_letter = dict(zip(CANONICAL, block, strict=True))
        index = tuple(by_letter[letter] for letter in self.axes)
        data = np.asarray(self.source[index])
        return to_axes(data, self.axes, CANONICAL)


class WindowView(CanonicalView):
    """One time point and a spatial window of a view, read as if it were the whole image.

    Blocks run the tiled engine on their window alone; reads map back onto the full image.
    """

    def __init__(self, view: CanonicalView, t: int, spatial: tuple[slice, slice, slice]) -> None:
        self.parent, self.t, self.spatial = view, t, spatial
        self.source, self.axes, self.dtype = view.source, view.axes, view.dtype
        lengths = tuple(part.stop - part.start for part in spatial)
        self.shape = (1, view.shape[1], *lengths)

    def read(self, block: tuple[slice, ...]) -> np.ndarray:
        """Read ``block`` (window coordinates, canonical order) from the parent view."""
        t, channels, *spatial = block
        if (t.start or 0) != 0 or t.stop not in (None, 1):
            raise IndexError(f"a window holds one time point; asked for {t}")
        shifted = tuple(
            slice((part.start or 0) + origin.start, _stop(part, origin), part.step)
            for part, origin in zip(spatial, self.spatial, strict=True)
        )
        return self.parent.read((slice(self.t, self.t + 1), channels, *shifted))


def _stop(part: slice, origin: slice) -> int:
    return origin.stop if part.stop is None else part.stop + origin.start


class MatchedChannels(CanonicalView):
    """A view that turns colour into one channel (mean or hematoxylin), or repeats one channel.

    The conversion is per pixel, so every tile and block reads the same values.
    """

    def __init__(self, view: CanonicalView, channels: int, how: str) -> None:
        super().__init__(view.source, view.axes)
        self.view = view
        self.shape = (*view.shape[:1], channels, *view.shape[2:])
        self.channels, self.how = channels, how

    def read(self, block: tuple[slice, ...]) -> np.ndarray:
        """Read the block with all source channels selected, then match the channel count."""
        data = self.view.read(block)
        if self.how == "mean":
            return data.mean(axis=1, keepdims=True, dtype=np.float32)
        if self.how == "hematoxylin":
            return hematoxylin(data, channel_axis=1)
        return np.repeat(data, self.channels, axis=1)


def match_channels(
    view: CanonicalView, axes: str, channel: int | None, expected: int, rgb: str, name: str
) -> tuple[CanonicalView, slice]:
    """Select ``channel`` and match the model's channel count, as training did.

    A colour image goes to a one-channel model as the mean of its channels, or as its
    hematoxylin stain when the card's ``normalization["rgb"]`` is ``"hematoxylin"`` (stained
    tissue); a gray image is repeated for a multi-channel model. Returns the view and the
    channels to read from it.
    """
    have = view.shape[1]
    selected = slice(None)
    if channel is not None:
        if "C" not in axes:
            raise ValueError(f"channel={channel} given, but the image (axes {axes}) has no C axis")
        if not -have <= channel < have:
            raise ValueError(f"channel={channel} is out of range for {have} channels")
        channel %= have
        have, selected = 1, slice(channel, channel + 1)
    if have == expected:
        return view, selected
    if expected == 1 and rgb == "hematoxylin" and have in (3, 4):
        return MatchedChannels(view, expected, "hematoxylin"), selected
    if expected == 1 and rgb in ("mean", "hematoxylin"):
        if have not in (3, 4):
            warnings.warn(
                f"napari-unet: model {name!r} reads one channel; the image's {have} channels "
                "are averaged into one (pass channel=N to segment one of them)",
                UserWarning,
                stacklevel=4,
            )
        return MatchedChannels(view, expected, "mean"), selected
    if have == 1:
        return MatchedChannels(view, expected, "repeat"), selected
    raise ValueError(
        f"model {name!r} expects {expected} channel(s); the image (shape "
        f"{tuple(view.source.shape)}, axes {axes}) has {have}; pass channel=N to segment one "
        "of them"
    )
