"""Hyperparameters: validation at construction and resolution at update time.

A hyperparameter is a scalar (a Python number, a NumPy or JAX scalar), a
schedule (a callable of the step count), or a pytree that is a prefix of the
params whose leaves are scalars or schedules. Values known at construction are
checked there; traced values (inside ``jax.jit``, or injected by
``optax.inject_hyperparams``) and the values a schedule returns cannot be, and
are used as given.
"""

import inspect
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

Scalar: TypeAlias = float | int | jax.Array | np.ndarray | np.generic
Schedule: TypeAlias = Callable[[jax.Array], Any]
ScalarOrSchedule: TypeAlias = Scalar | Schedule
HyperParam: TypeAlias = ScalarOrSchedule | Any
"""A scalar, a schedule, or a pytree prefix of the params of those."""

_SCALAR_TYPES = (numbers.Number, np.ndarray, np.generic, jax.Array)


def is_per_leaf(value: Any) -> bool:
    """Whether ``value`` is a pytree of per-leaf values rather than one value."""
    return not (callable(value) or isinstance(value, _SCALAR_TYPES))


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is zero and known without tracing (a Python or NumPy number).

    JAX arrays never count, even concrete ones: ``optax.inject_hyperparams``
    passes arrays at ``init`` and tracers at ``update``, and the two must make
    the same decisions about the state's structure.
    """
    leaves = jax.tree.leaves(value, is_leaf=callable)
    return bool(leaves) and all(
        isinstance(leaf, numbers.Real | np.generic)
        and not isinstance(leaf, bool | np.bool_)
        and leaf == 0
        for leaf in leaves
    )


def _is_dtype_like(value: Any) -> bool:
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _format_interval(low: float, high: float) -> str:
    if math.isinf(high):
        return f"a finite number >= {low:g}"
    return f"in [{low:g}, {high:g}]"


def is_schedule(value: Any) -> bool:
    """Whether ``value`` is a schedule: a callable that is not a class or dtype.

    Classes such as ``int`` and dtypes such as ``jnp.float32`` are callable, but
    taking one for a schedule would train with a rate equal to the step count.
    """
    return callable(value) and not isinstance(value, type | np.dtype)


def has_schedule(value: Any) -> bool:
    """Whether any leaf of the hyperparameter ``value`` is a schedule."""
    return any(map(is_schedule, jax.tree.leaves(value, is_leaf=callable)))


def check_flag(name: str, value: Any) -> None:
    """Checks that an option is ``True`` or ``False``.

    Raises:
        TypeError: ``value`` is not a ``bool``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")


def check_static_scalar(name: str, value: Any, *, low: float, high: float) -> None:
    """Checks a hyperparameter that must be one scalar: no schedule, no pytree.

    Raises:
        TypeError: ``value`` is a schedule, a pytree or not a number.
        ValueError: ``value`` is outside ``[low, high]``.
    """
    if callable(value) or is_per_leaf(value):
        raise TypeError(f"{name} must be a float or a JAX scalar; got {value!r}.")
    check_hyperparam(name, value, low=low, high=high)


def _check_leaf(name: str, leaf: Any, low: float, high: float) -> None:
    if isinstance(leaf, type | np.dtype):
        raise TypeError(
            f"{name} must be a number or a schedule; got the "
            f"{'dtype' if _is_dtype_like(leaf) else 'class'} {leaf!r}, which is "
            "callable but not a schedule."
        )
    if callable(leaf):
        _check_arity(name, leaf)
        return  # A schedule's values are only known when it runs.
    allowed = "a float, a JAX scalar, a schedule, or a pytree of those"
    if leaf is None:
        raise TypeError(f"{name} must be {allowed}; got None (use 0 to turn it off).")
    if isinstance(leaf, bool | np.bool_) or not isinstance(leaf, _SCALAR_TYPES):
        raise TypeError(
            f"{name} must be {allowed}; got {leaf!r} of type {type(leaf).__name__}."
        )
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"{name} must be real-valued; got {leaf!r} with dtype {dtype}.")
    check_scalar(name, leaf)
    if isinstance(leaf, jax.core.Tracer):
        return  # Traced: shape and dtype are known, the value is not.
    value = float(leaf)  # type: ignore[arg-type]  # a real scalar, checked above
    if not (low <= value <= high and math.isfinite(value)):
        raise ValueError(f"{name} must be {_format_interval(low, high)}; got {leaf!r}.")


