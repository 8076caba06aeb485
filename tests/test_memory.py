"""Memory planning: the working memory beyond what the process holds, split in two halves.

The process's resident memory and the system's free memory are fixed here, so every figure
is exact: one half of the working memory holds a forward pass (bytes per input pixel from the
network's width and precision), the other one block's maps (bytes per pixel by output kind).
"""

from __future__ import annotations

import pytest

from napari_unet.core import memory
from napari_unet.core.memory import MIN_WORKING_BYTES, MemoryPlan, plan_memory
from napari_unet.core.models.network import UNetConfig

GiB, MiB = 2**30, 2**20
HELD = 1 * GiB
"""What the process holds, as the tests pretend."""
CONFIG = UNetConfig(in_channels=1, out_channels=3, base_channels=16)
FP32_PER_PIXEL = 552 + 16 * 4
"""int(1.15 x 30 bytes x 16 base channels), plus 16 bytes per input and output channel."""
BF16_PER_PIXEL = 276 + 16 * 4
"""int(1.15 x 15 bytes x 16 base channels): half the activations, the same channel part."""
INSTANCES_PER_PIXEL = 96 + 8 * 3
"""The watershed's maps, plus two float32 copies per class."""


@pytest.fixture(autouse=True)
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process holds 1 GiB and the system has 8 GiB free, whatever runs beside the test."""
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: HELD)
    monkeypatch.setattr(memory, "available_ram_bytes", lambda: 8 * GiB)


def test_the_working_memory_is_split_in_halves_for_the_forward_pass_and_the_block():
    plan = plan_memory(HELD + 1 * GiB, CONFIG, half_precision=False, kind="instances")
    half = GiB // 2
    assert plan == MemoryPlan(half // FP32_PER_PIXEL, half // INSTANCES_PER_PIXEL)
    assert plan == MemoryPlan(871_543, 4_473_924)
    assert plan.forward_pixels * FP32_PER_PIXEL <= half < (plan.forward_pixels + 1) * FP32_PER_PIXEL


def test_bf16_fits_more_pixels_per_forward_pass_but_the_same_block():
    fp32 = plan_memory(HELD + 1 * GiB, CONFIG, half_precision=False, kind="instances")
    bf16 = plan_memory(HELD + 1 * GiB, CONFIG, half_precision=True, kind="instances")
    assert bf16.forward_pixels == GiB // 2 // BF16_PER_PIXEL == 1_579_032
    assert bf16.block_pixels == fp32.block_pixels  # post-processing is float32 either way
    # not twice as many: the per-channel part of the input and output does not halve
    assert bf16.forward_pixels / fp32.forward_pixels == pytest.approx(616 / 340, rel=1e-5)


@pytest.mark.parametrize(
    ("kind", "per_pixel"),
    [("probabilities", 40 + 8 * 3), ("semantic", 24 + 8 * 3), ("instances", 96 + 8 * 3)],
)
def test_each_output_kind_sizes_the_block_by_its_own_maps(kind, per_pixel):
    plan = plan_memory(HELD + 1 * GiB, CONFIG, half_precision=False, kind=kind)
    assert plan == MemoryPlan(GiB // 2 // FP32_PER_PIXEL, GiB // 2 // per_pixel)


def test_without_a_limit_the_plan_uses_a_quarter_of_the_free_memory_at_most_4_gib(monkeypatch):
    plan = plan_memory(None, CONFIG, half_precision=False, kind="semantic")
    assert plan.block_pixels == 2 * GiB // 2 // 48  # a quarter of 8 GiB free
    monkeypatch.setattr(memory, "available_ram_bytes", lambda: 64 * GiB)
    plan = plan_memory(None, CONFIG, half_precision=False, kind="semantic")
    assert plan.block_pixels == 4 * GiB // 2 // 48  # the cap, not 16 GiB
    monkeypatch.setattr(memory, "available_ram_bytes", lambda: 100 * MiB)
    plan = plan_memory(None, CONFIG, half_precision=False, kind="semantic")
    assert plan.block_pixels == MIN_WORKING_BYTES // 2 // 48  # never below the useful minimum


def test_the_smallest_useful_working_memory_is_planned_and_one_byte_less_refused():
    plan = plan_memory(HELD + MIN_WORKING_BYTES, CONFIG, half_precision=False, kind="instances")
    assert plan == MemoryPlan(64 * MiB // FP32_PER_PIXEL, 64 * MiB // INSTANCES_PER_PIXEL)
    with pytest.raises(ValueError, match="leaves 128 MiB beyond the 1 GiB this process"):
        plan_memory(HELD + MIN_WORKING_BYTES - 1, CONFIG, half_precision=False, kind="instances")


@pytest.mark.parametrize(
    ("limit", "leaves"), [(HELD + 100 * MiB, "100 MiB"), (HELD // 2, "0 B"), (1, "0 B")]
)
def test_a_limit_below_what_the_process_holds_plus_the_minimum_is_refused(limit, leaves):
    message = (
        rf"^memory_limit/--memory .+ leaves {leaves} beyond the 1 GiB this process already "
        r"holds; give at least 1\.12 GiB$"
    )
    with pytest.raises(ValueError, match=message):
        plan_memory(limit, CONFIG, half_precision=True, kind="semantic")


def test_a_network_too_wide_for_the_memory_still_gets_one_pixel():
    wide = UNetConfig(in_channels=1, out_channels=3, base_channels=10**8)
    plan = plan_memory(HELD + MIN_WORKING_BYTES, wide, half_precision=False, kind="instances")
    assert plan.forward_pixels == 1
