"""The sections of the suite, in the order they run: the one list to add a section to.

A section answers one question. It runs from a `Plan` (what this run
measures: sizes, trees, repeats), its result is stored under its name in the
results, and it says which markdown tables and which plots show that result.
Its targets are in ``_targets.TARGETS``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks import _compile, _plots, _suites, _tables, _tuning_report
from benchmarks import _contenders as c
from benchmarks._timing import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Results = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """Holds what one run measures.

    Attributes:
        quick: Smaller problems and fewer repeats, to check the suite runs.
        settings: Repeats and the minimum time of a timed sample.
        sizes: The single-leaf sizes of the step sections.
        trees: The many-leaf problems.
        leaf_counts: The compile section's leaf counts.
        compile_repeats: First calls timed per compile case.
        torch: The ``torch`` module, or None to leave PyTorch out.
        log: Prints a progress line.
    """

    quick: bool
    settings: Settings
    sizes: tuple[int, ...]
    trees: tuple[c.Problem, ...]
    leaf_counts: tuple[int, ...]
    compile_repeats: int
    torch: Any | None
    log: Callable[[str], None]

    def fit_steps(self, problem: c.Problem) -> int:
        """Steps per ``fit`` call: about 1e8 params' worth, 100 at most."""
        if problem.num_leaves > 1:
            return 20 if self.quick else 100
        return max(1, min(100, 10**8 // problem.size))


@dataclass(frozen=True)
class Section:
    """Holds one section: its question, how it runs, and how it is shown.

    Attributes:
        question: What the section answers, in one line.
        run: Measures; returns what is stored under the section's name.
        tables: The markdown lines of its results.
        plots: Plot file names (without ``.png``) and what draws them.
        default: Whether ``python -m benchmarks`` runs it without ``--sections``.
    """

    question: str
    run: Callable[[Plan], Any]
    tables: Callable[[Results], list[str]]
    plots: Mapping[str, Callable[[Results], "Figure | None"]] = field(
        default_factory=dict
    )
    default: bool = True


def _bandwidth(plan: Plan) -> Any:
    big = [size for size in plan.sizes if size >= 10**6] or [max(plan.sizes)]
    return _suites.bandwidth(big, plan.settings, plan.log)


def _steps(plan: Plan, problems: tuple[c.Problem, ...], packed: bool) -> Any:
    return _suites.steps(
        problems,
        plan.settings,
        torch=plan.torch,
        packed=packed,
        fit_steps=plan.fit_steps,
        log=plan.log,
    )


def _memory(plan: Plan) -> Any:
    return _suites.memory([c.Problem(1, max(plan.sizes)), plan.trees[1]], plan.log)


def _compile_times(plan: Plan) -> Any:
    return _compile.compile_times(
        plan.leaf_counts, plan.log, repeats=plan.compile_repeats
    )


SECTIONS: dict[str, Section] = {
    "bandwidth": Section(
        "How fast does this machine stream memory? (the limit a step is held to)",
        _bandwidth,
        _tables.bandwidth,
    ),
    "sizes": Section(
        "How fast is one momentum step on one leaf, from 1e3 to 5e7 params, against "
        "optax.sgd, jax.numpy, torch.optim.SGD and the bandwidth limit?",
        lambda plan: _steps(plan, tuple(c.Problem(1, s) for s in plan.sizes), False),
        _tables.sizes,
        {"sizes": _plots.sizes},
    ),
    "trees": Section(
        "What does a step cost over many small leaves, and what helps (fit, pack)?",
        lambda plan: _steps(plan, plan.trees, True),
        _tables.trees,
        {"trees": _plots.trees},
    ),
    "regression": Section(
        "How long does the blog's whole 450-epoch training take: fit, a Python "
        "loop of train steps, PyTorch eager?",
        lambda plan: _suites.regression(plan.settings, torch=plan.torch, log=plan.log),
        _tables.regression,
        {"regression": _plots.regression},
    ),
    "memory": Section(
        "How much memory does a training step hold, against params + gradients + "
        "velocity?",
        _memory,
        _tables.memory,
        {"memory": _plots.memory},
    ),
    "compile": Section(
        "Does momentax compile as fast as optax.sgd as the leaves grow, and what "
        "makes compile time grow?",
        _compile_times,
        _tables.compile_times,
        {"compile": _plots.compile_ratio, "compile-growth": _plots.compile_growth},
        default=False,
    ),
    "tuning": Section(
        "Does momentax.autotune reach what a grid search of momentum reaches, in as "
        "few steps, and what does it cost per step? (its targets: in its tables)",
        _tuning_report.run,
        _tuning_report.tables,
        _tuning_report.PLOTS,
        default=False,
    ),
}
"""Every section by name, in the order a run runs them."""

STEP_SECTIONS = ("sizes", "trees")
"""The sections run again in child processes (fusion flag, glibc tunables)."""
