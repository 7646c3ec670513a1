"""Fine-tuning: head first (LP-FT), partial freezing by named groups, discriminative learning rates.

>>> from transferpilot.finetune import Finetuner  # doctest: +SKIP
"""

from transferpilot.finetune._checkpoint import load_checkpoint, save_checkpoint
from transferpilot.finetune._groups import (
    GroupSpec,
    freeze,
    frozen_patterns,
    param_groups,
    set_batchnorm_mode,
)
from transferpilot.finetune._loop import EpochLog, Finetuner, FitResult, lr_lambda

__all__ = [
    "EpochLog",
    "Finetuner",
    "FitResult",
    "GroupSpec",
    "freeze",
    "frozen_patterns",
    "load_checkpoint",
    "lr_lambda",
    "param_groups",
    "save_checkpoint",
    "set_batchnorm_mode",
]
