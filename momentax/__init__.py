"""momentax: SGD with momentum as exactly specified, validated Optax transformations.

Three layers, each importing only those below it:

* ``momentax``: the optimizer (transforms, their states, hyperparameter checks).
* ``momentax.training``: train steps, ``fit``, packing, placement, checkpoints.
* ``momentax.tasks``: the main job (the write-ups' tasks, command line, plots).
"""

import importlib
from typing import Any

from momentax import hyperparams as hyperparams
from momentax._alias import CONVENTIONS as CONVENTIONS
from momentax._alias import Convention as Convention
from momentax._alias import momentum as momentum
from momentax._autotune import autotune as autotune
from momentax._autotune_state import AutotuneState as AutotuneState
from momentax._codegen import uses_single_sweep as uses_single_sweep
from momentax._curvature import CurvatureEstimate as CurvatureEstimate
from momentax._curvature import estimate_curvature as estimate_curvature
from momentax._hyperparams import HyperParam as HyperParam
from momentax._momentum import scale_by_momentum as scale_by_momentum
from momentax._state import CountedMomentumState as CountedMomentumState
from momentax._state import MomentumState as MomentumState
from momentax._tuning import HeavyBallTuning as HeavyBallTuning
from momentax._tuning import heavy_ball_tuning as heavy_ball_tuning

__version__ = "0.2.0.dev0"

__all__ = [
    "CONVENTIONS",
    "AutotuneState",
    "Convention",
    "CountedMomentumState",
    "CurvatureEstimate",
    "HeavyBallTuning",
    "HyperParam",
    "MomentumState",
    "__version__",
    "autotune",
    "estimate_curvature",
    "heavy_ball_tuning",
    "hyperparams",
    "momentum",
    "scale_by_momentum",
    "uses_single_sweep",
]


_LAYERS_ABOVE = ("training", "tasks")


def __getattr__(name: str) -> Any:
    """Imports the layers above on first use: ``momentax.training.fit`` works.

    ``import momentax`` itself loads the optimizer alone.
    """
    if name in _LAYERS_ABOVE:
        return importlib.import_module(f"momentax.{name}")
    raise AttributeError(f"module 'momentax' has no attribute {name!r}")
