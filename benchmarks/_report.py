"""What a run writes: the numbers derived from its rows, JSON, markdown, plots."""

import json
from pathlib import Path
from typing import Any

from benchmarks import _tables, _targets
from benchmarks._sections import SECTIONS

Row = dict[str, Any]
Results = dict[str, Any]


def bandwidth_limit(rows: list[Row]) -> float | None:
    """The best GB/s of the streaming kernels at the largest size measured.

    With a C compiler these include the one-pass C kernels (a momentum step
    that touches each word once among them), which no contender should beat;
    without one, the jitted copy and triad alone.
    """
    if not rows:
        return None
    largest = max(row["size"] for row in rows)
    return max(row["gb_per_s"] for row in rows if row["size"] == largest)


def derive(results: Results) -> None:
    """Adds the limit, each step row's fraction of it, and the targets (in place)."""
    limit = results.get("bandwidth_limit")
    if results.get("bandwidth"):
        limit = results["bandwidth_limit"] = bandwidth_limit(results["bandwidth"])
    allocator = results.get("allocator", {})
    for rows in (
        *(results.get(key, []) for key in ("sizes", "trees")),
        *(results.get("with_flag", {}).get(key, []) for key in ("sizes", "trees")),
        allocator.get("sizes", []),
        allocator.get("with_flag", {}).get("sizes", []),
    ):
        for row in rows:
            row["fraction_of_bandwidth"] = (
                None if not limit else row["gb_per_s"] / limit
            )
    results["targets"] = _targets.evaluate(results)


def markdown(results: Results) -> str:
    """The results as markdown: the run, each section's tables, the targets."""
    env = results["environment"]
    lines = [
        f"# momentax benchmarks: {env['device']} ({env['backend']})",
        "",
        f"{env['cpu']}, {env['cpu_count']} cores, {env['memory_gib']} GiB; "
        f"jax {env['jax']}, optax {env['optax']}, torch {env['torch']}, "
        f"momentax {env['momentax']} (commit {env['commit']}), {env['date']}. "
        f"Command: `{results['command']}`.",
        "",
        "Times are medians over interleaved repeats (p25 to p75 in the JSON).",
    ]
    for name, section in SECTIONS.items():
        if results.get(name):
            lines += ["", *section.tables(results)]
    if results.get("targets"):
        lines += ["", *_tables.targets(results)]
    return "\n".join(lines) + "\n"


def write_json(results: Results, path: Path) -> None:
    """Writes the results, indented, with a trailing newline."""
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")


def write(results: Results, folder: Path) -> list[Path]:
    """Writes ``results.json``, ``results.md`` and the sections' plots; returns them.

    Without matplotlib the plots are left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_json(results, folder / "results.json")
    (folder / "results.md").write_text(markdown(results))
    written = [folder / "results.json", folder / "results.md"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return written
    for name, section in SECTIONS.items():
        if not results.get(name):
            continue
        for stem, draw in section.plots.items():
            figure = draw(results)
            if figure is not None:
                figure.savefig(folder / f"{stem}.png", dpi=100)
                written.append(folder / f"{stem}.png")
    return written
