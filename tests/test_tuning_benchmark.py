"""The tuning benchmark (`python -m benchmarks --sections tuning`) reports consistently.

No speed or quality is asserted: the targets are what the benchmark measures and
reports, met or not. The tests check that its measures mean what the report says
(steps to a target, divergence, final loss), that every verdict follows from its
measurement and threshold, and that a tiny run writes the report it describes.
"""

import json
import math

import numpy as np
import pytest

from benchmarks import _tuning as tuning
from benchmarks import _tuning_problems as tp
from benchmarks import _tuning_report as report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("measures", "every", "expected"),
    [
        ([1.0, 0.5, 0.2, 0.05, 0.01], 2, 6),  # below from reading 3 on
        ([1.0, 0.05, 0.2, 0.05, 0.01], 1, 3),  # dips, comes back up, then stays
        ([0.01, 0.02], 5, 0),  # there from the start
        ([1.0, 0.05, 0.2], 1, None),  # ends above
        ([1.0, 0.05, np.nan], 1, None),  # a diverged end is never there
        ([1.0, np.nan, 0.05], 1, 2),
    ],
)
def test_steps_to_target(measures, every, expected):
    assert tuning.steps_to(np.array(measures), 0.1, every) == expected


def test_divergence_and_final_value():
    assert tuning.diverged(np.array([1.0, np.inf, 0.5]))
    assert tuning.diverged(np.array([1.0, 0.1, 1.5]))  # ends above its start
    assert not tuning.diverged(np.array([1.0, 3.0, 0.5]))  # an overshoot is not
    # Two seeds, 10 readings after the start: the last 10% is the last reading.
    measures = np.stack([np.linspace(1.0, 0.2, 11), np.linspace(1.0, 0.4, 11)])
    assert tuning.final_value(measures) == pytest.approx(0.3)


def test_lr_grid_is_in_half_decades():
    grid = tp.lr_grid(-2, 0)
    np.testing.assert_allclose(grid, [0.01, 10**-1.5, 0.1, 10**-0.5, 1.0])


def _contender(steps=None, final=1.0, lr=0.1, mu=0.9, diverged=0):
    found = {
        "learning_rate": lr,
        "momentum": mu,
        "final": final,
        "diverged_seeds": diverged,
    }
    if steps != "-":
        found["steps_to_target"] = steps
    return found


def _synthetic():
    """Results with one problem of each kind and two overhead rows."""
    best = tuning.BEST_GRID
    quadratic = {
        "problem": "q",
        "kind": "quadratic",
        "seeds": [0],
        "target_value": 1e-4,
        "contenders": {
            best: _contender(90),
            tuning.HEAVY_BALL: _contender(100),
            tuning.AUTOTUNE: _contender(300),  # 3x: met, at the threshold
            tuning.AUTOTUNE_HVP: _contender(151),  # 1.51x: missed
        },
    }
    full = {
        "problem": "f",
        "kind": "full-batch",
        "seeds": [0],
        "target_value": 0.5,
        "contenders": {
            best: _contender(40),
            tuning.AUTOTUNE: _contender(None),  # never: missed
            tuning.AUTOTUNE_HVP: _contender(50),  # 1.25x: met
        },
    }
    noisy = {
        "problem": "n",
        "kind": "minibatch",
        "seeds": [0, 1],
        "target_value": None,
        "contenders": {
            best: _contender("-", final=2.0),
            tuning.AUTOTUNE: _contender("-", final=2.1, diverged=1),
            tuning.AUTOTUNE_HVP: _contender("-", final=None),  # NaN in JSON
        },
    }
    overhead = [
        {
            "model": "dense",
            "params": 100,
            "contender": name,
            "ratio_to_momentum": ratio,
            "cpu_ratio_to_momentum": ratio,
            "median_per_step": 1e-3,
            "samples": 3,
        }
        for name, ratio in (
            ("momentum()", 1.0),
            (tuning.AUTOTUNE, 1.04),
            (tuning.AUTOTUNE_HVP, 1.3),
        )
    ]
    return {"problems": [quadratic, full, noisy], "overhead": overhead}


