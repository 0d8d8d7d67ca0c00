"""The tasks momentax trains on: the lines it started from, and a wider one.

The two line-fitting tasks, from the blog post "Gradient Descent: Exploring
Momentum" (noisy) and the notebook "SGD with Momentum (From Scratch)" (tiny), the
comparison run on them, and the many-feature regression that the sharding
examples scale out.

Written once here and imported by the command line, the tests and the benchmarks.
"""

from momentax.tasks._compare import Contender as Contender
from momentax.tasks._compare import Run as Run
from momentax.tasks._compare import SignChange as SignChange
from momentax.tasks._compare import contenders as contenders
from momentax.tasks._compare import diverged_epoch as diverged_epoch
from momentax.tasks._compare import epochs_to_tolerance as epochs_to_tolerance
from momentax.tasks._compare import momentum_problem as momentum_problem
from momentax.tasks._compare import run as run
from momentax.tasks._compare import sign_change as sign_change
from momentax.tasks._exact import Optimum as Optimum
from momentax.tasks._exact import curvature_bounds as curvature_bounds
from momentax.tasks._exact import exact_loss as exact_loss
from momentax.tasks._exact import hessian as hessian
from momentax.tasks._exact import least_squares as least_squares
from momentax.tasks._line import BLOG_TITLE as BLOG_TITLE
from momentax.tasks._line import NOISY_REFERENCE as NOISY_REFERENCE
from momentax.tasks._line import NOTEBOOK_TITLE as NOTEBOOK_TITLE
from momentax.tasks._line import TASKS as TASKS
from momentax.tasks._line import TINY_REFERENCE as TINY_REFERENCE
from momentax.tasks._line import Batch as Batch
from momentax.tasks._line import LineTask as LineTask
from momentax.tasks._line import Reference as Reference
from momentax.tasks._line import init_params as init_params
from momentax.tasks._line import mse_loss as mse_loss
from momentax.tasks._line import noisy_line as noisy_line
from momentax.tasks._line import predict as predict
from momentax.tasks._line import tiny_line as tiny_line
from momentax.tasks._wide import WIDE_REFERENCE as WIDE_REFERENCE
from momentax.tasks._wide import WideTask as WideTask
from momentax.tasks._wide import linear_init as linear_init
from momentax.tasks._wide import linear_loss as linear_loss
from momentax.tasks._wide import wide_regression as wide_regression

__all__ = [
    "BLOG_TITLE",
    "NOISY_REFERENCE",
    "NOTEBOOK_TITLE",
    "TASKS",
    "TINY_REFERENCE",
    "WIDE_REFERENCE",
    "Batch",
    "Contender",
    "LineTask",
    "Optimum",
    "Reference",
    "Run",
    "SignChange",
    "WideTask",
    "contenders",
    "curvature_bounds",
    "diverged_epoch",
    "epochs_to_tolerance",
    "exact_loss",
    "hessian",
    "init_params",
    "least_squares",
    "linear_init",
    "linear_loss",
    "momentum_problem",
    "mse_loss",
    "noisy_line",
    "predict",
    "run",
    "sign_change",
    "tiny_line",
    "wide_regression",
]
