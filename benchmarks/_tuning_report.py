"""The tuning benchmark's report: targets as data, JSON, markdown, one plot a question.

Run as ``python -m benchmarks --sections tuning`` (in ``--quick`` too, smaller).
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _tuning as tuning
from benchmarks import _tuning_problems as tp
from benchmarks._tuning import AUTOTUNE, AUTOTUNE_HVP, BEST_GRID, HEAVY_BALL

Row = dict[str, Any]
Log = Callable[[str], None]

TARGETS: dict[str, float] = {
    "quadratic, with HVPs: steps to 1e-4 / heavy ball's": 1.5,
    "quadratic, gradients only: steps to 1e-4 / heavy ball's": 3.0,
    "full batch: steps to the grid's best loss / best grid point's": 1.25,
    "stochastic: final loss / best grid point's": 1.05,
    "overhead, gradients only: time per step / momentum()'s": 1.05,
    "overhead, with HVPs: time per step / momentum()'s": 1.25,
}
"""Each target's threshold on a ratio (at most)."""

_QUADRATIC_FACTOR = {AUTOTUNE_HVP: 1.5, AUTOTUNE: 3.0}
_OVERHEAD_FACTOR = {AUTOTUNE: 1.05, AUTOTUNE_HVP: 1.25}
_FULL_BATCH_FACTOR = 1.25
_STOCHASTIC_FACTOR = 1.05
_SOURCES = (AUTOTUNE, AUTOTUNE_HVP)
# Line styles: the references dashed, the auto-tuned contenders solid.
_STYLE: dict[str, dict[str, Any]] = {
    HEAVY_BALL: {"color": "black", "linestyle": "--", "linewidth": 1.2},
    BEST_GRID: {"color": "tab:gray", "linestyle": "-.", "linewidth": 1.4},
    AUTOTUNE: {"color": "tab:blue", "linewidth": 1.6},
    AUTOTUNE_HVP: {"color": "tab:orange", "linewidth": 1.6},
}


