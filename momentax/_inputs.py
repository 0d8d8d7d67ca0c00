"""What :func:`momentax.momentum`'s update accepts, checked before its chain runs.

The chain's pieces each check what they read; this wrapper checks what the
whole step is given, with messages that name the argument: a state that is
not the chain's, updates that are booleans or not numbers. Integer updates are
taken at their value in floating point, as ``optax.sgd``'s arithmetic takes
them. Only structures and dtypes are read, so every check holds under
``jax.jit``.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from momentax._trees import check_like, check_updates


def _as_floating(updates: optax.Updates, params: optax.Params | None) -> Any:
    """``updates`` with each integer leaf cast to its param's floating dtype.

    Without params, to the default floating dtype (float32, or float64 with
    ``jax_enable_x64``), the dtype of ``optax.sgd``'s update for them.
    """

    def floating(update: Any, param: Any) -> Any:
        if not jnp.issubdtype(jnp.result_type(update), jnp.integer):
            return update
        dtype = jnp.result_type(float) if param is None else jnp.result_type(param)
        return jnp.asarray(update).astype(dtype)

    if params is None:
        return jax.tree.map(lambda u: floating(u, None), updates)
    return jax.tree.map(floating, updates, params)


def checked_inputs(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` (a chain), with the inputs of its update checked first.

    Args:
        inner: An ``optax.chain``, whose state is a tuple.

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
        if not isinstance(state, tuple):
            got = "None" if state is None else f"a {type(state).__name__}"
            raise TypeError(
                f"momentum's update got the state {got}, not the tuple that its "
                "init returns: pass it, as in state = opt.init(params); "
                "updates, state = opt.update(grads, state, params)."
            )
        if check_updates(updates):
            if params is not None:
                check_like(updates, params, "params")
            updates = _as_floating(updates, params)
        result: tuple[optax.Updates, Any] = inner.update(
            updates, state, params, **extra_args
        )
        return result

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
