"""momentax: SGD with momentum as exactly specified, validated Optax transformations."""

from momentax._checkpoint import restore_checkpoint as restore_checkpoint
from momentax._checkpoint import save_checkpoint as save_checkpoint
from momentax._hyperparams import HyperParam as HyperParam
from momentax._hyperparams import ScalarOrSchedule as ScalarOrSchedule
from momentax._momentum import CONVENTIONS as CONVENTIONS
from momentax._momentum import Convention as Convention
from momentax._momentum import momentum as momentum
from momentax._momentum import scale_by_momentum as scale_by_momentum
from momentax._packing import Packed as Packed
from momentax._packing import pack as pack
from momentax._sharding import Placement as Placement
from momentax._sharding import opt_state_sharding as opt_state_sharding
from momentax._state import MomentumState as MomentumState
from momentax._training import RECORDABLE as RECORDABLE
from momentax._training import FitResult as FitResult
from momentax._training import StepInfo as StepInfo
from momentax._training import fit as fit
from momentax._training import get_velocity as get_velocity
from momentax._training import make_train_step as make_train_step
from momentax._tuning import HeavyBallTuning as HeavyBallTuning
from momentax._tuning import heavy_ball_tuning as heavy_ball_tuning

__version__ = "0.1.0"

__all__ = [
    "CONVENTIONS",
    "RECORDABLE",
    "Convention",
    "FitResult",
    "HeavyBallTuning",
    "HyperParam",
    "MomentumState",
    "Packed",
    "Placement",
    "ScalarOrSchedule",
    "StepInfo",
    "__version__",
    "fit",
    "get_velocity",
    "heavy_ball_tuning",
    "make_train_step",
    "momentum",
    "opt_state_sharding",
    "pack",
    "restore_checkpoint",
    "save_checkpoint",
    "scale_by_momentum",
]
