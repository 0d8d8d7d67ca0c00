"""How ``fit`` saves to a :class:`CheckpointManager` and resumes from it."""

from typing import Any

from momentax import hyperparams as hp
from momentax.training._checkpoint import CheckpointManager

PyTree = Any


def check(checkpoint: Any, every: Any) -> int | None:
    """Checks ``fit``'s ``checkpoint`` and ``checkpoint_every``; returns the latter."""
    if checkpoint is not None and not isinstance(checkpoint, CheckpointManager):
        raise TypeError(
            "checkpoint must be a momentax.training.CheckpointManager; got "
            f"{type(checkpoint).__name__}."
        )
    if every is None:
        return None
    if checkpoint is None:
        raise ValueError(
            "checkpoint_every needs checkpoint=momentax.training.CheckpointManager"
            "(directory) to save to."
        )
    return hp.check_integer("checkpoint_every", every, low=1)


def resume(
    checkpoint: CheckpointManager,
    params: PyTree,
    opt_state: PyTree,
    first: int,
    end: int,
) -> tuple[PyTree, PyTree, int]:
    """The state to start from and the steps already done.

    From the latest step of ``checkpoint`` if it is past ``first``, else the
    given state with none done.

    Raises:
        ValueError: If the latest step is past ``end``, or does not fit.
    """
    latest = checkpoint.latest_step()
    if latest is None or latest <= first:
        return params, opt_state, 0
    if latest > end:
        raise ValueError(
            f"{checkpoint.directory!r} holds step {latest}, past this fit's last step "
            f"{end} (start_step + num_steps): pass a larger num_steps, or a "
            "CheckpointManager of a new directory for a new run."
        )
    restored = checkpoint.restore(
        {"params": params, "opt_state": opt_state}, step=latest
    )
    return restored["params"], restored["opt_state"], latest - first


def call_length(per_call: int, remaining: int, step: int, every: int | None) -> int:
    """Steps in the next compiled call: it ends at the next multiple of ``every``."""
    length = min(per_call, remaining)
    return length if every is None else min(length, every - step % every)


def save_if_due(
    checkpoint: CheckpointManager | None,
    every: int | None,
    step: int,
    end: int,
    params: PyTree,
    opt_state: PyTree,
) -> None:
    """Saves ``step`` if it is a multiple of ``every`` or the last one.

    First waits for the previous save, which was written while the last call
    ran: a step past a saved one completes only once that one is on disk, so a
    killed run loses at most ``every`` steps (and the call it was in).
    """
    if checkpoint is None:
        return
    checkpoint.wait()
    if step == end or (every is not None and step % every == 0):
        checkpoint.save(step, {"params": params, "opt_state": opt_state})
