"""The options of a prediction: one frozen, validated object, and the table the front ends read.

:class:`PredictOptions` is what :func:`~napari_unet.core.predict.segment` and
:class:`~napari_unet.core.predict.Predictor` take; ``napari-unet predict`` builds its flags
from the fields' metadata (:func:`option_fields`) and the napari dock its tooltips, so an
option is named, documented and checked in one place. Checks here need neither the model nor
the image (those that do run in :meth:`Predictor.request`), and run before any model loads.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from napari_unet.core.memory import parse_memory
from napari_unet.core.option_table import check_choice, describe_option, is_number, with_changes
from napari_unet.core.predict.blocks import MIN_BLOCK_EDGE
from napari_unet.names import OUTPUTS, Output

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class PredictOptions:
    """How to segment: checked once, when made, then read by every strategy and front end.

    Sizes per spatial axis take one number for all axes or one per axis; ``None`` means
    "choose for me" (sized to the memory, see docs/bigdata.md). Built from keywords
    (``PredictOptions(tile_shape=512)``) or from a provenance record (:meth:`from_dict`).
    """

    output: Output = field(
        default="labels",
        metadata=describe_option(
            "--output",
            "labels (the model's own kind), instances, semantic or probabilities",
            choices=OUTPUTS,
        ),
    )
    device: str = field(
        default="auto",
        metadata=describe_option("--device", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps"),
    )
    precision: str = field(
        default="auto",
        metadata=describe_option(
            "--precision",
            "auto (bf16 on CPUs with bf16 hardware, bf16/fp16 on GPUs), fp32, bf16 or fp16",
            choices=PRECISIONS,
        ),
    )
    channel: int | None = field(
        default=None,
        metadata=describe_option("--channel", "segment this channel of multichannel images", "N"),
    )
    diameter: float | None = field(
        default=None,
        metadata=describe_option(
            "--diameter",
            "typical object diameter in pixels: images are rescaled to the model's training "
            "object size (see `napari-unet models`) and the labels back",
            "PX",
        ),
    )
    test_time_augmentation: bool | None = field(
        default=None,
        metadata=describe_option(
            "--tta",
            "average each tile over its 8 flips and rotations (8x the time; the paper's EM "
            "result used it); default: as the model's card says, --no-tta to turn it off",
        ),
    )
    tile_shape: int | tuple[int, ...] | None = field(
        default=None,
        metadata=describe_option(
            "--tile", "largest tile, e.g. 512 or 64,256,256", "PX", sizes=True
        ),
    )
    overlap: int | tuple[int, ...] | None = field(
        default=None,
        metadata=describe_option(
            "--overlap", "pixels shared by neighbouring tiles", "PX", sizes=True
        ),
    )
    batch_size: int | None = field(
        default=None, metadata=describe_option("--batch-size", "tiles per forward pass", "N")
    )
    memory_limit: int | None = field(
        default=None,
        metadata=describe_option(
            "--memory",
            "most memory this process may use, e.g. 2GB (default: a quarter of the free "
            "memory, at most 4 GB more than the model takes); blocks and tiles are sized to it",
            "SIZE",
            type=str,  # "2GB": parsed and checked by the options, not by argparse
        ),
    )
    block_shape: tuple[int, int, int] | None = field(
        default=None,
        metadata=describe_option(
            "--block", "block size in pixels, e.g. 2048 or 16,1024,1024", "PX", sizes=True
        ),
    )
    halo: tuple[int, int, int] | None = field(
        default=None,
        metadata=describe_option(
            "--halo",
            "post-processing context around each block, e.g. 32 or 2,32,32 "
            "(default: 2 slices in Z and 32 pixels in Y and X for objects)",
            "PX",
            sizes=True,
        ),
    )

    def __post_init__(self) -> None:
        checked = {
            "output": check_choice(self.output, OUTPUTS, "output/--output"),
            "precision": check_choice(self.precision, PRECISIONS, "precision/--precision"),
            "device": _device_name(self.device),
            "channel": _channel(self.channel),
            "diameter": _diameter(self.diameter),
            "test_time_augmentation": _flag(self.test_time_augmentation, "test_time_augmentation"),
            "tile_shape": whole_numbers(self.tile_shape, TILE_OPTION, 1),
            "overlap": whole_numbers(self.overlap, OVERLAP_OPTION, 0),
            "batch_size": _batch_size(self.batch_size),
            "memory_limit": None if self.memory_limit is None else parse_memory(self.memory_limit),
            "block_shape": _block_shape(self.block_shape),
            "halo": per_axis(whole_numbers(self.halo, HALO_OPTION, 0), 3, HALO_OPTION),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PredictOptions:
        """Rebuild from :meth:`as_dict` (a provenance record, a dask worker's copy)."""
        return with_changes(cls, None, values, "prediction")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples as lists), as written beside every output."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
        }