def test_verdicts_follow_from_measurement_and_threshold():
    found = {
        (t["problem"], t["target"].split(":")[0]): t
        for t in report.targets(_synthetic())
    }
    expected = {
        ("q", "quadratic, gradients only"): (300, 300, True),
        ("q", "quadratic, with HVPs"): (151, 150, False),
        ("f", "full batch, gradients only"): (None, 50, False),
        ("f", "full batch, with HVPs"): (50, 50, True),
        ("n", "stochastic, gradients only"): (2.1, 2.1, True),
        ("n", "stochastic, with HVPs"): (None, 2.1, False),
        ("all", "auto-tuned runs that diverge (non-finite, or end above the start)"): (
            1,
            0,
            False,
        ),
        ("dense (1e+02 params)", "overhead, gradients only"): (1.04, 1.05, True),
        ("dense (1e+02 params)", "overhead, with HVPs"): (1.3, 1.25, False),
    }
    assert set(found) == set(expected)
    for key, (measured, threshold, met) in expected.items():
        row = found[key]
        assert row["measured"] == pytest.approx(measured), key
        assert row["threshold"] == pytest.approx(threshold), key
        assert row["met"] is met, key


def _check_outcome(outcome, row):
    steps = outcome.get("steps_to_target")
    if steps is not None:
        assert isinstance(steps, int) and 0 < steps <= row["num_steps"]
        assert steps % row["eval_every"] == 0
    assert 0 <= outcome["diverged_seeds"] <= len(row["seeds"])


@pytest.mark.slow  # compiles a grid and autotune twice per problem: minutes
def test_tiny_run_writes_a_consistent_report(tmp_path):
    problems = [
        tp.quadratic(dim=20, condition=100.0, num_steps=200),
        tp.noisy_quadratic(4, dim=20, num_steps=40, seeds=2),
        tp.least_squares(num_steps=60),
        tp.digits_mlp(hidden=8, num_steps=20, seeds=1),
    ]
    results = tuning.run(
        True,
        lambda message: None,
        problems=problems,
        overhead_size=10**4,
        overhead_repeats=3,
    )
    results["targets"] = report.targets(results)
    json.dumps(report._finite(results), allow_nan=False)  # it writes as JSON
    text = "\n".join(report.tables({"tuning": results}))
    assert text.startswith("## Tuning targets (")
    for problem, row in zip(problems, results["problems"], strict=True):
        # The grid and seeds are recorded as run.
        assert row["grid"]["learning_rates"] == list(problem.learning_rates)
        assert row["grid"]["momenta"] == list(problem.momenta)
        assert row["grid"]["points"] == len(problem.learning_rates) * len(
            problem.momenta
        )
        assert row["seeds"] == list(problem.seeds)
        names = set(row["contenders"])
        expected = {tuning.BEST_GRID, tuning.AUTOTUNE, tuning.AUTOTUNE_HVP}
        if problem.kind == "quadratic":
            expected.add(tuning.HEAVY_BALL)
        assert names == expected
        best = row["contenders"][tuning.BEST_GRID]
        assert (best["learning_rate"], best["momentum"]) in [
            (lr, mu) for lr in problem.learning_rates for mu in problem.momenta
        ]
        for outcome in row["contenders"].values():
            _check_outcome(outcome, row)
        if not problem.stochastic:  # the best point reaches the grid's target
            assert best["steps_to_target"] is not None
        curve = row["curves"][tuning.AUTOTUNE]
        assert curve["steps"][0] == 0 and curve["steps"][-1] == problem.num_steps
    for target in results["targets"]:
        measured, threshold = target["measured"], target["threshold"]
        assert target["met"] == (
            measured is not None and threshold is not None and measured <= threshold
        )
        assert target["unit"] in ("steps", "loss", "runs", "ratio")
        if target["unit"] == "steps" and measured is not None:
            assert isinstance(measured, int) and measured > 0
        assert f"| {target['target']} |" in text
    ratios = {(t["model"], t["contender"]): t for t in results["overhead"]}
    assert {contender for _, contender in ratios} == {
        "momentum()",
        tuning.AUTOTUNE,
        tuning.AUTOTUNE_HVP,
    }
    for (model, _), timing in ratios.items():
        base = ratios[(model, "momentum()")]["median_per_step"]
        assert timing["ratio_to_momentum"] == pytest.approx(
            timing["median_per_step"] / base
        )
        assert math.isfinite(timing["cpu_ratio_to_momentum"])
    # One plot per question, and the overhead's.
    report.write_plots(results, tmp_path / "png")
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == sorted(f"{name}.png" for name in [*tp.QUESTIONS, "overhead"])
    for name in pngs:
        assert (tmp_path / "png" / name).read_bytes().startswith(PNG_SIGNATURE)
    for draw in report.PLOTS.values():
        assert draw({"tuning": results}) is not None
