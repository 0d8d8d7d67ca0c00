"""The main job's text report: the header, the momentum tables and the summary."""

import math
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from momentax import __version__
from momentax.tasks._compare import (
    Run,
    diverged_epoch,
    epochs_to_tolerance,
    sign_change,
)
from momentax.tasks._exact import Optimum
from momentax.tasks._line import LineTask

TOLERANCE = 0.01
""""Within 1% of the optimum", see :func:`momentax.tasks.epochs_to_tolerance`."""

_NAME = 12  # The summary's name column: "autotune-hvp".


class Result:
    """One contender's run with its summary figures."""

    def __init__(self, run: Run, optimum: Optimum):
        self.run = run
        self.name = run.contender.name
        self.train_loss = float(run.train_loss[-1])
        self.test_loss = None if run.test_loss is None else float(run.test_loss[-1])
        self.gap = self.train_loss - optimum.train_loss
        self.epochs_to_tolerance = epochs_to_tolerance(run, optimum, TOLERANCE)
        self.sign_change = sign_change(run)
        self.diverged_at = diverged_epoch(run)


def cell(value: float, width: int) -> str:
    """``value`` right-aligned in ``width`` characters, whatever its size.

    Four decimals for ordinary values; a diverging run's 1e12 would not fit, so
    large values are in scientific notation, and infinities and NaN as such.
    """
    if not math.isfinite(value):
        text = str(value)
    elif abs(value) >= 1e5:
        text = f"{value:.3e}"
    else:
        text = f"{value:.4f}"
    return f"{text:>{width}}"


def setting(value: float, width: int) -> str:
    """A learning rate or momentum in at most ``width`` characters, right-aligned.

    Four significant digits where they fit; a tuned value can be small
    (0.0001234), so fewer, then scientific notation, where they do not.
    """
    for text in (f"{value:.4g}", f"{value:.3g}", f"{value:.1e}"):
        if len(text) <= width:
            break
    return f"{text:>{width}}"


def _table_window(result: Result, epochs: int) -> range:
    """The epochs the momentum table shows: around k's gradient sign change.

    For a diverged run: the last epochs before and at the divergence.
    """
    if result.diverged_at is not None:
        last = min(result.diverged_at + 1, epochs)
        return range(max(1, last - 7), last + 1)
    change = result.sign_change
    if change is None:
        return range(1, min(epochs, 8) + 1)
    last = (
        change.grad_epoch + 10
        if change.velocity_epoch is None
        else change.velocity_epoch + 1
    )
    last = min(last, change.grad_epoch + 12, epochs)
    return range(max(1, change.grad_epoch - 2), last + 1)


def _sign_change_sentence(result: Result, epochs: int) -> str:
    if result.diverged_at is not None:
        return (
            f"{result.name} diverged at epoch {result.diverged_at}: the loss after "
            "it is not finite."
        )
    change = result.sign_change
    if change is None:
        if epochs == 1:
            return "k's gradient has one epoch, so no change of sign."
        return f"k's gradient keeps its sign in all {epochs} epochs."
    sentence = f"k's gradient changes sign at epoch {change.grad_epoch}"
    if result.run.k_velocity is None:
        return sentence + "; plain SGD keeps no velocity."
    if change.velocity_epoch is None:
        return sentence + "; k's velocity keeps its sign to the end."
    kept = change.velocity_epoch - change.grad_epoch
    if kept == 0:
        return sentence + "; k's velocity turns in the same epoch."
    return (
        sentence + f"; k's velocity keeps its sign for {kept} more epoch"
        f"{'s' if kept != 1 else ''} and turns at epoch {change.velocity_epoch}."
    )


# What a self-tuning contender tunes from, by name.
_TUNED_FROM = {
    "autotune": "from the gradients",
    "autotune-hvp": "from Hessian-vector products",
}


