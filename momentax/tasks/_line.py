"""The line-fitting task momentax started from: data, model, loss and optimum."""

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from momentax import hyperparams as hp

Params = dict[str, jax.Array]


class Batch(NamedTuple):
    """Holds a set of points ``(x, y)``, as two 1-D arrays of equal length."""

    x: jax.Array
    y: jax.Array


class Reference(NamedTuple):
    """Holds the training settings a task was first run with.

    Attributes:
        epochs: Number of full-batch epochs (one step each).
        learning_rate: The learning rate.
        momentum: The momentum.
    """

    epochs: int
    learning_rate: float
    momentum: float


class LineTask(NamedTuple):
    """Holds a line-fitting task.

    Attributes:
        name: ``"noisy"`` or ``"tiny"``.
        train: The points trained on (full batch).
        test: The held-out points, or None when the task has no test split.
        true_params: The ``{"k", "b"}`` the data was generated from.
        reference: The settings of the write-up the task comes from.
        write_up: The title of that write-up (:data:`BLOG_TITLE` or
            :data:`NOTEBOOK_TITLE`), or ``""`` for a task of no write-up.
    """

    name: str
    train: Batch
    test: Batch | None
    true_params: dict[str, float]
    reference: Reference
    write_up: str = ""


BLOG_TITLE = "Gradient Descent: Exploring Momentum"
"""The title of the blog post the noisy task comes from."""

NOTEBOOK_TITLE = "SGD with Momentum (From Scratch)"
"""The title of the notebook the tiny task comes from."""


NOISY_REFERENCE = Reference(epochs=450, learning_rate=0.01, momentum=0.93)
"""The settings of "Gradient Descent: Exploring Momentum".

450 full-batch epochs, learning rate 0.01, momentum 0.93.
"""

TINY_REFERENCE = Reference(epochs=20, learning_rate=0.1, momentum=0.9)
"""The settings of "SGD with Momentum (From Scratch)".

20 full-batch epochs, learning rate 0.1, momentum 0.9.
"""


def _finite(name: str, value: Any) -> float:
    # numbers.Real covers NumPy's real scalars; bool is a number to Python only.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number (a Python or NumPy int or float); "
            f"got {value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return float(value)


