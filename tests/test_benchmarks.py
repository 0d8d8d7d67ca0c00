"""The benchmark suite runs (``--quick``), checks itself, and reports consistently.

Nothing here asserts a speed: timings are what the suite reports, not what the
tests check. The tests check that every section runs, every contender is
timed, the derived numbers follow from the measured ones, the targets judge
the right rows, the committed results are what the writer makes of their
JSON, and the suite refuses to compare contenders that compute different
things. The tests that run the suite are marked slow.
"""

import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    _children,
    _cli,
    _compile,
    _native,
    _report,
    _suites,
    _tables,
    _tuning_report,
)
from benchmarks import _contenders as c
from benchmarks._sections import SECTIONS
from benchmarks._targets import TARGETS, evaluate, optax_ratios
from benchmarks._timing import summarize
from tests.helpers import REQUIRE_OPTIONAL, optional_present, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = optional_present("torch")
STEP_CONTENDERS = (
    {
        "momentax sutskever",
        "momentax pytorch",
        "optax.sgd",
        "jax.numpy",
        "momentax fit (scan)",
    }
    | {f"{name} (no donation)" for name in ("momentax sutskever", "optax.sgd")}
    | {f"{name} nesterov" for name in ("momentax sutskever", "optax.sgd")}
)
HAS_CC = _native.library()[0] is not None
GLIBC = platform.libc_ver()[0] == "glibc"
PNG = b"\x89PNG\r\n\x1a\n"
COMMITTED = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Runs ``python -m benchmarks --quick --sections all`` once.

    Returns:
        Its output folder, its JSON and its stdout.
    """
    out = tmp_path_factory.mktemp("bench")
    env = subprocess_env(MPLBACKEND="Agg")
    command = ["--quick", "--sections", "all", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = out / "cpu-all-quick"
    results = json.loads((folder / "results.json").read_text())
    assert results["environment"]["backend"] == "cpu"
    return folder, results, done.stdout


@pytest.mark.slow
def test_quick_run_writes_json_markdown_and_one_plot_per_question(quick):
    folder, results, stdout = quick
    plots = {f"{name}.png" for s in SECTIONS.values() for name in s.plots}
    # --quick's tuning run has no minibatch problem (compiling the MLP dominates),
    # so it draws no plot for that question.
    plots.discard("tuning-minibatch.png")
    assert {p.name for p in folder.iterdir()} == {"results.json", "results.md", *plots}
    for plot in plots:
        assert (folder / plot).read_bytes()[:8] == PNG
    markdown = (folder / "results.md").read_text()
    assert markdown == stdout.rstrip("\n") + "\n"
    for heading in (
        "Memory bandwidth",
        "One step",
        "Many leaves",
        "multi-output fusion",
        *(["glibc keeping freed memory"] if GLIBC else []),
        "regression",
        "Compile time",
        "Targets",
    ):
        assert heading in markdown
    out = folder.parent
    assert (
        results["command"] == f"python -m benchmarks --quick --sections all --out {out}"
    )
    for key in ("device", "cpu", "jax", "optax", "numpy", "python", "date"):
        assert results["environment"][key]
    assert set(results["section_seconds"]) >= set(SECTIONS)


@pytest.mark.slow
def test_the_step_sections_ran_again_with_the_fusion_flag(quick):
    _, results, _ = quick
    flagged = results["with_flag"]
    assert _children.FLAG in flagged["xla_flags"].split()
    # This jaxlib's XLA:CPU merges the loops: momentax took its single sweep.
    assert flagged["uses_single_sweep"] is True
    assert results["environment"]["uses_single_sweep"] is False


@pytest.mark.slow
@pytest.mark.parametrize("flag", [False, True])
def test_every_contender_is_timed_at_every_size_and_tree(quick, flag):
    _, results, _ = quick
    expected = set(STEP_CONTENDERS)
    if HAS_TORCH or REQUIRE_OPTIONAL:
        expected |= {"torch foreach", "torch fused"}
    if HAS_CC or REQUIRE_OPTIONAL:
        expected.add(c.ONE_PASS)
    for section, problems in (
        ("sizes", [f"{s:.0e}" for s in _cli.QUICK_SIZES]),
        ("trees", [p.label for p in _cli.QUICK_TREES]),
    ):
        rows = (results["with_flag"] if flag else results)[section]
        for problem in problems:
            names = {r["contender"] for r in rows if r["problem"] == problem}
            assert expected <= names, (section, problem, expected - names)
        if section == "trees":
            assert {"momentax packed", "momentax packed fit (scan)"} <= names
        else:
            assert {c.TRAIN_STEP, c.TRAIN_STEP_NO_SWEEP, c.TRAIN_FIT} <= names
        for row in rows:
            assert 0 < row["minimum"] <= row["median"], row
            assert row["p25"] <= row["median"] <= row["p75"], row
            assert row["samples"] == results["settings"]["repeats"]


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the allocator run needs glibc")
def test_the_largest_size_ran_again_with_glibc_keeping_freed_memory(quick):
    _, results, _ = quick
    allocator = results["allocator"]
    given = results["environment"]["glibc_tunables"]
    tunables = _children.GLIBC_TUNABLES.split(":")
    assert allocator["glibc_tunables"].split(":")[-3:] == tunables
    assert allocator["glibc_tunables"].startswith(given or "")
    flagged = allocator["with_flag"]
    assert _children.FLAG in flagged["xla_flags"].split()
    assert flagged["uses_single_sweep"] is True
    # The quick sizes all lie below 1e6 but the largest, which runs.
    largest = f"{max(_cli.QUICK_SIZES):.0e}"
    for rows in (allocator["sizes"], flagged["sizes"]):
        assert {row["problem"] for row in rows} == {largest}
        assert set(STEP_CONTENDERS) <= {row["contender"] for row in rows}


@pytest.mark.slow
def test_derived_numbers_follow_from_the_measured_ones(quick):
    _, results, _ = quick
    limit = results["bandwidth_limit"]
    largest = max(r["size"] for r in results["bandwidth"])
    assert limit == max(
        r["gb_per_s"] for r in results["bandwidth"] if r["size"] == largest
    )
    flagged = results["with_flag"]
    rows = results["sizes"] + results["trees"] + flagged["sizes"] + flagged["trees"]
    if GLIBC:
        allocator = results["allocator"]
        rows += allocator["sizes"] + allocator["with_flag"]["sizes"]
    for row in rows:
        assert row["bytes"] == c.BYTES_PER_PARAM * row["size"]
        assert math.isclose(row["gb_per_s"], row["bytes"] / row["median"] / 1e9)
        assert math.isclose(row["fraction_of_bandwidth"], row["gb_per_s"] / limit)
    ways = results["regression"]["ways"]
    for way in ways.values():
        # All ways train the same model: k and b agree to float32 rounding.
        assert way["max_param_difference"] < 1e-4
        assert way["compile"] == max(way["first_call"] - way["median"], 0.0)


@pytest.mark.slow
def test_memory_rows_and_targets_are_reported(quick):
    _, results, _ = quick
    rows = results["memory"]
    assert {(r["optimizer"], r["layout"], r["donate"]) for r in rows} >= {
        ("momentax", "tree", True),
        ("momentax", "tree", False),
        ("optax.sgd", "tree", True),
        ("momentax", "packed", True),
    }
    for row in rows:
        assert row["ideal_bytes"] == 12 * row["size"]
        assert row["ratio"] == row["peak_bytes"] / row["ideal_bytes"]
        # Without donation the new params and velocity need their own buffers.
        if not row["donate"]:
            assert row["peak_bytes"] >= 4 * 4 * row["size"]
    # With every section run, every target is measured at least once, but those
    # that need sizes from 1e7 up or the 1000 x 1000 tree (larger than --quick's);
    # those that compare with torch or the C kernel need them.
    names = {t["target"] for t in results["targets"]}
    larger = {
        "with the fusion flag: speed-up over optax.sgd under the same flag",
        "torch fused / momentax fit, per step on 1000 x 1000 leaves",
        "one jitted momentax call / torch fused, on 1000 x 1000 leaves",
    }
    if (HAS_TORCH and HAS_CC) or REQUIRE_OPTIONAL:
        assert names == {target.name for target in TARGETS} - larger
    assert {
        "momentax / optax.sgd, the same update",
        "peak memory / ideal, donated momentax train step",
        "compile time, momentax / optax.sgd",
    } <= names
    assert results["targets"] == evaluate(results)


@pytest.mark.slow
def test_compile_section_times_every_case_at_every_leaf_count(quick):
    _, results, _ = quick
    rows = results["compile"]
    repeats = results["settings"]["compile_repeats"]
    expected = {
        (case.what, case.optimizer, count)
        for case in _compile.CASES
        for count in _cli.QUICK_LEAF_COUNTS
        if case.max_leaves is None or count <= case.max_leaves
    }
    assert {(r["what"], r["optimizer"], r["leaves"]) for r in rows} == expected
    for row in rows:
        assert row["leaf_size"] == _compile.LEAF_SIZE
        assert len(row["samples"]) == repeats
        assert row["seconds"] == statistics.median(row["samples"])
        for key in ("seconds", "trace", "lower", "xla", "warm_call"):
            assert row[key] >= 0, (key, row)
        # Something compiled on every first call, and XLA said how long it took.
        assert row["xla"] > 0 and row["first_call"] > row["warm_call"], row
    where = {(t["target"], t["where"]) for t in results["targets"]}
    for what in _compile.COMPARED:
        for count in _cli.QUICK_LEAF_COUNTS:
            assert (
                "compile time, momentax / optax.sgd",
                f"{what} at {count} leaves",
            ) in (where)


def test_compile_ratios_and_growth_follow_from_the_rows():
    def row(what, optimizer, leaves, seconds):
        return {
            "what": what,
            "optimizer": optimizer,
            "leaves": leaves,
            "leaf_size": 3,
            "seconds": seconds,
            "trace": 0.0,
            "lower": 0.0,
            "xla": seconds,
        }

    rows = [
        row("fit", "momentax", 100, 1.0),
        row("fit", "momentax", 1000, 10.0),
        row("fit", "momentax", 3000, 90.0),
        row("fit", "optax.sgd", 100, 1.0),
        row("fit", "optax.sgd", 1000, 8.0),
        row("fit", "optax.sgd", 3000, 30.0),
        row("grad of the loss", None, 1000, 2.0),
    ]
    assert _compile.ratio(rows, "fit", 1000) == 10.0 / 8.0
    assert _compile.ratio(rows, "grad of the loss", 1000) is None
    grows = _compile.growth(rows, "fit", "momentax")
    # Quadratic between the two largest counts: 9x the time for 3x the leaves.
    assert math.isclose(grows["exponent"], 2.0)
    assert (grows["from"], grows["to"]) == (1000, 3000)
    assert _compile.growth(rows, "grad of the loss", None) is None
    got = {(t["target"], t["where"]): t for t in evaluate({"compile": rows})}
    ratio = got["compile time, momentax / optax.sgd", "fit at 1000 leaves"]
    assert (ratio["measured"], ratio["met"]) == (1.25, False)
    assert got["compile time, momentax / optax.sgd", "fit at 100 leaves"]["met"] is True
    (growth,) = [t for (name, _), t in got.items() if "growth" in name]
    assert growth["met"] is False and growth["threshold"] == 1.1
    assert growth["where"] == "fit, 1000 to 3000 leaves (optax.sgd's: 1.20)"
    markdown = _report.markdown(
        {
            "environment": {
                key: "x" for key in ("device", "backend", "cpu", "cpu_count")
            }
            | {key: "x" for key in ("memory_gib", "jax", "optax", "torch", "momentax")}
            | {"commit": "x", "date": "x"},
            "command": "x",
            "compile": rows,
        }
    )
    assert "| fit (momentax) | 1 s (1.00x) | 10 s (1.25x) | 90 s (3.00x) | 2.00 |" in (
        markdown
    )


def test_size_bounds_are_checked_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as raised:
        _cli.main(["--min-size", "7", "--max-size", "8"])
    assert raised.value.code == 2
    assert "no size lies between --min-size 7 and --max-size 8" in (
        capsys.readouterr().err
    )


def test_allocator_tables_give_the_default_time_over_the_tuned_one():
    def row(contender, problem, median):
        return {"contender": contender, "problem": problem, "median": median}

    results = {
        "sizes": [row("a", "1e+06", 3e-3), row("b", "1e+06", 1e-3)],
        "with_flag": {"sizes": [row("a", "1e+06", 2e-3)]},
        "allocator": {
            "glibc_tunables": "x",
            "sizes": [row("a", "1e+06", 1.5e-3), row("b", "1e+06", 1e-3)],
            "with_flag": {"xla_flags": "f", "sizes": [row("a", "1e+06", 4e-3)]},
        },
    }
    lines = _tables._allocator(results)
    assert "| a | 1.5 ms (2.00x) |" in lines
    assert "| b | 1 ms (1.00x) |" in lines
    assert "| a | 4 ms (0.50x) |" in lines
    assert _tables._allocator({"sizes": results["sizes"]}) == []


_FAULTS = """
import resource, statistics
import jax, jax.numpy as jnp
step = jax.jit(lambda p, v: (p - 0.01 * (0.9 * v + 1.0), 0.9 * v + 1.0))
p, v = jnp.ones(5 * 10**7, jnp.float32), jnp.zeros(5 * 10**7, jnp.float32)
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p, v = jax.block_until_ready(step(p, v))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults[30:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the tunables are glibc's")
def test_the_tunables_stop_an_undonated_step_faulting_its_outputs_in():
    """What the allocator run is for, and what the performance page says.

    Without donation a step allocates new params and velocity (200 MB each
    here) every call; glibc gave the old ones back to the kernel, so their
    pages fault in again: 2 x 48828 per call. With the tunables, once the heap
    has grown to hold them (a few dozen calls), none: the median of calls 31
    to 40 is taken. Each tunable matters at this size: measured without
    ``arena_max=1``, without ``mmap_max=0`` or without ``trim_threshold``, the
    median is one or both buffers' pages.
    """

    def faults(**env: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS],
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return float(done.stdout.split()[-1])

    pages = 5 * 10**7 * 4 / 4096
    assert faults() >= 2 * pages  # both outputs' pages, every call
    assert faults(GLIBC_TUNABLES=_children.GLIBC_TUNABLES) < 0.01 * pages


def test_summarize_gives_median_quartiles_and_minimum():
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0], calls=7, first_call=9.0)
    assert (stats.median, stats.minimum, stats.samples) == (3.0, 1.0, 5)
    assert stats.p25 <= 2.0 and stats.p75 >= 4.0
    assert (stats.calls_per_sample, stats.first_call) == (7, 9.0)


