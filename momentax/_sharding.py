"""Optimizer state that keeps its params' sharding, even under ``jax.jit``.

Eagerly, ``jnp.zeros_like`` of a sharded array is sharded alike. Under
``jax.jit`` with ``Auto`` mesh axes it is not: a buffer of zeros has no operand
to inherit a sharding from, so XLA makes it replicated (``optax.sgd`` does
that), and the first step then slices or gathers it. :func:`shard_like` ties
the two together with ``jax.experimental.shard_alike``.
"""

import jax
from jax.experimental.shard_alike import shard_alike


def _one_device() -> bool:
    """Whether this process sees one device only, so nothing can be sharded.

    Counts the default backend's devices and the CPU's (a mesh may be built of
    either; there may be no CPU backend), across all processes.
    """
    if len(jax.devices()) != 1:
        return False
    try:
        return len(jax.devices("cpu")) <= 1
    except RuntimeError:
        return True


def shard_like(x: jax.Array, like: jax.Array) -> jax.Array:
    """Returns ``x``, constrained under a trace to be sharded like ``like``.

    Outside a trace it returns ``x`` unchanged: eager arrays already carry
    their sharding. With one device it does too: there is no sharding to
    keep, and each constraint is a sharding group that XLA's compile has to
    handle (at 1000 small leaves, about a third of the update's compile time).
    ``x`` and ``like`` must have one shape (dtypes may differ).
    """
    tracing = isinstance(x, jax.core.Tracer) or isinstance(like, jax.core.Tracer)
    if tracing and not _one_device():
        x, _ = shard_alike(x, like)
    return x
