"""The main job's command line, end to end, in a temporary folder."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import momentax
from momentax import tasks
from momentax.tasks import _json_out, _report
from momentax.tasks import cli as _cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("losses", "surface", "k-dynamics")
# The line the CLI prints on stderr once a fit has taken a second: on a busy
# machine even the tiny task's 20 epochs (mostly compilation) can take that long.
PROGRESS = re.compile(r"^.+: \d+/\d+ epochs \(\d+%\), \d+\.\d s\n", re.M)


def without_progress(stderr):
    """Returns ``stderr`` less the progress lines, which depend on the clock."""
    return PROGRESS.sub("", stderr)


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


@pytest.mark.slow
def test_json_is_reproducible_across_processes():
    # A fresh process compiles and runs everything anew: the results must be
    # bit for bit those of this process (JSON keeps all 17 significant digits).
    done = run_module("--no-plots", "--json", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(
        run_cli("--no-plots", "--json", "--seed", "2")[1]
    )


DIVERGING = ("--task", "tiny", "--lr", "5", "--epochs", "200")


def diverged_epochs():
    task = tasks.tiny_line()
    return {
        c.name: tasks.diverged_epoch(tasks.run(task, c, 200))
        for c in tasks.contenders(task, learning_rate=5.0)
    }


def test_diverging_run_gives_valid_json_plots_and_exit_status_3(tmp_path, capsys):
    # Warnings are errors here: overflow must not warn, in the losses or the plots.
    status, text = run_cli(*DIVERGING, "--json", "--out", str(tmp_path))
    assert status == _cli.EXIT_DIVERGED == 3
    document = json.loads(text)
    expected = diverged_epochs()
    assert expected["heavy-ball"] is None  # Polyak-tuned: does not use --lr
    assert all(expected[name] for name in ("sgd", "momentum", "nesterov"))
    found = {o["name"]: o["diverged_at_epoch"] for o in document["optimizers"]}
    assert found == expected
    assert document["diverged"] == ["sgd", "momentum", "nesterov"]
    sgd = document["optimizers"][0]
    assert sgd["final"]["train_loss"] is None  # overflowed to inf or nan: null
    assert sgd["epochs_to_tolerance"] is None
    # The history is finite up to the divergence and null from there on.
    history = sgd["history"]["train_loss"]
    assert None not in history[: expected["sgd"]]
    assert history[expected["sgd"]] is None
    assert_plots(tmp_path, "tiny")
    assert "diverged (non-finite loss)" in capsys.readouterr().err


def test_diverging_run_says_so_in_the_tables_and_summary():
    status, text = run_cli(*DIVERGING, "--no-plots")
    assert status == 3
    epochs = diverged_epochs()
    for name in ("sgd", "momentum", "nesterov"):
        table = text.split(f"\n{name} (lr 5,")[1].split("\n\n")[0]
        assert f"{name} diverged at epoch {epochs[name]}:" in table
        # The table ends at the divergence: its last row has the non-finite loss.
        assert table.splitlines()[-2].split()[0] == str(epochs[name] + 1)
        assert table.splitlines()[-2].split()[1] in ("inf", "nan")
    summary = text.split("epochs to 1%\n")[1].splitlines()
    rows = {line.split()[0]: line for line in summary}
    for name in ("sgd", "momentum", "nesterov"):
        assert rows[name].endswith(f"diverged at {epochs[name]}")
    assert rows["heavy-ball"].split()[-1].isdigit()  # tuned: converges
    assert "diverged (non-finite loss): sgd at epoch" in text


def test_huge_values_keep_the_columns():
    # lr 1 for 6 epochs: finite but around 1e13, in scientific notation.
    status, text = run_cli("--task", "tiny", "--lr", "1", "--epochs", "6", "--no-plots")
    assert status == 0
    lines = text.split("epochs to 1%\n")[1].splitlines()[:5]
    assert "e+" in lines[0]
    header = text.split("\nafter 6 epochs")[1].splitlines()[1]
    assert {len(line) for line in lines[:4]} == {len(header)}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs: must be an integer from 1 to 10000000"),
        (
            ["--epochs", "ten"],
            "--epochs: must be an integer from 1 to 10000000; got 'ten'",
        ),
        (["--epochs", "10000001"], "--epochs: must be an integer from 1 to 10000000"),
        (["--lr", "-1"], "argument --lr/--learning-rate: must be > 0 to train"),
        (["--learning-rate", "0"], "--learning-rate: must be > 0 to train; got '0'"),
        (
            ["--momentum", "0"],
            "--momentum: must be in (0, 1]: 0 would make momentum and Nesterov "
            "plain SGD",
        ),
        (
            ["--momentum", "-0.1"],
            "--momentum: must be in (0, 1]: a negative momentum is not momentum; "
            "got '-0.1'",
        ),
        (["--lr", "nan"], "--lr/--learning-rate: must be finite"),
        (
            ["--momentum", "1.5"],
            "--momentum: must be in (0, 1]: above 1 the velocity grows",
        ),
        (["--out", ""], "argument --out: an empty name is not a folder"),
        (["--out", "  "], "argument --out: an empty name is not a folder"),
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
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["--epochs", "5", "--out", str(target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --out: not a folder: {str(target)!r} is a file" in err
    with pytest.raises(SystemExit):
        _cli.main(["--epochs", "5", "--out", str(target / "below")])
    err = capsys.readouterr().err
    assert "--out: cannot create the folder" in err and "Not a directory" in err


def test_json_writes_plots_only_with_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, text = run_cli("--task", "tiny", "--epochs", "5", "--json")
    assert status == 0
    assert json.loads(text)["plots"] == []  # the whole of stdout is the document
    assert not any(tmp_path.iterdir())
    # Without --json the plots go to ./momentax-out, as before.
    status, text = run_cli("--task", "tiny", "--epochs", "5")
    assert status == 0 and "wrote momentax-out" in text
    assert_plots(tmp_path / "momentax-out", "tiny")


class Failing(io.StringIO):
    """A stdout whose writes fail like a closed pipe or a full disk."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def write(self, text):
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (BrokenPipeError(32, "Broken pipe"), 141, ""),
        (OSError(28, "No space left on device"), 1, "No space left on device"),
    ],
)
@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_failing_stdout_gives_a_status_not_a_traceback(
    error, status, message, mode, capsys
):
    argv = ["--task", "tiny", "--epochs", "5", "--no-plots", *mode]
    assert _cli.main(argv, stdout=Failing(error)) == status
    err = without_progress(capsys.readouterr().err)
    if message:
        assert f"momentax: error: cannot write the results to stdout: {message}" in err
    else:
        assert err == ""


