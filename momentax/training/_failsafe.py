"""What makes ``fit`` fail safely: early checks, Ctrl-C held back, results kept."""

import contextlib
import inspect
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax


def check_callback(callback: Any) -> None:
    """``callback`` must be None or callable with (steps_done, num_steps)."""
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(
            f"callback must be a function (steps_done, num_steps); got {callback!r}."
        )
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # Some builtins have none: call and see.
        return
    try:
        signature.bind(0, 0)
    except TypeError:
        raise TypeError(
            "callback must accept two positional arguments (steps_done, "
            f"num_steps); {callback!r} has the signature {signature}."
        ) from None


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Holds back Ctrl-C from a call until its outputs are assigned.

    A ``KeyboardInterrupt`` between a donating call's return and the assignment
    of its outputs would drop both the donated inputs and the outputs.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _consumed(result: Any) -> bool:
    """Whether the params or state of ``result`` are gone.

    They are when they were donated to the call that failed, or are outputs of
    a call whose error surfaced later.
    """
    arrays = [
        leaf
        for leaf in jax.tree.leaves((result.params, result.opt_state))
        if isinstance(leaf, jax.Array)
    ]
    if any(leaf.is_deleted() for leaf in arrays):
        return True
    try:
        jax.block_until_ready(arrays)  # type: ignore[no-untyped-call]
    except Exception:  # An output of the failing call: its error again.
        return True
    return False


def _latest_step(checkpoint: Any) -> int | None:
    """The newest step of ``checkpoint`` once its saves are done (None if none)."""
    if checkpoint is None:
        return None
    with contextlib.suppress(Exception):  # A failed save: the steps before it count.
        checkpoint.wait()
    step: int | None = checkpoint.latest_step()
    return step


def hand_over(
    error: BaseException, result: Any, done: int, total: int, checkpoint: Any = None
) -> None:
    """Puts the completed steps' result on ``error`` and says how to resume.

    From the result itself, or, when the failing call consumed the donated
    params and state (then None in it), from the latest step of ``checkpoint``.
    """
    consumed = _consumed(result)
    if consumed:
        result = result._replace(params=None, opt_state=None)
    try:
        error.fit_result = result  # type: ignore[attr-defined]
    except AttributeError:  # An exception type without a __dict__.
        return
    stopped = f"momentax.training.fit stopped after {done} of {total} steps; "
    if not consumed:
        error.add_note(
            stopped + "error.fit_result holds their params, opt_state, history and "
            f"step ({result.step}): resume with fit(..., error.fit_result.params, "
            "opt_state=error.fit_result.opt_state, "
            "start_step=error.fit_result.step)."
        )
        return
    latest = _latest_step(checkpoint)
    error.add_note(
        stopped + "the failing call had consumed the donated params and state, so "
        "error.fit_result.params and .opt_state are None. "
        + (
            f"Call fit again with the same checkpoint manager: it resumes from its "
            f"latest step, {latest}."
            if latest is not None
            else "To resume after such an error, pass checkpoint= (a "
            "momentax.training.CheckpointManager) with checkpoint_every=, or "
            "donate=False to keep the inputs of every call (twice the memory)."
        )
    )
