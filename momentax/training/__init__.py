"""The training layer: train steps, ``fit``, packing, placement, checkpoints.

Jitted, donated train steps and a compiled multi-step ``fit`` for any Optax
optimizer, with packing of many small leaves, placement on device meshes and
checkpoints.

Built on the optimizer layer (:mod:`momentax`) and on nothing above it.
"""

from momentax.training._checkpoint import CheckpointManager as CheckpointManager
from momentax.training._checkpoint_legacy import (
    convert_checkpoint as convert_checkpoint,
)
from momentax.training._fit import FitResult as FitResult
from momentax.training._fit import fit as fit
from momentax.training._packing import Packed as Packed
from momentax.training._packing import pack as pack
from momentax.training._placement import Placement as Placement
from momentax.training._placement import opt_state_sharding as opt_state_sharding
from momentax.training._step import RECORDABLE as RECORDABLE
from momentax.training._step import StepInfo as StepInfo
from momentax.training._train_step import make_train_step as make_train_step

__all__ = [
    "RECORDABLE",
    "CheckpointManager",
    "FitResult",
    "Packed",
    "Placement",
    "StepInfo",
    "convert_checkpoint",
    "fit",
    "make_train_step",
    "opt_state_sharding",
    "pack",
]
