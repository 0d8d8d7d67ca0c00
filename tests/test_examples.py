"""The example scripts run and show what their docstrings describe."""

import contextlib
import io
import pathlib
import runpy

import jax
import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


@pytest.mark.slow  # the whole script, 800 steps twice: 5-6 s (test_training.py
# runs fit and make_train_step in the fast tier)
def test_own_model_trains_with_fit_and_with_the_train_step():
    out = io.StringIO()
    # Example code is user code: standard dtype promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / "own_model.py"), run_name="__main__")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [f"fit: {n}/800 steps" for n in (200, 400, 600, 800)]
    words = lines[4].split()
    first, last = float(words[5].rstrip(",")), float(words[-1])
    # The noise variance is 0.05^2 = 0.0025: the MLP gets close to that floor.
    assert last < 0.01 < first / 10
    assert lines[5].endswith("(800, 32, 1)")
    # The same steps in the same order: equal up to float32 rounding.
    assert float(lines[6].split()[-1]) <= 1e-5


@pytest.mark.slow  # a grid of 48 noisy runs and three 1500-step runs: minutes
def test_autotune_quadratic_prints_the_tuning_page_figures():
    out = io.StringIO()
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / "autotune_quadratic.py"), run_name="__main__")
    lines = out.getvalue().splitlines()
    ratios = {
        line.split(":")[0]: float(line.split("(")[1].rstrip("x)"))
        for line in lines
        if line.startswith("autotune")
    }
    # The tuning targets: <= 1.5x Polyak's steps with HVPs, <= 3x without.
    assert ratios["autotune with value_fn"] <= 1.5
    assert ratios["autotune, gradients"] <= 3.0
    assert sum(line.startswith("noisy quadratic") for line in lines) == 3