@pytest.mark.slow
def test_closed_pipe_ends_quietly():
    # `momentax --json | head -c 2000`: the reader goes away after 2000 bytes.
    with subprocess.Popen(
        [sys.executable, "-m", "momentax", "--json", "--no-plots"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, MPLBACKEND="Agg"),
    ) as process:
        assert len(process.stdout.read(2000)) == 2000
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=300) == 141
    assert "Traceback" not in err and "Error" not in err, err


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_gives_a_message_and_status_1():
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "momentax", "--task", "tiny", "--no-plots"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, MPLBACKEND="Agg"),
            timeout=300,
            check=False,
        )
    assert done.returncode == 1
    assert without_progress(done.stderr) == (
        "momentax: error: cannot write the results to stdout: No space left on device\n"
    )


@pytest.mark.slow
def test_closed_stdout_gives_a_message_and_status_1():
    # `momentax >&-`: Python starts with sys.stdout None, and print() to it
    # silently writes nothing.
    done = subprocess.run(
        [
            "sh",
            "-c",
            'exec "$0" -m momentax --task tiny --no-plots >&-',
            sys.executable,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MPLBACKEND="Agg"),
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "momentax: error: stdout is closed" in done.stderr


INTERRUPTED = "momentax: interrupted (Ctrl-C); nothing more was written\n"


def test_ctrl_c_during_training_gives_one_line_and_status_130(monkeypatch, capsys):
    # Raised from fit's callback, so the KeyboardInterrupt carries fit's resume
    # note; the command prints neither it nor a traceback.
    def progress(*args, **kwargs):
        def callback(done, total):
            raise KeyboardInterrupt

        return callback

    monkeypatch.setattr(_cli, "Progress", progress)
    status, out = run_cli("--task", "tiny", "--no-plots")
    assert status == _cli.EXIT_INTERRUPTED == 130
    assert out == ""
    assert capsys.readouterr().err == INTERRUPTED


@pytest.mark.slow
def test_sigint_ends_the_command_with_status_130():
    # 2,000,000 epochs run in calls of 100,000, with a progress line after each
    # call once a second has passed: the first line says training has started.
    with subprocess.Popen(
        [sys.executable, "-m", "momentax", "--epochs", "2000000", "--no-plots"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MPLBACKEND="Agg"),
    ) as process:
        first = process.stderr.readline()
        assert first.startswith("sgd: "), first
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=300) == 130
        assert process.stdout.read() == ""
    assert rest == INTERRUPTED, rest