def test_groups_split_contenders_to_fit_the_memory_budget(monkeypatch):
    contenders = c.step_contenders(fit_steps=2, packed=False, torch=None)
    monkeypatch.setattr(_suites, "_memory_budget", lambda: 10**12)
    assert _suites._groups(contenders, 1000) == [contenders]
    # A budget of 4 words per param: each group holds what fits, in order.
    monkeypatch.setattr(_suites, "_memory_budget", lambda: 4 * 4 * 1000)
    groups = _suites._groups(contenders, 1000)
    assert [x for g in groups for x in g] == contenders
    for group in groups:
        assert len(group) == 1 or sum(x.words for x in group) <= 4


class _Fixed:
    def __init__(self, params):
        self._params = np.asarray(params, np.float32)

    def params(self):
        return self._params


def test_disagreeing_contender_stops_the_benchmark():
    problem = c.Problem(1, 3)
    runners = {"a": _Fixed([1, 2, 3]), "b": _Fixed([1, 2, 3.0001])}
    families = dict.fromkeys("abc", "heavy ball")
    _suites._check_agreement(runners, families, problem, {})
    runners["c"] = _Fixed([1, 2, 3.1])
    with pytest.raises(AssertionError, match="c disagrees"):
        _suites._check_agreement(runners, families, problem, {})


