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


def hand_over(error: BaseException, result: Any, done: int, total: int) -> None:
    """Puts the completed steps' result on ``error`` and says so in its notes."""
    try:
        error.fit_result = result  # type: ignore[attr-defined]
    except AttributeError:  # An exception type without a __dict__.
        return
    deleted = any(
        isinstance(leaf, jax.Array) and leaf.is_deleted()
        for leaf in jax.tree.leaves((result.params, result.opt_state))
    )
    error.add_note(
        f"momentax.training.fit stopped after {done} of {total} steps; "
        + (
            "the failing call had already consumed the donated params and state."
            if deleted
            else "error.fit_result holds their params, opt_state, history and "
            f"step ({result.step}): resume with fit(..., error.fit_result.params, "
            "opt_state=error.fit_result.opt_state, "
            "start_step=error.fit_result.step)."
        )
    )
