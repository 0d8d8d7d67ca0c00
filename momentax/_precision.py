"""Running a chain of transforms in the accumulator's precision."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from momentax._trees import velocity_dtype, wider_dtype


def compute_in(
    inner: optax.GradientTransformation, accumulator_dtype: Any
) -> optax.GradientTransformationExtraArgs:
    """Runs ``inner`` on updates (and params) cast to the accumulator's precision.

    Each leaf is computed in the wider of its dtype and its buffer's dtype, and
    the updates come out in the dtype they came in: bf16 params with a float32
    buffer are scaled, decayed and accumulated in float32, rounded once.

    Args:
        inner: The transformation to run.
        accumulator_dtype: The buffer dtype of ``inner``'s momentum.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.
    """
    inner = optax.with_extra_args_support(inner)

    def cast(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: jnp.asarray(x).astype(
                wider_dtype(
                    jnp.result_type(x),
                    velocity_dtype(jnp.result_type(x), accumulator_dtype),
                )
            ),
            tree,
        )

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        wide_params = None if params is None else cast(params)
        new_updates, state = inner.update(
            cast(updates), state, wide_params, **extra_args
        )
        new_updates = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
        return new_updates, state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
