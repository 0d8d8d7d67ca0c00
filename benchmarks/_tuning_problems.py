"""The tuning benchmark's problems: quadratics, the noisy quadratic model, real data.

Each problem is a loss of ``(params, batch)``, a rule for the batch of each step,
and the measure its target is read on: the relative distance to the optimum for
the noiseless quadratic, the full loss otherwise. Everything is a pure function
of arrays and a seed, so a run is one ``lax.scan`` that ``vmap`` can batch over
a grid of hyperparameters and over seeds.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Batch = Any

QUESTIONS = {
    "quadratic": "Noiseless quadratic of known spectrum: steps to a relative error "
    "of 1e-4, against Polyak's exactly tuned heavy ball.",
    "noisy-quadratic": "Noisy quadratic model (Zhang et al. 2019) at several batch "
    "sizes: final loss, against the best point of the grid.",
    "full-batch": "Real data, full batch (scikit-learn datasets): steps to the "
    "grid's best loss, against the best point of the grid.",
    "minibatch": "A small Flax MLP on digits with minibatches: final loss, against "
    "the best point of the grid.",
}
"""The questions the benchmark answers, by problem kind."""

MOMENTUM_GRID = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
"""The momenta of the grid search, for every problem."""


def lr_grid(low_exponent: int, high_exponent: int) -> tuple[float, ...]:
    """Half-decade learning rates: ``10**(k/2)`` for ``k`` in ``[2*low, 2*high]``."""
    return tuple(
        10.0 ** (k / 2) for k in range(2 * low_exponent, 2 * high_exponent + 1)
    )


class Problem(NamedTuple):
    """Holds one problem of the tuning benchmark.

    Attributes:
        name: A short name, such as ``"quadratic-1e3"``.
        kind: A key of :data:`QUESTIONS`.
        description: One line on what it is.
        init_fn: ``init_fn(key) -> params``, called outside ``jit``, per seed.
        loss_fn: ``loss_fn(params, batch) -> scalar``: the loss a step differentiates
            (and the ``value_fn`` the HVP source gets, with the step's batch).
        data_fn: ``data_fn(key) -> data``, called outside ``jit``, per seed: what
            the batches are drawn from (orders, noise keys).
        batch_fn: ``batch_fn(step, data) -> batch``: the batch of step ``step``.
        measure_fn: ``measure_fn(params) -> scalar``: what the target is read on.
        num_steps: Steps per run.
        eval_every: Steps between two readings of ``measure_fn``.
        seeds: The seeds each configuration runs with.
        learning_rates: The grid's learning rates.
        momenta: The grid's momenta.
        curvature: ``(max, min)`` Hessian eigenvalues when known exactly, else None.
        relative_error: The target of a noiseless quadratic (a relative distance
            to the optimum), or None for a target read on the loss.
    """

    name: str
    kind: str
    description: str
    init_fn: Callable[[jax.Array], Params]
    loss_fn: Callable[[Params, Batch], jax.Array]
    data_fn: Callable[[jax.Array], Any]
    batch_fn: Callable[[jax.Array, Any], Batch]
    measure_fn: Callable[[Params], jax.Array]
    num_steps: int
    eval_every: int
    seeds: tuple[int, ...]
    learning_rates: tuple[float, ...]
    momenta: tuple[float, ...] = MOMENTUM_GRID
    curvature: tuple[float, float] | None = None
    relative_error: float | None = None

    @property
    def stochastic(self) -> bool:
        """Whether steps see noisy gradients (the target is then the final loss)."""
        return self.kind in ("noisy-quadratic", "minibatch")


def _no_data(key: jax.Array) -> jax.Array:
    del key
    return jnp.zeros(())


def _no_batch(step: jax.Array, data: Any) -> None:
    del step, data


def quadratic(
    dim: int = 1000, condition: float = 1e3, num_steps: int = 1500
) -> Problem:
    r"""A diagonal quadratic with eigenvalues log-spaced in ``[1, condition]``.

    :math:`f(\theta) = \tfrac12 \sum_i h_i (\theta_i - \theta^*_i)^2` from
    :math:`\theta = 0`, with :math:`\theta^* \sim N(0, I)` (seed 0). Momentum
    methods are rotation invariant, so a diagonal Hessian loses no generality.
    The target is a relative distance :math:`\|\theta - \theta^*\| /
    \|\theta^*\|` of 1e-4.
    """
    curvatures = jnp.asarray(np.geomspace(1.0, condition, dim), jnp.float32)
    optimum = jnp.asarray(np.random.default_rng(0).normal(size=dim), jnp.float32)
    scale = jnp.linalg.norm(optimum)

    def loss_fn(params: Params, batch: Batch) -> jax.Array:
        del batch
        return 0.5 * jnp.sum(curvatures * (params - optimum) ** 2)

    def measure_fn(params: Params) -> jax.Array:
        return jnp.linalg.norm(params - optimum) / scale

    return Problem(
        name=f"quadratic-{condition:.0e}".replace("e+0", "e"),
        kind="quadratic",
        description=f"{dim} eigenvalues log-spaced in [1, {condition:g}]",
        init_fn=lambda key: jnp.zeros(dim, jnp.float32),
        loss_fn=loss_fn,
        data_fn=_no_data,
        batch_fn=_no_batch,
        measure_fn=measure_fn,
        num_steps=num_steps,
        eval_every=1,
        seeds=(0,),
        learning_rates=lr_grid(-5, 0),
        curvature=(float(condition), 1.0),
        relative_error=1e-4,
    )


def noisy_quadratic(
    batch_size: int, dim: int = 1000, num_steps: int = 1000, seeds: int = 3
) -> Problem:
    r"""The noisy quadratic model of Zhang et al. (2019) at one batch size.

    :math:`f(\theta) = \tfrac12 \sum_i h_i \theta_i^2` with :math:`h_i = 1/i`,
    from :math:`\theta = 1`; a step sees the gradient plus noise of covariance
    :math:`H / B` for batch size :math:`B`, that of the loss
    :math:`\tfrac12 \theta^\top H \theta + \xi^\top\theta`,
    :math:`\xi \sim N(0, H/B)`. The measure is the noiseless loss.

    References:
        Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes?
        Insights From a Noisy Quadratic Model", NeurIPS 2019, arXiv 1907.04164.
    """
    curvatures = jnp.asarray(1.0 / np.arange(1, dim + 1), jnp.float32)
    noise_scale = jnp.sqrt(curvatures / batch_size)

    def loss_fn(params: Params, batch: Batch) -> jax.Array:
        return 0.5 * jnp.sum(curvatures * params**2) + jnp.sum(batch * params)

    def batch_fn(step: jax.Array, key: jax.Array) -> Batch:
        noise = jax.random.normal(jax.random.fold_in(key, step), (dim,), jnp.float32)
        return noise_scale * noise

    return Problem(
        name=f"nqm-batch-{batch_size}",
        kind="noisy-quadratic",
        description=f"{dim} dims, h_i = 1/i, gradient noise covariance H/{batch_size}",
        init_fn=lambda key: jnp.ones(dim, jnp.float32),
        loss_fn=loss_fn,
        data_fn=lambda key: key,
        batch_fn=batch_fn,
        measure_fn=lambda params: 0.5 * jnp.sum(curvatures * params**2),
        num_steps=num_steps,
        eval_every=max(1, num_steps // 100),
        seeds=tuple(range(seeds)),
        learning_rates=lr_grid(-3, 1),
        curvature=(1.0, 1.0 / dim),
    )


def _standardized(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _full_batch(
    name: str,
    description: str,
    num_features: int,
    loss: Callable[[Params], jax.Array],
    num_steps: int,
) -> Problem:
    """A full-batch linear model from zero: its params are ``w`` and ``b``."""
    return Problem(
        name=name,
        kind="full-batch",
        description=description,
        init_fn=lambda key: {
            "w": jnp.zeros(num_features, jnp.float32),
            "b": jnp.float32(0.0),
        },
        loss_fn=lambda params, batch: loss(params),
        data_fn=_no_data,
        batch_fn=_no_batch,
        measure_fn=loss,
        num_steps=num_steps,
        eval_every=1,
        seeds=(0,),
        learning_rates=lr_grid(-4, 1),
    )


def logistic_regression(num_steps: int = 1000, l2: float = 1e-3) -> Problem:
    r"""L2-regularized logistic regression on scikit-learn's breast cancer data.

    569 points, 30 standardized features, labels in {0, 1}, full batch:
    :math:`\frac1n \sum_j \log(1 + e^{-s_j (x_j^\top w + b)}) +
    \tfrac{\lambda}2 \|w\|^2`, :math:`s_j = \pm 1`, from zero.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = jnp.asarray(_standardized(data.data), jnp.float32)
    signs = jnp.asarray(2.0 * data.target - 1.0, jnp.float32)

    def loss(params: Params) -> jax.Array:
        margins = signs * (x @ params["w"] + params["b"])
        penalty = 0.5 * l2 * jnp.sum(params["w"] ** 2)
        return jnp.mean(jnp.logaddexp(0.0, -margins)) + penalty

    return _full_batch(
        "logistic-breast-cancer",
        f"logistic regression, 569 x 30, L2 {l2:g}",
        30,
        loss,
        num_steps,
    )


def least_squares(num_steps: int = 1000) -> Problem:
    r"""Least squares on scikit-learn's diabetes data, full batch.

    442 points, 10 standardized features, a standardized target:
    :math:`\tfrac12 \frac1n \|X w + b - y\|^2` from zero.
    """
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = jnp.asarray(_standardized(data.data), jnp.float32)
    y = jnp.asarray(_standardized(data.target[:, None])[:, 0], jnp.float32)

    def loss(params: Params) -> jax.Array:
        return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    return _full_batch(
        "least-squares-diabetes", "linear least squares, 442 x 10", 10, loss, num_steps
    )


def digits_mlp(
    batch_size: int = 32, hidden: int = 64, num_steps: int = 1500, seeds: int = 3
) -> Problem:
    """A Flax MLP (64-hidden-10, ReLU) on scikit-learn's digits, with minibatches.

    1797 images of 8x8 pixels scaled to [0, 1]; cross-entropy. Each epoch
    visits the images in a fresh random order (from the seed), ``batch_size``
    at a time; the measure is the loss on all 1797 images.
    """
    import flax.linen as nn
    from sklearn.datasets import load_digits

    data = load_digits()
    images = jnp.asarray(data.data / 16.0, jnp.float32)
    labels = jnp.asarray(data.target, jnp.int32)
    count = images.shape[0]
    per_epoch = count // batch_size
    model = nn.Sequential([nn.Dense(hidden), nn.relu, nn.Dense(10)])

    def loss(params: Params, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = batch
        logits = model.apply(params, x)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    epochs = -(-num_steps // per_epoch)

    def data_fn(key: jax.Array) -> jax.Array:
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
        orders = [
            rng.permutation(count)[: per_epoch * batch_size] for _ in range(epochs)
        ]
        return jnp.asarray(np.concatenate(orders).reshape(-1, batch_size), jnp.int32)

    def batch_fn(step: jax.Array, orders: jax.Array) -> Batch:
        rows = orders[step]
        return images[rows], labels[rows]

    return Problem(
        name="mlp-digits",
        kind="minibatch",
        description=f"Flax MLP 64-{hidden}-10 on digits (1797 images), "
        f"batch {batch_size}",
        init_fn=lambda key: model.init(key, images[:1]),
        loss_fn=loss,
        data_fn=data_fn,
        batch_fn=batch_fn,
        measure_fn=lambda params: loss(params, (images, labels)),
        num_steps=num_steps,
        eval_every=max(1, num_steps // 60),
        seeds=tuple(range(seeds)),
        learning_rates=lr_grid(-3, 1),
    )


NQM_BATCH_SIZES = (1, 16, 256)


def problems(quick: bool) -> list[Problem]:
    """The benchmark's problems; smaller and fewer with ``quick``."""
    if quick:  # compiling dominates: fewer problems, not only smaller ones
        return [
            quadratic(dim=200, condition=1e3, num_steps=800),
            noisy_quadratic(16, dim=200, num_steps=300, seeds=2),
            least_squares(num_steps=300),
        ]
    return [
        quadratic(condition=1e3, num_steps=1500),
        quadratic(condition=1e5, num_steps=5000),
        *(noisy_quadratic(size) for size in NQM_BATCH_SIZES),
        logistic_regression(),
        least_squares(),
        digits_mlp(),
    ]


def parameter_count(problem: Problem) -> int:
    """The number of params of ``problem``."""
    shapes = jax.eval_shape(problem.init_fn, jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