def test_contenders_are_checked_against_those_of_the_same_update():
    problem = c.Problem(1, 3)
    runners = {"a": _Fixed([1, 2, 3]), "n": _Fixed([1, 2, 3.1])}
    families = {"a": "heavy ball", "n": "nesterov"}
    reference = {}
    _suites._check_agreement(runners, families, problem, reference)
    runners = {"m": _Fixed([1, 2, 3.1])}
    with pytest.raises(AssertionError, match="m disagrees"):
        _suites._check_agreement(runners, {"m": "heavy ball"}, problem, reference)


@pytest.mark.skipif(not (HAS_CC or REQUIRE_OPTIONAL), reason="no C compiler")
@pytest.mark.parametrize("kind", list(_native.OnePass.WORDS))
def test_the_one_pass_kernels_compute_what_they_claim(kind):
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(70_000, np.float32) for _ in range(2))
    kernel = _native.OnePass(kind, p, g, learning_rate=0.01, momentum=0.9)
    kernel.run(3)
    p64, v64, g64 = p.astype(np.float64), np.zeros(p.size), g.astype(np.float64)
    for _ in range(3):
        if kind == "momentum":
            v64 = 0.9 * v64 - 0.01 * g64
            p64 = p64 + v64
        elif kind == "scale":
            p64 = 0.999 * p64
        else:
            p64 = p64 + 0.999 * g64
    # float32 arithmetic over 3 steps: a few ulps of values of order 1.
    np.testing.assert_allclose(kernel.params(), p64, rtol=1e-5, atol=1e-6)


