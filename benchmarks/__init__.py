"""momentax's benchmark suite: ``python -m benchmarks`` (see README.md here).

Each section answers one question (``_sections.SECTIONS``); a run writes
``results.json``, ``results.md`` and one plot per question under
``benchmarks-out/`` by default. The targets a run is judged by are in
``_targets.TARGETS``.
"""

from benchmarks._report import markdown as markdown

__all__ = ["markdown"]
