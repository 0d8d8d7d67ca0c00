"""Momentum steps whose loops and bits are compared with and without one sweep.

``python -m tests.sweep_grid`` (run by ``tests/test_sweep.py`` in a child
process, with and without XLA:CPU's multi-output fusion) prints, as JSON,
whether momentax uses one sweep there; for each case, how many loops over the
params the compiled step has and the bits of the params and velocity after
three jitted, donated steps; and the temporary bytes of train steps that
compute their gradients, with the sweep allowed and with ``single_sweep=False``.
"""

import json
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax

# Odd sizes, so that the leaves' shapes are easy to find in the compiled text.
SHAPES = {"w": (1031,), "b": (7, 3)}
STEPS = 3
OPTED_OUT = "sutskever single_sweep=False"
LAYER = {"w": (64, 96), "b": (96,)}  # A dense layer on a batch of 8.
TEMP_BYTES = "train step temp bytes"


def _decay(count: jax.Array) -> jax.Array:
    return 0.1 / (1.0 + count.astype(jnp.float32))


def _warm_up(count: jax.Array) -> jax.Array:
    return jnp.minimum(0.95, 0.5 + 0.2 * count.astype(jnp.float32))


def _cases() -> dict[str, Callable[[], optax.GradientTransformation]]:
    cases: dict[str, Callable[[], optax.GradientTransformation]] = {}
    for convention in momentax.CONVENTIONS:
        for nesterov in (False, True):
            name = f"{convention}{' nesterov' if nesterov else ''}"
            cases[name] = lambda c=convention, n=nesterov: momentax.momentum(
                0.01, 0.9, nesterov=n, convention=c
            )
        cases[f"{convention} dampening wd maximize"] = lambda c=convention: (
            momentax.momentum(
                0.01,
                0.9,
                dampening=0.25,
                weight_decay=1e-3,
                maximize=True,
                convention=c,
            )
        )
        cases[f"{convention} schedules per leaf"] = lambda c=convention: (
            momentax.momentum(
                {"w": _decay, "b": 0.05},
                _warm_up,
                convention=c,
            )
        )
    cases["sutskever injected"] = lambda: optax.inject_hyperparams(momentax.momentum)(
        learning_rate=0.01, momentum=0.9
    )
    cases[OPTED_OUT] = lambda: momentax.momentum(0.01, 0.9, single_sweep=False)
    return cases


def _params(dtype: Any) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {
        k: jnp.asarray(rng.standard_normal(s, np.float32), dtype)
        for k, s in SHAPES.items()
    }


def _grads(step: int, dtype: Any) -> dict[str, jax.Array]:
    rng = np.random.default_rng(step + 1)
    return {
        k: jnp.asarray(rng.standard_normal(s, np.float32), dtype)
        for k, s in SHAPES.items()
    }


def loops_over(text: str, shape: tuple[int, ...]) -> int:
    """Kernels in a compiled module's entry that write an array of ``shape``.

    Parameters, tuples and views (get-tuple-element, bitcast) move no data; every
    other instruction whose result has that shape is a loop over it.
    """
    entry = text[text.index("\nENTRY") :]
    dims = "[" + ",".join(map(str, shape)) + "]"
    free = ("parameter(", "get-tuple-element(", "tuple(", "bitcast(")
    count = 0
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(ROOT )?%\S+ = (.*?) (\S+?\()", line)
        if match and dims in match.group(2) and match.group(3) not in free:
            count += 1
    return count


def _bits(tree: Any) -> dict[str, str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {
        jax.tree_util.keystr(path): np.asarray(x).tobytes().hex() for path, x in leaves
    }


def run_case(make: Callable[[], optax.GradientTransformation], dtype: Any) -> Any:
    """Three donated jitted steps: the loops of the step, and the final bits."""
    optimizer = make()

    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    params = _params(dtype)
    state = optimizer.init(params)
    text = jitted.lower(params, state, _grads(0, dtype)).compile().as_text()
    for t in range(STEPS):
        params, state = jitted(params, state, _grads(t, dtype))
    return {
        "loops": loops_over(text, SHAPES["w"]),
        "params": _bits(params),
        "velocity": _bits(optax.tree.get(state, "velocity")),
    }


def _quadratic(params: Any, data: Any) -> jax.Array:
    """Gradients ``p - t``: elementwise in the params, which XLA can fuse."""
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(data), strict=True)
    return sum(0.5 * jnp.sum((p - t) ** 2) for p, t in pairs)  # type: ignore[return-value]


def _layer(params: Any, data: Any) -> jax.Array:
    """Gradients out of a matrix product (weight) and a batch reduction (bias)."""
    x, y = data
    return jnp.sum((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)


def train_step_temp_bytes(optimizer: optax.GradientTransformation, loss: str) -> int:
    """XLA's temporary bytes for a donated step that computes its gradients.

    ``loss`` is ``"quadratic"`` (the params of :data:`SHAPES`) or ``"layer"``
    (a dense layer of :data:`LAYER`'s shapes on a batch of 8).
    """
    if loss == "quadratic":
        objective, params = _quadratic, _params(jnp.float32)
        data: Any = params
    else:
        objective = _layer
        params = {k: jnp.full(s, 0.01) for k, s in LAYER.items()}
        rows, (inputs, outputs) = 8, LAYER["w"]
        data = (jnp.ones((rows, inputs)), jnp.ones((rows, outputs)))

    def step(params: Any, state: Any, data: Any) -> tuple[Any, Any]:
        grads = jax.grad(objective)(params, data)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    compiled = jitted.lower(params, optimizer.init(params), data).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def results() -> dict[str, Any]:
    """Every case, in float32 and in bfloat16 with a float32 velocity; temporaries."""
    out: dict[str, Any] = {"uses_single_sweep": momentax.uses_single_sweep()}
    out[TEMP_BYTES] = {
        f"{loss} single_sweep={allowed}": train_step_temp_bytes(
            momentax.momentum(0.01, 0.9, single_sweep=allowed), loss
        )
        for loss in ("quadratic", "layer")
        for allowed in (True, False)
    }
    for name, make in _cases().items():
        out[name] = run_case(make, jnp.float32)
    out["sutskever bf16 f32 velocity"] = run_case(
        lambda: momentax.momentum(0.01, 0.9, accumulator_dtype=jnp.float32),
        jnp.bfloat16,
    )
    return out


if __name__ == "__main__":
    print(json.dumps(results()))