def option_fields() -> Iterator[Field[Any]]:
    """Return the options with their metadata (flag, help, metavar, choices), in order."""
    return iter(fields(PredictOptions))


def with_options(options: PredictOptions | None, changes: dict[str, Any]) -> PredictOptions:
    """``options`` (or the defaults) with the keywords a call gave on top, checked again."""
    return with_changes(PredictOptions, options, changes, "prediction")


TILE_OPTION, OVERLAP_OPTION = "tile_shape/--tile", "overlap/--overlap"
BLOCK_OPTION, BATCH_OPTION = "block_shape/--block", "batch_size/--batch-size"
HALO_OPTION = "halo/--halo"
"""How messages name the options: as the API and the CLI spell them."""


def whole_numbers(value: Any, name: str, minimum: int) -> int | tuple[int, ...] | None:
    """``value`` (one number, or one per axis) as whole numbers of at least ``minimum``.

    Integral floats pass (``512.0``); booleans, fractions, NaN, infinities and text do not.
    Values beyond the image are fine: they mean the whole image.
    """
    if value is None:
        return None
    single = (
        not isinstance(value, Iterable)
        or isinstance(value, str | bytes)
        or (isinstance(value, np.ndarray) and value.ndim == 0)
    )
    wholes = tuple(_whole(v, name) for v in ([value] if single else value))
    if wholes and min(wholes) < minimum:  # none at all: the axis count says what is wrong
        raise ValueError(f"{name} must be at least {minimum}; got {reprlib.repr(value)}")
    return wholes[0] if single else wholes


def per_axis(value: int | tuple[int, ...] | None, count: int, name: str) -> tuple[int, ...] | None:
    """One value for each of ``count`` spatial axes: one number for all, or one per axis."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value,) * count
    if len(value) != count:
        axes = ", ".join("ZYX"[-count:])
        raise ValueError(
            f"{name} takes one number or {count}, one per spatial axis ({axes}); "
            f"got {len(value)}: {value}"
        )
    return value


def _whole(value: Any, name: str) -> int:
    """One whole number of ``name``; one line naming the option for anything else."""
    if is_number(value) and (
        isinstance(value, numbers.Integral) or (math.isfinite(value) and value == int(value))
    ):
        return int(value)
    raise ValueError(f"{name} takes whole numbers of pixels; {reprlib.repr(value)} is not one")


def _device_name(value: Any) -> str:
    """Check a device name's form; whether the device is there is asked when the model loads."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"device/--device must be a name such as auto, cpu or cuda:0; not {value!r}"
        )
    return value.strip()


def _channel(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"channel/--channel must be a channel index (0, 1, ...); not {value!r}")
    return int(value)


def _diameter(value: Any) -> float | None:
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"diameter/--diameter must be a positive number of pixels; not {reprlib.repr(value)}"
        )
    return float(value)


def _flag(value: Any, name: str) -> bool | None:
    """Check an on/off option: ``True``, ``False`` or ``None`` (the model decides)."""
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise ValueError(f"{name}/--tta must be True, False or None; not {reprlib.repr(value)}")


def _batch_size(value: Any) -> int | None:
    """Tiles per forward pass: one whole number of at least 1.

    A batch larger than a block's tiles runs all of them at once (the out-of-memory ladder
    halves it where they do not fit).
    """
    batch = whole_numbers(value, BATCH_OPTION, 1)
    if isinstance(batch, tuple):
        raise ValueError(f"{BATCH_OPTION} takes one whole number; got {reprlib.repr(value)}")
    return batch


def _block_shape(value: Any) -> tuple[int, ...] | None:
    """``(Z, Y, X)`` block cores; at least :data:`MIN_BLOCK_EDGE` pixels in Y and X."""
    block = per_axis(whole_numbers(value, BLOCK_OPTION, 1), 3, BLOCK_OPTION)
    if block is not None and min(block[1:]) < MIN_BLOCK_EDGE:
        raise ValueError(
            f"{BLOCK_OPTION} {reprlib.repr(value)}: blocks must be at least {MIN_BLOCK_EDGE} "
            "pixels in Y and X (smaller ones read their network context again for every few "
            "pixels); leave it out to size blocks to the memory"
        )
    return block
