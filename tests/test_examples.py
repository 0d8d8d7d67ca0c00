"""The example scripts run and show what their docstrings describe."""

import contextlib
import io
import itertools
import pathlib
import runpy

import jax

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def test_quickstart_reproduces_the_notebook():
    out = io.StringIO()
    # Example code is user code: standard dtype promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["epoch", "sgd", "momentum", "nesterov"]
    table = [[float(x) for x in line.split()] for line in lines[1:21]]
    assert [row[0] for row in table] == list(range(1, 21))
    sgd, heavy_ball = [row[1] for row in table], [row[2] for row in table]
    # Plain SGD descends monotonically; lr 0.1 with momentum 0.9 overshoots and
    # its loss rises again, as in the notebook (epoch 2: 0.15, epoch 3: 11.39).
    assert all(b <= a for a, b in itertools.pairwise(sgd))
    assert heavy_ball[2] > 10 * heavy_ball[1]
    assert len(lines) == 24 and lines[-1].lstrip().startswith("nesterov: k = ")
