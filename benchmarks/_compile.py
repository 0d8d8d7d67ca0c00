"""Compile time: momentax against optax.sgd as the number of leaves grows.

Every case is the first call of freshly built functions on ``n`` float32
leaves of 3 floats, with the sum-of-squares loss of the step benchmarks. Its
compile time is that first call minus a second, warm call of the same
function; jax's monitoring events split it into XLA's compilation, the
lowering to StableHLO, and the rest: tracing and whatever Python runs once
(the checks of ``fit`` included).

Besides the train step, a hand-written jitted step and ``fit`` for both
optimizers, the section times what they are made of: the loss's gradient
alone (with and without its value) and the ``lax.scan`` that ``fit`` runs,
written by hand with ``optax.sgd``. Where those grow as the whole does, the
growth is the loss's or XLA's, not the optimizer's.
"""

import contextlib
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

import momentax
import momentax.training
from benchmarks import _contenders as c
from benchmarks._suites import _quadratic_loss

Row = dict[str, Any]
Log = Callable[[str], None]
Run = Callable[[], None]

LEAF_SIZE = 3
FIT_STEPS = 10
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
XLA_EVENT = "/jax/core/compile/backend_compile_duration"

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "momentax": lambda: momentax.momentum(c.LEARNING_RATE, c.MOMENTUM),
    "optax.sgd": lambda: optax.sgd(c.LEARNING_RATE, momentum=c.MOMENTUM),
}
COMPARED = ("train step", "jit step", "fit")
"""The cases timed for both optimizers; the rest are references."""


def _loss() -> Callable[[Any, jax.Array], jax.Array]:
    """A new function object each time, so that no cache keyed on it hits."""
    return lambda params, target: _quadratic_loss(params, target)


def _params(num_leaves: int) -> list[jax.Array]:
    return [jnp.full((LEAF_SIZE,), i, jnp.float32) for i in range(num_leaves)]


_TARGET = 0.5


def _looped(step: Callable[..., Any], params: Any, state: Any) -> Run:
    """Calls ``step(params, state, target)``, which returns them anew (and more)."""
    carry = [params, state]
    target = jnp.float32(_TARGET)

    def run() -> None:
        params, state, *rest = step(*carry, target)
        jax.block_until_ready((params, state, rest))  # type: ignore[no-untyped-call]
        carry[:] = params, state

    return run


