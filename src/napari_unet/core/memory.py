"""How much host memory one prediction may use, and how that sizes its tiles and blocks.

No torch here: file readers bound what they allocate with :func:`available_ram_bytes` too.

A prediction holds two things at once: the network's activations for one batch of tiles (the
forward pass) and one block's maps (logits, probabilities, labels) for post-processing. Both
are sized from one figure, ``memory_limit``: the bytes the whole process may reach. The
figures per pixel were measured on a CPU (see ``benchmarks/bench_bigdata.py``) and carry a
safety margin; the default limit is what the process holds now plus a quarter of the free
memory, at most :data:`DEFAULT_WORKING_CAP_BYTES`.
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_unet.core.models.network import UNetConfig

FALLBACK_BYTES = 8 * 2**30
"""Assumed free memory where the system does not say (neither /proc/meminfo nor sysconf)."""
DEFAULT_WORKING_CAP_BYTES = 4 * 2**30
"""By default a prediction adds at most this much to what the process already holds."""
MIN_WORKING_BYTES = 128 * 2**20
"""Below this much working memory no useful tile fits: the limit is refused."""
MAX_BLOCK_EDGE_2D = 1024
"""Blocks of 2D images are at most this many pixels a side: larger ones are no faster (the
next block goes through the network while one is post-processed) and cost more memory."""
MAX_BLOCK_VOXELS_3D = 2**24
"""Blocks of volumes are at most this many voxels (e.g. 16 x 1024 x 1024)."""
POST_BYTES_PER_PIXEL = {"probabilities": 40, "semantic": 24, "instances": 96}
"""Post-processing bytes per block pixel and class-independent part, per output kind.

Measured: logits and probabilities (two float32 copies per class), then the seeds, the
watershed's markers, mask and queue for instances."""


@dataclass(frozen=True)
class MemoryPlan:
    """Pixel counts that fit: one forward pass of tiles and one post-processing block."""

    forward_pixels: int
    """Network input pixels (voxels) one forward pass may hold, over the whole batch."""
    block_pixels: int
    """Output pixels (voxels) of one block, its halo included."""


def process_rss_bytes() -> int:
    """Resident memory of this process now (0 where the system does not say)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def available_ram_bytes() -> int:
    """Bytes of RAM the system can give without swapping (Linux ``MemAvailable``)."""
    found = _system_memory_bytes("MemAvailable", "SC_AVPHYS_PAGES")
    return FALLBACK_BYTES if found is None else found


def default_memory_limit() -> int:
    """Return what the process holds plus a quarter of the free memory (at most 4 GiB)."""
    working = min(DEFAULT_WORKING_CAP_BYTES, available_ram_bytes() // 4)
    return process_rss_bytes() + max(working, MIN_WORKING_BYTES)


MEMORY_OPTION = "memory_limit/--memory"
"""How messages name the memory option: as the API and the CLI spell it."""
MEMORY_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
"""Binary units: 2GB and 2GiB are both 2 * 2**30 bytes, as users of --memory mean them."""


def parse_memory(text: str | int | float) -> int:
    """Bytes from ``"2.5GB"``, ``"800M"``, ``"3GiB"`` or a plain number of bytes.

    Anything that is not a finite, positive size (booleans, ``"inf"``, ``"1e999"``, ``"nan"``,
    ``""``, ``"GB"``, ``"-1GB"``, under one byte) is refused with one line naming the option.
    """
    if isinstance(text, bool) or not isinstance(text, str | numbers.Real):
        raise ValueError(
            f"{MEMORY_OPTION} must be a size such as 2GB or a number of bytes, "
            f"not {reprlib.repr(text)}"
        )
    try:
        number = _memory_number(text) if isinstance(text, str) else float(text)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{MEMORY_OPTION} must be a finite size, not {reprlib.repr(text)}")
    if number < 1:
        raise ValueError(
            f"{MEMORY_OPTION} must be positive (at least 1 byte), not {reprlib.repr(text)}"
        )
    return int(number)


def _memory_number(text: str) -> float:
    """Return the bytes ``2.5 GiB`` or the like names (maybe infinite or negative)."""
    cleaned = text.strip().upper().replace("IB", "B").removesuffix("B").strip()
    unit = cleaned[-1:] if cleaned[-1:] in MEMORY_UNITS else ""
    try:
        return float(cleaned.removesuffix(unit).strip()) * MEMORY_UNITS[unit]
    except ValueError:
        raise ValueError(
            f"{MEMORY_OPTION}: cannot read a memory size from {reprlib.repr(text)}; "
            "write e.g. 2GB, 800MB or 3.5GiB"
        ) from None


def total_ram_bytes() -> int | None:
    """Bytes of RAM this machine has (Linux ``MemTotal``); ``None`` where the system won't say."""
    return _system_memory_bytes("MemTotal", "SC_PHYS_PAGES")


