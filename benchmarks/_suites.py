"""The five measurements: bandwidth, step sizes, many-leaf trees, regression, memory."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax
import momentax.training
from benchmarks import _contenders as c
from benchmarks import _native
from benchmarks._timing import Settings, Stats, measure, summarize, time_first_call
from benchmarks._timing import time_repeated as _time_repeated
from momentax import tasks

Row = dict[str, Any]
Log = Callable[[str], None]


def _memory_budget() -> int:
    """Bytes the contenders of one problem may hold at once (half of what is free)."""
    if jax.default_backend() == "gpu":
        stats = jax.devices()[0].memory_stats() or {}
        free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
        return int(0.5 * free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(0.5 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return 4 * 2**30


def _groups(contenders: Sequence[c.Contender], size: int) -> list[list[c.Contender]]:
    """Splits contenders into groups that fit the memory budget together.

    Each group is timed interleaved; at sizes where all do not fit at once
    (10^9 params on a GPU), fewer share a round.
    """
    budget = _memory_budget()
    groups: list[list[c.Contender]] = [[]]
    used = 0
    for contender in contenders:
        need = contender.words * size * 4
        if groups[-1] and used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(contender)
        used += need
    return groups


def bandwidth(sizes: Sequence[int], settings: Settings, log: Log) -> list[Row]:
    """The streaming kernels' GB/s at each size: jitted, and one-pass C ones."""
    rows = []
    for size in sizes:
        log(f"bandwidth, {size:.0e} floats")
        runners: dict[str, Any] = {
            f"jitted {kind}": c.Bandwidth(kind, size) for kind in c.Bandwidth.WORDS
        }
        words = {f"jitted {kind}": n for kind, n in c.Bandwidth.WORDS.items()}
        if _native.library()[0] is not None:
            ones = np.ones(size, np.float32)
            for kind, n in _native.OnePass.WORDS.items():
                runners[f"C {kind}"] = _native.OnePass(kind, ones, ones)
                words[f"C {kind}"] = n
        firsts = {kind: time_first_call(r) for kind, r in runners.items()}
        stats = measure(runners, firsts, settings)
        for kind, s in stats.items():
            nbytes = words[kind] * 4 * size
            rows.append(
                {
                    "kernel": kind,
                    "size": size,
                    "bytes": nbytes,
                    **s.as_dict(),
                    "gb_per_s": nbytes / s.median / 1e9,
                }
            )
        del runners
    return rows


def steps(
    problems: Sequence[c.Problem],
    settings: Settings,
    *,
    torch: Any | None,
    packed: bool,
    fit_steps: Callable[[c.Problem], int],
    log: Log,
) -> list[Row]:
    """One momentum step per contender, for each problem.

    Every contender first runs ``fit_steps`` steps from the same params and
    gradients; their params must then agree (rtol 1e-4), which checks that the
    benchmark compares the same computation. Then they are timed.
    """
    rows = []
    for problem in problems:
        params, grads = problem.arrays()
        warm_steps = fit_steps(problem)
        contenders = c.step_contenders(
            fit_steps=warm_steps, packed=packed, torch=torch, trained=not packed
        )
        reference: dict[str, np.ndarray] = {}
        for group in _groups(contenders, problem.size):
            log(f"steps, {problem.label}: {', '.join(x.name for x in group)}")
            runners = {x.name: x.make(params, grads) for x in group}
            firsts = {}
            for contender in group:
                runner = runners[contender.name]
                firsts[contender.name] = time_first_call(runner)
                calls_left = warm_steps // contender.steps_per_call - 1
                if calls_left > 0:
                    runner.run(calls_left)
            families = {x.name: x.family for x in group}
            _check_agreement(runners, families, problem, reference)
            stats = measure(runners, firsts, settings)
            for contender in group:
                rows.append(_step_row(problem, contender, stats[contender.name]))
            del runners
    return rows


def _check_agreement(
    runners: dict[str, Any],
    families: dict[str, str],
    problem: c.Problem,
    reference: dict[str, np.ndarray],
) -> None:
    """Contenders of one update hold the same params after the same steps (rtol 1e-4).

    Sutskever's and PyTorch's conventions round differently, and XLA and
    PyTorch may use fused multiply-adds differently, so a few ulps per step
    accumulate; a wrong contender (another formula, a missed step) is off by
    far more than 1e-4.
    """
    for name, runner in runners.items():
        got = runner.params()
        expected = reference.setdefault(families[name], got)
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            worst = float(np.max(np.abs(got - expected)))
            raise AssertionError(
                f"{name} disagrees with the other contenders on {problem.label} "
                f"(max |difference| {worst:.3g}): the benchmark would compare "
                "different computations."
            )


def _step_row(problem: c.Problem, contender: c.Contender, stats: Stats) -> Row:
    per_step = {
        key: value / contender.steps_per_call if key in _TIMES else value
        for key, value in stats.as_dict().items()
    }
    nbytes = c.BYTES_PER_PARAM * problem.size
    return {
        "problem": problem.label,
        "num_leaves": problem.num_leaves,
        "leaf_size": problem.leaf_size,
        "size": problem.size,
        "contender": contender.name,
        "donate": contender.donate,
        "steps_per_call": contender.steps_per_call,
        **per_step,
        "bytes": nbytes,
        "gb_per_s": nbytes / per_step["median"] / 1e9,
    }


_TIMES = ("median", "p25", "p75", "minimum")


