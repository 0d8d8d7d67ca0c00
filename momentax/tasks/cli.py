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

from momentax import __version__, tasks
from momentax.tasks import _report as report
from momentax.tasks._json_out import write_document
from momentax.tasks._plotting import MISSING_MATPLOTLIB, write_plots

# Runs longer than this many epochs are split into calls of at most a twentieth
# of the run, so that progress can be shown between them.
_CHUNKED_ABOVE = 100_000
_CHUNKS = 20
# Every epoch's params, gradient and velocity are kept for the tables, plots and
# JSON; the cost per million epochs is measured and given in --help.
MAX_EPOCHS = 10_000_000
TOLERANCE = report.TOLERANCE

EXIT_OK = 0
EXIT_OUTPUT = 1  # the results or plots could not be written
EXIT_USAGE = 2  # a bad option (argparse's status)
EXIT_DIVERGED = 3  # it ran and reported, but a run diverged
EXIT_BROKEN_PIPE = 141  # the reader closed stdout: 128 + SIGPIPE, as a shell shows

EPILOG = f"""\
The write-ups: the noisy task is the blog post "{tasks.BLOG_TITLE}", the tiny
task the notebook "{tasks.NOTEBOOK_TITLE}".

Memory and time: every epoch's params, gradients and velocities are kept, about
230 MB per million epochs (2-core CPU; --json adds little, as it streams), so
the cap of {MAX_EPOCHS:,} epochs costs about 2.3 GB; a million epochs take
about a minute with --json, less without.

Exit status: {EXIT_OK} done; {EXIT_DIVERGED} done, but a run diverged (its loss
stopped being finite: the table and summary say at which epoch);
{EXIT_USAGE} a bad option; {EXIT_OUTPUT} the results or plots could not be
written (a full disk, a closed stdout); {EXIT_BROKEN_PIPE} the reader of stdout
stopped reading (as with `| head`), quietly.
"""


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


def _learning_rate(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 to train; got {text!r}")
    return value


def _momentum(text: str) -> float:
    value = _number(text)
    problem = tasks.momentum_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {problem}; got {text!r}")
    return value


def _folder(text: str) -> pathlib.Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty name is not a folder; name one, e.g. --out momentax-out"
        )
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"not a folder: {text!r} is a file; name a folder for the plots"
        )
    return path


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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task",
        choices=sorted(tasks.TASKS),
        default="noisy",
        help=f'noisy: the noisy line of "{tasks.BLOG_TITLE}", with a train/test '
        f'split (default); tiny: y = 2x on x = 1, 2, 3, of "{tasks.NOTEBOOK_TITLE}"',
    )
    parser.add_argument(
        "--epochs",
        type=_integer(1, MAX_EPOCHS),
        metavar="N",
        help=f"full-batch epochs, at most {MAX_EPOCHS} (default: 450 noisy, 20 "
        "tiny); memory grows with N, see below",
    )
    parser.add_argument(
        "--lr",
        "--learning-rate",
        dest="learning_rate",
        type=_learning_rate,
        metavar="LR",
        help="learning rate of sgd, momentum and nesterov, > 0 "
        "(default: 0.01 noisy, 0.1 tiny)",
    )
    parser.add_argument(
        "--momentum",
        type=_momentum,
        metavar="MU",
        help="momentum of momentum and nesterov, in (0, 1] (default: 0.93 noisy, "
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
        type=_folder,
        metavar="DIR",
        help="folder for the PNG plots, created if needed (default: ./momentax-out; "
        "with --json, plots are written only when --out is given)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results, per-epoch histories included, as JSON on stdout "
        "instead of tables (nothing else goes to stdout)",
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
        # print(file=None) would write to stdout, into the results.
        if elapsed >= self.after and self.stream is not None:
            with contextlib.suppress(OSError):  # a closed stderr loses no result
                print(
                    f"{self.name}: {done}/{total} epochs ({100 * done // total}%), "
                    f"{elapsed:.1f} s",
                    file=self.stream,
                    flush=True,
                )


def _error(message: str) -> None:
    if sys.stderr is None:  # closed: print(file=None) would write to stdout
        return
    with contextlib.suppress(OSError):
        print(f"momentax: error: {message}", file=sys.stderr, flush=True)


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
    """Runs the command line; returns the exit status (see ``momentax --help``)."""
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
