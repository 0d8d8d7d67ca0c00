r"""How XLA compiles a momentum step: choices that change the code, never the numbers.

The optimizer's modules say what a step computes; this one says how it is
written for the compiler. :func:`compiled_form` applies the first two choices
below to a whole :func:`momentax.momentum` chain (and runs the chain in the
accumulator's precision, between them), :func:`keep_velocity_sharding` the
third to a momentum buffer. Each wraps a transform through :func:`_rewritten`,
which keeps Optax's extra-arguments contract.

* **The lr-inside update fused into the params' add.** When the update is the
  new velocity itself, ``optax.apply_updates`` adds it to the params alone, and
  XLA:CPU compiles a lone elementwise add through a slower path than a fused
  loop (about 2x slower at 1e5-1e6 float32 params, behind ``optax.sgd``'s
  multiply-add). Under ``jit`` the update is written as ``v * 1``, the one
  passed through ``jax.lax.optimization_barrier`` so that XLA cannot simplify
  the product away before fusion; it fuses into the add as Optax's
  ``p + (-lr) * u`` does. Multiplying by one is exact in IEEE arithmetic.
* **One memory sweep, where XLA:CPU's multi-output fusion is on.** A step reads
  the params, the gradients and the velocity and writes the params and the
  velocity: five words per param. XLA:CPU compiles ``v' = f(v, g)`` then
  ``p' = p + h(v')`` into two loops, the second reading ``v'`` back: six words.
  Its multi-output fusion pass (off by default; on with
  ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion``)
  merges loops that read the same inputs, but not a loop with the one that
  reads its output. So, where that pass runs (:func:`uses_single_sweep`), the
  update is computed a second time from the old velocity and gradients passed
  through an optimization barrier (which keeps XLA from recognising the two
  computations as one), and the two loops merge into one. Without the pass
  that form is several times slower.
* **The velocity sharded like its param.** Under ``jax.jit`` with ``Auto`` mesh
  axes a buffer of zeros has no operand to inherit a sharding from, so XLA
  replicates it (``optax.sgd``'s velocity is), and the first step then slices
  or gathers it. ``jax.experimental.shard_alike`` ties each buffer to its param.
"""

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.experimental.shard_alike import shard_alike

from momentax._precision import compute_in
from momentax._state import CountedMomentumState, MomentumState
from momentax._trees import traced

_FUSION_OPTION = "xla_cpu_use_multi_output_fusion"
_BufferState = MomentumState | CountedMomentumState

# The wrapped update with its extra arguments bound: (updates, state, params) -> ...
_Update = Callable[[optax.Updates, Any, optax.Params | None], tuple[optax.Updates, Any]]


