"""Many-feature linear regression: the line task grown to shard over devices.

The same model as the line, ``y = x W + b``, with ``x`` of ``num_features``
columns and ``y`` of ``num_outputs``: large enough that its params, velocity and
examples can be split over a device mesh, small enough to train in seconds.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from momentax import hyperparams as hp
from momentax.tasks._line import Batch, Reference


class WideTask(NamedTuple):
    """Holds a many-feature regression task.

    Attributes:
        train: The examples: ``x`` of shape ``(num_examples, num_features)`` and
            ``y`` of shape ``(num_examples, num_outputs)``.
        true_params: The ``{"w", "b"}`` the data was generated from.
        reference: Settings that converge on it.
    """

    train: Batch
    true_params: dict[str, np.ndarray]
    reference: Reference


WIDE_REFERENCE = Reference(epochs=200, learning_rate=0.05, momentum=0.9)
"""Full-batch settings for :func:`wide_regression`'s defaults: lr 0.05, momentum 0.9."""


def _float_dtype(dtype: Any) -> jnp.dtype:
    """``dtype``, checked to be a floating dtype (regression data is real-valued)."""
    checked = hp.check_dtype("dtype", dtype)
    if checked is None:
        raise TypeError("dtype must be a floating dtype such as jnp.float32; got None.")
    return checked


def wide_regression(
    num_examples: int = 512,
    num_features: int = 256,
    num_outputs: int = 8,
    *,
    noise: float = 0.1,
    seed: int = 0,
    dtype: Any = jnp.float32,
) -> WideTask:
    r"""Returns a noisy linear regression task with many features.

    Draws :math:`x_{ij} \sim N(0, 1)`, true params :math:`W_{jk} \sim N(0,
    1/\text{num\_features})` and :math:`b_k \sim N(0, 1)`, and
    :math:`y = x W + b + \epsilon` with :math:`\epsilon \sim N(0, \text{noise}^2)`,
    all from NumPy's generator seeded with ``seed``, so every process of a
    multi-process run builds the same data.

    Args:
        num_examples: Number of examples (the batch dimension).
        num_features: Number of input features (rows of ``W``).
        num_outputs: Number of outputs (columns of ``W`` and length of ``b``).
        noise: The standard deviation of the label noise, >= 0.
        seed: The random seed.
        dtype: The floating dtype of the arrays (float16, bfloat16, float32 or
            float64): integer data would truncate the features and labels.

    Returns:
        The :class:`WideTask`.

    Raises:
        ValueError: A size is not an integer >= 1, ``noise`` is negative, or
            ``dtype`` is not a floating dtype.

    Examples:
        >>> from momentax import tasks
        >>> task = tasks.wide_regression(num_examples=16, num_features=4, num_outputs=2)
        >>> task.train.x.shape, task.train.y.shape
        ((16, 4), (16, 2))
    """
    sizes = {
        "num_examples": num_examples,
        "num_features": num_features,
        "num_outputs": num_outputs,
    }
    for name, value in sizes.items():
        hp.check_integer(name, value, low=1)
    hp.check_hyperparam("noise", noise, low=0.0, high=float("inf"))
    cast = _float_dtype(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_examples, num_features))
    w = rng.standard_normal((num_features, num_outputs)) / np.sqrt(num_features)
    b = rng.standard_normal(num_outputs)
    y = x @ w + b + noise * rng.standard_normal((num_examples, num_outputs))
    return WideTask(
        train=Batch(jnp.asarray(x, cast), jnp.asarray(y, cast)),
        true_params={"w": w, "b": b},
        reference=WIDE_REFERENCE,
    )


def linear_init(
    num_features: int, num_outputs: int, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Returns zero params ``{"w": (num_features, num_outputs), "b": (num_outputs,)}``.

    Fresh arrays on every call, so a run that donates them leaves others intact.

    Raises:
        ValueError: A size is not an integer >= 1, or ``dtype`` is not a
            floating dtype.
    """
    num_features = hp.check_integer("num_features", num_features, low=1)
    num_outputs = hp.check_integer("num_outputs", num_outputs, low=1)
    dtype = _float_dtype(dtype)
    return {
        "w": jnp.zeros((num_features, num_outputs), dtype),
        "b": jnp.zeros((num_outputs,), dtype),
    }


def linear_loss(params: dict[str, jax.Array], batch: Batch) -> jax.Array:
    r"""The mean squared error over examples and outputs.

    .. math::
        \frac{1}{n m} \sum_{i k} ((x W + b)_{ik} - y_{ik})^2
    """
    return jnp.mean((batch.x @ params["w"] + params["b"] - batch.y) ** 2)
