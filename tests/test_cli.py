"""The main job's command line, end to end, in a temporary folder."""

import contextlib
import functools
import io
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import tracemalloc
from typing import NamedTuple

import numpy as np
import pytest

import momentax
from momentax import tasks
from momentax.tasks import _json_out, _report
from momentax.tasks import cli as _cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("losses", "surface", "k-dynamics")
SLOW = pytest.mark.slow
# The line the CLI prints on stderr once a fit has taken a second: on a busy
# machine even the tiny task's 20 epochs (mostly compilation) can take that long.
PROGRESS = re.compile(r"^.+: \d+/\d+ epochs \(\d+%\), \d+\.\d s\n", re.M)


def without_progress(stderr):
    """Returns ``stderr`` less the progress lines, which depend on the clock."""
    return PROGRESS.sub("", stderr)


NAMES = ("sgd", "momentum", "nesterov", "heavy-ball", "autotune", "autotune-hvp")


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


class Done(NamedTuple):
    """One run of the command line: its status, stdout, stderr and folder."""

    status: int
    out: str
    err: str  # less the progress lines, which depend on the clock
    cwd: pathlib.Path  # where it ran: relative --out folders are in here


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """``main_job(*argv)``: the command line's run with ``argv``, run once.

    Each run trains every contender, compiling the auto-tuned ones (seconds each),
    so every distinct ``argv`` runs once per module, in an empty folder of its own,
    and the tests that read its output share it. The tests only read it.
    """
    done = {}

    def get(*argv):
        if argv not in done:
            cwd = tmp_path_factory.mktemp("run")
            err = io.StringIO()
            with contextlib.chdir(cwd), contextlib.redirect_stderr(err):
                status, out = run_cli(*argv)
            done[argv] = Done(status, out, without_progress(err.getvalue()), cwd)
        return done[argv]

    return get


# The runs the tests share. Plots: with --out; without it, to ./momentax-out unless
# --json (or --no-plots).
DEFAULT = ()
TINY_JSON = ("--task", "tiny", "--json")
OPTIONS_JSON = ("--epochs", "30", "--lr", "0.02", "--momentum", "0.5", "--seed", "4")
OPTIONS_JSON += ("--json",)
DIVERGING = ("--task", "tiny", "--lr", "5", "--epochs", "200")
DIVERGING_JSON = (*DIVERGING, "--json", "--out", "plots")
DIVERGING_TEXT = (*DIVERGING, "--no-plots")


@pytest.mark.slow  # the default command: 450 epochs of every contender
def test_default_run_prints_the_blog_table_and_summary(main_job):
    status, text, _, cwd = main_job(*DEFAULT)
    assert status == 0
    assert text.startswith("momentax ")
    assert "task 'noisy'" in text and "450 full-batch epochs" in text
    for name in ("sgd", "momentum", "nesterov", "heavy-ball"):
        assert f"\n{name} (lr " in text
    for name in ("autotune", "autotune-hvp"):  # their own lr and momentum, tuned
        assert f"\n{name} (tuned from " in text
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
    assert [line.split()[0] for line in summary[:7]] == [*NAMES, "optimum"]
    assert summary[0].split()[-1] == "never"  # plain SGD does not get there in 450
    rows = {line.split()[0]: line.split() for line in summary[:6]}
    for name in ("autotune", "autotune-hvp"):  # reach 1% within the 450 epochs
        assert rows[name][-1].isdigit(), rows[name]
    assert_plots(cwd / "momentax-out", "noisy")


def test_tiny_task_json(main_job):
    status, text, _, cwd = main_job(*TINY_JSON)
    assert status == 0
    document = json.loads(text)
    assert document["task"] == "tiny" and document["epochs"] == 20
    assert document["write_up"] == tasks.NOTEBOOK_TITLE
    assert document["seed"] is None and document["test_points"] == 0
    assert [o["name"] for o in document["optimizers"]] == list(NAMES)
    assert [o["tuned"] for o in document["optimizers"]] == [False] * 4 + [True] * 2
    for tuned in document["optimizers"][4:]:
        # The columns show the tuned values of the last epoch.
        history = tuned["history"]
        assert len(history["learning_rate"]) == len(history["momentum"]) == 20
        assert tuned["learning_rate"] == history["learning_rate"][-1] > 0
        assert tuned["momentum"] == history["momentum"][-1]
    assert document["optimizers"][1]["history"]["learning_rate"] is None
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
    assert document["plots"] == []  # --json without --out
    assert not any(cwd.iterdir())