def _check_arity(name: str, schedule: Callable[..., Any]) -> None:
    """Checks that ``schedule`` can be called with one argument, the step count."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # Some builtins have none: call and see.
        return
    try:
        signature.bind(0)
    except TypeError:
        raise TypeError(
            f"{name} is a schedule, so it must take one argument, the step count "
            f"(as optax's schedules do); {schedule!r} has the signature "
            f"{signature}. Wrap it, e.g. lambda count: ..."
        ) from None


def check_scalar(name: str, value: Any) -> None:
    """Checks that a hyperparameter value (possibly traced) is a scalar.

    Raises:
        ValueError: ``value`` has a non-empty shape.
    """
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar; got a value of shape {jnp.shape(value)}. "
            "Give per-leaf values as a pytree prefix of the params instead."
        )


def known_values(value: Any) -> list[np.ndarray]:
    """The values of a hyperparameter that are known now: not traced or scheduled."""
    return [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(value, is_leaf=callable)
        if not callable(leaf) and not isinstance(leaf, jax.core.Tracer)
    ]


def check_hyperparam(name: str, value: Any, *, low: float, high: float) -> None:
    """Checks every statically known value of a hyperparameter.

    Args:
        name: The argument's name, used in the error message.
        value: A scalar, a schedule or a pytree of those.
        low: Smallest allowed value (inclusive).
        high: Largest allowed value (inclusive), ``math.inf`` for none.

    Raises:
        TypeError: A leaf is not a real number, a JAX scalar or a callable.
        ValueError: A leaf (traced ones included) is not a scalar, or a known
            leaf is outside ``[low, high]``, NaN or infinite.
    """
    if value is None or not is_per_leaf(value):
        _check_leaf(name, value, low, high)
        return
    leaves = jax.tree_util.tree_leaves_with_path(value, is_leaf=callable)
    if not leaves:
        raise ValueError(f"{name} is a pytree with no values: {value!r}.")
    for path, leaf in leaves:
        _check_leaf(f"{name}{jax.tree_util.keystr(path)}", leaf, low, high)


def check_prefix(name: str, value: Any, tree: Any, what: str = "params") -> None:
    """Checks that a per-leaf hyperparameter is a prefix of ``tree``.

    Raises:
        ValueError: Naming the argument and showing both structures.
    """
    if not is_per_leaf(value):
        return
    try:
        jax.tree.map(lambda *_: None, value, tree, is_leaf=callable)
    except ValueError:
        value_structure = jax.tree.structure(value, is_leaf=callable)
        raise ValueError(
            f"{name} is a pytree of per-leaf values, so its structure must be a "
            f"prefix of the {what}' structure.\n  {name}: {value_structure}\n"
            f"  {what}: {jax.tree.structure(tree)}"
        ) from None


def resolve(name: str, value: Any, count: jax.Array | None, like: Any) -> Any:
    """Evaluates schedules at ``count`` and broadcasts the result onto ``like``.

    Returns:
        A pytree with the structure of ``like`` whose leaves are the value that
        applies to each leaf of ``like`` (a number or a scalar array).

    Raises:
        ValueError: A schedule returned a value that is not a scalar.
    """

    def evaluate(leaf: Any) -> Any:
        if not callable(leaf):
            return leaf
        current = leaf(count)
        what = f"the value of the {name} schedule"
        numeric = isinstance(current, _SCALAR_TYPES) and not isinstance(current, bool)
        dtype = jnp.result_type(current) if numeric else None
        if dtype is None or not (
            jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
        ):
            raise TypeError(
                f"{what} must be a real number; got {current!r}"
                + ("" if dtype is None else f" of dtype {dtype}")
                + ". Make the schedule return a float for every step count."
            )
        check_scalar(what, current)
        return current

    if not is_per_leaf(value):
        current = evaluate(value)
        return jax.tree.map(lambda _: current, like)
    current = jax.tree.map(evaluate, value, is_leaf=callable)
    return jax.tree.map(
        lambda leaf, subtree: jax.tree.map(lambda _: leaf, subtree), current, like
    )


_ACCUMULATOR_DTYPES = tuple(
    map(jnp.dtype, ("float16", "bfloat16", "float32", "float64"))
)
_COMPLEX_DTYPES = tuple(map(jnp.dtype, ("complex64", "complex128")))


def check_dtype(name: str, dtype: Any, *, complex_ok: bool = False) -> jnp.dtype | None:
    """Checks a floating (or complex) dtype argument; returns it canonicalized.

    Args:
        name: The argument's name, used in the error message.
        dtype: ``None`` or anything ``jnp.dtype`` accepts.
        complex_ok: Also allow complex64 and complex128.

    Returns:
        The ``jnp.dtype``, or ``None`` for ``None``.

    Raises:
        TypeError: ``dtype`` does not name a dtype.
        ValueError: It is not one of float16, bfloat16, float32, float64 (or
            the complex ones), or it needs 64-bit mode.

    Examples:
        >>> import jax.numpy as jnp
        >>> from momentax import hyperparams
        >>> hyperparams.check_dtype("accumulator_dtype", "float32")
        dtype('float32')
    """
    if dtype is None:
        return None
    try:
        result: jnp.dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"{name} must be a dtype such as jnp.float32; got {dtype!r}."
        ) from None
    allowed = _ACCUMULATOR_DTYPES + (_COMPLEX_DTYPES if complex_ok else ())
    if result not in allowed:
        raise ValueError(
            f"{name} must be a floating dtype, one of "
            f"{', '.join(d.name for d in allowed)}; got {result}."
        )
    if jax.dtypes.canonicalize_dtype(result) != result:
        raise ValueError(
            f"{name}={dtype!r} means {result}, which needs 64-bit mode: enable it with "
            "jax.config.update('jax_enable_x64', True)."
        )
    return result


def check_real(name: str, value: Any) -> float:
    """``value`` as a float, if it is a real number (Python or NumPy), not a bool."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a float (a Python or NumPy number); got {value!r}."
        )
    return float(value)


def check_integer(name: str, value: Any, low: int) -> int:
    """``value`` as an int, if it is an integer (Python or NumPy) >= ``low``."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    return number
