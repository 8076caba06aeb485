"""Which device and precision to run on, and how much GPU memory a prediction may use there."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def available_devices() -> list[str]:
    """Devices torch can run on here, best first: ``cuda:N``..., ``mps``, ``cpu``."""
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device = "auto") -> str:
    """Turn ``"auto"`` into the best device (cuda > mps > cpu); check any other choice."""
    if str(device) == "auto":
        return available_devices()[0].replace("cuda:0", "cuda")
    try:
        name = str(torch.device(device))
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {str(device)!r} is not a device name; available: {available_devices()}"
        ) from None
    kind = name.split(":")[0]
    usable = {d.split(":")[0] for d in available_devices()}
    if kind not in usable:
        raise ValueError(f"device {name!r} is not available here; available: {available_devices()}")
    return name


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512 BF16); else bf16 is slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_precision(precision: str, device: str) -> torch.dtype | None:
    """Return the autocast dtype for ``precision`` (auto, fp32, bf16, fp16); None for fp32.

    ``auto`` is bf16 on CPUs with bf16 hardware, bf16 (or fp16) on CUDA, fp16 on MPS, else fp32.
    """
    kind = device.split(":")[0]
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    choices = {
        "fp32": None,
        "float32": None,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if precision not in choices:
        raise ValueError(f"precision must be one of auto, {', '.join(choices)}; not {precision!r}")
    return choices[precision]


def autocast(device: str, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Mixed precision on ``device`` in ``dtype``, or plain fp32 for ``None``."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)


def memory_budget_bytes(device: str) -> int:
    """Bytes one batch of tiles may use on a GPU: half its free memory (a quarter on MPS).

    Host memory (the CPU) is sized by :func:`napari_unet.core.memory.plan_memory`.
    """
    kind = device.split(":")[0]
    if kind == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.5)
    if kind == "mps":
        return int(torch.mps.recommended_max_memory() * 0.25)
    raise ValueError(f"{device!r} is not a GPU; host memory is sized by core.memory.plan_memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says a device (or the host allocator) ran out of memory."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )
