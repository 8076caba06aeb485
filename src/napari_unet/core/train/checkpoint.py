"""Training checkpoints: the whole state of a run, written atomically and loaded without code.

Why a class: the run loop only asks "is a save due?" and "save"; what a checkpoint holds
(weights, optimiser, schedule, mixed-precision scaler, random generators, weight average) is
decided here, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.train.averaging import WeightAverage

CHECKPOINT_FILE = "last.pt"
BEST_DIR = "best"


@dataclass
class RunState:
    """Where a run stands; everything here is checkpointed."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    """Training time before this process took over the run (for time budgets)."""


@dataclass
class TrainingState:
    """The live objects a checkpoint saves and restores."""

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    rng: np.random.Generator
    average: WeightAverage | None


class Checkpointer:
    """Writes ``last.pt`` in ``folder`` every ``interval_s`` seconds and when asked.

    Without a folder it does nothing, so the run loop needs no special case.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, interval_s: float = 300.0) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.interval_s = interval_s
        self._last_save = time.monotonic()

    @property
    def path(self) -> Path | None:
        """Where the last state is written, if anywhere."""
        return None if self.folder is None else self.folder / CHECKPOINT_FILE

    def due(self) -> bool:
        """Whether the interval since the last save has passed."""
        return self.folder is not None and time.monotonic() - self._last_save > self.interval_s

    def save(self, run: RunState, state: TrainingState) -> None:
        """Write the whole training state atomically (tensors and plain values only)."""
        self._last_save = time.monotonic()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        values = {
            "network": state.network.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "run": {k: v for k, v in vars(run).items() if k != "best_state"},
            "best_state": run.best_state,
            "average": None if state.average is None else state.average.state_dict(),
            "numpy_rng": state.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.path.with_suffix(".tmp")
        torch.save(values, tmp)
        os.replace(tmp, self.path)

    def resume(self, state: TrainingState) -> RunState:
        """Restore the last saved state into ``state``; a fresh run when there is none.

        Loads tensors and plain values only (``weights_only``), never code.
        """
        if self.path is None or not self.path.is_file():
            return RunState()
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        state.network.load_state_dict(saved["network"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            state.scaler.load_state_dict(saved["scaler"])
        state.rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if state.average is not None and saved.get("average") is not None:
            state.average.load_state_dict(saved["average"])
        return RunState(**saved["run"], best_state=saved["best_state"])
