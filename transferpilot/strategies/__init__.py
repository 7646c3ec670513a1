"""Transfer strategies, by the names used in ``params.yaml``: ``linear``, ``svm``, ``finetune``,
``baseline`` (no transfer) and ``pretrained`` (the ImageNet head as it is).

>>> get_strategy("svm").name
'svm'
>>> LinearClassifier(kind="linear").kind  # the scikit-learn estimator under linear/svm
'linear'
"""

from transferpilot.estimators import LinearClassifier, SoftmaxLinearSVC
from transferpilot.strategies import finetune as _finetune  # noqa: F401  (registration)
from transferpilot.strategies import linear as _linear  # noqa: F401  (registration)
from transferpilot.strategies import pretrained as _pretrained  # noqa: F401  (registration)
from transferpilot.strategies._registry import (
    STRATEGIES,
    Context,
    Strategy,
    get_strategy,
    list_strategies,
    register_strategy,
)
from transferpilot.strategies.persist import load_classifier, save_classifier

__all__ = [
    "STRATEGIES",
    "Context",
    "LinearClassifier",
    "SoftmaxLinearSVC",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "load_classifier",
    "register_strategy",
    "save_classifier",
]
