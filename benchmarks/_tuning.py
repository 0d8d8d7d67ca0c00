"""The tuning benchmark: ``momentax.autotune`` against a grid search of momentum.

Every run is one jitted ``lax.scan`` over its steps (an outer scan reads the
measure every ``eval_every`` steps), batched with ``vmap`` over the seeds and,
for the grid search, over every (learning rate, momentum) pair: the whole grid
of a problem is one compiled call.
"""

import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax
from benchmarks import _tuning_problems as tp

Row = dict[str, Any]
Log = Callable[[str], None]
MakeOptimizer = Callable[[Any], optax.GradientTransformation]

AUTOTUNE = "autotune"
AUTOTUNE_HVP = "autotune-hvp"
HEAVY_BALL = "heavy-ball (exact)"
BEST_GRID = "best grid point"
# The loss of a stochastic problem is read as the mean over the seeds of its
# last readings (this fraction of them): one reading is one noisy sample.
FINAL_FRACTION = 0.1
# Points of each curve kept in the results (spaced evenly on a log axis).
CURVE_POINTS = 200


class Source(NamedTuple):
    """Holds one auto-tuned contender.

    Attributes:
        name: :data:`AUTOTUNE` or :data:`AUTOTUNE_HVP`.
        make: Returns the optimizer (no argument: nothing is hand-set).
        value_fn: Whether ``update`` gets ``value_fn`` (the step's loss).
    """

    name: str
    make: Callable[[], optax.GradientTransformation]
    value_fn: bool


def sources() -> list[Source]:
    """The auto-tuned contenders: gradients only, and Hessian-vector products."""
    return [
        Source(AUTOTUNE, momentax.autotune, False),
        Source(AUTOTUNE_HVP, momentax.autotune, True),
    ]


def _grid_momentum(hparams: Any) -> optax.GradientTransformation:
    learning_rate, momentum = hparams
    return momentax.momentum(learning_rate, momentum)


def _tuned_values(state: Any) -> jax.Array:
    """The learning rate and momentum an auto-tuned state holds now."""
    found = [optax.tree.get(state, name) for name in ("learning_rate", "momentum")]
    return jnp.stack([jnp.asarray(value, jnp.float32) for value in found])


def _no_values(state: Any) -> jax.Array:
    del state
    return jnp.zeros(2, jnp.float32)


def runner(
    problem: tp.Problem,
    make: MakeOptimizer,
    *,
    value_fn: bool = False,
    tuned: bool = False,
) -> Callable[[Any, Any, Any], tuple[jax.Array, jax.Array]]:
    """One run of ``problem`` as a pure function of (hyperparameters, params, data).

    Returns:
        ``run(hparams, params, data) -> (measures, values)``: the measure at step
        0 and every ``eval_every`` steps after (``num_steps // eval_every + 1``
        readings), and at each reading after the first the learning rate and
        momentum the state holds (zeros unless ``tuned``).
    """
    chunks, every = problem.num_steps // problem.eval_every, problem.eval_every
    values_of = _tuned_values if tuned else _no_values

    def run(hparams: Any, params: Any, data: Any) -> tuple[jax.Array, jax.Array]:
        optimizer = make(hparams)
        state = optimizer.init(params)

        def step(carry: Any, index: jax.Array) -> tuple[Any, None]:
            params, state = carry
            batch = problem.batch_fn(index, data)
            grads = jax.grad(problem.loss_fn)(params, batch)
            extra = {}
            if value_fn:
                extra["value_fn"] = lambda p: problem.loss_fn(p, batch)
            updates, state = optimizer.update(grads, state, params, **extra)
            return (optax.apply_updates(params, updates), state), None

        def chunk(carry: Any, first: jax.Array) -> tuple[Any, Any]:
            carry, _ = jax.lax.scan(step, carry, first + jnp.arange(every))
            return carry, (problem.measure_fn(carry[0]), values_of(carry[1]))

        starts = jnp.arange(chunks) * every
        _, (measures, values) = jax.lax.scan(chunk, (params, state), starts)
        return jnp.concatenate([problem.measure_fn(params)[None], measures]), values

    return run