def _format(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; a non-finite one (null in JSON) as nan."""
    return "nan" if value is None else format(value, spec)


def _steps_cell(steps: int | None) -> str:
    return "never" if steps is None else str(steps)


def _row(
    name: str,
    problem: str,
    measured: float | None,
    threshold: float | None,
    unit: str,
    note: str,
) -> Row:
    """One target: met when ``measured`` is a number at most ``threshold``."""
    met = measured is not None and threshold is not None and measured <= threshold
    return {
        "target": name,
        "problem": problem,
        "measured": measured,
        "threshold": threshold,
        "unit": unit,
        "met": met,
        "note": note,
    }


def _picked(contender: Row) -> str:
    lr, mu = (_format(contender[k], ".3g") for k in ("learning_rate", "momentum"))
    return f"lr {lr}, momentum {mu}"


def _problem_targets(row: Row) -> list[Row]:
    kind, name, found = row["kind"], row["problem"], row["contenders"]
    best = found[BEST_GRID]
    out = []
    for source in _SOURCES:
        if source not in found:
            continue
        mine = found[source]
        label = "with HVPs" if source == AUTOTUNE_HVP else "gradients only"
        if kind == "quadratic":
            reference = found[HEAVY_BALL]
            steps = reference["steps_to_target"]
            factor = _QUADRATIC_FACTOR[source]
            threshold = None if steps is None else factor * steps
            note = (
                f"heavy ball ({_picked(reference)}) {_steps_cell(steps)} steps; "
                f"{source} ended at {_picked(mine)}"
            )
            out.append(
                _row(
                    f"quadratic, {label}: steps to relative error "
                    f"{row['target_value']:g} <= {factor:g}x exact heavy ball",
                    name,
                    mine["steps_to_target"],
                    threshold,
                    "steps",
                    note,
                )
            )
        elif kind == "full-batch":
            steps = best["steps_to_target"]
            threshold = None if steps is None else _FULL_BATCH_FACTOR * steps
            note = (
                f"best grid point ({_picked(best)}) {_steps_cell(steps)} steps; "
                f"{source} ended at {_picked(mine)}"
            )
            out.append(
                _row(
                    f"full batch, {label}: steps to the grid's best loss + 0.1% "
                    f"of the gap <= {_FULL_BATCH_FACTOR:g}x best grid point",
                    name,
                    mine["steps_to_target"],
                    threshold,
                    "steps",
                    note,
                )
            )
        else:
            note = (
                f"best grid point ({_picked(best)}) {best['final']:.4g}; "
                f"{source} ended at {_picked(mine)}"
            )
            out.append(
                _row(
                    f"stochastic, {label}: final loss <= {_STOCHASTIC_FACTOR:g}x "
                    "best grid point",
                    name,
                    mine["final"],
                    _STOCHASTIC_FACTOR * best["final"],
                    "loss",
                    note,
                )
            )
    return out


def targets(results: dict[str, Any]) -> list[Row]:
    """The tuning targets, each with its threshold, measurement and verdict."""
    out = []
    for row in results["problems"]:
        out += _problem_targets(row)
    runs = [
        (row["problem"], source, row["contenders"][source])
        for row in results["problems"]
        for source in _SOURCES
        if source in row["contenders"]
    ]
    diverged = [f"{source} on {p}" for p, source, c in runs if c["diverged_seeds"]]
    seeds = sum(len(row["seeds"]) for row in results["problems"]) * len(_SOURCES)
    out.append(
        _row(
            "auto-tuned runs that diverge (non-finite, or end above the start)",
            "all",
            sum(c["diverged_seeds"] for _, _, c in runs),
            0,
            "runs",
            f"of {seeds} runs (problems x seeds x sources)"
            + (f"; diverged: {', '.join(diverged)}" if diverged else ""),
        )
    )
    for timing in results["overhead"]:
        if timing["contender"] not in _OVERHEAD_FACTOR:
            continue
        factor = _OVERHEAD_FACTOR[timing["contender"]]
        label = "with HVPs" if timing["contender"] == AUTOTUNE_HVP else "gradients only"
        out.append(
            _row(
                f"overhead, {label}: time per step <= {factor:g}x momentum()",
                f"{timing['model']} ({timing['params']:.0e} params)",
                timing["ratio_to_momentum"],
                factor,
                "ratio",
                f"median {timing['median_per_step'] * 1e3:.3g} ms per step, "
                f"{timing['samples']} interleaved samples; CPU-time ratio "
                f"{timing['cpu_ratio_to_momentum']:.3f}",
            )
        )
    return out


def _number(value: Any, unit: str) -> str:
    if value is None:
        return "never" if unit == "steps" else "n/a"
    if unit in ("steps", "runs"):
        return str(round(value))
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _grid_line(row: Row) -> str:
    grid = row["grid"]
    rates = ", ".join(f"{lr:.3g}" for lr in grid["learning_rates"])
    momenta = ", ".join(f"{mu:g}" for mu in grid["momenta"])
    return (
        f"- `{row['problem']}`: {row['description']}; {row['params']} params, "
        f"{row['num_steps']} steps, seeds {row['seeds']}; grid lr {{{rates}}} x "
        f"momentum {{{momenta}}} ({grid['points']} points, "
        f"{grid['diverged_points']} diverged)"
    )


def _contender_rows(row: Row) -> list[list[str]]:
    lines = []
    for name, c in row["contenders"].items():
        steps = _steps_cell(c["steps_to_target"]) if "steps_to_target" in c else "-"
        lines.append(
            [
                row["problem"],
                name,
                _format(c["learning_rate"], ".3g"),
                _format(c["momentum"], ".3g"),
                steps,
                _format(c["final"], ".4g"),
                str(c["diverged_seeds"]),
                f"{c['run_s']:.3f}" if "run_s" in c else "(in the grid)",
                f"{c['compile_s']:.1f}" if "compile_s" in c else "",
            ]
        )
    lines.append(
        [
            row["problem"],
            f"whole grid ({row['grid']['points']} x {len(row['seeds'])} seeds)",
            "",
            "",
            "",
            "",
            str(row["grid"]["diverged_points"]),
            f"{row['grid']['run_s']:.3f}",
            f"{row['grid']['compile_s']:.1f}",
        ]
    )
    return lines


def body(results: dict[str, Any]) -> list[str]:
    """The targets first, then one table per question, then the overhead."""
    met = sum(t["met"] for t in results["targets"])
    lines = [f"## Tuning targets ({met} of {len(results['targets'])} met)", ""]
    lines += _table(
        ["target", "problem", "measured", "threshold", "met", "how"],
        [
            [
                t["target"],
                t["problem"],
                _number(t["measured"], t["unit"]),
                _number(t["threshold"], t["unit"]),
                "yes" if t["met"] else "**no**",
                t["note"],
            ]
            for t in results["targets"]
        ],
    )
    lines += [
        "",
        "Steps to a target: the first step from which the measure stays at or "
        "below it to the end (worst seed). Final loss: the mean over the seeds of "
        f"the last {results['final_fraction']:.0%} of the readings. The tuned "
        "lr and momentum are the state's at the end (median over seeds). Times: "
        "one compiled call running every seed (run, then compile); the best grid "
        "point and the exact heavy ball run inside the grid's call.",
    ]
    header = [
        "problem",
        "contender",
        "lr",
        "momentum",
        "steps to target",
        "final",
        "diverged",
        "run s",
        "compile s",
    ]
    for kind, question in results["questions"].items():
        rows = [r for r in results["problems"] if r["kind"] == kind]
        if not rows:
            continue
        lines += ["", f"## {kind}", "", question, ""]
        lines += [_grid_line(r) for r in rows]
        lines += [""]
        lines += _table(header, [line for r in rows for line in _contender_rows(r)])
    lines += ["", "## Overhead per train step", ""]
    lines += _table(
        [
            "model",
            "params",
            "contender",
            "median ms/step",
            "p25-p75",
            "ratio",
            "CPU ms/step",
            "CPU ratio",
        ],
        [
            [
                t["model"],
                f"{t['params']:.0e}",
                t["contender"],
                f"{t['median_per_step'] * 1e3:.4g}",
                f"{t['p25_per_step'] * 1e3:.4g}-{t['p75_per_step'] * 1e3:.4g}",
                f"{t['ratio_to_momentum']:.3f}",
                f"{t['cpu_per_step'] * 1e3:.4g}",
                f"{t['cpu_ratio_to_momentum']:.3f}",
            ]
            for t in results["overhead"]
        ],
    )
    if results.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in results["plots"])]
    return lines


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _curve(ax: Any, row: Row, name: str, offset: float = 0.0) -> None:
    found = row["curves"].get(name)
    if found is None:
        return
    steps = [s for s, v in zip(found["steps"], found["values"], strict=True) if v]
    values = [v - offset for v in found["values"] if v]
    ax.plot(steps, values, label=name, **_STYLE.get(name, {}))


def _legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False)


def _panels(fig: Any, count: int) -> list[Any]:
    return list(fig.subplots(1, count, squeeze=False)[0])


def plot_quadratic(rows: list[Row]) -> Any:
    """Relative distance to the optimum per step, one panel per quadratic."""
    fig = _figure()
    for ax, row in zip(_panels(fig, len(rows)), rows, strict=True):
        for name in (HEAVY_BALL, BEST_GRID, AUTOTUNE, AUTOTUNE_HVP):
            _curve(ax, row, name)
        ax.axhline(row["target_value"], color="tab:red", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(row["problem"], fontsize=10)
    ax.figure.axes[0].set_ylabel("|θ - θ*| / |θ*|")
    _legend(fig, fig.axes[0])
    fig.suptitle("Noiseless quadratics: distance to the optimum (target dotted)")
    return fig


def plot_noisy_quadratic(rows: list[Row]) -> Any:
    """Final loss against batch size: best grid point and the auto-tuned."""
    fig = _figure()
    ax = fig.subplots()
    sizes = [int(r["problem"].rsplit("-", 1)[1]) for r in rows]
    for name in (BEST_GRID, AUTOTUNE, AUTOTUNE_HVP):
        finals = [r["contenders"][name]["final"] for r in rows]
        ax.plot(sizes, finals, marker="o", label=name, **_STYLE[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"final loss (after {rows[0]['num_steps']} steps)")
    _legend(fig, ax)
    fig.suptitle("Noisy quadratic model: final loss by batch size")
    return fig


def plot_full_batch(rows: list[Row]) -> Any:
    """Loss above the grid's best, per step, one panel per problem."""
    fig = _figure()
    for ax, row in zip(_panels(fig, len(rows)), rows, strict=True):
        start = row["curves"][BEST_GRID]["values"][0]
        best = row["target_value"] - 1e-3 * (start - row["target_value"]) / (1 - 1e-3)
        for name in (BEST_GRID, AUTOTUNE, AUTOTUNE_HVP):
            _curve(ax, row, name, offset=best)
        ax.axhline(
            row["target_value"] - best, color="tab:red", linewidth=0.8, linestyle=":"
        )
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(row["problem"], fontsize=10)
    fig.axes[0].set_ylabel("loss - grid's best loss")
    _legend(fig, fig.axes[0])
    fig.suptitle("Full batch: loss above the grid's best (target dotted)")
    return fig


def plot_minibatch(rows: list[Row]) -> Any:
    """Full training loss per step (mean over seeds)."""
    fig = _figure()
    for ax, row in zip(_panels(fig, len(rows)), rows, strict=True):
        for name in (BEST_GRID, AUTOTUNE, AUTOTUNE_HVP):
            _curve(ax, row, name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(row["problem"], fontsize=10)
    fig.axes[0].set_ylabel("loss on the whole training set")
    _legend(fig, fig.axes[0])
    fig.suptitle("Minibatch MLP: training loss (mean over seeds)")
    return fig


def plot_overhead(rows: list[Row]) -> Any:
    """Time per train step over momentum()'s, by model, with the thresholds."""
    fig = _figure()
    ax = fig.subplots()
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.38
    for offset, name in enumerate(_SOURCES):
        ratios = [
            next(
                r["ratio_to_momentum"]
                for r in rows
                if r["model"] == m and r["contender"] == name
            )
            for m in models
        ]
        positions = [i + (offset - 0.5) * width for i in range(len(models))]
        ax.barh(
            positions, ratios, height=width, label=name, color=_STYLE[name]["color"]
        )
        ax.axvline(_OVERHEAD_FACTOR[name], color=_STYLE[name]["color"], linestyle=":")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(
        range(len(models)), [f"{m}\n({rows[0]['params']:.0e} params)" for m in models]
    )
    ax.set_xlabel("time per train step / momentum()'s (dotted: targets)")
    _legend(fig, ax)
    fig.suptitle("Overhead of auto-tuning per train step (medians, interleaved)")
    return fig


_PLOTS: dict[str, Callable[[list[Row]], Any]] = {
    "quadratic": plot_quadratic,
    "noisy-quadratic": plot_noisy_quadratic,
    "full-batch": plot_full_batch,
    "minibatch": plot_minibatch,
}


def write_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """One PNG per question into ``folder``; none without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, draw in _PLOTS.items():
        rows = [r for r in results["problems"] if r["kind"] == kind]
        if rows:
            path = folder / f"{kind}.png"
            draw(rows).savefig(path)
            written.append(path)
    if results["overhead"]:
        path = folder / "overhead.png"
        plot_overhead(results["overhead"]).savefig(path)
        written.append(path)
    return written


def run(plan: Any) -> dict[str, Any]:
    """The section's run for the suite: the results with their targets."""
    results = tuning.run(plan.quick, plan.log)
    results["targets"] = targets(results)
    finite: dict[str, Any] = _finite(results)
    return finite


def tables(results: dict[str, Any]) -> list[str]:
    """The section's markdown lines in the suite's report (targets first)."""
    return body(results["tuning"])


def _draw(kind: str, results: dict[str, Any]) -> Any:
    rows = [r for r in results["tuning"]["problems"] if r["kind"] == kind]
    if kind == "overhead":
        return (
            plot_overhead(results["tuning"]["overhead"])
            if results["tuning"]["overhead"]
            else None
        )
    return _PLOTS[kind](rows) if rows else None


PLOTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    f"tuning-{kind}": (lambda results, kind=kind: _draw(kind, results))
    for kind in (*tp.QUESTIONS, "overhead")
}
"""The section's plots in the suite's folder, one per question."""


def _finite(value: Any) -> Any:
    """``value`` ready for JSON: NumPy scalars as Python, non-finite floats as null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if hasattr(value, "item"):  # a NumPy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
