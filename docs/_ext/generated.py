"""Pages parts generated at build time, so that no number on the site is copied by hand.

* ``_build/generated/benchmarks.md``: the tables of
  ``benchmarks/results/cpu/results.json``, rendered by the benchmark suite's own
  markdown writer, and ``compile.md``: those of
  ``benchmarks/results/cpu-compile/results.json`` (the compile section, run apart: it
  takes about 35 minutes on 2 cores with one repeat), and ``tuning.md``: those of
  ``benchmarks/results/cpu-tuning/results.json`` (the tuning section).
* ``_build/generated/<task>.txt`` and ``<task>-*.png``: the main job's output and
  plots, from running ``python -m momentax --task <task> --out ...`` for both tasks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
OUT = DOCS / "_build" / "generated"
TASKS = ("noisy", "tiny")


def benchmark_tables(results_path: Path) -> str:
    """The benchmark tables as MyST markdown, headings demoted below the page's."""
    from benchmarks import markdown  # the suite's writer of results.md

    text = markdown(json.loads(results_path.read_text()))
    lines = text.splitlines()[1:]  # the page has its own title
    return "\n".join(
        "#" + line if line.startswith("#") else line for line in lines
    ).lstrip()


def run_main_job(task: str) -> str:
    """The output of ``python -m momentax --task TASK``; its plots land in OUT."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "momentax", "--task", task, "--out", str(OUT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"momentax --task {task} failed:\n{done.stderr}")
    # The "wrote PATH" lines name this build's folder, not anything a reader has.
    lines = done.stdout.splitlines()
    return "\n".join(line for line in lines if not line.startswith("wrote ")) + "\n"


def generate(app: Any) -> None:
    """Writes every generated part before Sphinx reads the pages."""
    OUT.mkdir(parents=True, exist_ok=True)
    results = ROOT / "benchmarks" / "results"
    for name, folder in (("benchmarks", "cpu"), ("compile", "cpu-compile")):
        tables = benchmark_tables(results / folder / "results.json")
        (OUT / f"{name}.md").write_text(tables + "\n")
    (OUT / "tuning.md").write_text(
        tuning_tables(results / "cpu-tuning" / "results.json") + "\n"
    )
    for task in TASKS:
        (OUT / f"{task}.txt").write_text(run_main_job(task))


def tuning_tables(results_path: Path) -> str:
    """The tuning section's tables, demoted below the page's headings."""
    from benchmarks import _tuning_report  # the tuning section's writer

    lines = _tuning_report.body(json.loads(results_path.read_text())["tuning"])
    return "\n".join("#" + line if line.startswith("#") else line for line in lines)


def skip_member(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Skips what a reader does not call: tuple field accessors and pytree hooks.

    A NamedTuple's Attributes section documents its fields already.
    """
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    if name in ("tree_flatten", "tree_flatten_with_keys", "tree_unflatten"):
        return True
    return None


# Where a type's private home shows in the docs, the public name it is used by.
PUBLIC_NAMES = {
    "optax._src.base.": "optax.",
    "jax._src.mesh.": "jax.sharding.",
    "jax.jaxlib._jax.Array": "jax.Array",
    "jax.jaxlib._jax.": "jax.",
}


# Type aliases that Python expands into their unions, and the name a reader knows.
ALIASES = {
    "jax.Array | numpy.ndarray | numpy.bool | numpy.number | bool | int | float | "
    "complex | Iterable[ArrayTree] | Mapping[Any, ArrayTree]": "optax.Updates",
}


def public_type_names(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Rewrites private module paths and expanded aliases in documented types."""
    for i, line in enumerate(lines):
        for private, public in PUBLIC_NAMES.items():
            line = line.replace(private, public)
        for expanded, alias in ALIASES.items():
            line = line.replace(expanded, alias)
        lines[i] = line


def setup(app: Any) -> dict[str, Any]:
    """Registers the generation step and the docstring filters with Sphinx."""
    app.connect("builder-inited", generate)
    app.connect("autodoc-skip-member", skip_member)
    # After napoleon (priority 500), which writes the types into the docstring.
    app.connect("autodoc-process-docstring", public_type_names, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