def _starts(problem: tp.Problem) -> tuple[Any, Any]:
    """The initial params and the data of every seed, stacked (made outside jit)."""
    params, data = [], []
    for seed in problem.seeds:
        init_key, data_key = jax.random.split(jax.random.key(seed))
        params.append(problem.init_fn(init_key))
        data.append(problem.data_fn(data_key))
    stack = lambda *leaves: jnp.stack(leaves)  # noqa: E731
    return jax.tree.map(stack, *params), jax.tree.map(stack, *data)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Compiles ``fn`` for ``args`` and runs it once: (outputs, compile s, run s)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compiled_at = time.perf_counter()
    outputs = jax.block_until_ready(compiled(*args))
    done = time.perf_counter()
    return jax.device_get(outputs), compiled_at - start, done - compiled_at


def steps_to(measures: np.ndarray, target: float, every: int) -> int | None:
    """The first step from which ``measures`` stay <= ``target`` to the end.

    ``measures[i]`` is read after ``i * every`` steps. None when the last reading
    is above the target or not finite.
    """
    outside = np.flatnonzero(~(measures <= target))
    if outside.size == 0:
        return 0
    last = int(outside[-1])
    return None if last == len(measures) - 1 else (last + 1) * every


def diverged(measures: np.ndarray) -> bool:
    """Whether a run's measure became non-finite or ended above where it started."""
    return bool(not np.all(np.isfinite(measures)) or measures[-1] > measures[0])


def final_value(measures: np.ndarray) -> float:
    """The mean over the last :data:`FINAL_FRACTION` of the readings (and seeds).

    ``measures`` is ``(seeds, readings)``; the reading at step 0 is left out.
    """
    readings = measures.shape[-1] - 1
    tail = max(1, round(FINAL_FRACTION * readings))
    return float(np.mean(measures[..., -tail:]))


def curve(problem: tp.Problem, measures: np.ndarray) -> dict[str, list[Any]]:
    """The mean curve over the seeds, at most :data:`CURVE_POINTS` readings."""
    mean = np.mean(measures, axis=0)
    count = len(mean)
    kept = np.unique(
        np.concatenate(
            [[0], np.geomspace(1, count - 1, CURVE_POINTS).astype(int), [count - 1]]
        )
    )
    return {
        "steps": [int(i * problem.eval_every) for i in kept],
        "values": [float(v) if np.isfinite(v) else None for v in mean[kept]],
    }


def _target_value(problem: tp.Problem, grid: np.ndarray) -> float | None:
    """The measure a full-batch or quadratic run must reach, or None (stochastic).

    Quadratics: the relative error. Full batch: the grid's best loss plus 0.1%
    of its initial gap (``grid`` is ``(points, seeds, readings)``).
    """
    if problem.relative_error is not None:
        return problem.relative_error
    if problem.stochastic:
        return None
    finals = grid[:, :, -1].mean(axis=1)
    best = float(np.nanmin(np.where(np.isfinite(finals), finals, np.nan)))
    start = float(grid[0, 0, 0])
    return best + 1e-3 * (start - best)


def _outcome(
    problem: tp.Problem, measures: np.ndarray, target: float | None
) -> dict[str, Any]:
    """Steps to the target (worst seed), final value and divergence of a run."""
    outcome: dict[str, Any] = {
        "final": final_value(measures),
        "diverged_seeds": sum(diverged(m) for m in measures),
    }
    if target is not None:
        steps = [steps_to(m, target, problem.eval_every) for m in measures]
        outcome["steps_to_target"] = (
            None if None in steps else max(s for s in steps if s is not None)
        )
    return outcome


def _pairs(problem: tp.Problem) -> list[tuple[float, float]]:
    """The grid's (learning rate, momentum) pairs, learning rate major."""
    return [(lr, mu) for lr in problem.learning_rates for mu in problem.momenta]


