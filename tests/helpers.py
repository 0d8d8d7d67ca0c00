"""Shared test fixtures: pytrees, gradient streams, devices and step loops."""

import importlib
import importlib.util
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Tolerances for comparing runs that compute the same formula with a different
# order of floating-point operations. One rounding is 6e-8 in float32 and
# 1.1e-16 in float64; a 100-step run with momentum 0.9 sums up to ~100 of them
# on values of order 1-10, so 1e-5 (f32) and 1e-12 (f64) leave a 10x margin while
# any formula error (a missing factor mu or lr, an off-by-one step) is >= 1e-3.
TOL = {
    jnp.dtype(jnp.float32): {"rtol": 1e-5, "atol": 1e-6},
    jnp.dtype(jnp.float64): {"rtol": 1e-12, "atol": 1e-12},
}

# CI sets this so that a missing optional reference (torch, flax) fails the run
# instead of silently skipping the tests that need it.
REQUIRE_OPTIONAL = os.environ.get("MOMENTAX_REQUIRE_OPTIONAL") == "1"


def optional_import(name: str) -> Any:
    """Imports an optional test dependency, or returns None (fails under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRE_OPTIONAL:
            raise
        return None


def optional_present(name: str) -> bool:
    """Whether an optional test dependency is installed (fails under CI if not).

    Unlike optional_import, it does not import it (torch takes seconds).
    """
    if importlib.util.find_spec(name) is not None:
        return True
    if REQUIRE_OPTIONAL:
        raise ImportError(f"{name} is required (MOMENTAX_REQUIRE_OPTIONAL is set)")
    return False


def _gpu() -> jax.Device | None:
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


# Every backend the comparisons run on: the CPU always, a GPU when JAX sees one.
# Tests are parametrized over the names present, so that a CPU machine collects
# no GPU case that could only be skipped.
DEVICES: dict[str, jax.Device] = {"cpu": jax.devices("cpu")[0]}
if (gpu := _gpu()) is not None:
    DEVICES["gpu"] = gpu
DEVICE_NAMES = tuple(DEVICES)


def warmup_then_decay(count: Any) -> jax.Array:
    """A learning-rate schedule that rises for 10 steps, then decays by 3% a step.

    Written with explicit casts so that it runs under strict dtype promotion
    (several Optax schedules do not); its values are in the default float dtype.
    """
    step = jnp.asarray(count, dtype=float)
    warmup = jnp.minimum((step + 1.0) / 10.0, 1.0)
    return 0.1 * warmup * 0.97 ** jnp.maximum(step - 10.0, 0.0)


def nested_params(dtype: Any = jnp.float32) -> Any:
    """Params mixing dicts, tuples, lists, scalars and matrices."""
    rng = np.random.default_rng(0)

    def leaf(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "dense": {"w": leaf(3, 4), "b": leaf(4)},
        "blocks": [leaf(), (leaf(2), leaf(1, 1))],
        "scale": leaf(),
    }


def gradient_stream(params: Any, steps: int, seed: int = 1) -> list[Any]:
    """``steps`` random gradients shaped like ``params``, reproducible."""
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


def make_step(opt: optax.GradientTransformation) -> Callable:
    """A training step ``(params, state, grads) -> (params, state)`` for ``opt``."""

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run(
    opt: optax.GradientTransformation,
    params: Any,
    grads: Sequence[Any],
    wrap: Callable[[Callable], Callable] = lambda f: f,
) -> tuple[Any, Any]:
    """Applies ``opt`` to ``grads`` in turn; returns the final params and state.

    ``wrap`` is a chex variant (jit or not) applied to the step function.
    """
    step = wrap(make_step(opt))
    state = opt.init(params)
    for g in grads:
        params, state = step(params, state, g)
    return params, state


def velocity(state: Any) -> Any:
    """The momentum buffer anywhere in an optimizer state (None without one)."""
    return optax.tree.get(state, "velocity")


def counts(state: Any) -> list[int]:
    """Every step count an optimizer state holds, in the order of the state."""
    found = optax.tree_utils.tree_get_all_with_path(state, "count")
    return [int(count) for _, count in found if count is not None]


def assert_on_device(tree: Any, device: jax.Device) -> None:
    for leaf in jax.tree.leaves(tree):
        assert leaf.devices() == {device}, (leaf.devices(), device)


def reference_momentum(
    params: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    learning_rate: Callable[[int], float],
    momentum: float | Callable[[int], float],
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    convention: str = "sutskever",
) -> tuple[np.ndarray, np.ndarray]:
    """The documented update rules, step by step in NumPy float64.

    Returns the final params and the final velocity (zeros without momentum).
    """
    p = np.array(params, np.float64)
    v = np.zeros_like(p)
    for t, g in enumerate(grads):
        lr = learning_rate(t)
        mu = momentum(t) if callable(momentum) else momentum
        g = (-1.0 if maximize else 1.0) * np.asarray(g, np.float64) + weight_decay * p
        c = 1.0 if t == 0 or mu == 0 else 1.0 - dampening
        if convention == "pytorch":
            v = mu * v + c * g
            update = -lr * (g + mu * v if nesterov else v)
        else:
            v = mu * v - c * lr * g
            update = mu * v - lr * g if nesterov else v
        p = p + update
    return p, v


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this one, plus ``extra``.

    ``tests/conftest.py`` gives this process 8 CPU devices through
    ``jax.config``, not the environment, so a child process (a benchmark, a
    worker of a multi-process run) sees the machine as a user would.
    """
    return {**os.environ, **extra}


def pairwise(cases: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A few of ``cases`` that hold every pair of values that any case holds.

    Every value of one position meets every value of each other position that
    some case pairs it with. For the fast tier's share of a large grid; the
    rest of the grid runs in the slow tier. Deterministic: the first case that
    holds the most pairs still missing is taken next.
    """

    def pairs(case: tuple[Any, ...]) -> set[tuple[Any, ...]]:
        return {
            (i, case[i], j, case[j])
            for i, j in itertools.combinations(range(len(case)), 2)
        }

    needed = set().union(*map(pairs, cases))
    chosen = []
    while needed:
        best = max(cases, key=lambda case: len(pairs(case) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return chosen
