"""The main job's JSON document, streamed: per-epoch histories never become lists.

A history of a million epochs as a list of Python floats costs about 32 bytes a
number, and the document holds 24 such series per million epochs: about 0.8 GB,
on top of the arrays. Here each history is written from its NumPy array in
chunks, so the document costs a chunk's worth of memory more than the arrays.
"""

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from momentax import __version__
from momentax.tasks._exact import Optimum
from momentax.tasks._line import LineTask
from momentax.tasks._report import TOLERANCE, Result

_CHUNK = 1 << 16
# Stands for a history in the skeleton; replaced by the array as it is written.
_SLOT = "@momentax-history-{}@"


def number(value: Any) -> Any:
    """A float for JSON, with non-finite values (a diverged run) as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_array(values: np.ndarray, out: TextIO) -> None:
    """Writes ``values`` as a JSON list, non-finite values as null, in chunks.

    Each number is written as ``json`` writes a Python float (the shortest text
    that reads back to the same float64), so the output reads back bit for bit.
    """
    out.write("[")
    for start in range(0, len(values), _CHUNK):
        chunk = np.asarray(values[start : start + _CHUNK], np.float64).tolist()
        text = json.dumps(chunk, allow_nan=True)[1:-1]
        # The only way these words appear in a list of floats is as the
        # non-finite values, which JSON has no numbers for.
        for word in ("-Infinity", "Infinity", "NaN"):
            text = text.replace(word, "null")
        out.write(("" if start == 0 else ", ") + text)
    out.write("]")


def _entry(r: Result, slots: list[np.ndarray | None]) -> dict[str, Any]:
    c, run = r.run.contender, r.run
    change = r.sign_change

    def slot(values: np.ndarray | None) -> str | None:
        if values is None:
            return None
        slots.append(values)
        return _SLOT.format(len(slots) - 1)

    return {
        "name": c.name,
        "tuned": c.tuned,
        "learning_rate": run.final_learning_rate,
        "momentum": run.final_momentum,
        "nesterov": c.nesterov,
        "diverged_at_epoch": r.diverged_at,
        "final": {
            "k": number(run.trajectory[-1, 0]),
            "b": number(run.trajectory[-1, 1]),
            "train_loss": number(r.train_loss),
            "test_loss": None if r.test_loss is None else number(r.test_loss),
        },
        "gap_to_optimum": number(r.gap),
        "epochs_to_tolerance": r.epochs_to_tolerance,
        "sign_change": None if change is None else change._asdict(),
        "history": {
            "k": slot(run.trajectory[:, 0]),
            "b": slot(run.trajectory[:, 1]),
            "train_loss": slot(run.train_loss),
            "test_loss": slot(run.test_loss),
            "k_grad": slot(run.k_grad),
            "k_velocity": slot(run.k_velocity),
            "learning_rate": slot(run.learning_rate),
            "momentum": slot(run.momentum),
        },
    }


def write_document(
    out: TextIO,
    task: LineTask,
    seed: int | None,
    epochs: int,
    optimum: Optimum,
    curvature: tuple[float, float],
    results: Sequence[Result],
    plots: Sequence[pathlib.Path],
) -> None:
    """Writes the results, per-epoch histories included, as one JSON document."""
    slots: list[np.ndarray | None] = []
    document = {
        "momentax": __version__,
        "task": task.name,
        "write_up": task.write_up or None,
        "seed": seed,
        "epochs": epochs,
        "train_points": len(task.train.x),
        "test_points": 0 if task.test is None else len(task.test.x),
        "true_params": task.true_params,
        "optimum": optimum._asdict(),
        "curvature": {"max": curvature[0], "min": curvature[1]},
        "tolerance": TOLERANCE,
        "optimizers": [_entry(r, slots) for r in results],
        "diverged": [r.name for r in results if r.diverged_at is not None],
        "plots": [str(p) for p in plots],
        "notes": {
            "history": "entry t of k, b and the losses is after t epochs (t = 0: the "
            "start); entry t-1 of k_grad and k_velocity belongs to epoch t",
            "epochs_to_tolerance": "first epoch from which |(k, b) - optimum| <= "
            "tolerance * |optimum| holds to the end; null if never",
            "diverged_at_epoch": "first epoch after which the train loss is not "
            "finite (null: it never diverged); histories hold null from there",
            "tuned": "the optimizer sets its own learning rate and momentum: "
            "learning_rate and momentum are its last epoch's, and its history "
            "holds them per epoch (entry t-1: epoch t); null for the others",
        },
    }
    skeleton = json.dumps(document, indent=1, allow_nan=False)
    for index in range(len(slots)):
        written, skeleton = skeleton.split(f'"{_SLOT.format(index)}"', 1)
        out.write(written)
        values = slots[index]
        assert values is not None
        write_array(values, out)
    out.write(skeleton + "\n")
