"""Checks of hyperparameter and option values, shared by every layer of momentax.

The optimizer validates its hyperparameters with these; the training layer and
the tasks validate their counts and dtypes with the same functions, so that
every error names the argument and the allowed values the same way.
"""

from momentax._hyperparams import HyperParam as HyperParam
from momentax._hyperparams import check_dtype as check_dtype
from momentax._hyperparams import check_hyperparam as check_hyperparam
from momentax._hyperparams import check_integer as check_integer

__all__ = ["HyperParam", "check_dtype", "check_hyperparam", "check_integer"]
