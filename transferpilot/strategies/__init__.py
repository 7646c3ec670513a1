"""Transfer strategies, by the names used in ``params.yaml``.

>>> from transferpilot.config import TrainParams
>>> probe = create_strategy("linear", TrainParams())  # an unfitted scikit-learn estimator
>>> probe.kind
'logistic'
"""

from transferpilot.strategies import linear as _linear  # noqa: F401  (registration)
from transferpilot.strategies._registry import create_strategy, list_strategies, register_strategy
from transferpilot.strategies.linear import LinearProbe, SoftmaxLinearSVC
from transferpilot.strategies.persist import load_classifier, save_classifier

__all__ = [
    "LinearProbe",
    "SoftmaxLinearSVC",
    "create_strategy",
    "list_strategies",
    "load_classifier",
    "register_strategy",
    "save_classifier",
]
