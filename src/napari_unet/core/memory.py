"""How much host memory is free, without importing torch (file readers need it too)."""

from __future__ import annotations

import os

FALLBACK_BYTES = 8 * 2**30
"""Assumed free memory where the system does not say (neither /proc/meminfo nor sysconf)."""


def available_ram_bytes() -> int:
    """Bytes of RAM the system can give without swapping (Linux ``MemAvailable``)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_BYTES