def grid_search(
    problem: tp.Problem, pairs: Sequence[tuple[float, float]], log: Log
) -> tuple[np.ndarray, dict[str, Any]]:
    """Runs ``momentum()`` at every pair with every seed, in one compiled call.

    Returns:
        The measures, ``(pairs, seeds, readings)``, and the wall times.
    """
    hparams = tuple(jnp.asarray([p[i] for p in pairs], jnp.float32) for i in (0, 1))
    run = runner(problem, _grid_momentum)
    batched = jax.vmap(jax.vmap(run, in_axes=(None, 0, 0)), in_axes=(0, None, None))
    log(f"tuning, {problem.name}: grid of {len(pairs)} x {len(problem.seeds)} seeds")
    (measures, _), compile_s, run_s = _timed(batched, hparams, *_starts(problem))
    return np.asarray(measures, np.float64), {"compile_s": compile_s, "run_s": run_s}


def tuned_run(
    problem: tp.Problem, source: Source
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``source``'s optimizer, seed after seed: measures, tuned values, wall times.

    Compiled once and called once per seed rather than batched with ``vmap``:
    under ``vmap`` the ``lax.cond`` that runs a Lanczos estimate every few
    steps becomes a select that runs it at every step.
    """
    run = runner(problem, lambda _: source.make(), value_fn=source.value_fn, tuned=True)
    params, data = _starts(problem)
    seeds = [
        jax.tree.map(lambda leaf, i=i: leaf[i], (params, data))
        for i in range(len(problem.seeds))
    ]
    start = time.perf_counter()
    compiled = jax.jit(run).lower(None, *seeds[0]).compile()
    compiled_at = time.perf_counter()
    outputs = [jax.block_until_ready(compiled(None, *seed)) for seed in seeds]
    done = time.perf_counter()
    measures, values = (np.stack([np.asarray(o[i]) for o in outputs]) for i in (0, 1))
    times = {"compile_s": compiled_at - start, "run_s": done - compiled_at}
    return measures.astype(np.float64), values, times


def _best_point(
    problem: tp.Problem, grid: np.ndarray, target: float | None
) -> tuple[int, dict[str, Any]]:
    """The grid point that reaches the target first (or ends lowest)."""
    outcomes = [_outcome(problem, grid[i], target) for i in range(len(grid))]

    def rank(i: int) -> tuple[float, float]:
        final = outcomes[i]["final"]
        final = final if np.isfinite(final) else np.inf
        if target is None:
            return (final, 0.0)
        steps = outcomes[i]["steps_to_target"]
        return (np.inf if steps is None else steps, final)

    best = min(range(len(grid)), key=rank)
    return best, outcomes[best]


def _with_values(
    problem: tp.Problem, values: np.ndarray
) -> dict[str, dict[str, list[Any]]]:
    """The learning rate and momentum curves (the first reading repeats)."""
    full = np.concatenate([values[:, :1], values], axis=1)
    return {
        "learning rate": curve(problem, full[:, :, 0]),
        "momentum": curve(problem, full[:, :, 1]),
    }


def run_problem(
    problem: tp.Problem, log: Log, *, tuned_sources: Sequence[Source] | None = None
) -> Row:
    """Runs the grid, the auto-tuned contenders and any exact reference.

    Polyak's exact heavy ball, where the curvature is known, runs as one more
    point of the grid's compiled call.
    """
    pairs = _pairs(problem)
    reference = None
    if problem.kind == "quadratic" and problem.curvature is not None:
        reference = momentax.heavy_ball_tuning(*problem.curvature)
    extra = [] if reference is None else [(reference.learning_rate, reference.momentum)]
    measured, grid_times = grid_search(problem, pairs + extra, log)
    grid = measured[: len(pairs)]
    target = _target_value(problem, grid)
    best, best_outcome = _best_point(problem, grid, target)
    lr, mu = pairs[best]
    log(f"tuning, {problem.name}: best grid point lr {lr:.3g}, momentum {mu:g}")
    row: Row = {
        "problem": problem.name,
        "kind": problem.kind,
        "description": problem.description,
        "params": tp.parameter_count(problem),
        "num_steps": problem.num_steps,
        "eval_every": problem.eval_every,
        "seeds": list(problem.seeds),
        "grid": {
            "learning_rates": list(problem.learning_rates),
            "momenta": list(problem.momenta),
            "points": len(pairs),
            "diverged_points": int(sum(any(diverged(m) for m in g) for g in grid)),
            **grid_times,
        },
        "target_value": target,
        "contenders": {
            BEST_GRID: {"learning_rate": lr, "momentum": mu, **best_outcome}
        },
        "curves": {BEST_GRID: curve(problem, grid[best])},
    }
    if reference is not None:
        row["contenders"][HEAVY_BALL] = {
            "learning_rate": reference.learning_rate,
            "momentum": reference.momentum,
            **_outcome(problem, measured[-1], target),
        }
        row["curves"][HEAVY_BALL] = curve(problem, measured[-1])
    for source in sources() if tuned_sources is None else tuned_sources:
        log(f"tuning, {problem.name}: {source.name}")
        measures, values, times = tuned_run(problem, source)
        final_lr, final_mu = np.median(values[:, -1, :], axis=0)
        row["contenders"][source.name] = {
            "learning_rate": float(final_lr),
            "momentum": float(final_mu),
            **_outcome(problem, measures, target),
            **times,
        }
        row["curves"][source.name] = curve(problem, measures)
        for name, values_curve in _with_values(problem, values).items():
            row["curves"][f"{source.name} {name}"] = values_curve
    return row


class _StepLoop:
    """``steps`` train steps of one optimizer per call, for the overhead timing."""

    def __init__(
        self,
        loss_fn: Callable[[Any, Any], jax.Array],
        params: Any,
        batch: Any,
        optimizer: optax.GradientTransformation,
        *,
        steps: int,
        value_fn: bool,
    ):
        def loop(params: Any, state: Any) -> tuple[Any, Any]:
            def step(carry: Any, _: None) -> tuple[Any, None]:
                params, state = carry
                grads = jax.grad(loss_fn)(params, batch)
                extra = {"value_fn": lambda p: loss_fn(p, batch)} if value_fn else {}
                updates, state = optimizer.update(grads, state, params, **extra)
                return (optax.apply_updates(params, updates), state), None

            carry, _ = jax.lax.scan(step, (params, state), length=steps)
            return carry

        self._loop = jax.jit(loop, donate_argnums=(0, 1))
        # Copies: a state may hold one array in two fields, which cannot be
        # donated twice.
        self._carry = jax.tree.map(jnp.copy, (params, optimizer.init(params)))

    def run(self, calls: int) -> None:
        """Runs ``calls`` calls of the loop and waits for them."""
        for _ in range(calls):
            self._carry = self._loop(*self._carry)
        jax.block_until_ready(self._carry)

    def params(self) -> Any:
        """The current params (as NumPy)."""
        return jax.device_get(self._carry[0])


# The dense model's batch: small, so that the step is cheap enough to time often
# on 2 cores (and the optimizer's share of it is not hidden by the matmul).
_BATCH = 16


def _overhead_models(size: int) -> dict[str, tuple[Any, Any, Any, str]]:
    """The models of the overhead timing: (loss_fn, params, batch, description)."""
    width = round(size**0.5)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(_BATCH, width)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(_BATCH, width)), jnp.float32)

    def dense(params: Any, batch: Any) -> jax.Array:
        x, y = batch
        return 0.5 * jnp.mean((x @ params - y) ** 2)

    curvatures = jnp.asarray(np.geomspace(1.0, 1e3, width * width), jnp.float32)

    def elementwise(params: Any, batch: Any) -> jax.Array:
        del batch
        return 0.5 * jnp.sum(curvatures * (params - 1.0) ** 2)

    return {
        "dense": (
            dense,
            jnp.zeros((width, width), jnp.float32),
            (inputs, targets),
            f"least squares of one {width}x{width} dense layer, batch {_BATCH}",
        ),
        "elementwise": (
            elementwise,
            jnp.zeros(width * width, jnp.float32),
            None,
            f"diagonal quadratic of {width * width} params (gradient elementwise)",
        ),
    }


def _interleaved(
    runners: dict[str, _StepLoop], repeats: int, calls: int
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per call of every runner, in shuffled rounds.

    Each round runs ``calls`` calls of every runner, in an order shuffled with a
    fixed seed, so that a noisy neighbour or a clock change falls on all of
    them alike. CPU time (``time.process_time``, all threads) is kept beside
    wall time: on a shared machine it is the steadier of the two.
    """
    samples = {name: {"wall": [], "cpu": []} for name in runners}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(runners), len(runners)):
            wall, cpu = time.perf_counter(), time.process_time()
            runners[name].run(calls)
            samples[name]["wall"].append((time.perf_counter() - wall) / calls)
            samples[name]["cpu"].append((time.process_time() - cpu) / calls)
    return samples


