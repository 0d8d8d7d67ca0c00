"""One memory sweep per step where XLA:CPU's multi-output fusion is on.

XLA reads ``XLA_FLAGS`` when its backend starts, so the flag's two paths run in
child processes (``python -m tests.sweep_grid``); the formulation itself is
checked in this process by forcing it on. What XLA emits (loops, temporary
bytes, identical bits) is the codegen tier's, tied to one jaxlib; the numbers
are checked here with tolerances.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
from momentax import _codegen
from tests import sweep_grid
from tests.helpers import TOL, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
FLAG = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
MIXED = "sutskever bf16 f32 velocity"
STARTED_WITH = os.environ.get("XLA_FLAGS", "")  # Before this process's XLA starts.


def _grid(xla_flags: str) -> dict:
    env = subprocess_env(XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "tests.sweep_grid"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def grids() -> dict[str, dict]:
    option = _codegen._FUSION_OPTION
    others = " ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split() if option not in f
    )
    return {"usual": _grid(others), "flag": _grid(f"{others} {FLAG}".strip())}


def _cases(grid: dict) -> dict:
    return {
        k: v
        for k, v in grid.items()
        if k not in ("uses_single_sweep", sweep_grid.TEMP_BYTES)
    }


@pytest.mark.codegen
def test_the_flag_turns_the_sweep_on(grids):
    assert grids["usual"]["uses_single_sweep"] is False
    assert grids["flag"]["uses_single_sweep"] is True


@pytest.mark.codegen
def test_without_the_flag_each_leaf_takes_two_loops(grids):
    assert {k: v["loops"] for k, v in _cases(grids["usual"]).items()} == {
        k: 2 for k in _cases(grids["usual"])
    }


@pytest.mark.codegen
def test_with_the_flag_each_leaf_takes_one_loop(grids):
    loops = {k: v["loops"] for k, v in _cases(grids["flag"]).items()}
    # Mixed dtypes keep the usual form (XLA does not merge their loops), and so
    # does an optimizer built with single_sweep=False.
    usual = (MIXED, sweep_grid.OPTED_OUT)
    assert loops == {k: 2 if k in usual else 1 for k in loops}


def _temp_bytes(grids: dict) -> tuple[dict, dict]:
    """The train steps' temporaries without and with the flag."""
    return grids["usual"][sweep_grid.TEMP_BYTES], grids["flag"][sweep_grid.TEMP_BYTES]


@pytest.mark.codegen
def test_single_sweep_false_keeps_computed_gradients_out_of_memory(grids):
    # With the sweep, gradients that are elementwise in the params (p - t) are
    # read by two computations, and XLA writes them to a temporary buffer; the
    # usual form computes them inside the velocity loop. This is why the
    # option exists: opting out gives the step the flag-free temporaries.
    usual, flag = _temp_bytes(grids)
    assert usual["quadratic single_sweep=True"] == usual["quadratic single_sweep=False"]
    assert flag["quadratic single_sweep=False"] == usual["quadratic single_sweep=False"]
    leaf_bytes = 4 * math.prod(sweep_grid.SHAPES["w"])  # float32
    swept = flag["quadratic single_sweep=True"]
    assert swept >= flag["quadratic single_sweep=False"] + leaf_bytes


@pytest.mark.codegen
def test_gradients_out_of_a_matrix_product_are_not_written_again(grids):
    # The weight's gradient is a matrix product's output, in memory anyway: the
    # sweep adds no copy of it. (The bias's gradient, a reduction over the
    # batch that the usual form fuses into its velocity loop, is written out:
    # a bias-sized buffer.)
    usual, flag = _temp_bytes(grids)
    assert flag["layer single_sweep=False"] == usual["layer single_sweep=False"]
    weight_bytes = 4 * math.prod(sweep_grid.LAYER["w"])  # float32
    swept = flag["layer single_sweep=True"]
    assert swept < flag["layer single_sweep=False"] + weight_bytes


@pytest.mark.codegen
def test_the_sweep_changes_no_bit(grids):
    usual, flag = _cases(grids["usual"]), _cases(grids["flag"])
    assert usual.keys() == flag.keys()
    for name in usual:
        assert flag[name]["params"] == usual[name]["params"], name
        assert flag[name]["velocity"] == usual[name]["velocity"], name


def _three_steps(make):
    """The params and state after three jitted steps (no compiled text kept)."""
    optimizer = make()

    @jax.jit
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = sweep_grid._params(jnp.float32)
    state = optimizer.init(params)
    for t in range(sweep_grid.STEPS):
        params, state = step(params, state, sweep_grid._grads(t, jnp.float32))
    return params, state


@pytest.mark.parametrize("name", list(sweep_grid._cases()))
def test_forced_sweep_gives_the_same_numbers(name, monkeypatch):
    make = sweep_grid._cases()[name]
    usual = _three_steps(make)
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: True)
    swept = _three_steps(make)
    # The same operations on the same values: at most a rounding or two apart.
    chex.assert_trees_all_close(swept, usual, **TOL[jnp.dtype(jnp.float32)])


