"""``python -m benchmarks``: runs the sections and writes JSON, markdown and plots."""

import argparse
import json
import os
import platform
import shlex
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks import _children, _environment, _report, _suites
from benchmarks import _contenders as c
from benchmarks._sections import SECTIONS, STEP_SECTIONS, Plan
from benchmarks._timing import Settings

DEFAULT_SECTIONS = tuple(name for name, s in SECTIONS.items() if s.default)
FULL_SIZES = (10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7)
GPU_SIZES = (10**8, 5 * 10**8, 10**9)
QUICK_SIZES = (10**3, 10**5, 10**6)
FULL_TREES = (c.Problem(200, 5000), c.Problem(1000, 1000), c.Problem(1000, 10))
QUICK_TREES = (c.Problem(20, 5000), c.Problem(100, 1000), c.Problem(100, 10))
FULL_LEAF_COUNTS = (100, 1000, 3000)
QUICK_LEAF_COUNTS = (10, 30)
OUT = Path("benchmarks-out")
"""The default output folder: git ignores it, so a run overwrites nothing tracked."""


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a number > 0; got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse's message for text it cannot parse
    return parse


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(name for name in text.split(",") if name)
    if text == "all":
        return tuple(SECTIONS)
    if not names or any(name not in SECTIONS for name in names):
        raise argparse.ArgumentTypeError(
            f"choose from {','.join(SECTIONS)} or all; got {text!r}"
        )
    return tuple(name for name in SECTIONS if name in names)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times momentum steps in momentax against optax.sgd, a "
        "hand-written jax.numpy step, torch.optim.SGD and the memory bandwidth. "
        "See benchmarks/README.md.",
        epilog="sections (* = run by default):\n"
        + "\n".join(
            textwrap.fill(
                f"{name}{'*' if section.default else ''}: {section.question}",
                78,
                initial_indent="  ",
                subsequent_indent="      ",
            )
            for name, section in SECTIONS.items()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats, to check that the suite runs",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder under which <backend>[-<sections>][-quick]/ is written "
        "(default: %(default)s; the committed results are in benchmarks/results)",
    )
    p.add_argument(
        "--sections",
        type=_sections,
        default=DEFAULT_SECTIONS,
        help=f"comma-separated subset of {','.join(SECTIONS)}, or all "
        f"(default: {','.join(DEFAULT_SECTIONS)})",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="run nothing: rewrite the targets, markdown and plots of a "
        "results.json in its folder",
    )
    p.add_argument(
        "--max-size",
        type=_positive(int),
        default=None,
        help="largest single-leaf size (default 5e7; 1e9 on a GPU; 1e6 with --quick)",
    )
    p.add_argument(
        "--min-size",
        type=_positive(int),
        default=None,
        help="smallest single-leaf size (default: the smallest of the list)",
    )
    p.add_argument("--repeats", type=_positive(int), default=None, help="timed samples")
    p.add_argument(
        "--min-sample-time",
        type=_positive(float),
        default=None,
        help="seconds each timed sample lasts at least (calls are repeated)",
    )
    p.add_argument(
        "--compile-repeats",
        type=_positive(int),
        default=None,
        help="first calls timed per compile case (default 3; 1 with --quick)",
    )
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument(
        "--no-flag-run",
        action="store_true",
        help="skip the second run of the step sections (sizes, trees) under "
        f"XLA_FLAGS={_children.FLAG} (CPU only)",
    )
    p.add_argument(
        "--no-allocator-run",
        action="store_true",
        help="skip the run of the sizes from 1e6 up in child processes started "
        f"with GLIBC_TUNABLES={_children.GLIBC_TUNABLES} (glibc only)",
    )
    p.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def folder_name(backend: str, sections: Sequence[str], quick: bool) -> str:
    """``<backend>``, then the sections unless they are the default, then ``-quick``.

    All the sections are named ``all``.
    """
    named = "-" + "-".join(sections)
    if tuple(sections) in (DEFAULT_SECTIONS, tuple(SECTIONS)):
        named = "" if tuple(sections) == DEFAULT_SECTIONS else "-all"
    return backend + named + ("-quick" if quick else "")


def _child_options(args: argparse.Namespace) -> list[str]:
    """The options a child process gets from this run's."""
    options = ["--quick"] if args.quick else []
    options += ["--no-torch"] if args.no_torch else []
    for name in ("max_size", "min_size", "repeats", "min_sample_time"):
        value = getattr(args, name)
        if value is not None:
            options += [f"--{name.replace('_', '-')}", str(value)]
    return options


def _plan(args: argparse.Namespace, log: Any) -> Plan:
    quick = args.quick
    on_gpu = jax.default_backend() == "gpu"
    listed = QUICK_SIZES if quick else FULL_SIZES + (GPU_SIZES if on_gpu else ())
    max_size = args.max_size or max(listed)
    min_size = args.min_size or min(listed)
    sizes = tuple(size for size in listed if min_size <= size <= max_size)
    if not sizes:
        parser().error(
            f"no size lies between --min-size {min_size} and --max-size {max_size}; "
            f"the sizes are {', '.join(f'{size:.0e}' for size in listed)}."
        )
    return Plan(
        quick=quick,
        settings=Settings(
            repeats=args.repeats or (5 if quick else 15),
            min_sample_time=args.min_sample_time or (0.002 if quick else 0.02),
        ),
        sizes=sizes,
        trees=QUICK_TREES if quick else FULL_TREES,
        leaf_counts=QUICK_LEAF_COUNTS if quick else FULL_LEAF_COUNTS,
        compile_repeats=args.compile_repeats or (1 if quick else 3),
        torch=_suites.torch_or_none(not args.no_torch),
        log=log,
    )


def _report_only(path: Path) -> int:
    """Rewrites the targets, markdown and plots of a results JSON."""
    results = json.loads(path.read_text())
    _report.derive(results)
    for written in _report.write(results, path.parent):
        print(f"wrote {written}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite; returns the exit status."""
    args = parser().parse_args(argv)
    if args.report is not None:
        return _report_only(args.report)
    if _children.FLAG_OPTION in os.environ.get("XLA_FLAGS", "") and not args.child_json:
        parser().error(
            f"XLA_FLAGS names {_children.FLAG_OPTION}: run the suite without it; it "
            "runs the step sections again with it itself (or pass --no-flag-run and "
            "compare two runs yourself)."
        )
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    plan = _plan(args, log)
    given = list(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks", *given]),
        "environment": _environment.environment(plan.torch),
        "settings": {
            "quick": plan.quick,
            "repeats": plan.settings.repeats,
            "min_sample_time": plan.settings.min_sample_time,
            "learning_rate": c.LEARNING_RATE,
            "momentum": c.MOMENTUM,
            "compile_repeats": plan.compile_repeats,
        },
        "section_seconds": {},
    }
    if plan.torch is None:
        results["notes"] = ["PyTorch is not installed or was left out (--no-torch)."]
    for name in args.sections:
        start = time.perf_counter()
        results[name] = SECTIONS[name].run(plan)
        results["section_seconds"][name] = round(time.perf_counter() - start, 1)
    if args.child_json is not None:
        _report.write_json(results, args.child_json)
        return 0
    _children_runs(args, plan, results, log)
    _report.derive(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    folder = args.out / folder_name(jax.default_backend(), args.sections, plan.quick)
    written = _report.write(results, folder)
    log(f"wrote {', '.join(str(path) for path in written)}")
    print(_report.markdown(results))
    return 0


def _children_runs(
    args: argparse.Namespace, plan: Plan, results: dict[str, Any], log: Any
) -> None:
    """The step sections again with the fusion flag and with glibc's tunables."""
    if jax.default_backend() != "cpu":
        return
    options = _child_options(args)
    flagged = [name for name in STEP_SECTIONS if name in args.sections]
    start = time.perf_counter()
    if flagged and not args.no_flag_run:
        log(f"again with XLA_FLAGS={_children.FLAG}: {', '.join(flagged)}")
        results["with_flag"] = _children.flag_run(options, flagged)
    if "sizes" in args.sections and not args.no_allocator_run:
        if platform.libc_ver()[0] == "glibc":
            log(f"sizes again with GLIBC_TUNABLES={_children.GLIBC_TUNABLES}")
            results["allocator"] = _children.allocator_run(
                options, plan.sizes, with_flag=not args.no_flag_run
            )
        else:
            results.setdefault("notes", []).append(
                "Not glibc: the allocator run (GLIBC_TUNABLES) was skipped."
            )
    if "with_flag" in results or "allocator" in results:
        results["section_seconds"]["child processes"] = round(
            time.perf_counter() - start, 1
        )