def test_the_suite_refuses_to_start_with_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("XLA_FLAGS", _children.FLAG)
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["--quick"])
    assert exit_info.value.code == 2
    assert "run the suite without it" in capsys.readouterr().err


def test_targets_compare_the_right_rows():
    def row(problem, contender, median, leaves=1, size=1000):
        return {
            "problem": problem,
            "contender": contender,
            "median": median,
            "num_leaves": leaves,
            "leaf_size": size,
            "size": leaves * size,
            "fraction_of_bandwidth": 0.9,
        }

    tree = "1000 x 1000"
    results = {
        "sizes": [
            row("1e+03", "momentax sutskever", 1.0),
            row("1e+03", "optax.sgd", 1.0),
            row("1e+03", "torch fused", 2.0),
        ],
        "trees": [
            row(tree, "momentax sutskever", 10.0, 1000),
            row(tree, "optax.sgd", 9.0, 1000),
            row(tree, "torch fused", 4.0, 1000),
            row(tree, "momentax fit (scan)", 0.5, 1000),
            row(tree, "momentax packed", 1.0, 1000),
        ],
    }
    got = {(t["target"], t["where"].split(";")[0]): t for t in evaluate(results)}
    worst = got[
        "momentax / optax.sgd, the same update", f"momentax sutskever on {tree}"
    ]
    assert math.isclose(worst["measured"], 10 / 9) and worst["met"] is False
    fused = "torch fused / momentax fit, per step on 1000 x 1000 leaves"
    speedup = got[fused, "momentax fit (scan)"]
    assert (speedup["measured"], speedup["met"]) == (8.0, False)
    packed = got[
        "one jitted momentax call / torch fused, on 1000 x 1000 leaves",
        "momentax packed",
    ]
    assert (packed["measured"], packed["met"]) == (0.25, True)
    best = "donated momentax step / the best of optax.sgd and torch fused"
    large = got[best, "momentax sutskever at 1e+03"]
    assert (large["measured"], large["met"]) == (1.0, True)


