"""Optimizer state that keeps its params' sharding, even under ``jax.jit``.

Eagerly, ``jnp.zeros_like`` of a sharded array is sharded alike. Under
``jax.jit`` with ``Auto`` mesh axes it is not: a buffer of zeros has no operand
to inherit a sharding from, so XLA makes it replicated (``optax.sgd`` does
that), and the first step then slices or gathers it. :func:`shard_like` ties
the two together with ``jax.experimental.shard_alike``.
"""

import jax
from jax.experimental.shard_alike import shard_alike


def shard_like(x: jax.Array, like: jax.Array) -> jax.Array:
    """Returns ``x``, constrained under a trace to be sharded like ``like``.

    Outside a trace it returns ``x`` unchanged: eager arrays already carry
    their sharding. ``x`` and ``like`` must have one shape (dtypes may differ).
    """
    if isinstance(x, jax.core.Tracer) or isinstance(like, jax.core.Tracer):
        x, _ = shard_alike(x, like)
    return x