def overhead(size: int, repeats: int, log: Log, *, steps: int = 100) -> list[Row]:
    """Time per train step of the auto-tuned contenders over ``momentum()``'s.

    Each contender runs ``steps`` steps per call (one ``lax.scan``, a whole
    number of the default HVP refresh intervals), timed interleaved; the
    ratios are of medians measured side by side in this run.
    """
    rows = []
    for model, (loss_fn, params, batch, description) in _overhead_models(size).items():
        log(f"tuning overhead, {model}: {description}")
        contenders: dict[str, tuple[optax.GradientTransformation, bool]] = {
            "momentum()": (momentax.momentum(1e-6, 0.9), False),
            **{s.name: (s.make(), s.value_fn) for s in sources()},
        }
        runners = {
            name: _StepLoop(
                loss_fn,
                jnp.array(params),
                batch,
                optimizer,
                steps=steps,
                value_fn=value_fn,
            )
            for name, (optimizer, value_fn) in contenders.items()
        }
        for runner_ in runners.values():
            runner_.run(2)  # compiles, then one warm call
        samples = _interleaved(runners, repeats, 1)
        base = {
            kind: statistics.median(samples["momentum()"][kind])
            for kind in ("wall", "cpu")
        }
        for name, found in samples.items():
            wall = found["wall"]
            quartiles = statistics.quantiles(wall, n=4)
            cpu = statistics.median(found["cpu"])
            rows.append(
                {
                    "model": model,
                    "description": description,
                    "params": int(np.size(params)),
                    "contender": name,
                    "steps_per_call": steps,
                    "median_per_step": statistics.median(wall) / steps,
                    "p25_per_step": quartiles[0] / steps,
                    "p75_per_step": quartiles[2] / steps,
                    "cpu_per_step": cpu / steps,
                    "samples": len(wall),
                    "ratio_to_momentum": statistics.median(wall) / base["wall"],
                    "cpu_ratio_to_momentum": cpu / base["cpu"],
                }
            )
    return rows


def run(
    quick: bool,
    log: Log,
    *,
    problems: Sequence[tp.Problem] | None = None,
    overhead_size: int | None = None,
    overhead_repeats: int | None = None,
) -> dict[str, Any]:
    """The whole tuning section: every problem, then the overhead timing.

    ``problems`` (default :func:`tp.problems`), the overhead's size (default 1e6
    params, 1e5 with ``quick``) and its repeats can be set for a smaller run.
    """
    started = time.perf_counter()
    chosen = tp.problems(quick) if problems is None else problems
    rows = [run_problem(problem, log) for problem in chosen]
    size = overhead_size or (10**5 if quick else 10**6)
    repeats = overhead_repeats or (5 if quick else 11)
    timing = overhead(size, repeats, log, steps=50 if quick else 100)
    return {
        "quick": quick,
        "questions": tp.QUESTIONS,
        "final_fraction": FINAL_FRACTION,
        "problems": rows,
        "overhead": timing,
        "seconds": round(time.perf_counter() - started, 1),
    }
