"""The main job: the write-ups' line fits, run, compared, tabulated and plotted.

Installed as the ``momentax`` command and run by ``python -m momentax``.
"""

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from momentax import __version__, tasks
from momentax.tasks._plotting import MISSING_MATPLOTLIB, write_plots

# Runs longer than this many epochs are split into calls of at most a twentieth
# of the run, so that progress can be shown between them.
_CHUNKED_ABOVE = 100_000
_CHUNKS = 20
# Every epoch's params, gradient and velocity are kept for the tables, plots and
# JSON: about 0.5 GB of memory per million epochs.
MAX_EPOCHS = 10_000_000
TOLERANCE = 0.01  # "within 1% of the optimum", see tasks.epochs_to_tolerance


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""
    allowed = (
        f"must be an integer >= {low}"
        if high is None
        else (f"must be an integer from {low} to {high}")
    )

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{allowed}; got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{allowed}; got {text!r}")
        return value

    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="momentax",
        description=(
            "Fit y = k*x + b with plain SGD, momentum, Nesterov momentum and the "
            "Polyak-tuned heavy ball, all jit-compiled, and compare them: the "
            "momentum table around k's gradient sign change, final losses, gap to "
            "the least-squares optimum, epochs to within 1% of it, and plots."
        ),
    )
    parser.add_argument(
        "--task",
        choices=sorted(tasks.TASKS),
        default="noisy",
        help="noisy: the blog's noisy line with a train/test split (default); "
        "tiny: the notebook's y = 2x on x = 1, 2, 3",
    )
    parser.add_argument(
        "--epochs",
        type=_integer(1, MAX_EPOCHS),
        metavar="N",
        help=f"full-batch epochs, at most {MAX_EPOCHS} (default: 450 noisy, 20 tiny)",
    )
    parser.add_argument(
        "--lr",
        "--learning-rate",
        dest="learning_rate",
        type=_number,
        metavar="LR",
        help="learning rate of sgd, momentum and nesterov "
        "(default: 0.01 noisy, 0.1 tiny)",
    )
    parser.add_argument(
        "--momentum",
        type=_number,
        metavar="MU",
        help="momentum of momentum and nesterov, in [0, 1] (default: 0.93 noisy, "
        "0.9 tiny); the heavy ball is always Polyak-tuned",
    )
    parser.add_argument(
        "--seed",
        type=_integer(0),
        metavar="S",
        help="seed of the noisy task's data (default: 0)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        metavar="DIR",
        help="folder for the PNG plots, created if needed (default: ./momentax-out)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results, per-epoch histories included, as JSON on stdout "
        "instead of tables",
    )
    parser.add_argument(
        "--version", action="version", version=f"momentax {__version__}"
    )
    return parser