def _system_memory_bytes(meminfo_key: str, sysconf_pages: str) -> int | None:
    """Read a figure of ``/proc/meminfo`` (Linux), else ``sysconf`` pages, else ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(f"{meminfo_key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf(sysconf_pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def reachable_bytes() -> int:
    """Memory this process may reach without swapping: what it holds plus the free memory."""
    return process_rss_bytes() + available_ram_bytes()


def check_memory_limit(limit: int) -> int:
    """Return ``limit``, clamped (with a warning) where it is more than this machine has.

    A limit beyond the machine's RAM means "no limit" to the user, never that blocks may swap:
    it becomes what this process can reach now. A limit that leaves no working memory beyond
    what the process already holds is refused before any work starts.
    """
    total = total_ram_bytes()
    if total is not None and limit > total:
        reachable = reachable_bytes()
        warnings.warn(
            f"napari-unet: {MEMORY_OPTION} {format_bytes(limit)} is more than this machine has "
            f"({format_bytes(total)} of RAM); using {format_bytes(reachable)}, what this process "
            "holds plus the free memory",
            RuntimeWarning,
            stacklevel=3,
        )
        limit = reachable
    working_memory(limit)
    return limit


def working_memory(limit: int) -> int:
    """Bytes ``limit`` leaves beyond what the process holds; refused below the useful minimum."""
    held = process_rss_bytes()
    working = limit - held
    if working < MIN_WORKING_BYTES:
        raise ValueError(
            f"{MEMORY_OPTION} {format_bytes(limit)} leaves {format_bytes(max(0, working))} "
            f"beyond the {format_bytes(held)} this process already holds; give at least "
            f"{format_bytes(held + MIN_WORKING_BYTES)}"
        )
    return working


def forward_bytes_per_pixel(config: UNetConfig, half_precision: bool) -> int:
    """Bytes one network input pixel costs in a forward pass, with a 1.15x safety margin.

    Measured on CPU with channels-last memory: about 15 bytes per base channel in bf16 (a
    24-channel network: 360 bytes per pixel) and twice that in fp32.
    """
    per_channel = 15 if half_precision else 30
    channels = config.in_channels + config.out_channels
    return int(1.15 * per_channel * config.base_channels) + 16 * channels


def plan_memory(
    memory_limit: int | None,
    config: UNetConfig,
    half_precision: bool,
    kind: str,
) -> MemoryPlan:
    """Split the working memory (``memory_limit`` minus what the process holds) in two halves.

    One half holds a forward pass, the other one block's maps; the caller clips blocks to
    :data:`MAX_BLOCK_EDGE_2D` / :data:`MAX_BLOCK_VOXELS_3D`, since larger ones do not run faster.
    """
    working = working_memory(default_memory_limit() if memory_limit is None else memory_limit)
    return MemoryPlan(
        forward_pixels=max(1, working // 2 // forward_bytes_per_pixel(config, half_precision)),
        block_pixels=max(1, working // 2 // post_bytes_per_pixel(config, kind)),
    )


def post_bytes_per_pixel(config: UNetConfig, kind: str) -> int:
    """Bytes one block pixel costs in post-processing: its maps, two float32 copies per class."""
    return POST_BYTES_PER_PIXEL[kind] + 8 * config.out_channels


def format_bytes(size: float) -> str:
    """``size`` in the largest binary unit that keeps a number of at least 1 (``"1.50 GiB"``)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while abs(size) >= 1024 and power < len(units) - 1:
        size /= 1024
        power += 1
    return f"{size:.0f} B" if power == 0 else f"{size:.3g} {units[power]}"
