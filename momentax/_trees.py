"""Checks and dtypes of the trees the transforms see: params, updates, buffers."""

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def velocity_dtype(param_dtype: Any, accumulator_dtype: jnp.dtype | None) -> Any:
    """The dtype of a leaf's buffer; complex params keep a complex buffer."""
    if accumulator_dtype is None:
        return param_dtype
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and not jnp.issubdtype(
        accumulator_dtype, jnp.complexfloating
    ):
        wide = jnp.dtype(accumulator_dtype).itemsize > 4
        return jnp.dtype(jnp.complex128 if wide else jnp.complex64)
    return accumulator_dtype


def wider_dtype(a: Any, b: Any) -> Any:
    """The dtype both ``a`` and ``b`` convert to, even under strict promotion."""
    if a == b:
        return a
    with jax.numpy_dtype_promotion("standard"):
        return jnp.promote_types(a, b)


def traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (under ``jit``, ``vmap``, ``grad``)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def cast(x: Any, dtype: Any) -> Any:
    """``x.astype(dtype)``, or ``x`` itself where that changes nothing.

    The update casts every leaf to its compute dtype and back; skipping the
    casts that do nothing saves their tracing, once per leaf and call.
    """
    if x.dtype == dtype and not getattr(x, "weak_type", False):
        return x
    return x.astype(dtype)


def scalars(
    convert: Callable[[Any, Any], jax.Array],
) -> Callable[[Any, Any], jax.Array]:
    """``convert(value, dtype)``, computed once per value object and dtype.

    A hyperparameter resolves to one value object for every leaf it applies
    to: converting it once per update rather than once per leaf gives one
    operation in the trace instead of one per leaf. Use a new cache per call
    (it holds the values, so that their ids stay theirs).
    """
    made: dict[tuple[int, Any], tuple[Any, jax.Array]] = {}

    def get(value: Any, dtype: Any) -> jax.Array:
        key = (id(value), jnp.dtype(dtype))
        if key not in made:
            made[key] = (value, convert(value, dtype))
        return made[key][1]

    return get


def check_params(params: Any, accumulator_dtype: jnp.dtype | None = None) -> None:
    """Checks that every leaf is a floating or complex array or number.

    Raises:
        TypeError: A leaf is an integer or boolean, or not an array at all.
        ValueError: A complex ``accumulator_dtype`` is given for real params.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = f"params{jax.tree_util.keystr(path)}"
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:
            raise TypeError(
                f"{name} must be an array or a number; got {type(leaf).__name__}."
            ) from None
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name} has dtype {dtype}; momentum needs floating-point or "
                "complex params (an integer param cannot take a fractional step): "
                f"cast it, e.g. jnp.asarray(x, jnp.float32){_number_hint(leaf)}."
            )
        if (
            accumulator_dtype is not None
            and jnp.issubdtype(accumulator_dtype, jnp.complexfloating)
            and not jnp.issubdtype(dtype, jnp.complexfloating)
        ):
            raise ValueError(
                f"accumulator_dtype={accumulator_dtype} is complex but {name} is "
                f"real ({dtype}); use a real accumulator_dtype such as float32."
            )


def _number_hint(leaf: Any) -> str:
    if isinstance(leaf, int):
        return f", or write the Python number as {float(leaf)!r}"
    return ""


_FIXES = {
    "params": "Pass the params the updates are the gradients of: "
    "update(updates, state, params).",
    "velocity": "Pass the state that init returned for params of the updates' "
    "structure.",
}


def check_like(updates: Any, other: Any, what: str) -> None:
    """Checks that ``updates`` has the tree structure and shapes of ``other``.

    Raises:
        ValueError: Showing both structures, or listing each shape mismatch.
    """
    updates_structure = jax.tree.structure(updates)
    other_structure = jax.tree.structure(other)
    if updates_structure != other_structure:  # type: ignore[operator]
        raise ValueError(
            f"The updates do not have the structure of the {what}.\n"
            f"  updates: {updates_structure}\n  {what}: {other_structure}\n"
            + _FIXES.get(what, "")
        )
    mismatches = [
        f"  {jax.tree_util.keystr(path)}: updates {jnp.shape(u)}, {what} {jnp.shape(o)}"
        for (path, u), o in zip(
            jax.tree_util.tree_leaves_with_path(updates),
            jax.tree.leaves(other),
            strict=True,
        )
        if jnp.shape(u) != jnp.shape(o)
    ]
    if mismatches:
        raise ValueError(
            f"The updates do not have the shapes of the {what}:\n"
            + "\n".join(mismatches)
            + f"\n{_FIXES.get(what, '')}"
        )


def _judge(leaf: Any) -> tuple[str, bool]:
    """What makes ``leaf`` no update (with the fix), or ``""``; and if it is integer."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None and isinstance(leaf, numbers.Number):
        dtype = jnp.result_type(leaf)  # A Python number (bool included).
    if dtype is None:
        return (
            f"must be an array or a number; got {type(leaf).__name__}. Pass the "
            "gradients, e.g. from jax.grad(loss)(params)",
            False,
        )
    if dtype == jnp.bool_:
        return (
            "has dtype bool, which is not a gradient: pass floating-point "
            "gradients (a 0/1 mask becomes one with mask.astype(jnp.float32); to "
            "leave leaves out, use optax.masked)",
            False,
        )
    if not jnp.issubdtype(dtype, jnp.number):
        return f"has dtype {dtype}, not a number; pass floating-point gradients", False
    return "", bool(jnp.issubdtype(dtype, jnp.integer))


def check_updates(updates: Any) -> bool:
    """Checks that every update is a number or an array of numbers, not booleans.

    Only dtypes are read, so the check holds under ``jit``.

    Returns:
        Whether some update is an integer.

    Raises:
        TypeError: Naming the first leaf that is boolean or not numeric.
    """
    # Leaves share a few dtypes: each is judged once (this runs at every trace).
    verdicts: dict[Any, tuple[str, bool]] = {}
    any_integer = False
    for index, leaf in enumerate(jax.tree.leaves(updates)):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            problem, integer = _judge(leaf)
        else:
            if dtype not in verdicts:
                verdicts[dtype] = _judge(leaf)
            problem, integer = verdicts[dtype]
        if problem:
            path, _ = jax.tree_util.tree_leaves_with_path(updates)[index]
            raise TypeError(f"updates{jax.tree_util.keystr(path)} {problem}.")
        any_integer = any_integer or integer
    return any_integer