def test_help_names_the_write_ups_statuses_and_memory(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps the options to it
    with pytest.raises(SystemExit):
        _cli.main(["--help"])
    out = capsys.readouterr().out
    # Readable in an 80-column terminal: the description is wrapped too.
    assert max(len(line) for line in out.splitlines()) <= 79, out
    text = " ".join(out.split())
    for title in (tasks.BLOG_TITLE, tasks.NOTEBOOK_TITLE):
        assert f'"{title}"' in text
    assert "MB per million epochs" in text and "10,000,000 epochs costs" in text
    for status in (
        "0 done",
        "3 done, but a run diverged",
        "2 a bad option",
        "130 interrupted by Ctrl-C",
    ):
        assert status in text
    assert "the post" not in text and "the notebook's" not in text


def test_the_output_names_the_write_up():
    for task, title in (("noisy", tasks.BLOG_TITLE), ("tiny", tasks.NOTEBOOK_TITLE)):
        _, text = run_cli("--task", task, "--epochs", "3", "--no-plots")
        assert text.splitlines()[0].startswith(
            f'momentax {momentax.__version__}: task {task!r} from "{title}" ('
        )
        _, text = run_cli("--task", task, "--epochs", "3", "--no-plots", "--json")
        assert json.loads(text)["write_up"] == title


def test_progress_is_shown_only_for_long_runs():
    clock = iter([0.0, 0.4, 2.5]).__next__
    stream = io.StringIO()
    progress = _cli.Progress("momentum", stream, after=1.0, clock=clock)
    progress(10, 40)  # 0.4 s in: quiet
    progress(20, 40)  # 2.5 s in: reported
    assert stream.getvalue() == "momentum: 20/40 epochs (50%), 2.5 s\n"


@pytest.mark.slow
def test_python_dash_m_runs_end_to_end(tmp_path):
    done = run_module("--task", "tiny", "--out", "plots", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "heavy-ball" in done.stdout and "epochs to 1%" in done.stdout
    assert_plots(tmp_path / "plots", "tiny")
    bad = run_module("--epochs", "-5", cwd=tmp_path)
    assert bad.returncode == 2 and "--epochs" in bad.stderr


class Sink(io.TextIOBase):
    """A stdout that keeps nothing but a count (and, optionally, the text)."""

    def __init__(self, keep=False):
        self.written, self.parts = 0, [] if keep else None

    def writable(self):
        return True

    def write(self, text):
        self.written += len(text)
        if self.parts is not None:
            self.parts.append(text)
        return len(text)


def synthetic_results(epochs):
    """Four runs of ``epochs`` epochs with made-up histories, some not finite."""
    task = tasks.tiny_line()
    optimum = tasks.least_squares(task)
    rng = np.random.default_rng(0)
    results = []
    for contender in tasks.contenders(task):
        trajectory = rng.normal(size=(epochs + 1, 2))
        trajectory[-3:] = [np.inf, np.nan]  # a diverged end
        run = tasks.Run(
            contender,
            trajectory,
            tasks.exact_loss(*trajectory.T, task.train),
            None,
            rng.normal(size=epochs),
            None if contender.name == "sgd" else rng.normal(size=epochs) * 1e300,
        )
        results.append(_report.Result(run, optimum))
    return task, optimum, results


@pytest.mark.slow
def test_json_history_is_streamed_not_listed():
    # 4 runs x 4 series x 100k epochs: as lists of Python floats (as before),
    # about 32 bytes a number, 50 MB; streamed, a few chunks of 65536 numbers.
    epochs = 100_000
    task, optimum, results = synthetic_results(epochs)
    listed = 32 * sum(
        a.size
        for r in results
        for a in (r.run.trajectory, r.run.train_loss, r.run.k_grad, r.run.k_velocity)
        if a is not None
    )
    sink = Sink()
    tracemalloc.start()
    try:
        _json_out.write_document(
            sink, task, None, epochs, optimum, (1.0, 1.0), results, []
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.written > 4 * epochs * 10  # it did write the histories
    assert peak < listed / 4, (peak, listed)


def test_streamed_json_reads_back_exactly():
    epochs = 70_000  # more than one chunk of 65536
    task, optimum, results = synthetic_results(epochs)
    sink = Sink(keep=True)
    _json_out.write_document(sink, task, None, epochs, optimum, (2.0, 1.0), results, [])
    document = json.loads("".join(sink.parts))
    for r, entry in zip(results, document["optimizers"], strict=True):
        for name, values in (
            ("k", r.run.trajectory[:, 0]),
            ("train_loss", r.run.train_loss),
            ("k_grad", r.run.k_grad),
            ("k_velocity", r.run.k_velocity),
        ):
            found = entry["history"][name]
            if values is None:
                assert found is None
                continue
            expected = [float(v) if np.isfinite(v) else None for v in values]
            assert found == expected, name  # bit for bit: floats compare exactly
        assert entry["diverged_at_epoch"] == epochs - 2
