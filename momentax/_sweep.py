r"""One memory sweep per step on XLA:CPU, where its multi-output fusion is on.

A momentum step reads the params, the gradients and the velocity and writes the
params and the velocity: five words per param. XLA:CPU compiles the usual form,
``v' = f(v, g)`` then ``p' = p + h(v')``, into two loops, the second reading
``v'`` back: six words. Its multi-output fusion pass (off by default; on with
``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion``)
merges loops that read the same inputs into one loop with several outputs, but
not a loop with the one that reads its output.

So, where that pass runs, :func:`single_sweep` computes the update a second
time, from the old velocity and gradients passed through
``jax.lax.optimization_barrier`` (which keeps XLA from recognising the two
computations as one and reading the update back from the new velocity). The
velocity loop and the param loop then read the same inputs and are merged into
one loop. Without the pass the same form is several times slower, so it is used
only where a probe compiled at trace time shows one loop.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import optax

from momentax import _trees

_OPTION = "xla_cpu_use_multi_output_fusion"


@functools.cache
def _probe_compiles_to_one_loop() -> bool:
    """Whether this process's XLA:CPU compiles the two-computation form as one loop.

    XLA reads ``XLA_FLAGS`` once, when the backend starts, so one probe per
    process answers for all later compilations.
    """

    def step(p: jax.Array, v: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        new_v = 0.9 * v - 0.01 * g
        old_v, old_g = jax.lax.optimization_barrier((v, g))
        return p + (0.9 * old_v - 0.01 * old_g), new_v

    leaf = jax.ShapeDtypeStruct((4096,), jnp.float32)
    try:
        compiled = jax.jit(step).lower(leaf, leaf, leaf).compile()
        text = compiled.as_text()
    except Exception:  # Any failure means: use the usual form.
        return False
    return text is not None and text.count("fusion(") == 1


def uses_single_sweep() -> bool:
    """Whether :func:`momentax.momentum` compiles its step as one memory sweep here.

    True when the default JAX backend is the CPU, ``XLA_FLAGS`` turns on
    XLA:CPU's multi-output fusion
    (``--xla_backend_extra_options=xla_cpu_use_multi_output_fusion``, set
    before JAX starts), and a small probe compiled once per process confirms
    that XLA then merges the velocity and param updates into one loop. Where it
    is False, momentax compiles the usual form, which is faster without that
    pass.

    Either way the numbers are the same, bit for bit: only the loops that XLA
    emits change. The sweep reads the gradients twice, so where they are
    elementwise functions of the params computed in the same ``jit`` (a loss
    written on the params themselves), XLA writes them to a temporary buffer
    and the step is slower: build that optimizer with
    ``momentum(..., single_sweep=False)``. Gradients passed in, or coming out
    of matrix products or convolutions, are in memory anyway.

    Returns:
        Whether jitted momentum steps traced from now on use one sweep.

    Examples:
        A process started without the option compiles the usual form:

        >>> import os
        >>> import momentax
        >>> "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", "")
        False
        >>> momentax.uses_single_sweep()
        False
    """
    if _OPTION not in os.environ.get("XLA_FLAGS", ""):
        return False
    if jax.default_backend() != "cpu":
        return False
    return _probe_compiles_to_one_loop()


def _sweepable(updates: Any, state: Any, params: Any) -> bool:
    """Whether the step is being traced and all its arrays share one dtype.

    Eagerly nothing fuses. With mixed dtypes (bf16 params, a float32 velocity)
    XLA:CPU does not merge the loops, and the two-computation form would cost
    a copy of the velocity.
    """
    leaves = jax.tree.leaves((updates, params))
    if not _trees.traced(leaves):
        return False
    arrays = leaves + [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]
    return len({jnp.result_type(x) for x in arrays}) == 1


def single_sweep(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``inner``, computed so that XLA:CPU can fuse its step into one loop.

    When :func:`uses_single_sweep` holds, the update is being traced and the
    updates, params and velocity share one dtype, the new state comes from
    ``inner.update`` on the inputs, and the updates from a second
    ``inner.update`` on the same inputs behind an optimization barrier.
    Both are the same computation on the same values, so the results are
    ``inner``'s; eagerly, or without the fusion pass, ``inner`` runs as it is.

    Args:
        inner: The transformation.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        if not (_sweepable(updates, state, params) and uses_single_sweep()):
            usual: tuple[optax.Updates, Any] = inner.update(
                updates, state, params, **extra_args
            )
            return usual
        _, new_state = inner.update(updates, state, params, **extra_args)
        old = jax.lax.optimization_barrier((updates, state, params))
        new_updates, _ = inner.update(*old, **extra_args)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
