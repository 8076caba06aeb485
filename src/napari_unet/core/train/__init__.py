"""Training and fine-tuning: one :func:`train` for the API, the CLI and the napari dock.

:mod:`.loop` runs the epochs; :mod:`.initial_model` builds or copies the network to start
from; :mod:`.training_data` and :mod:`.datasets` turn image/mask pairs into patches and
per-pixel :mod:`.targets`; :mod:`.augment` transforms them; :mod:`.losses` scores them;
:mod:`.averaging`, :mod:`.checkpoint` and :mod:`.time_budget` shape the run;
:mod:`.finetune_check` tells whether fine-tuning helped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_unet._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Augmenter": ".augment",
        "PHASES": ".loop",
        "TrainingProgress": ".loop",
        "train": ".loop",
    },
)

if TYPE_CHECKING:
    from .augment import Augmenter as Augmenter
    from .loop import PHASES as PHASES
    from .loop import TrainingProgress as TrainingProgress
    from .loop import train as train