@pytest.mark.codegen
@pytest.mark.parametrize("name", list(sweep_grid._cases()))
def test_forced_sweep_gives_the_same_bits(name, monkeypatch):
    # Without the fusion pass the two-computation form is slow but must be exact.
    make = sweep_grid._cases()[name]
    usual = sweep_grid.run_case(make, jnp.float32)
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: True)
    swept = sweep_grid.run_case(make, jnp.float32)
    assert swept["params"] == usual["params"]
    assert swept["velocity"] == usual["velocity"]


def _sweeps(optimizer, params, monkeypatch) -> bool:
    """Whether forcing the sweep adds optimization barriers to the update's jaxpr."""

    def barriers() -> int:
        state = optimizer.init(params)
        jaxpr = jax.make_jaxpr(lambda g, s, p: optimizer.update(g, s, p))(
            params, state, params
        )
        return str(jaxpr).count("optimization_barrier")

    usual = barriers()
    with monkeypatch.context() as patch:
        patch.setattr(_codegen, "uses_single_sweep", lambda: True)
        return barriers() > usual


def test_forced_sweep_applies_only_where_it_can_fuse(monkeypatch):
    f32 = {"w": jnp.ones(5)}
    assert _sweeps(momentax.momentum(0.1, 0.9), f32, monkeypatch)
    # Plain SGD is one loop already; the user may opt out; mixed dtypes do not fuse.
    assert not _sweeps(momentax.momentum(0.1, 0.0), f32, monkeypatch)
    opted_out = momentax.momentum(0.1, 0.9, single_sweep=False)
    assert not _sweeps(opted_out, f32, monkeypatch)
    injected = optax.inject_hyperparams(momentax.momentum)
    assert not _sweeps(injected(0.1, single_sweep=False), f32, monkeypatch)
    assert _sweeps(injected(0.1), f32, monkeypatch)
    bf16 = {"w": jnp.ones(5, jnp.bfloat16)}
    optimizer = momentax.momentum(0.1, accumulator_dtype=jnp.float32)
    assert not _sweeps(optimizer, bf16, monkeypatch)


def test_eager_updates_never_take_the_sweep(monkeypatch):
    calls = []
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: calls.append(1) or True)
    optimizer = momentax.momentum(0.1, 0.9)
    params = {"w": jnp.ones(3)}
    updates, _ = optimizer.update(params, optimizer.init(params), params)
    assert calls == []
    assert jnp.array_equal(updates["w"], jnp.full(3, -0.1))


def test_without_the_option_no_probe_compiles(monkeypatch):
    def probe():
        raise AssertionError("probed although XLA_FLAGS lacks the option")

    monkeypatch.setattr(_codegen, "_merges_loops", probe)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert momentax.uses_single_sweep() is False
    monkeypatch.delenv("XLA_FLAGS")
    assert momentax.uses_single_sweep() is False


@pytest.mark.codegen
def test_the_probe_decides_where_the_option_is_named(monkeypatch):
    # This process started without the option, so its XLA does not merge loops:
    # naming the option afterwards changes nothing, and the probe says so.
    monkeypatch.setenv("XLA_FLAGS", FLAG)
    if _codegen._FUSION_OPTION in STARTED_WITH:
        pytest.skip("this process started with the option")
    assert momentax.uses_single_sweep() is _codegen._merges_loops()
    assert _codegen._merges_loops() is False


def test_sweep_keeps_the_chain_contract(monkeypatch):
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: True)
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), momentax.momentum(0.1, 0.9, nesterov=True)
    )
    params = {"w": jnp.arange(4.0), "b": jnp.ones((2, 2))}
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(params, state, params, value=jnp.ones(()))
        return optax.apply_updates(params, updates), state

    new_params, new_state = step(params, state)
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: False)
    expected_params, expected_state = jax.jit(step.__wrapped__)(params, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(expected_state)
    chex.assert_trees_all_close(
        (new_params, new_state),
        (expected_params, expected_state),
        **TOL[jnp.dtype(jnp.float32)],
    )


def _two_steps(learning_rate, params):
    optimizer = momentax.momentum(learning_rate, 0.9, nesterov=True)
    state = optimizer.init(params)
    for _ in range(2):
        updates, state = optimizer.update(params, state, params)
    return jnp.sum(optax.apply_updates(params, updates))


def test_forced_sweep_differentiates_and_vectorizes_as_the_usual_form(monkeypatch):
    params = jnp.arange(3.0)
    learning_rates = jnp.array([0.1, 0.2])
    transform = jax.jit(jax.vmap(jax.grad(_two_steps), in_axes=(0, None)))
    usual = transform(learning_rates, params)
    monkeypatch.setattr(_codegen, "uses_single_sweep", lambda: True)
    swept = jax.jit(jax.vmap(jax.grad(_two_steps), in_axes=(0, None)))
    np.testing.assert_allclose(
        swept(learning_rates, params), usual, **TOL[jnp.dtype(jnp.float32)]
    )