def _rewritten(
    inner: optax.GradientTransformation,
    update: Callable[[_Update, optax.Updates, Any, optax.Params | None], Any],
    init: Callable[[Any, optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` with its update (and init) passed through the given rewrites.

    ``update(run, updates, state, params)`` gets ``run``, ``inner.update`` with
    the call's extra keyword arguments bound; ``init(state, params)`` gets the
    state ``inner.init`` returned.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> Any:
        state = inner.init(params)
        return state if init is None else init(state, params)

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        def run(
            updates: optax.Updates, state: Any, params: optax.Params | None
        ) -> tuple[optax.Updates, Any]:
            out: tuple[optax.Updates, Any] = inner.update(
                updates, state, params, **extra_args
            )
            return out

        out: tuple[optax.Updates, Any] = update(run, updates, state, params)
        return out

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def compiled_form(
    chain: optax.GradientTransformation,
    *,
    accumulator_dtype: Any | None,
    fused_add: bool,
    sweep: bool,
) -> optax.GradientTransformationExtraArgs:
    """``chain`` in its precision, written so that XLA fuses its step per leaf.

    The rewrites apply under a trace only; eagerly ``chain`` runs as it is. The
    updates and the state are ``chain``'s, bit for bit. The fused add is applied
    to the update in the accumulator's precision, before it is cast back, and
    the sweep to the whole step, so that it can see the dtypes.

    Args:
        chain: A momentum step whose state holds a velocity.
        accumulator_dtype: The velocity's dtype (``None``: the params'):
            ``chain`` computes in the wider of it and each leaf's dtype.
        fused_add: Its update is the new velocity itself (the lr-inside
            convention without Nesterov): write it as ``v * 1`` behind an
            optimization barrier, which XLA:CPU fuses into the params' add.
            Float16, bfloat16, float32 and float64 updates (the dtypes in
            which multiplying by one gives back every bit pattern) are
            rewritten; complex and float8 ones are left as they are.
        sweep: Compute the update a second time, from the inputs behind an
            optimization barrier, where :func:`uses_single_sweep` holds and the
            updates, params and velocity share one dtype (XLA:CPU does not
            merge loops of mixed dtypes, and the form would cost a copy).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with ``chain``'s state.
    """
    if fused_add:
        chain = _rewritten(chain, _fused_add)
    if accumulator_dtype is not None:
        chain = compute_in(chain, accumulator_dtype)
    if sweep:
        chain = _rewritten(chain, _swept)
    return optax.with_extra_args_support(chain)


# The dtypes in which multiplying by one gives back every bit pattern the
# update can hold (zeros of either sign, infinities, NaNs, subnormals).
_UNIT_SCALED = frozenset(
    jnp.dtype(t) for t in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
)


def _fused_add(
    run: _Update, updates: optax.Updates, state: Any, params: optax.Params | None
) -> tuple[optax.Updates, Any]:
    """The update times a one that XLA cannot see through, per unit-scaled dtype."""
    updates, state = run(updates, state, params)
    leaves, treedef = jax.tree.flatten(updates)
    if not traced(leaves):
        return updates, state
    dtypes = sorted({x.dtype for x in leaves if x.dtype in _UNIT_SCALED}, key=str)
    ones = jax.lax.optimization_barrier([jnp.ones((), d) for d in dtypes])
    one = dict(zip(dtypes, ones, strict=True))
    scaled = [x * one[x.dtype] if x.dtype in one else x for x in leaves]
    return jax.tree.unflatten(treedef, scaled), state


def _swept(
    run: _Update, updates: optax.Updates, state: Any, params: optax.Params | None
) -> tuple[optax.Updates, Any]:
    """The new state from the inputs; the updates from them again, behind a barrier."""
    if not (_sweepable(updates, state, params) and uses_single_sweep()):
        return run(updates, state, params)
    _, new_state = run(updates, state, params)
    old = jax.lax.optimization_barrier((updates, state, params))
    new_updates, _ = run(*old)
    return new_updates, new_state


def _sweepable(updates: Any, state: Any, params: Any) -> bool:
    """Whether the step is being traced and all its arrays share one dtype."""
    leaves = jax.tree.leaves((updates, params))
    if not traced(leaves):
        return False
    arrays = leaves + [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]
    return len({jnp.result_type(x) for x in arrays}) == 1


def uses_single_sweep() -> bool:
    """Whether :func:`momentax.momentum` compiles its step as one memory sweep here.

    True when the default JAX backend is the CPU, ``XLA_FLAGS`` turns on
    XLA:CPU's multi-output fusion
    (``--xla_backend_extra_options=xla_cpu_use_multi_output_fusion``, set
    before JAX starts), and a small probe compiled once per process confirms
    that XLA then merges the velocity and param updates into one loop. Where it
    is False, momentax compiles the usual form, which is faster without that
    pass. ``XLA_FLAGS`` is read as XLA reads it: flags separated by
    whitespace, values in single or double quotes, several comma-separated
    options in one ``--xla_backend_extra_options`` (``name`` or
    ``name=value``), or a file of flags named instead. If the probe itself
    fails to compile, a ``RuntimeWarning`` (once per process) names the error,
    and the usual form is compiled.

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
        Where ``XLA_FLAGS`` does not name the option, as by default, the usual
        form is compiled:

        >>> import os
        >>> import momentax
        >>> named = "multi_output_fusion" in os.environ.get("XLA_FLAGS", "")
        >>> False if named else momentax.uses_single_sweep()
        False
    """
    if _FUSION_OPTION not in _backend_extra_options(os.environ.get("XLA_FLAGS", "")):
        return False
    if jax.default_backend() != "cpu":
        return False
    return _merges_loops()


@functools.cache
def _backend_extra_options(xla_flags: str) -> frozenset[str]:
    """The option names that ``--xla_backend_extra_options`` sets in ``xla_flags``.

    XLA merges the options of every occurrence of the flag into one map and
    tests an option's presence, whatever its value.
    """
    if xla_flags.strip() and not xla_flags.lstrip().startswith("-"):
        try:  # XLA reads the flags from the file so named (and stops if it can't).
            xla_flags = Path(xla_flags).read_text()
        except OSError:
            return frozenset()
    prefix = "--xla_backend_extra_options="
    names: set[str] = set()
    for argument in _flag_arguments(xla_flags):
        if argument == "--":  # XLA leaves whatever follows unparsed.
            break
        if argument.startswith(prefix):
            options = argument.removeprefix(prefix).split(",")
            names.update(option.partition("=")[0] for option in options)
    return frozenset(names)


_WHITESPACE = " \t\r\n"


def _flag_arguments(text: str) -> list[str]:
    """``text`` split into flag arguments, with the quoting rules of XLA_FLAGS.

    Arguments are separated by whitespace and each starts with ``-``; the
    first that does not ends the list. A value that starts with a quote right
    after the ``=`` runs to the closing quote (a backslash escapes the next
    character inside double quotes), and its quotes are dropped.
    """
    arguments = []
    start = _skip(text, 0, whitespace=True)
    while start < len(text) and text[start] == "-":
        end = start
        while end < len(text) and (
            text[end] in "-_" or (text[end].isascii() and text[end].isalnum())
        ):
            end += 1
        quoted = text[end : end + 1] == "=" and text[end + 1 : end + 2] in ("'", '"')
        if not quoted:
            end = _skip(text, end, whitespace=False)
            arguments.append(text[start:end])
        else:
            head, quote = text[start : end + 1], text[end + 1]
            value, end = [], end + 2
            while end < len(text) and text[end] != quote:
                if quote == '"' and text[end] == "\\" and end + 1 < len(text):
                    end += 1
                value.append(text[end])
                end += 1
            arguments.append(head + "".join(value))
            end += 1  # Past the closing quote.
        start = _skip(text, end, whitespace=True)
    return arguments


def _skip(text: str, start: int, *, whitespace: bool) -> int:
    """The index of the first character from ``start`` that is (not) whitespace."""
    end = start
    while end < len(text) and (text[end] in _WHITESPACE) == whitespace:
        end += 1
    return end


@functools.cache
def _merges_loops() -> bool:
    """Whether this process's XLA:CPU compiles the two-computation form as one loop.

    XLA reads ``XLA_FLAGS`` once, when the backend starts, so one probe per
    process answers for all later compilations.
    """
    try:
        text = _compile_probe()
    except Exception as error:  # Whatever failed, the usual form is safe.
        warnings.warn(
            f"momentax could not tell whether XLA:CPU merges a momentum step into "
            f"one loop: its probe failed with {type(error).__name__}: {error}. "
            "momentum() compiles the usual two-loop form in this process (the "
            "same numbers; the single sweep of xla_cpu_use_multi_output_fusion "
            "is not used).",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return text.count("fusion(") == 1


def _compile_probe() -> str:
    """The compiled text of a one-leaf step in the two-computation form."""

    def step(p: jax.Array, v: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        new_v = 0.9 * v - 0.01 * g
        old_v, old_g = jax.lax.optimization_barrier((v, g))
        return p + (0.9 * old_v - 0.01 * old_g), new_v

    leaf = jax.ShapeDtypeStruct((4096,), jnp.float32)
    text = jax.jit(step).lower(leaf, leaf, leaf).compile().as_text()
    if text is None:
        raise RuntimeError("the compiled probe has no text to read")
    return str(text)


def keep_velocity_sharding(
    buffer: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``buffer``, whose state's velocity is sharded like the params.

    Under a trace, and where more than one device is visible, each velocity
    leaf is tied to its param at ``init`` and to the old velocity at ``update``
    with ``shard_alike``; eagerly the arrays already carry their sharding, and
    on one device there is nothing to keep (and each tie is a sharding group
    that XLA's compile has to handle: at 1000 small leaves, about a third of
    the update's compile time).

    Args:
        buffer: A transformation whose state is a :class:`MomentumState` or
            :class:`CountedMomentumState` with a velocity of the params'
            shapes (its dtype may differ).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with ``buffer``'s state.
    """

    def tied(state: _BufferState, like: Any) -> _BufferState:
        if not traced(state.velocity) or _one_device():
            return state
        like = jax.tree.map(jnp.asarray, like)
        return state._replace(velocity=jax.tree.map(_tie, state.velocity, like))

    def update(
        run: _Update, updates: optax.Updates, state: Any, params: optax.Params | None
    ) -> tuple[optax.Updates, Any]:
        new_updates, new_state = run(updates, state, params)
        return new_updates, tied(new_state, state.velocity)

    return _rewritten(buffer, update, init=tied)


def _tie(x: jax.Array, like: jax.Array) -> jax.Array:
    """``x``, constrained to be sharded like ``like`` (one shape; dtypes may differ)."""
    tied: jax.Array = shard_alike(x, like)[0]
    return tied


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