class _TorchRegression:
    """The blog's training in PyTorch eager: the code a PyTorch user writes."""

    def __init__(self, torch: Any, task: tasks.LineTask, epochs: int):
        self._torch = torch
        self._x = torch.tensor(np.asarray(task.train.x))
        self._y = torch.tensor(np.asarray(task.train.y))
        self._epochs = epochs
        self._reference = task.reference

    def train(self) -> np.ndarray:
        torch = self._torch
        k = torch.zeros((), requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.SGD(
            [k, b], lr=self._reference.learning_rate, momentum=self._reference.momentum
        )
        losses = []
        for _ in range(self._epochs):
            optimizer.zero_grad()
            loss = torch.mean((k * self._x + b - self._y) ** 2)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return np.array([k.item(), b.item()], np.float32)


def regression(settings: Settings, *, torch: Any | None, log: Log) -> dict[str, Any]:
    """The blog's 450-epoch training, three ways, each from scratch.

    Compile time is the first call of a fresh optimizer (which compiles)
    minus the median of warm calls.
    """
    task, _ = c.regression_setup()
    epochs = task.reference.epochs

    def fit_training() -> Callable[[], np.ndarray]:
        _, optimizer = c.regression_setup()

        def train() -> np.ndarray:
            result = momentax.training.fit(
                tasks.mse_loss,
                optimizer,
                tasks.init_params(),
                data=task.train,
                num_steps=epochs,
            )
            return _line_params(result.params)

        return train

    def loop_training() -> Callable[[], np.ndarray]:
        _, optimizer = c.regression_setup()
        step = momentax.training.make_train_step(tasks.mse_loss, optimizer)

        def train() -> np.ndarray:
            params = tasks.init_params()
            state = optimizer.init(params)
            losses = []
            for _ in range(epochs):
                params, state, records = step(params, state, task.train)
                losses.append(records["loss"])
            return _line_params(params)

        return train

    ways: dict[str, Callable[[], Callable[[], np.ndarray]]] = {
        "momentax.training.fit (one lax.scan)": fit_training,
        "make_train_step, Python loop": loop_training,
    }
    if torch is not None:
        torch_training = _TorchRegression(torch, task, epochs)
        ways["torch eager"] = lambda: torch_training.train
    results: dict[str, Any] = {"epochs": epochs, "ways": {}}
    finals = {}
    cold: dict[str, list[float]] = {name: [] for name in ways}
    warm: dict[str, list[float]] = {name: [] for name in ways}
    trainers = {}
    for name, make in ways.items():
        log(f"regression, first calls: {name}")
        for _ in range(3):
            trainer = make()
            cold[name] += _time_repeated(trainer, 1)
        trainers[name] = trainer
        finals[name] = trainer()
    log("regression, warm runs")
    names = list(trainers)
    for round_index in range(settings.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            warm[name] += _time_repeated(trainers[name], 1)
    reference = finals[names[0]]
    for name in names:
        stats = summarize(warm[name], 1, float(np.median(cold[name])))
        results["ways"][name] = {
            **stats.as_dict(),
            "compile": max(stats.first_call - stats.median, 0.0),
            "final_params": finals[name].tolist(),
            "max_param_difference": float(np.max(np.abs(finals[name] - reference))),
        }
    return results


def _line_params(params: Any) -> np.ndarray:
    return np.array([params["k"], params["b"]], np.float32)


def _quadratic_loss(params: Any, target: jax.Array) -> jax.Array:
    """``0.5 * sum (p - target)^2`` over every leaf: its gradients are computed."""
    terms = [0.5 * jnp.sum((p - target) ** 2) for p in jax.tree.leaves(params)]
    return jnp.sum(jnp.stack(terms))


def memory(problems: Sequence[c.Problem], log: Log) -> list[Row]:
    """XLA's peak buffer bytes for one training step, against the ideal.

    The ideal is params + gradients + velocity. The peak is what XLA's buffer
    assignment allocates for one call of the compiled step: arguments plus
    outputs, minus outputs written into donated arguments, plus temporaries.
    """
    optimizers = {
        "momentax": lambda: momentax.momentum(c.LEARNING_RATE, c.MOMENTUM),
        "optax.sgd": lambda: optax.sgd(c.LEARNING_RATE, momentum=c.MOMENTUM),
    }
    rows = []
    for problem in problems:
        params, _ = problem.arrays()
        trees = {"tree": [jnp.asarray(p) for p in params]}
        if problem.num_leaves > 1:
            trees["packed"] = momentax.training.pack(trees["tree"])
        for (layout, tree), (name, make), donate in (
            (t, o, d)
            for t in trees.items()
            for o in optimizers.items()
            for d in (True, False)
        ):
            if layout == "packed" and (name != "momentax" or not donate):
                continue
            log(f"memory, {problem.label}: {name} {layout} donate={donate}")
            optimizer = make()
            step = momentax.training.make_train_step(
                _quadratic_loss, optimizer, donate=donate
            )
            state = optimizer.init(tree)
            compiled = step.lower(tree, state, jnp.float32(0.5)).compile()  # type: ignore[attr-defined]
            analysis = compiled.memory_analysis()
            if analysis is None:
                continue
            peak = (
                analysis.argument_size_in_bytes
                + analysis.output_size_in_bytes
                - analysis.alias_size_in_bytes
                + analysis.temp_size_in_bytes
            )
            ideal = 3 * 4 * problem.size
            rows.append(
                {
                    "problem": problem.label,
                    "size": problem.size,
                    "optimizer": name,
                    "layout": layout,
                    "donate": donate,
                    "argument_bytes": analysis.argument_size_in_bytes,
                    "output_bytes": analysis.output_size_in_bytes,
                    "alias_bytes": analysis.alias_size_in_bytes,
                    "temp_bytes": analysis.temp_size_in_bytes,
                    "peak_bytes": peak,
                    "ideal_bytes": ideal,
                    "ratio": peak / ideal,
                }
            )
    return rows


def torch_or_none(enabled: bool) -> Any | None:
    """The torch module, or None when it is off or not installed."""
    if not enabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch
