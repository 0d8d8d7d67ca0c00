"""``python -m benchmarks``: runs the suite and writes JSON, markdown and a PNG."""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks import _compile, _report, _suites, _tuning_report
from benchmarks import _contenders as c
from benchmarks._timing import Settings

SECTIONS = ("bandwidth", "sizes", "trees", "regression", "memory", "compile", "tuning")
STEP_SECTIONS = ("sizes", "trees")
# XLA:CPU's multi-output fusion, off by default: the step sections run again
# in a child process started with it (XLA reads XLA_FLAGS once, at start).
FLAG = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
FLAG_OPTION = "xla_cpu_use_multi_output_fusion"
# glibc's malloc gives large freed buffers back to the kernel (4 MB ones
# already, measured here), so a step that allocates one (outputs without
# donation, a temporary) faults its pages in again on every call. These
# tunables keep freed memory in the process; the sizes from 1e6 up run again
# in children started with them.
GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
    f"glibc.malloc.trim_threshold={2**40}"
)
ALLOCATOR_MIN_SIZE = 10**6
FULL_SIZES = (10**3, 10**4, 10**5, 10**6, 10**7, 5 * 10**7)
GPU_SIZES = (10**8, 5 * 10**8, 10**9)
QUICK_SIZES = (10**3, 10**5, 10**6)
FULL_TREES = (c.Problem(200, 5000), c.Problem(1000, 1000), c.Problem(1000, 10))
QUICK_TREES = (c.Problem(20, 5000), c.Problem(100, 1000), c.Problem(100, 10))
FULL_LEAF_COUNTS = (100, 1000, 3000)
QUICK_LEAF_COUNTS = (10, 30)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text}")
    return value


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(name for name in text.split(",") if name)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"choose from {','.join(SECTIONS)}; got {text!r}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times momentum steps in momentax against optax.sgd, a "
        "hand-written jax.numpy step, torch.optim.SGD and the memory bandwidth.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats (about a minute), to check the suite runs",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks") / "results",
        help="folder for <backend>[-quick].json, .md and .png (default: %(default)s)",
    )
    p.add_argument(
        "--sections",
        type=_sections,
        default=SECTIONS,
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    p.add_argument(
        "--max-size",
        type=_positive_int,
        default=None,
        help="largest single-leaf size (default 5e7; 1e9 on a GPU; 1e6 with --quick)",
    )
    p.add_argument(
        "--min-size",
        type=_positive_int,
        default=None,
        help="smallest single-leaf size (default: the smallest of the list)",
    )
    p.add_argument("--repeats", type=_positive_int, default=None, help="timed samples")
    p.add_argument(
        "--min-sample-time",
        type=_positive_float,
        default=None,
        help="seconds each timed sample lasts at least (calls are repeated)",
    )
    p.add_argument(
        "--compile-repeats",
        type=_positive_int,
        default=None,
        help="first calls timed per compile case (default 3; 1 with --quick)",
    )
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument(
        "--no-flag-run",
        action="store_true",
        help="skip the second run of the step sections (sizes, trees) under "
        f"XLA_FLAGS={FLAG} (CPU only)",
    )
    p.add_argument(
        "--no-allocator-run",
        action="store_true",
        help="skip the run of the sizes from 1e6 up in child processes started "
        f"with GLIBC_TUNABLES={GLIBC_TUNABLES} (glibc only)",
    )
    _tuning_report.add_arguments(p)
    p.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _child_run(
    args: argparse.Namespace,
    sections: Sequence[str],
    env: dict[str, str],
    min_size: int | None = None,
) -> dict[str, Any]:
    """Runs the step ``sections`` again in a child process with ``env`` added."""
    options = ["--sections", ",".join(sections)]
    if args.quick:
        options.append("--quick")
    if args.no_torch:
        options.append("--no-torch")
    values = {
        "max_size": args.max_size,
        "min_size": min_size or args.min_size,
        "repeats": args.repeats,
        "min_sample_time": args.min_sample_time,
    }
    for name, value in values.items():
        if value is not None:
            options += [f"--{name.replace('_', '-')}", str(value)]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "child.json"
        command = [sys.executable, "-m", "benchmarks", *options]
        command += ["--child-json", str(out)]
        subprocess.run(command, env={**os.environ, **env}, check=True)
        child: dict[str, Any] = json.loads(out.read_text())
    return {
        "uses_single_sweep": child["environment"]["uses_single_sweep"],
        **{key: child[key] for key in sections},
    }


def _flagged_env() -> dict[str, str]:
    """``XLA_FLAGS`` as it is, with the fusion flag added."""
    return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()}


def _flag_run(args: argparse.Namespace, sections: Sequence[str]) -> dict[str, Any]:
    """Runs ``sections`` again in a child process with the fusion flag on."""
    env = _flagged_env()
    return {"xla_flags": env["XLA_FLAGS"], **_child_run(args, sections, env)}


def _allocator_run(args: argparse.Namespace, sizes: Sequence[int]) -> dict[str, Any]:
    """The sizes from 1e6 up again, glibc keeping freed memory: plain and flagged.

    At least the largest size runs, when all are smaller. ``--no-flag-run``
    leaves out the flagged child too.
    """
    smallest = min(
        [size for size in sizes if size >= ALLOCATOR_MIN_SIZE] or [max(sizes)]
    )
    given = os.environ.get("GLIBC_TUNABLES")
    env = {"GLIBC_TUNABLES": f"{given}:{GLIBC_TUNABLES}" if given else GLIBC_TUNABLES}
    run: dict[str, Any] = {
        "glibc_tunables": env["GLIBC_TUNABLES"],
        "sizes": _child_run(args, ["sizes"], env, smallest)["sizes"],
    }
    if not args.no_flag_run:
        flagged = {**env, **_flagged_env()}
        run["with_flag"] = {
            "xla_flags": flagged["XLA_FLAGS"],
            **_child_run(args, ["sizes"], flagged, smallest),
        }
    return run


def _fit_steps(quick: bool) -> Any:
    def steps(problem: c.Problem) -> int:
        if problem.num_leaves > 1:
            return 20 if quick else 100
        return max(1, min(100, 10**8 // problem.size))

    return steps


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite; returns the exit status."""
    args = parser().parse_args(argv)
    if FLAG_OPTION in os.environ.get("XLA_FLAGS", "") and args.child_json is None:
        parser().error(
            f"XLA_FLAGS names {FLAG_OPTION}: run the suite without it; it runs the "
            "step sections again with it itself (or pass --no-flag-run and compare "
            "two runs yourself)."
        )
    quick = args.quick
    settings = Settings(
        repeats=args.repeats or (5 if quick else 15),
        min_sample_time=args.min_sample_time or (0.002 if quick else 0.02),
    )
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
    trees = QUICK_TREES if quick else FULL_TREES
    torch = _suites.torch_or_none(not args.no_torch)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    given = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "benchmarks", *given])
    results: dict[str, Any] = {
        "command": command,
        "environment": _report.environment(torch),
        "settings": {
            "quick": quick,
            "repeats": settings.repeats,
            "min_sample_time": settings.min_sample_time,
            "learning_rate": c.LEARNING_RATE,
            "momentum": c.MOMENTUM,
            "compile_repeats": args.compile_repeats or (1 if quick else 3),
        },
    }
    if torch is None:
        results["notes"] = ["PyTorch is not installed or was left out (--no-torch)."]
    sections = args.sections
    if "tuning" in sections and args.child_json is None:
        tuned = _tuning_report.main(args, given, log)  # tuning[-quick].json, .md
        if sections == ("tuning",):
            print(_tuning_report.markdown(tuned))
            return 0
    if "bandwidth" in sections:
        big = [s for s in sizes if s >= 10**6] or [max(sizes)]
        results["bandwidth"] = _suites.bandwidth(big, settings, log)
        results["bandwidth_limit"] = _report.bandwidth_limit(results["bandwidth"])
    fit_steps = _fit_steps(quick)
    if "sizes" in sections:
        results["sizes"] = _suites.steps(
            [c.Problem(1, size) for size in sizes],
            settings,
            torch=torch,
            packed=False,
            fit_steps=fit_steps,
            log=log,
        )
    if "trees" in sections:
        results["trees"] = _suites.steps(
            trees, settings, torch=torch, packed=True, fit_steps=fit_steps, log=log
        )
    if args.child_json is not None:
        _report.write_json(results, args.child_json)
        return 0
    flagged = [name for name in STEP_SECTIONS if name in sections]
    if flagged and not args.no_flag_run and jax.default_backend() == "cpu":
        log(f"again with XLA_FLAGS={FLAG}: {', '.join(flagged)}")
        results["with_flag"] = _flag_run(args, flagged)
    if (
        "sizes" in sections
        and not args.no_allocator_run
        and jax.default_backend() == "cpu"
    ):
        if platform.libc_ver()[0] == "glibc":
            log(f"sizes from 1e6 up again with GLIBC_TUNABLES={GLIBC_TUNABLES}")
            results["allocator"] = _allocator_run(args, sizes)
        else:
            results.setdefault("notes", []).append(
                "Not glibc: the allocator run (GLIBC_TUNABLES) was skipped."
            )
    limit = results.get("bandwidth_limit")
    for key in STEP_SECTIONS:
        _report.add_fractions(results.get(key, []), limit)
        _report.add_fractions(results.get("with_flag", {}).get(key, []), limit)
    allocator = results.get("allocator", {})
    _report.add_fractions(allocator.get("sizes", []), limit)
    _report.add_fractions(allocator.get("with_flag", {}).get("sizes", []), limit)
    if "regression" in sections:
        results["regression"] = _suites.regression(settings, torch=torch, log=log)
    if "memory" in sections:
        memory_problems = [c.Problem(1, max(sizes)), trees[1]]
        results["memory"] = _suites.memory(memory_problems, log)
    if "compile" in sections:
        results["compile"] = _compile.compile_times(
            QUICK_LEAF_COUNTS if quick else FULL_LEAF_COUNTS,
            log,
            repeats=results["settings"]["compile_repeats"],
        )
    results["targets"] = _report.targets(results)
    results["seconds"] = round(time.perf_counter() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = jax.default_backend() + ("-quick" if quick else "")
    _report.write_json(results, args.out / f"{stem}.json")
    (args.out / f"{stem}.md").write_text(_report.markdown(results))
    written = [f"{stem}.json", f"{stem}.md"]
    if _report.write_plot(results, args.out / f"{stem}.png"):
        written.append(f"{stem}.png")
    else:
        log("matplotlib is not installed: no plot")
    log(f"wrote {', '.join(str(args.out / name) for name in written)}")
    print(_report.markdown(results))
    return 0
