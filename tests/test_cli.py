"""The main job's command line, end to end, in a temporary folder."""

import io
import json
import os
import subprocess
import sys

import pytest

from momentax import tasks
from momentax.tasks import cli as _cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("losses", "surface", "k-dynamics")


def run_cli(*argv):
    out = io.StringIO()
    status = _cli.main(list(argv), stdout=out)
    return status, out.getvalue()


def assert_plots(folder, task):
    for kind in KINDS:
        data = (folder / f"{task}-{kind}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def run_module(*argv, cwd=None):
    """``python -m momentax ARGV`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "momentax", *argv],
        cwd=cwd,
        env=dict(os.environ, MPLBACKEND="Agg"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_default_run_prints_the_blog_table_and_summary(tmp_path):
    status, text = run_cli("--out", str(tmp_path))
    assert status == 0
    assert text.startswith("momentax ")
    assert "task 'noisy'" in text and "450 full-batch epochs" in text
    for name in ("sgd", "momentum", "nesterov", "heavy-ball"):
        assert f"\n{name} (lr " in text
    # The momentum table is centred on k's gradient sign change.
    change = tasks.sign_change(
        tasks.run(tasks.noisy_line(), tasks.contenders(tasks.noisy_line())[1], 450)
    )
    section = text.split("\nmomentum (lr 0.01, momentum 0.93)\n")[1].split("\n\n")[0]
    rows = [line.split() for line in section.splitlines()[1:-1]]
    epochs = [int(row[0]) for row in rows]
    assert (
        epochs[0] == change.grad_epoch - 2 and epochs[-1] == change.velocity_epoch + 1
    )
    assert f"changes sign at epoch {change.grad_epoch}" in section
    summary = text.split("epochs to 1%\n")[1].splitlines()
    assert [line.split()[0] for line in summary[:5]] == [
        "sgd",
        "momentum",
        "nesterov",
        "heavy-ball",
        "optimum",
    ]
    assert summary[0].split()[-1] == "never"  # plain SGD does not get there in 450
    assert_plots(tmp_path, "noisy")


def test_tiny_task_json(tmp_path):
    status, text = run_cli("--task", "tiny", "--json", "--out", str(tmp_path / "plots"))
    assert status == 0
    document = json.loads(text)
    assert document["task"] == "tiny" and document["epochs"] == 20
    assert document["seed"] is None and document["test_points"] == 0
    assert [o["name"] for o in document["optimizers"]] == [
        "sgd",
        "momentum",
        "nesterov",
        "heavy-ball",
    ]
    momentum = document["optimizers"][1]
    assert (momentum["learning_rate"], momentum["momentum"]) == (0.1, 0.9)
    history = momentum["history"]
    assert len(history["train_loss"]) == 21 and len(history["k_grad"]) == 20
    assert history["train_loss"][0] == pytest.approx(
        56 / 3
    )  # (4 + 16 + 36) / 3 at k = b = 0
    assert document["optimizers"][0]["history"]["k_velocity"] is None
    assert document["optimum"]["params"] == pytest.approx(
        {"k": 2.0, "b": 0.0}, abs=1e-6
    )
    assert sorted(document["plots"]) == sorted(
        str(tmp_path / "plots" / f"tiny-{kind}.png") for kind in KINDS
    )
    assert_plots(tmp_path / "plots", "tiny")


def test_options_reach_the_run(tmp_path):
    status, text = run_cli(
        "--epochs",
        "30",
        "--lr",
        "0.02",
        "--momentum",
        "0.5",
        "--seed",
        "4",
        "--no-plots",
        "--json",
    )
    assert status == 0
    document = json.loads(text)
    assert (
        document["seed"] == 4 and document["epochs"] == 30 and document["plots"] == []
    )
    momentum = document["optimizers"][1]
    assert (momentum["learning_rate"], momentum["momentum"]) == (0.02, 0.5)
    assert document["optimum"]["params"] == pytest.approx(
        tasks.least_squares(tasks.noisy_line(seed=4)).params
    )
    assert not any(tmp_path.iterdir())


def test_json_is_reproducible_across_processes():
    # A fresh process compiles and runs everything anew: the results must be
    # bit for bit those of this process (JSON keeps all 17 significant digits).
    done = run_module("--no-plots", "--json", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(
        run_cli("--no-plots", "--json", "--seed", "2")[1]
    )


def test_diverging_run_gives_valid_json_and_plots(tmp_path):
    # Warnings are errors here: overflow must not warn, in the losses or the plots.
    status, text = run_cli(
        "--task",
        "tiny",
        "--lr",
        "5",
        "--epochs",
        "200",
        "--json",
        "--out",
        str(tmp_path),
    )
    assert status == 0
    sgd = json.loads(text)["optimizers"][0]
    assert sgd["final"]["train_loss"] is None  # overflowed to inf or nan: null
    assert sgd["epochs_to_tolerance"] is None
    assert_plots(tmp_path, "tiny")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs: must be an integer from 1 to 10000000"),
        (
            ["--epochs", "ten"],
            "--epochs: must be an integer from 1 to 10000000; got 'ten'",
        ),
        (["--epochs", "10000001"], "--epochs: must be an integer from 1 to 10000000"),
        (["--lr", "-1"], "--lr/--momentum: learning_rate must be > 0"),
        (["--lr", "0"], "--lr/--momentum: learning_rate must be > 0"),
        (["--momentum", "0"], r"momentum must be in (0, 1]"),
        (["--lr", "nan"], "must be finite"),
        (["--momentum", "1.5"], "momentum must be in [0, 1]"),
        (["--seed", "-3"], "--seed: must be an integer >= 0"),
        (["--task", "quadratic"], "invalid choice: 'quadratic'"),
        (["--task", "tiny", "--seed", "1"], "--seed only applies to --task noisy"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--no-plots", "--out", "x"], "it cannot go with --no-plots"),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "file.png"
    target.write_bytes(b"")
    with pytest.raises(SystemExit):
        _cli.main(["--epochs", "5", "--out", str(target)])
    assert "--out: cannot create the folder" in capsys.readouterr().err


def test_progress_is_shown_only_for_long_runs():
    clock = iter([0.0, 0.4, 2.5]).__next__
    stream = io.StringIO()
    progress = _cli.Progress("momentum", stream, after=1.0, clock=clock)
    progress(10, 40)  # 0.4 s in: quiet
    progress(20, 40)  # 2.5 s in: reported
    assert stream.getvalue() == "momentum: 20/40 epochs (50%), 2.5 s\n"


def test_python_dash_m_runs_end_to_end(tmp_path):
    done = run_module("--task", "tiny", "--out", "plots", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "heavy-ball" in done.stdout and "epochs to 1%" in done.stdout
    assert_plots(tmp_path / "plots", "tiny")
    bad = run_module("--epochs", "-5", cwd=tmp_path)
    assert bad.returncode == 2 and "--epochs" in bad.stderr