def _train_step(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """``momentax.training.make_train_step``: donated, recording the loss."""
    step = momentax.training.make_train_step(_loss(), optimizer)
    params = _params(num_leaves)
    return _looped(step, params, optimizer.init(params))


def _jit_step(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """The step an Optax user writes: grad, update, apply, under ``jax.jit``."""
    loss = _loss()

    @jax.jit
    def step(params: Any, state: Any, target: jax.Array) -> tuple[Any, Any]:
        grads = jax.grad(loss)(params, target)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = _params(num_leaves)
    return _looped(step, params, optimizer.init(params))


def _fitting(
    loss: Callable[[Any, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    params: Any,
    **options: Any,
) -> Run:
    """A call of ``momentax.training.fit`` for ``FIT_STEPS`` steps from ``params``."""

    def step(params: Any, state: Any, target: jax.Array) -> tuple[Any, Any, Any]:
        result = momentax.training.fit(
            loss,
            optimizer,
            params,
            target,
            num_steps=FIT_STEPS,
            opt_state=state,
            **options,
        )
        return result.params, result.opt_state, result

    return _looped(step, params, optimizer.init(params))


def _fit(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """``momentax.training.fit`` for ``FIT_STEPS`` steps, recording the loss."""
    return _fitting(_loss(), optimizer, _params(num_leaves))


def _scan(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """What ``fit`` compiles, by hand: ``FIT_STEPS`` steps in a ``lax.scan``."""
    loss = _loss()

    @jax.jit
    def train(params: Any, state: Any, target: jax.Array) -> Any:
        def body(carry: Any, _: None) -> Any:
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params, target)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, state), losses = jax.lax.scan(body, (params, state), length=FIT_STEPS)
        return params, state, losses

    params = _params(num_leaves)
    return _looped(train, params, optimizer.init(params))


def _packed_fit(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """``fit`` on ``momentax.training.pack``'d params: what a user can do."""
    return _fitting(_loss(), optimizer, momentax.training.pack(_params(num_leaves)))


def _unrecorded_fit(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """``fit`` with ``record=()``: the loss's value is never computed."""
    return _fitting(_loss(), optimizer, _params(num_leaves), record=())


def _stacked_fit(num_leaves: int, optimizer: optax.GradientTransformation) -> Run:
    """``fit`` on the same params as one ``(n, 3)`` array: the same loss, one op."""

    def loss(params: jax.Array, target: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum((params - target) ** 2)

    return _fitting(loss, optimizer, jnp.stack(_params(num_leaves)))


def _gradient(with_value: bool) -> Callable[[int, None], Run]:
    def make(num_leaves: int, _: None) -> Run:
        loss = _loss()
        grad = jax.jit(jax.value_and_grad(loss) if with_value else jax.grad(loss))
        params = _params(num_leaves)
        target = jnp.float32(_TARGET)

        def run() -> None:
            jax.block_until_ready(grad(params, target))  # type: ignore[no-untyped-call]

        return run

    return make


@dataclass(frozen=True)
class Case:
    """One row of the section: what is compiled, with which optimizer.

    Attributes:
        what: The row label.
        optimizer: A key of ``OPTIMIZERS``, or None for the loss alone.
        make: Builds fresh functions and inputs for ``num_leaves`` leaves and
            returns a call that runs them once and blocks on the results.
        max_leaves: The largest leaf count it is timed at (None: all), for a
            case whose compile time outgrows the others'.
    """

    what: str
    optimizer: str | None
    make: Callable[[int, Any], Run]
    max_leaves: int | None = None

    def runner(self, num_leaves: int) -> Run:
        """A fresh call: a new optimizer, loss and jitted function."""
        optimizer = None if self.optimizer is None else OPTIMIZERS[self.optimizer]()
        return self.make(num_leaves, optimizer)


CASES = (
    *(
        Case(what, name, make)
        for what, make in (
            ("train step", _train_step),
            ("jit step", _jit_step),
            ("fit", _fit),
        )
        for name in OPTIMIZERS
    ),
    # About 8 s at 300 leaves and growing faster than the rest (the loss's
    # slices of the buffers and their gradient's concatenation): left out above
    # 1000 leaves, where it would take as long as the rest of the section.
    Case("fit, packed params", "momentax", _packed_fit, max_leaves=1000),
    Case("fit, record=()", "momentax", _unrecorded_fit),
    Case("fit, one (n, 3) array", "momentax", _stacked_fit),
    Case("lax.scan by hand", "optax.sgd", _scan),
    Case("value_and_grad of the loss", None, _gradient(with_value=True)),
    Case("grad of the loss", None, _gradient(with_value=False)),
)


@contextlib.contextmanager
def _no_persistent_cache() -> Iterator[None]:
    """Turns jax's on-disk compilation cache off (a hit would time a read)."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)


def measure(run: Run) -> dict[str, float]:
    """Times a fresh ``run``'s first call against its second.

    Returns:
        ``seconds``: the first call minus the second; ``xla``: XLA's
        compilation; ``lower``: jaxpr to StableHLO; ``trace``: the rest
        (tracing, and Python that runs once); ``first_call`` and ``warm_call``.
    """
    events = {XLA_EVENT: 0.0, LOWER_EVENT: 0.0}

    def listener(event: str, duration: float, **_: Any) -> None:
        if event in events:
            events[event] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    start = time.perf_counter()
    run()
    warm = time.perf_counter() - start
    seconds = max(first - warm, 0.0)
    xla, lower = events[XLA_EVENT], events[LOWER_EVENT]
    return {
        "seconds": seconds,
        "trace": max(seconds - xla - lower, 0.0),
        "lower": lower,
        "xla": xla,
        "first_call": first,
        "warm_call": warm,
    }


def compile_times(
    leaf_counts: Sequence[int],
    log: Log,
    *,
    repeats: int = 3,
    cases: Sequence[Case] = CASES,
) -> list[Row]:
    """The compile time of every case at every leaf count.

    Each case is measured ``repeats`` times, with jax's caches cleared before
    each measurement and fresh function objects, so that nothing compiled
    before is reused; the repeats of the cases at one leaf count are
    interleaved in a shuffled (seeded) order, so that a noisy neighbour
    spreads over all of them.

    Returns:
        One row per case and leaf count: the medians over the repeats of
        ``seconds`` (first call minus warm call), ``trace``, ``lower`` and
        ``xla`` (each its own median), and every repeat's ``seconds``.
    """
    rows = []
    order = random.Random(0)
    with _no_persistent_cache():
        for num_leaves in leaf_counts:
            timed = [
                i
                for i, case in enumerate(cases)
                if case.max_leaves is None or num_leaves <= case.max_leaves
            ]
            samples: dict[int, list[dict[str, float]]] = {i: [] for i in timed}
            for round_index in range(repeats):
                log(f"compile, {num_leaves} leaves, round {round_index + 1}/{repeats}")
                for i in order.sample(timed, len(timed)):
                    jax.clear_caches()
                    samples[i].append(measure(cases[i].runner(num_leaves)))
            for i in timed:
                case, got = cases[i], samples[i]
                rows.append(
                    {
                        "what": case.what,
                        "optimizer": case.optimizer,
                        "leaves": num_leaves,
                        "leaf_size": LEAF_SIZE,
                        **{
                            key: statistics.median(s[key] for s in got)
                            for key in got[0]
                        },
                        "samples": [s["seconds"] for s in got],
                    }
                )
    return rows


def label(row: Row) -> str:
    """``what (optimizer)``, or ``what`` for the loss alone."""
    if row["optimizer"] is None:
        return str(row["what"])
    return f"{row['what']} ({row['optimizer']})"


def growth(rows: Sequence[Row], what: str, optimizer: str | None) -> Row | None:
    """How the case's compile time grows between the two largest leaf counts.

    Returns:
        None with fewer than two leaf counts, else ``exponent``
        ``log(t_b / t_a) / log(b / a)`` (1 is linear, 2 quadratic) with the
        counts ``a < b`` and their seconds.
    """
    mine = sorted(
        (r for r in rows if r["what"] == what and r["optimizer"] == optimizer),
        key=lambda r: r["leaves"],
    )
    if len(mine) < 2:
        return None
    a, b = mine[-2], mine[-1]
    if a["seconds"] <= 0 or b["seconds"] <= 0:
        return None
    exponent = math.log(b["seconds"] / a["seconds"]) / math.log(
        b["leaves"] / a["leaves"]
    )
    return {
        "exponent": exponent,
        "from": a["leaves"],
        "to": b["leaves"],
        "seconds_from": a["seconds"],
        "seconds_to": b["seconds"],
    }


def ratio(rows: Sequence[Row], what: str, num_leaves: int) -> float | None:
    """The compile time of momentax over optax.sgd's, for one case and leaf count."""
    seconds = {
        r["optimizer"]: r["seconds"]
        for r in rows
        if r["what"] == what and r["leaves"] == num_leaves
    }
    mine, theirs = seconds.get("momentax"), seconds.get("optax.sgd")
    if mine is None or not theirs:
        return None
    return float(mine / theirs)