class Progress:
    """Reports a run's progress on a stream once it has taken ``after`` seconds.

    Short runs print nothing; long ones print a line per call of the fit loop.
    """

    def __init__(
        self,
        name: str,
        stream: TextIO,
        after: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.name, self.stream, self.after, self.clock = name, stream, after, clock
        self.start = clock()

    def __call__(self, done: int, total: int) -> None:
        """Reports ``done`` of ``total`` epochs, if the run has taken long enough."""
        elapsed = self.clock() - self.start
        if elapsed >= self.after:
            print(
                f"{self.name}: {done}/{total} epochs ({100 * done // total}%), "
                f"{elapsed:.1f} s",
                file=self.stream,
                flush=True,
            )


class Result:
    """One contender's run with its summary figures."""

    def __init__(self, run: tasks.Run, optimum: tasks.Optimum):
        self.run = run
        self.name = run.contender.name
        self.train_loss = float(run.train_loss[-1])
        self.test_loss = None if run.test_loss is None else float(run.test_loss[-1])
        self.gap = self.train_loss - optimum.train_loss
        self.epochs_to_tolerance = tasks.epochs_to_tolerance(run, optimum, TOLERANCE)
        self.sign_change = tasks.sign_change(run)


def _table_window(result: Result, epochs: int) -> range:
    """The epochs the momentum table shows: around k's gradient sign change."""
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


def _describe(result: Result) -> str:
    c = result.run.contender
    kind = "Nesterov momentum" if c.nesterov else "momentum"
    tuned = ", Polyak-tuned" if c.name == "heavy-ball" else ""
    return f"{c.name} (lr {c.learning_rate:.4g}, {kind} {c.momentum:.4g}{tuned})"


def _print_momentum_table(result: Result, epochs: int, out: TextIO) -> None:
    run = result.run
    print(f"\n{_describe(result)}", file=out)
    print(f"{'epoch':>6} {'loss':>10} {'k grad':>10} {'k velocity':>11}", file=out)
    for epoch in _table_window(result, epochs):
        velocity = "-" if run.k_velocity is None else f"{run.k_velocity[epoch - 1]:.4f}"
        print(
            f"{epoch:>6} {run.train_loss[epoch - 1]:>10.4f} "
            f"{run.k_grad[epoch - 1]:>10.4f} {velocity:>11}",
            file=out,
        )
    print(_sign_change_sentence(result, epochs), file=out)


def _print_summary(
    results: Sequence[Result], optimum: tasks.Optimum, epochs: int, out: TextIO
) -> None:
    def loss(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    header = (
        f"{'optimizer':<11} {'lr':>7} {'momentum':>8} {'k':>8} {'b':>8} "
        f"{'train loss':>10} {'test loss':>9} {'gap':>9} {'epochs to 1%':>12}"
    )
    print(f"\nafter {epochs} epochs (gap: train loss - least-squares loss)", file=out)
    print(header, file=out)
    for r in results:
        c = r.run.contender
        k, b = r.run.trajectory[-1]
        reached = r.epochs_to_tolerance
        print(
            f"{r.name:<11} {c.learning_rate:>7.4g} {c.momentum:>8.4g} "
            f"{k:>8.4f} {b:>8.4f} "
            f"{r.train_loss:>10.4f} {loss(r.test_loss):>9} {r.gap:>9.2e} "
            f"{'never' if reached is None else reached:>12}",
            file=out,
        )
    k, b = optimum.params["k"], optimum.params["b"]
    print(
        f"{'optimum':<11} {'':>7} {'':>8} {k:>8.4f} {b:>8.4f} "
        f"{optimum.train_loss:>10.4f} {loss(optimum.test_loss):>9}",
        file=out,
    )


def _header(task: tasks.LineTask, seed: int | None, epochs: int) -> str:
    train = len(task.train.x)
    test = 0 if task.test is None else len(task.test.x)
    truth = task.true_params
    data = f"y = {truth['k']:g}*x + {truth['b']:g}"
    if task.name == "noisy":
        data += f" + N(0, 1) noise, seed {seed}, {train} train / {test} test points"
    else:
        data += f" at x = {', '.join(f'{v:g}' for v in np.asarray(task.train.x))}"
    return (
        f"momentax {__version__}: task {task.name!r} ({data}), "
        f"{epochs} full-batch epochs"
    )


def _json_number(value: Any) -> Any:
    """A float for JSON, with non-finite values (a diverged run) as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_list(values: np.ndarray | None) -> list[Any] | None:
    return None if values is None else [_json_number(v) for v in values]


def _json_document(
    task: tasks.LineTask,
    seed: int | None,
    epochs: int,
    optimum: tasks.Optimum,
    curvature: tuple[float, float],
    results: Sequence[Result],
    plots: Sequence[pathlib.Path],
) -> dict[str, Any]:
    def entry(r: Result) -> dict[str, Any]:
        c, run = r.run.contender, r.run
        change = r.sign_change
        return {
            "name": c.name,
            "learning_rate": c.learning_rate,
            "momentum": c.momentum,
            "nesterov": c.nesterov,
            "final": {
                "k": _json_number(run.trajectory[-1, 0]),
                "b": _json_number(run.trajectory[-1, 1]),
                "train_loss": _json_number(r.train_loss),
                "test_loss": None if r.test_loss is None else _json_number(r.test_loss),
            },
            "gap_to_optimum": _json_number(r.gap),
            "epochs_to_tolerance": r.epochs_to_tolerance,
            "sign_change": None if change is None else change._asdict(),
            "history": {
                "k": _json_list(run.trajectory[:, 0]),
                "b": _json_list(run.trajectory[:, 1]),
                "train_loss": _json_list(run.train_loss),
                "test_loss": _json_list(run.test_loss),
                "k_grad": _json_list(run.k_grad),
                "k_velocity": _json_list(run.k_velocity),
            },
        }

    return {
        "momentax": __version__,
        "task": task.name,
        "seed": seed,
        "epochs": epochs,
        "train_points": len(task.train.x),
        "test_points": 0 if task.test is None else len(task.test.x),
        "true_params": task.true_params,
        "optimum": optimum._asdict(),
        "curvature": {"max": curvature[0], "min": curvature[1]},
        "tolerance": TOLERANCE,
        "optimizers": [entry(r) for r in results],
        "plots": [str(p) for p in plots],
        "notes": {
            "history": "entry t of k, b and the losses is after t epochs (t = 0: the "
            "start); entry t-1 of k_grad and k_velocity belongs to epoch t",
            "epochs_to_tolerance": "first epoch from which |(k, b) - optimum| <= "
            "tolerance * |optimum| holds to the end; null if never",
        },
    }


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Runs the command line; returns the exit status."""
    out = sys.stdout if stdout is None else stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task == "tiny" and args.seed is not None:
        parser.error("--seed only applies to --task noisy (the tiny task has no noise)")
    seed = (0 if args.seed is None else args.seed) if args.task == "noisy" else None
    task = tasks.noisy_line(seed) if seed is not None else tasks.tiny_line()
    epochs = args.epochs or task.reference.epochs
    try:
        contenders = tasks.contenders(
            task, learning_rate=args.learning_rate, momentum=args.momentum
        )
    except (TypeError, ValueError) as error:
        parser.error(f"--lr/--momentum: {error}")
    if args.no_plots and args.out is not None:
        parser.error("--out names the plots' folder; it cannot go with --no-plots")
    out_folder = pathlib.Path("momentax-out") if args.out is None else args.out
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error(MISSING_MATPLOTLIB)
        # Fail before training, not after it.
        try:
            out_folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--out: cannot create the folder {out_folder}: {error}")

    optimum = tasks.least_squares(task)
    curvature = tasks.curvature_bounds(task.train)
    per_call = math.ceil(epochs / _CHUNKS) if epochs > _CHUNKED_ABOVE else None
    results = [
        Result(
            tasks.run(
                task,
                c,
                epochs,
                steps_per_call=per_call,
                callback=Progress(c.name, sys.stderr),
            ),
            optimum,
        )
        for c in contenders
    ]
    try:
        plots = (
            []
            if args.no_plots
            else write_plots(task, optimum, [r.run for r in results], out_folder)
        )
    except OSError as error:
        print(f"momentax: error: cannot write the plots: {error}", file=sys.stderr)
        return 1

    if args.json:
        document = _json_document(
            task, seed, epochs, optimum, curvature, results, plots
        )
        json.dump(document, out, indent=1, allow_nan=False)
        print(file=out)
        return 0
    print(_header(task, seed, epochs), file=out)
    L, m = curvature
    print(
        f"least squares: k = {optimum.params['k']:.4f}, b = {optimum.params['b']:.4f}; "
        f"Hessian eigenvalues L = {L:.4g}, m = {m:.4g}, condition number {L / m:.3g}",
        file=out,
    )
    for r in results:
        _print_momentum_table(r, epochs, out)
    _print_summary(results, optimum, epochs, out)
    for path in plots:
        print(f"wrote {path}", file=out)
    return 0