@pytest.mark.parametrize(
    ("faster", "met"), [(c.ONE_PASS, True), ("torch fused", False)]
)
def test_limit_target_ignores_the_reference_kernel_timed_again(faster, met):
    # The limit is 40 GB/s and the row named `faster` runs at 50 GB/s. Only a
    # contender above the limit misses: the reference is the limit's own
    # kernel, so its excess is drift between two timings.
    def row(contender, gb_per_s):
        return {
            "problem": "5e+07",
            "contender": contender,
            "size": 50_000_000,
            "gb_per_s": gb_per_s,
            "median": 1.0,
        }

    results = {
        "bandwidth_limit": 40.0,
        "bandwidth": [{"size": 50_000_000}],
        "sizes": [row("optax.sgd", 30.0)],
        "with_flag": {"sizes": [row(faster, 50.0), row("optax.sgd", 32.0)]},
    }
    (limit,) = [t for t in evaluate(results) if "beat the limit" in t["target"]]
    assert limit["met"] is met
    expected = 0.8 if met else 1.25
    assert math.isclose(limit["measured"], expected)


def test_optax_ratios_pair_each_update_with_its_optax_peer():
    rows = [
        {"problem": "1e+07", "contender": name, "median": median}
        for name, median in (
            ("momentax sutskever", 1.0),
            ("optax.sgd", 2.0),
            ("momentax pytorch nesterov", 3.0),
            ("optax.sgd nesterov", 4.0),
            ("momentax pytorch (no donation)", 5.0),
            ("optax.sgd (no donation)", 10.0),
            ("jax.numpy", 1.0),
        )
    ]
    assert sorted((m.value, m.where) for m in optax_ratios(rows)) == [
        (0.5, "momentax pytorch (no donation) on 1e+07"),
        (0.5, "momentax sutskever on 1e+07"),
        (0.75, "momentax pytorch nesterov on 1e+07"),
    ]


