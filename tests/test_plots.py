"""The main job's plots, checked on the figure objects: labels, legends, scales.

Pixels are not compared; what a reader trips over is: a legend over the data,
overlapping tick labels, an unlabelled axis, a colour scale that reads 0.0 0.0.
"""

import itertools
import os
import stat

import numpy as np
import pytest
from matplotlib.colors import LogNorm

from momentax import tasks
from momentax.tasks import _plot_curves, _plot_surface, _plotting
from momentax.tasks._plot_style import shown

# Building the main job's figures runs its tasks and matplotlib (about 13 s
# on 2 cores): an end-to-end check, in the slow tier.
pytestmark = pytest.mark.slow

STATE = {}


def runs_of(name, learning_rate=None, epochs=None):
    task = tasks.TASKS[name]()
    epochs = epochs or task.reference.epochs
    key = (name, learning_rate, epochs)
    if key not in STATE:
        contenders = tasks.contenders(task, learning_rate=learning_rate)
        # The tuned contenders set their own learning rate: under another one
        # they run as under the reference one. Their runs (seconds of compiling)
        # are the reference case's.
        reference = None if learning_rate is None else runs_of(name, None, epochs)
        runs = [
            reference[2][i] if c.tuned and reference else tasks.run(task, c, epochs)
            for i, c in enumerate(contenders)
        ]
        STATE[key] = task, tasks.least_squares(task), runs
    return STATE[key]


def draw(name, learning_rate=None):
    task, optimum, runs = runs_of(name, learning_rate)
    found = {
        "losses": _plot_curves.plot_losses(task, optimum, runs),
        "surface": _plot_surface.plot_surface(task, optimum, runs),
        "k-dynamics": _plot_curves.plot_k_dynamics(task, runs),
    }
    for fig in found.values():
        fig.draw_without_rendering()  # lays out, so that extents are final
    return found


@pytest.fixture(scope="module")
def figures():
    """``figures(name, learning_rate)``: a case's three figures, drawn once.

    The tests only read the figures, so every test of a case shares them.
    """
    drawn = {}

    def get(name, learning_rate=None):
        if (name, learning_rate) not in drawn:
            drawn[name, learning_rate] = draw(name, learning_rate)
        return drawn[name, learning_rate]

    return get


# The blog's task trains every contender for 450 epochs (with the tuned ones'
# compiling, 15 s on 2 cores): its cases are in the slow tier, and the fast
# tier draws the notebook's. The last case diverges.
SLOW = pytest.mark.slow
CASES = [
    pytest.param("noisy", None, marks=SLOW, id="noisy-None"),
    pytest.param("tiny", None, id="tiny-None"),
    pytest.param("noisy", 100.0, marks=SLOW, id="noisy-100.0"),
]
PLOTS = [
    pytest.param(*case.values, kind, marks=case.marks, id=f"{case.id}-{kind}")
    for case in CASES
    for kind in ("losses", "surface", "k-dynamics")
]


