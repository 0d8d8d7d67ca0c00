"""momentax: SGD with momentum as exactly specified, validated Optax transformations."""

from momentax._hyperparams import HyperParam as HyperParam
from momentax._hyperparams import ScalarOrSchedule as ScalarOrSchedule
from momentax._momentum import CONVENTIONS as CONVENTIONS
from momentax._momentum import Convention as Convention
from momentax._momentum import momentum as momentum
from momentax._momentum import scale_by_momentum as scale_by_momentum
from momentax._state import MomentumState as MomentumState

__version__ = "0.1.0"

__all__ = [
    "CONVENTIONS",
    "Convention",
    "HyperParam",
    "MomentumState",
    "ScalarOrSchedule",
    "__version__",
    "momentum",
    "scale_by_momentum",
]
