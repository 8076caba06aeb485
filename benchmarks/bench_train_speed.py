"""Training steps per second in fp32 and under bf16 autocast, for the shipped architectures.

    python benchmarks/bench_train_speed.py [--steps 4] [--threads 2]

Each step is what ``train`` does: a forward pass of a batch (channels-last), the loss, the
backward pass and an Adam update, on random data of the shipped recipes' batch shapes
(``nuclei``: 8 x 192 x 192, 4 outputs; ``em-membranes``: 4 x 256 x 256, 2 outputs). The first
step warms up and is not timed. Prints whether this CPU has bf16 hardware (AMX or
AVX-512 BF16): without it, bf16 is emulated and slower, and ``precision="auto"`` trains in fp32.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from napari_unet.core.device import autocast, cpu_has_fast_bf16
from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.models.registry import load_model

SHAPES = {"nuclei": (8, 192), "em-membranes": (4, 256)}


def steps_per_second(config: UNetConfig, batch: int, size: int, dtype, steps: int) -> float:
    torch.manual_seed(0)
    network = UNet(config).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    inputs = torch.randn(batch, config.in_channels, size, size).to(
        memory_format=torch.channels_last
    )
    target = torch.randint(0, config.out_channels, (batch, size, size))
    timings = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast("cpu", dtype):
            logits = network(inputs)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    return steps / sum(timings[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, bf16 hardware: {cpu_has_fast_bf16()}"
    )
    for name, (batch, size) in SHAPES.items():
        config = load_model(name).description.architecture
        fp32 = steps_per_second(config, batch, size, None, args.steps)
        print(f"{name:<13} batch {batch}x{size}x{size}: fp32 {fp32:.3f} steps/s", flush=True)
        bf16 = steps_per_second(config, batch, size, torch.bfloat16, args.steps)
        print(
            f"{name:<13} batch {batch}x{size}x{size}: bf16 {bf16:.3f} steps/s, "
            f"bf16/fp32 {bf16 / fp32:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