def data_axes(fig):
    """The panels (not the colour bar)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize(("name", "lr", "kind"), PLOTS)
def test_every_axis_is_labelled(figures, name, lr, kind):
    fig = figures(name, lr)[kind]
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel()
        else:
            assert ax.get_xlabel() and ax.get_ylabel(), (kind, ax)


@pytest.mark.parametrize(("name", "lr", "kind"), PLOTS)
def test_every_axis_label_fits_along_its_axis(figures, name, lr, kind):
    # A y label taller than its panel runs past the panel, and the figure's edge.
    fig = figures(name, lr)[kind]
    for ax in data_axes(fig):
        panel = ax.get_window_extent()
        ylabel = ax.yaxis.label.get_window_extent()
        xlabel = ax.xaxis.label.get_window_extent()
        assert ylabel.height <= panel.height, (kind, ax.get_ylabel())
        assert xlabel.width <= panel.width, (kind, ax.get_xlabel())


@pytest.mark.parametrize(("name", "lr", "kind"), PLOTS)
def test_the_legend_is_outside_every_panel(figures, name, lr, kind):
    fig = figures(name, lr)[kind]
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not overlap(box, ax.get_window_extent()), kind
    # And inside the figure: nothing cut off at the edges.
    figure_box = fig.bbox
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, (box, figure_box)
    names = [text.get_text() for text in legend.get_texts()]
    assert {"sgd", "momentum", "nesterov"} <= {n.split(" (")[0] for n in names}


def visible_tick_labels(axis, low, high):
    found = []
    for tick in axis.get_major_ticks():
        # A colour bar labels its ticks on the right: label2.
        for label in (tick.label1, tick.label2):
            shown_here = low <= tick.get_loc() <= high and label.get_visible()
            if shown_here and label.get_text():
                found.append(label)
    return found


@pytest.mark.parametrize(("name", "lr", "kind"), PLOTS)
def test_tick_labels_do_not_overlap(figures, name, lr, kind):
    fig = figures(name, lr)[kind]
    for ax in fig.axes:
        for axis, limits in ((ax.yaxis, ax.get_ylim()), (ax.xaxis, ax.get_xlim())):
            labels = visible_tick_labels(axis, min(limits), max(limits))
            boxes = [label.get_window_extent() for label in labels]
            for a, b in itertools.combinations(boxes, 2):
                assert not overlap(a, b), [label.get_text() for label in labels]


@pytest.mark.parametrize(("name", "lr"), CASES)
def test_k_dynamics_spikes_stay_clear_of_the_frame(figures, name, lr):
    fig = figures(name, lr)["k-dynamics"]
    for ax in data_axes(fig):
        assert ax.get_yscale() == "symlog" and ax.get_xscale() == "log"
        low, high = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if low <= t <= high]
        for line in ax.get_lines()[:-1]:  # the last is the zero line
            if "diverged" in line.get_label() or line.get_label().startswith("_"):
                continue
            values = np.abs(line.get_ydata())
            largest = np.nanmax(values)
            # Twice the largest value: a third of a decade of room on a log axis.
            assert largest <= high / 1.9, (line.get_label(), largest, high)
            # A labelled tick within a factor 10 of the largest spike.
            assert max(ticks) >= largest / 10


@pytest.mark.parametrize(("name", "lr"), CASES)
def test_loss_curves_use_log_epochs(figures, name, lr):
    *_, runs = runs_of(name, lr)
    fig = figures(name, lr)["losses"]
    for ax in data_axes(fig):
        assert ax.get_yscale() == "log" and ax.get_xscale() == "symlog"
        # The heavy ball's convergence in about 20 epochs takes a third of the
        # width or more, not a few pixels of a linear 0-450 axis.
        transform = ax.transData
        x0 = transform.transform((0, 1))[0]
        x20 = transform.transform((20, 1))[0]
        x_end = transform.transform((len(runs[0].train_loss), 1))[0]
        assert (x20 - x0) / (x_end - x0) > 0.3


def test_noiseless_task_does_not_draw_its_zero_optimum(figures):
    fig = figures("tiny")["losses"]
    (ax,) = data_axes(fig)  # the gap to an optimum of 0 is the loss: one panel
    low, _ = ax.get_ylim()
    # The optimum is 1e-14 (rounding): drawn, it squashed the curves into a third.
    assert low > 1e-8, low
    labels = [line.get_label() for line in ax.get_lines()]
    assert "least-squares fit" not in labels


@SLOW  # the blog's task
def test_noisy_task_draws_its_optimum_and_gap(figures):
    fig = figures("noisy")["losses"]
    train, _, gap = data_axes(fig)
    assert "least-squares fit" in [line.get_label() for line in train.get_lines()]
    assert "least-squares" in gap.get_ylabel()


@pytest.mark.parametrize(("name", "lr"), CASES)
def test_surface_colour_scale_is_logarithmic_and_readable(figures, name, lr):
    fig = figures(name, lr)["surface"]
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert isinstance(data_axes(fig)[0].collections[0].norm, LogNorm)  # contours
    assert bar.get_yscale() == "log"
    low, high = bar.get_ylim()
    labels = [label.get_text() for label in visible_tick_labels(bar.yaxis, low, high)]
    # At least three labelled decades, all different (not 0.0, 0.0, 0.0).
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels


@pytest.mark.parametrize(("name", "lr"), CASES)
def test_surface_frames_the_slow_runs_and_draws_them_on_top(figures, name, lr):
    *_, runs = runs_of(name, lr)
    fig = figures(name, lr)["surface"]
    ax = data_axes(fig)[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    heavy = lines["heavy-ball"]
    for other in ("sgd", "momentum", "nesterov"):
        assert heavy.get_zorder() < lines[other].get_zorder()
    assert heavy.get_alpha() < 1
    # SGD, plain and often under the others' first steps, is drawn last.
    assert lines["sgd"].get_zorder() == max(
        lines[n].get_zorder() for n in ("sgd", "momentum", "nesterov", "heavy-ball")
    )
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    for r in runs:
        if r.contender.name == "heavy-ball" or tasks.diverged_epoch(r) is not None:
            continue
        k, b = r.trajectory.T
        assert x_low <= k.min() and k.max() <= x_high
        assert y_low <= b.min() and b.max() <= y_high
    # A diverged run does not stretch the window to 1e38.
    assert max(abs(x_low), abs(x_high), abs(y_low), abs(y_high)) < 100


@SLOW  # the blog's task
def test_heavy_ball_leaving_the_frame_says_so(figures):
    fig = figures("noisy")["surface"]
    labels = [line.get_label() for line in data_axes(fig)[0].get_lines()]
    assert "heavy-ball (leaves the frame)" in labels


@SLOW  # the blog's task
def test_diverged_runs_say_so_in_the_legend(figures):
    fig = figures("noisy", 100.0)["losses"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("sgd (diverged at epoch ") for t in texts), texts
    assert "heavy-ball" in texts


@pytest.mark.parametrize(
    ("name", "title"),
    [
        pytest.param("noisy", tasks.BLOG_TITLE, marks=SLOW),
        ("tiny", tasks.NOTEBOOK_TITLE),
    ],
)
def test_titles_name_the_write_up(figures, name, title):
    for fig in figures(name).values():
        assert title in fig.get_suptitle()


def test_long_runs_are_thinned_for_plotting():
    index = shown(1_000_001)
    assert len(index) <= 4000
    assert index[0] == 0 and index[-1] == 1_000_000
    np.testing.assert_array_equal(index[:2000], np.arange(2000))
    np.testing.assert_array_equal(shown(50), np.arange(50))


def png_files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_plots_are_written_atomically_and_readable(tmp_path, monkeypatch):
    task, optimum, runs = runs_of("tiny")
    monkeypatch.setattr(os, "umask", lambda mask: 0o022)
    paths = _plotting.write_plots(task, optimum, runs, tmp_path)
    assert png_files(tmp_path) == [
        "tiny-k-dynamics.png",
        "tiny-losses.png",
        "tiny-surface.png",
    ]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    before = {p.name: p.read_bytes() for p in paths}

    def broken(*args):
        raise RuntimeError("interrupted while drawing")

    # The last plot fails: the two rendered before it must not replace the
    # old ones (no mix of old and new), and no temporary file is left.
    monkeypatch.setattr(_plotting, "plot_k_dynamics", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        _plotting.write_plots(task, optimum, runs[:2], tmp_path)
    assert png_files(tmp_path) == sorted(before)
    assert {p.name: p.read_bytes() for p in paths} == before


@SLOW  # the blog's task
def test_the_legend_holds_the_optimum_line_once(figures):
    fig = figures("noisy")["losses"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts.count("least-squares fit") == 1 and texts.count("sgd") == 1


@pytest.mark.parametrize("name", [pytest.param("noisy", marks=SLOW), "tiny"])
def test_tuned_contenders_are_in_every_plot_and_its_legend(name, figures):
    for kind, fig in figures(name).items():
        lines = {
            line.get_label(): line for ax in data_axes(fig) for line in ax.get_lines()
        }
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        for tuned in ("autotune", "autotune-hvp"):
            assert tuned in lines and tuned in legend, (kind, tuned)
        # Told apart by colour and, for the HVP one, a dashed line.
        assert lines["autotune"].get_color() != lines["autotune-hvp"].get_color()
        assert lines["autotune-hvp"].get_linestyle() == "--"