@pytest.mark.slow  # a whole command of its own (every contender compiled)
def test_options_reach_the_run(main_job):
    status, text, _, _ = main_job(*OPTIONS_JSON)
    assert status == 0
    document = json.loads(text)
    assert document["seed"] == 4 and document["epochs"] == 30
    momentum = document["optimizers"][1]
    assert (momentum["learning_rate"], momentum["momentum"]) == (0.02, 0.5)
    assert document["optimum"]["params"] == pytest.approx(
        tasks.least_squares(tasks.noisy_line(seed=4)).params
    )


@pytest.mark.slow  # reads the default and the options runs
def test_json_writes_plots_only_with_out(main_job):
    # --json without --out: the whole of stdout is the document, and no plots.
    status, text, _, cwd = main_job(*OPTIONS_JSON)
    assert status == 0
    assert json.loads(text)["plots"] == []
    assert not any(cwd.iterdir())
    # Without --json the plots go to ./momentax-out, as before.
    status, text, _, cwd = main_job(*DEFAULT)
    assert status == 0
    for kind in KINDS:
        assert f"wrote {pathlib.Path('momentax-out') / f'noisy-{kind}.png'}" in text
    assert sorted(p.name for p in cwd.iterdir()) == ["momentax-out"]
    assert_plots(cwd / "momentax-out", "noisy")