def _describe(result: Result) -> str:
    run = result.run
    c = run.contender
    lr, mu = run.final_learning_rate, run.final_momentum
    if c.tuned:
        source = _TUNED_FROM.get(c.name, "")
        return (
            f"{c.name} (tuned {source} while training; lr {lr:.4g}, momentum "
            f"{mu:.4g} at the end)"
        )
    kind = "Nesterov momentum" if c.nesterov else "momentum"
    tuned = ", Polyak-tuned" if c.name == "heavy-ball" else ""
    return f"{c.name} (lr {lr:.4g}, {kind} {mu:.4g}{tuned})"


def print_momentum_table(result: Result, epochs: int, out: TextIO) -> None:
    """Prints ``result``'s loss, k gradient and k velocity around the sign change."""
    run = result.run
    print(f"\n{_describe(result)}", file=out)
    print(f"{'epoch':>6} {'loss':>10} {'k grad':>10} {'k velocity':>11}", file=out)
    for epoch in _table_window(result, epochs):
        velocity = (
            f"{'-':>11}"
            if run.k_velocity is None
            else cell(run.k_velocity[epoch - 1], 11)
        )
        print(
            f"{epoch:>6} {cell(run.train_loss[epoch - 1], 10)} "
            f"{cell(run.k_grad[epoch - 1], 10)} {velocity}",
            file=out,
        )
    print(_sign_change_sentence(result, epochs), file=out)


def print_summary(
    results: Sequence[Result], optimum: Optimum, epochs: int, out: TextIO
) -> None:
    """Prints the final params and losses, gaps and epochs to 1%, one row each.

    A tuned contender's lr and momentum are those of its last epoch.
    """

    def loss(value: float | None, width: int) -> str:
        return f"{'n/a':>{width}}" if value is None else cell(value, width)

    header = (
        f"{'optimizer':<{_NAME}} {'lr':>7} {'momentum':>8} {'k':>10} {'b':>10} "
        f"{'train loss':>10} {'test loss':>10} {'gap':>9} {'epochs to 1%':>17}"
    )
    print(f"\nafter {epochs} epochs (gap: train loss - least-squares loss)", file=out)
    print(header, file=out)
    for r in results:
        k, b = r.run.trajectory[-1]
        reached = r.epochs_to_tolerance
        if r.diverged_at is not None:
            where = f"diverged at {r.diverged_at}"
        else:
            where = "never" if reached is None else str(reached)
        print(
            f"{r.name:<{_NAME}} {setting(r.run.final_learning_rate, 7)} "
            f"{setting(r.run.final_momentum, 8)} "
            f"{cell(k, 10)} {cell(b, 10)} "
            f"{cell(r.train_loss, 10)} {loss(r.test_loss, 10)} {r.gap:>9.2e} "
            f"{where:>17}",
            file=out,
        )
    k, b = optimum.params["k"], optimum.params["b"]
    print(
        f"{'optimum':<{_NAME}} {'':>7} {'':>8} {cell(k, 10)} {cell(b, 10)} "
        f"{cell(optimum.train_loss, 10)} {loss(optimum.test_loss, 10)}",
        file=out,
    )
    diverged = [r for r in results if r.diverged_at is not None]
    if diverged:
        which = ", ".join(f"{r.name} at epoch {r.diverged_at}" for r in diverged)
        print(
            f"diverged (non-finite loss): {which}; their numbers are not results "
            "(try a smaller --lr).",
            file=out,
        )


def header(task: LineTask, seed: int | None, epochs: int) -> str:
    """The report's first line: version, task, where it comes from, data, epochs."""
    train = len(task.train.x)
    test = 0 if task.test is None else len(task.test.x)
    truth = task.true_params
    data = f"y = {truth['k']:g}*x + {truth['b']:g}"
    if task.name == "noisy":
        data += f" + N(0, 1) noise, seed {seed}, {train} train / {test} test points"
    else:
        data += f" at x = {', '.join(f'{v:g}' for v in np.asarray(task.train.x))}"
    source = f' from "{task.write_up}"' if task.write_up else ""
    return (
        f"momentax {__version__}: task {task.name!r}{source} ({data}), "
        f"{epochs} full-batch epochs"
    )