def _pair(name: str, value: Any) -> tuple[float, float]:
    """``value`` as ``(low, high)``: two finite real numbers."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a pair (low, high) of real numbers, e.g. (0.0, 1.0); "
            f"got {value!r}."
        ) from None
    return _finite(f"{name}[0]", low), _finite(f"{name}[1]", high)


def _float_dtype(dtype: Any) -> jnp.dtype:
    checked = hp.check_dtype("dtype", dtype)
    assert checked is not None
    return checked


def noisy_line(
    seed: int = 0,
    *,
    slope: float = 4.0,
    intercept: float = 3.0,
    num_points: int = 100,
    x_range: tuple[float, float] = (0.0, 1.0),
    noise_mean: float = 0.0,
    noise_std: float = 1.0,
    test_fraction: float = 0.2,
    dtype: Any = jnp.float32,
) -> LineTask:
    r"""Returns the task of the blog post "Gradient Descent: Exploring Momentum".

    A line with Gaussian noise, split into training and test points.

    Draws :math:`x_i \sim U(\text{x\_range})` and
    :math:`y_i = \text{slope} \cdot x_i + \text{intercept} + \varepsilon_i`,
    :math:`\varepsilon_i \sim N(\text{noise\_mean}, \text{noise\_std}^2)`, with
    NumPy's PCG64 generator seeded by ``seed``, so the data is the same on every
    machine and backend. The last ``round(num_points * test_fraction)`` points are
    the test split. The blog post gives the noise (mean 0, std 1) but not its
    line, sizes or x range; the defaults here were chosen so that its settings
    (:data:`NOISY_REFERENCE`) show what it describes, and so that the
    problem is ill-conditioned enough (condition number about 19) for momentum to
    matter. The numbers may be Python or NumPy ints and floats.

    Args:
        seed: Seed of the data (an integer >= 0).
        slope: The generating ``k``.
        intercept: The generating ``b``.
        num_points: Number of points, train and test together.
        x_range: ``(low, high)`` of the uniform ``x``, ``low < high``.
        noise_mean: Mean of the noise added to ``y``.
        noise_std: Standard deviation of the noise (>= 0).
        test_fraction: Fraction of the points held out, in [0, 1); 0 means no
            test split. A nonzero fraction must round to at least 1 test point,
            and at least 2 points must remain to train on.
        dtype: Floating dtype of the arrays.

    Returns:
        The :class:`LineTask`, with :data:`NOISY_REFERENCE` as its reference.

    Examples:
        >>> from momentax import tasks
        >>> task = tasks.noisy_line(seed=0)
        >>> task.train.x.shape, task.test.x.shape
        ((80,), (20,))
    """
    seed = hp.check_integer("seed", seed, low=0)
    slope = _finite("slope", slope)
    intercept = _finite("intercept", intercept)
    low, high = _pair("x_range", x_range)
    if not low < high:
        raise ValueError(
            f"x_range must be (low, high) with low < high; got {x_range!r}."
        )
    noise_mean = _finite("noise_mean", noise_mean)
    noise_std = _finite("noise_std", noise_std)
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std!r}.")
    test_fraction = _finite("test_fraction", test_fraction)
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}.")
    num_points = hp.check_integer("num_points", num_points, low=2)
    num_test = round(num_points * test_fraction)
    if test_fraction > 0 and num_test == 0:
        raise ValueError(
            f"test_fraction={test_fraction} of num_points={num_points} rounds to no "
            "test points; use more points, or test_fraction=0 for no test split."
        )
    if num_points - num_test < 2:
        raise ValueError(
            f"num_points must leave at least 2 training points; got num_points="
            f"{num_points} with test_fraction={test_fraction}."
        )
    dtype = _float_dtype(dtype)
    rng = np.random.default_rng(seed)
    x_host = rng.uniform(low, high, num_points)
    noise = rng.normal(noise_mean, noise_std, num_points)
    x = jnp.asarray(x_host, dtype)
    y = jnp.asarray(slope * x_host + intercept + noise, dtype)
    cut = num_points - num_test
    return LineTask(
        name="noisy",
        train=Batch(x[:cut], y[:cut]),
        test=Batch(x[cut:], y[cut:]) if num_test else None,
        true_params={"k": slope, "b": intercept},
        reference=NOISY_REFERENCE,
        write_up=BLOG_TITLE,
    )


def tiny_line(dtype: Any = jnp.float32) -> LineTask:
    """Returns the task of the notebook "SGD with Momentum (From Scratch)".

    The points of ``y = 2x`` at x = 1, 2, 3, with no test split.

    Args:
        dtype: Floating dtype of the arrays.

    Returns:
        The :class:`LineTask`, with :data:`TINY_REFERENCE` as its reference.

    Examples:
        >>> from momentax import tasks
        >>> tasks.tiny_line().train.y
        Array([2., 4., 6.], dtype=float32)
    """
    x = jnp.asarray([1.0, 2.0, 3.0], _float_dtype(dtype))
    return LineTask(
        name="tiny",
        train=Batch(x, 2.0 * x),
        test=None,
        true_params={"k": 2.0, "b": 0.0},
        reference=TINY_REFERENCE,
        write_up=NOTEBOOK_TITLE,
    )


TASKS: dict[str, Callable[..., LineTask]] = {"noisy": noisy_line, "tiny": tiny_line}
"""The tasks by name, as the command line's ``--task`` chooses them."""


def init_params(dtype: Any = jnp.float32) -> Params:
    """Returns the starting point of every run, ``{"k": 0, "b": 0}``.

    Fresh arrays on every call, so a run that donates them leaves others intact.
    """
    dtype = _float_dtype(dtype)
    return {"k": jnp.zeros((), dtype), "b": jnp.zeros((), dtype)}


def predict(params: Params, x: jax.Array) -> jax.Array:
    """The model, ``k * x + b``."""
    return params["k"] * x + params["b"]


def mse_loss(params: Params, batch: Batch) -> jax.Array:
    r"""The mean squared error :math:`\frac1n \sum_i (k x_i + b - y_i)^2`.

    Examples:
        >>> from momentax import tasks
        >>> task = tasks.tiny_line()
        >>> print(f"{tasks.mse_loss(tasks.init_params(), task.train):.4f}")
        18.6667
    """
    return jnp.mean((predict(params, batch.x) - batch.y) ** 2)