@pytest.mark.slow
def test_json_is_reproducible_across_processes():
    # A fresh process compiles and runs everything anew: the results must be
    # bit for bit those of this process (JSON keeps all 17 significant digits).
    done = run_module("--no-plots", "--json", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(
        run_cli("--no-plots", "--json", "--seed", "2")[1]
    )


@functools.cache
def diverged_epochs():
    """Where each contender of the diverging run diverges, run here by the library.

    The tuned contenders set their own learning rate, which --lr does not reach:
    they converge, as the diverging run's "diverged" list and summary check.
    """
    task = tasks.tiny_line()
    return {
        c.name: None if c.tuned else tasks.diverged_epoch(tasks.run(task, c, 200))
        for c in tasks.contenders(task, learning_rate=5.0)
    }


@pytest.mark.slow  # a whole command of its own
def test_diverging_run_gives_valid_json_plots_and_exit_status_3(main_job):
    # Warnings are errors here: overflow must not warn, in the losses or the plots.
    status, text, err, cwd = main_job(*DIVERGING_JSON)
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
    # The plots as --out named them (relative to where the command ran).
    assert sorted(document["plots"]) == sorted(
        str(pathlib.Path("plots") / f"tiny-{kind}.png") for kind in KINDS
    )
    assert_plots(cwd / "plots", "tiny")
    assert "diverged (non-finite loss)" in err


@pytest.mark.slow  # a whole command of its own
def test_diverging_run_says_so_in_the_tables_and_summary(main_job):
    status, text, err, _ = main_job(*DIVERGING_TEXT)
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
    for name in ("heavy-ball", "autotune", "autotune-hvp"):
        assert rows[name].split()[-1].isdigit(), rows[name]  # tuned: converges
    assert "diverged (non-finite loss): sgd at epoch" in text
    assert err == (
        "momentax: error: sgd, momentum, nesterov diverged (non-finite loss); "
        "see the summary\n"
    )


def assert_huge_values_keep_the_columns(text, rows):
    # lr 1 for 6 epochs: finite but around 1e13, in scientific notation.
    lines = text.split("epochs to 1%\n")[1].splitlines()[:rows]
    assert lines[0].startswith("sgd ") and "e+" in lines[0]
    header = text.split("\nafter 6 epochs")[1].splitlines()[1]
    assert {len(line) for line in lines} == {len(header)}


@pytest.mark.slow  # the whole command (compiling every contender) for one layout
def test_huge_values_keep_the_columns():
    status, text = run_cli("--task", "tiny", "--lr", "1", "--epochs", "6", "--no-plots")
    assert status == 0
    assert_huge_values_keep_the_columns(text, rows=6)


def test_huge_values_keep_the_summary_columns():
    # The summary of the command above, for the hand-set contenders (those --lr
    # reaches): their runs compile in a fraction of a second.
    task = tasks.tiny_line()
    optimum = tasks.least_squares(task)
    results = [
        _report.Result(tasks.run(task, c, 6), optimum)
        for c in tasks.contenders(task, learning_rate=1.0)
        if not c.tuned
    ]
    out = io.StringIO()
    _report.print_summary(results, optimum, 6, out)
    assert_huge_values_keep_the_columns(out.getvalue(), rows=4)


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


class Failing(io.StringIO):
    """A stdout whose writes fail like a closed pipe or a full disk."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def write(self, text):
        raise self.error


BROKEN_PIPE = (BrokenPipeError(32, "Broken pipe"), 141, "")
FULL_DISK = (OSError(28, "No space left on device"), 1, "No space left on device")


@pytest.mark.parametrize(("error", "status", "message"), [BROKEN_PIPE, FULL_DISK])
def test_a_failed_write_becomes_a_status_and_a_message(error, status, message, capsys):
    # What the command does when writing its results fails, without training.
    def write(out):
        print("results", file=out)

    assert _cli._emit(Failing(error), write) == status
    err = capsys.readouterr().err
    expected = f"momentax: error: cannot write the results to stdout: {message}\n"
    assert err == (expected if message else "")


@pytest.mark.parametrize(
    ("error", "status", "message", "mode"),
    [
        # Each trains every contender (seconds of compiling the tuned ones):
        # the fast tier checks the write's handling on its own (the test
        # above), the slow tier every error and output pair.
        pytest.param(*FULL_DISK, ("--json",), id="full-disk-json", marks=SLOW),
        pytest.param(*BROKEN_PIPE, (), id="broken-pipe-text", marks=SLOW),
        pytest.param(*BROKEN_PIPE, ("--json",), id="broken-pipe-json", marks=SLOW),
        pytest.param(*FULL_DISK, (), id="full-disk-text", marks=SLOW),
    ],
)
def test_failing_stdout_gives_a_status_not_a_traceback(
    error, status, message, mode, capsys
):
    argv = ["--task", "tiny", "--epochs", "5", "--no-plots", *mode]
    assert _cli.main(argv, stdout=Failing(error)) == status
    err = without_progress(capsys.readouterr().err)
    if message:
        assert f"momentax: error: cannot write the results to stdout: {message}" in err
    else:
        assert without_progress(err) == ""


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


@pytest.mark.slow  # reads the default, options and diverging runs
def test_the_output_names_the_write_up(main_job):
    # A text and a JSON run of each task.
    for task, title, text_run, json_run in (
        ("noisy", tasks.BLOG_TITLE, DEFAULT, OPTIONS_JSON),
        ("tiny", tasks.NOTEBOOK_TITLE, DIVERGING_TEXT, TINY_JSON),
    ):
        text = main_job(*text_run).out
        assert text.splitlines()[0].startswith(
            f'momentax {momentax.__version__}: task {task!r} from "{title}" ('
        )
        assert json.loads(main_job(*json_run).out)["write_up"] == title


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
    """A run of ``epochs`` epochs per contender; made-up histories, some not finite."""
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
            *([rng.uniform(size=epochs)] * 2 if contender.tuned else []),
        )
        results.append(_report.Result(run, optimum))
    return task, optimum, results


@pytest.mark.slow
def test_json_history_is_streamed_not_listed():
    # 6 runs x 4 series x 100k epochs: as lists of Python floats (as before),
    # about 32 bytes a number, 90 MB; streamed, a few chunks of 65536 numbers.
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
    # Each kind of entry once: no velocity (sgd), a velocity and a fixed lr
    # (momentum), a tuned lr and momentum (autotune). Six took seconds to parse.
    results = [results[0], results[1], results[4]]
    sink = Sink(keep=True)
    _json_out.write_document(sink, task, None, epochs, optimum, (2.0, 1.0), results, [])
    document = json.loads("".join(sink.parts))
    for r, entry in zip(results, document["optimizers"], strict=True):
        for name, values in (
            ("k", r.run.trajectory[:, 0]),
            ("train_loss", r.run.train_loss),
            ("k_grad", r.run.k_grad),
            ("k_velocity", r.run.k_velocity),
            ("learning_rate", r.run.learning_rate),
        ):
            found = entry["history"][name]
            if values is None:
                assert found is None
                continue
            # (Python floats, as float(v) gives them, and math.isfinite on them:
            # per-element NumPy calls took seconds over 70,000 epochs.)
            expected = [v if math.isfinite(v) else None for v in values.tolist()]
            assert found == expected, name  # bit for bit: floats compare exactly
        assert entry["diverged_at_epoch"] == epochs - 2


@pytest.mark.parametrize("value", [0.01, 1.031, 0.001234, 0.0001234, 0.93, 0.0, 1e5])
def test_tuned_settings_fit_their_columns(value):
    # A tuned lr can be 1.2e-04: it must not widen the summary's lr column (7).
    for width in (7, 8):
        text = _report.setting(value, width)
        assert len(text) == width
        assert float(text) == pytest.approx(value, rel=0.05)
