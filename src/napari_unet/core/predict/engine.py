"""The engine as the strategies see it: what blockwise, cluster and object-size runs may use.

The strategies (:mod:`.blockwise`, :mod:`.distributed`, :mod:`.object_size`) are written
against this interface, not against :class:`~napari_unet.core.predict.Predictor`'s
internals, so the Predictor can change behind it and the strategies never import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from napari_unet.core.axes import CanonicalView
    from napari_unet.core.models.model_types import Model
    from napari_unet.core.predict.inference import RunSettings
    from napari_unet.core.predict.options import PredictOptions
    from napari_unet.core.predict.request import Request


class Engine(Protocol):
    """A loaded model and its checked options, able to predict one block's window."""

    model: Model
    options: PredictOptions
    memory_limit: int | None

    def settings(self, kind: str, device: str | None = None) -> RunSettings:
        """One run's device, network and memory sizes."""

    def window_logits(
        self,
        view: CanonicalView,
        request: Request,
        settings: RunSettings,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Blended logits ``(K, Z, Y, X)`` of one block's window."""

    def tiles_per_window(self, shape: tuple[int, int, int], settings: RunSettings) -> int:
        """How many tiles a window takes (progress totals)."""

    def smaller_settings(self, settings: RunSettings, window: Sequence[int]) -> RunSettings:
        """Return the next rung of the out-of-memory ladder."""

    def request(
        self, image: Any, axes: str | None, output: str = "labels", channel: int | None = None
    ) -> Request:
        """Check an image (the object-size strategy's rescaled one) against model and options."""

    def run(
        self,
        request: Request,
        progress: Any = None,
        cancel: Any = None,
        out: Any = None,
        client: Any = None,
    ) -> Any:
        """Carry out a checked request, block by block."""
