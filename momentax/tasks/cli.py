"""The main job: the write-ups' line fits, run, compared, tabulated and plotted.

The write-ups are the blog post "Gradient Descent: Exploring Momentum" (the noisy
task) and the notebook "SGD with Momentum (From Scratch)" (the tiny task).
Installed as the ``momentax`` command and run by ``python -m momentax``.
"""

import argparse
import contextlib
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from momentax import tasks
from momentax.tasks import _report as report
from momentax.tasks._json_out import write_document
from momentax.tasks._options import EXIT_BROKEN_PIPE as EXIT_BROKEN_PIPE
from momentax.tasks._options import EXIT_DIVERGED as EXIT_DIVERGED
from momentax.tasks._options import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from momentax.tasks._options import EXIT_OK as EXIT_OK
from momentax.tasks._options import EXIT_OUTPUT as EXIT_OUTPUT
from momentax.tasks._options import EXIT_USAGE as EXIT_USAGE
from momentax.tasks._options import MAX_EPOCHS as MAX_EPOCHS
from momentax.tasks._options import build_parser as build_parser
from momentax.tasks._plotting import MISSING_MATPLOTLIB, write_plots

# Runs longer than this many epochs are split into calls of at most a twentieth
# of the run, so that progress can be shown between them.
_CHUNKED_ABOVE = 100_000
_CHUNKS = 20
TOLERANCE = report.TOLERANCE


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
        # print(file=None) would write to stdout, into the results.
        if elapsed >= self.after and self.stream is not None:
            with contextlib.suppress(OSError):  # a closed stderr loses no result
                print(
                    f"{self.name}: {done}/{total} epochs ({100 * done // total}%), "
                    f"{elapsed:.1f} s",
                    file=self.stream,
                    flush=True,
                )


def _error(message: str, kind: str = "error: ") -> None:
    if sys.stderr is None:  # closed: print(file=None) would write to stdout
        return
    with contextlib.suppress(OSError):
        print(f"momentax: {kind}{message}", file=sys.stderr, flush=True)


def _detach(out: TextIO) -> None:
    """Points ``out``'s file descriptor at /dev/null after a failed write.

    Otherwise Python flushes what is left in the buffer at exit, fails again and
    prints a traceback of its own.
    """
    try:
        descriptor = out.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a StringIO in tests): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


def _emit(out: TextIO, write: Callable[[TextIO], None]) -> int | None:
    """Runs ``write(out)`` and flushes; an exit status if stdout failed, else None."""
    try:
        write(out)
        out.flush()
    except BrokenPipeError:
        # The reader has what it wanted (`momentax --json | head`): no message.
        _detach(out)
        return EXIT_BROKEN_PIPE
    except OSError as error:
        _detach(out)
        _error(f"cannot write the results to stdout: {error.strerror or error}")
        return EXIT_OUTPUT
    return None


def _options(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, pathlib.Path | None]:
    """The parsed options and the plots' folder (None: no plots), checked."""
    args = parser.parse_args(argv)
    if args.task == "tiny" and args.seed is not None:
        parser.error("--seed only applies to --task noisy (the tiny task has no noise)")
    if args.no_plots and args.out is not None:
        parser.error("--out names the plots' folder; it cannot go with --no-plots")
    if args.no_plots or (args.json and args.out is None):
        return args, None
    folder = pathlib.Path("momentax-out") if args.out is None else args.out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error(MISSING_MATPLOTLIB)
    # Fail before training, not after it.
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(
            f"--out: cannot create the folder {str(folder)!r}: "
            f"{error.strerror or error}"
        )
    return args, folder


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Runs the command line; returns the exit status (see ``momentax --help``).

    Ctrl-C ends it with one line on stderr and the status ``EXIT_INTERRUPTED``
    (130), without a traceback: a run cut short has no results to resume.
    """
    try:
        return _run(argv, stdout)
    except KeyboardInterrupt:
        _error("interrupted (Ctrl-C); nothing more was written", kind="")
        return EXIT_INTERRUPTED


def _run(argv: Sequence[str] | None, stdout: TextIO | None) -> int:
    out: TextIO | None = sys.stdout if stdout is None else stdout
    parser = build_parser()
    args, folder = _options(parser, argv)
    if out is None:  # started with stdout closed (`momentax >&-`)
        _error("stdout is closed: there is nowhere to write the results")
        return EXIT_OUTPUT
    seed = (0 if args.seed is None else args.seed) if args.task == "noisy" else None
    task = tasks.noisy_line(seed) if seed is not None else tasks.tiny_line()
    epochs = args.epochs or task.reference.epochs
    try:
        contenders = tasks.contenders(
            task, learning_rate=args.learning_rate, momentum=args.momentum
        )
    except (TypeError, ValueError) as error:  # what the option types cannot see
        parser.error(f"--lr/--momentum: {error}")

    optimum = tasks.least_squares(task)
    curvature = tasks.curvature_bounds(task.train)
    per_call = math.ceil(epochs / _CHUNKS) if epochs > _CHUNKED_ABOVE else None
    results = [
        report.Result(
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
            if folder is None
            else write_plots(task, optimum, [r.run for r in results], folder)
        )
    except OSError as error:
        _error(f"cannot write the plots into {str(folder)!r}: {error}")
        return EXIT_OUTPUT

    def write_json(stream: TextIO) -> None:
        write_document(stream, task, seed, epochs, optimum, curvature, results, plots)

    def write_text(stream: TextIO) -> None:
        _print_report(stream, task, seed, epochs, optimum, curvature, results, plots)

    failed = _emit(out, write_json if args.json else write_text)
    if failed is not None:
        return failed
    diverged = [r.name for r in results if r.diverged_at is not None]
    if diverged:
        _error(f"{', '.join(diverged)} diverged (non-finite loss); see the summary")
        return EXIT_DIVERGED
    return EXIT_OK


def _print_report(
    out: TextIO,
    task: tasks.LineTask,
    seed: int | None,
    epochs: int,
    optimum: tasks.Optimum,
    curvature: tuple[float, float],
    results: Sequence[Any],
    plots: Sequence[pathlib.Path],
) -> None:
    print(report.header(task, seed, epochs), file=out)
    L, m = curvature
    print(
        f"least squares: k = {optimum.params['k']:.4f}, b = {optimum.params['b']:.4f}; "
        f"Hessian eigenvalues L = {L:.4g}, m = {m:.4g}, condition number {L / m:.3g}",
        file=out,
    )
    for r in results:
        report.print_momentum_table(r, epochs, out)
    report.print_summary(results, optimum, epochs, out)
    for path in plots:
        print(f"wrote {path}", file=out)