def test_flag_targets_use_the_flagged_rows():
    def row(contender, median, size, fraction):
        return {
            "problem": f"{size:.0e}",
            "contender": contender,
            "median": median,
            "size": size,
            "fraction_of_bandwidth": fraction,
        }

    flagged = [
        row("momentax sutskever", 1.0, 10**6, 0.5),
        row("optax.sgd", 9.0, 10**6, 0.1),  # below 1e7: not a speed-up target
        row("momentax sutskever", 1.0, 10**7, 0.97),
        row("optax.sgd", 1.5, 10**7, 0.6),
        row("momentax pytorch nesterov", 1.0, 10**7, 0.9),
        row("optax.sgd nesterov", 1.1, 10**7, 0.8),
        row(c.ONE_PASS, 0.9, 10**7, 1.0),
    ]
    got = {
        (t["target"], t["where"]): t
        for t in evaluate({"with_flag": {"sizes": flagged}})
        if t["target"].startswith("with the fusion flag")
    }
    fraction = "with the fusion flag: momentax step, fraction of the bandwidth limit"
    sutskever = got[fraction, "momentax sutskever at 1e+07"]
    assert (sutskever["measured"], sutskever["met"]) == (0.97, True)
    assert got[fraction, "momentax pytorch nesterov at 1e+07"]["met"] is False
    speedup = next(t for (name, _), t in got.items() if "speed-up" in name)
    assert math.isclose(speedup["measured"], 1.1) and speedup["met"] is False
    assert speedup["where"] == "momentax pytorch nesterov on 1e+07; worst of 2 steps"
    beside = next(t for (name, _), t in got.items() if "same process" in name)
    # Both momentax steps at 1e7 take 1.0 against the reference's 0.9.
    assert math.isclose(beside["measured"], 0.9) and beside["met"] is False
    assert "1e+07" in beside["where"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats: must be a number > 0"),
        (["--repeats", "x"], "--repeats: invalid int value: 'x'"),
        (["--min-sample-time", "-1"], "--min-sample-time: must be a number > 0"),
        (["--sections", "sizes,nope"], "--sections: choose from bandwidth"),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_seconds_picks_a_readable_unit():
    assert [_tables.seconds(v) for v in (1.5, 0.0081, 1.2e-5, 3e-9)] == [
        "1.5 s",
        "8.1 ms",
        "12 µs",
        "3 ns",
    ]


def test_a_plain_run_overwrites_nothing_tracked_and_leaves_compile_out():
    args = _cli.parser().parse_args([])
    assert args.out == Path("benchmarks-out")
    assert "compile" not in args.sections and "sizes" in args.sections
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "benchmarks-out/cpu/results.json"],
        cwd=ROOT,
        check=False,
    )
    assert ignored.returncode == 0, "benchmarks-out/ must be ignored by git"
    assert _cli.parser().parse_args(["--sections", "compile"]).sections == ("compile",)
    assert _cli.parser().parse_args(["--sections", "all"]).sections == tuple(SECTIONS)


def test_the_output_folder_is_named_after_the_backend_and_sections():
    default = _cli.DEFAULT_SECTIONS
    assert _cli.folder_name("cpu", default, quick=False) == "cpu"
    assert _cli.folder_name("gpu", default, quick=True) == "gpu-quick"
    assert _cli.folder_name("cpu", ("compile",), quick=False) == "cpu-compile"
    assert (
        _cli.folder_name("cpu", ("bandwidth", "sizes"), False) == "cpu-bandwidth-sizes"
    )
    assert _cli.folder_name("cpu", tuple(SECTIONS), quick=True) == "cpu-all-quick"


def test_every_target_judges_a_registered_section():
    assert {target.section for target in TARGETS} <= set(SECTIONS)
    assert len({target.name for target in TARGETS}) == len(TARGETS)


# Rewrites every committed report and figure (about 9 s): slow tier.
@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(p.name for p in COMMITTED.iterdir()))
def test_committed_results_are_what_the_writer_makes_of_their_json(folder, tmp_path):
    """``--report`` rewrites the committed tables, targets and plots unchanged."""
    committed = COMMITTED / folder
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    assert _cli.main(["--report", str(tmp_path / "results.json")]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in committed.iterdir()}
    for name in ("results.json", "results.md"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
    results = json.loads((committed / "results.json").read_text())
    if "tuning" in results:  # the tuning section keeps targets of its own
        rows = results["tuning"]["targets"]
        assert rows and rows == _tuning_report.targets(results["tuning"])
        for row in rows:
            measured, threshold = row["measured"], row["threshold"]
            assert row["met"] is (measured is not None and measured <= threshold)
        return
    assert results["targets"] and results["targets"] == evaluate(results)
    for row in results["targets"]:
        at_most, threshold = row["at_most"], row["threshold"]
        measured = row["measured"]
        assert row["met"] is (
            measured <= threshold if at_most else measured >= threshold
        )
