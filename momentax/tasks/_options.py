"""The main job's options: their types, checks, help and exit statuses."""

import argparse
import math
import pathlib
import textwrap
from collections.abc import Callable

from momentax import __version__, tasks

# Every epoch's params, gradient and velocity are kept for the tables, plots and
# JSON; the cost per million epochs is measured and given in --help.
MAX_EPOCHS = 10_000_000

EXIT_OK = 0
EXIT_OUTPUT = 1  # the results or plots could not be written
EXIT_USAGE = 2  # a bad option (argparse's status)
EXIT_DIVERGED = 3  # it ran and reported, but a run diverged
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell shows
EXIT_BROKEN_PIPE = 141  # the reader closed stdout: 128 + SIGPIPE, as a shell shows

_PARAGRAPHS = (
    f'The write-ups: the noisy task is the blog post "{tasks.BLOG_TITLE}", the '
    f'tiny task the notebook "{tasks.NOTEBOOK_TITLE}".',
    "Memory and time: every epoch's params, gradients, velocities and losses are "
    "kept, about 260 MB per million epochs on top of about 280 MB for JAX itself "
    "(measured with --json, which streams its histories), so the cap of "
    f"{MAX_EPOCHS:,} epochs costs about 3 GB; a million epochs take about 45 s "
    "with --json (2-core CPU).",
    f"Exit status: {EXIT_OK} done; {EXIT_DIVERGED} done, but a run diverged (its "
    "loss stopped being finite: the tables and summary say at which epoch); "
    f"{EXIT_USAGE} a bad option; {EXIT_OUTPUT} the results or plots could not be "
    f"written (a full disk, a closed stdout); {EXIT_INTERRUPTED} interrupted by "
    f"Ctrl-C, with one line on stderr; {EXIT_BROKEN_PIPE} the reader of "
    "stdout stopped reading (as with | head), quietly.",
)
EPILOG = "\n\n".join(textwrap.fill(paragraph, 79) for paragraph in _PARAGRAPHS)


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
        # Wrapped here: RawDescriptionHelpFormatter keeps the epilog's paragraphs
        # and would print an unwrapped description as one long line.
        description=textwrap.fill(
            "Fit y = k*x + b with plain SGD, momentum, Nesterov momentum and the "
            "Polyak-tuned heavy ball, all jit-compiled, and compare them: the "
            "momentum table around k's gradient sign change, final losses, gap to "
            "the least-squares optimum, epochs to within 1% of it, and plots. "
            "One task per run: --task noisy (the default) or --task tiny, "
            "described below.",
            79,
            break_on_hyphens=False,
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
