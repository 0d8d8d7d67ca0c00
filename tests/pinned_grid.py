"""The option grid whose outputs tests/data/pinned.npz pins (see test_pinned.py).

The pinned file holds the outputs of the 0.1.0 core (one closure with flags), an
implementation independent of the Optax chains the test runs, so the test shows
that the chains compute the same numbers. Running this module overwrites the file
with the current core's outputs: do it only on purpose.
"""

import itertools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax

STEPS = 6
PATH = "tests/data/pinned.npz"


def schedule(count: Any) -> jax.Array:
    """A learning rate that rises, then falls (strict-promotion safe)."""
    step = jnp.asarray(count, jnp.float32)
    return (
        0.1 * jnp.minimum((step + 1.0) / 3.0, 1.0) * 0.9 ** jnp.maximum(step - 3.0, 0.0)
    )


def momentum_schedule(count: Any) -> jax.Array:
    """A momentum that ramps from 0.5 to 0.9 (0.5 at the first step)."""
    step = jnp.asarray(count, jnp.float32)
    return jnp.minimum(0.5 + 0.1 * step, 0.9)


LEARNING_RATES = {
    "lr0.1": 0.1,
    "lr_sched": schedule,
    "lr_leaf": {"w": 0.05, "b": schedule},
}
MOMENTA = {
    "mu0": 0.0,
    "mu0.9": 0.9,
    "mu_sched": momentum_schedule,
    "mu_leaf": {"w": 0.9, "b": 0.5},
}
PARAM_DTYPES = {"f32": (jnp.float32, None), "bf16acc32": (jnp.bfloat16, jnp.float32)}


def cases() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(name, keyword arguments of momentax.momentum, params dtype) per case."""
    for (
        convention,
        nesterov,
        dampening,
        wd,
        maximize,
        lr,
        mu,
        dtype,
    ) in itertools.product(
        momentax.CONVENTIONS,
        (False, True),
        (0.0, 0.3),
        (0.0, 0.01),
        (False, True),
        LEARNING_RATES,
        MOMENTA,
        PARAM_DTYPES,
    ):
        if nesterov and (dampening or mu == "mu0"):
            continue
        param_dtype, accumulator_dtype = PARAM_DTYPES[dtype]
        kwargs = dict(
            learning_rate=LEARNING_RATES[lr],
            momentum=MOMENTA[mu],
            nesterov=nesterov,
            dampening=dampening,
            weight_decay=wd,
            maximize=maximize,
            convention=convention,
            accumulator_dtype=accumulator_dtype,
        )
        name = (
            f"{convention}-nest{int(nesterov)}-damp{dampening}-wd{wd}-"
            f"max{int(maximize)}-{lr}-{mu}-{dtype}"
        )
        yield name, kwargs, param_dtype


def inputs(dtype: Any) -> tuple[dict[str, jax.Array], list[dict[str, jax.Array]]]:
    """Initial params and a gradient stream, in ``dtype``, reproducible."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
        "b": jnp.asarray(rng.normal(), dtype),
    }
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), params)
        for _ in range(STEPS)
    ]
    return params, grads


def run(
    opt: optax.GradientTransformation, dtype: Any, jit: bool
) -> dict[str, tuple[str, np.ndarray]]:
    """Final params and last updates (values and dtypes) as NumPy arrays by name."""
    params, grads = inputs(dtype)
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    out = {}
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    for prefix, tree in (("u", updates), ("p", params)):
        for key, leaf in tree.items():
            out[f"{prefix}.{key}"] = (str(leaf.dtype), np.asarray(leaf, np.float32))
    return out


def jitted(name: str) -> bool:
    """A fixed quarter of the grid is also pinned under jax.jit."""
    return sum(map(ord, name)) % 4 == 0


def compute() -> dict[str, tuple[str, np.ndarray]]:
    """Every pinned array with its dtype, keyed ``<case>|<eager or jit>|<array>``."""
    out = {}
    for name, kwargs, dtype in cases():
        opt = momentax.momentum(**kwargs)
        modes = ("eager", "jit") if jitted(name) else ("eager",)
        for mode in modes:
            for key, value in run(opt, dtype, mode == "jit").items():
                out[f"{name}|{mode}|{key}"] = value
    return out


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    arrays = compute()
    np.savez_compressed(
        PATH,
        keys=np.array(list(arrays)),
        dtypes=np.array([dtype for dtype, _ in arrays.values()]),
        sizes=np.array([value.size for _, value in arrays.values()]),
        values=np.concatenate([value.ravel() for _, value in arrays.values()]),
    )
    print(f"wrote {len(arrays)} arrays to {PATH}")
