"""Checkpoints of a Flax TrainState resume bit for bit; other optimizers are refused."""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
import momentax.training
from tests.helpers import optional_import, warmup_then_decay

nn = optional_import("flax.linen")
train_state = optional_import("flax.training.train_state")
if nn is None:  # Only outside CI, which requires flax (see tests/helpers.py).
    pytest.skip("needs flax: pip install 'momentax[test]'", allow_module_level=True)

TRAINED, CONTINUED = 150, 20


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(16)(x))
        return nn.Dense(1)(x)


def data():
    x = jax.random.normal(jax.random.key(1), (32, 4))
    return x, jnp.sin(x.sum(axis=1, keepdims=True))


def create(tx):
    """A fresh TrainState, as a new process builds it: its step is the int 0."""
    model = MLP()
    params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def step(state, x, y):
    def loss(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    return state.apply_gradients(grads=jax.grad(loss)(state.params))


def run(state, num_steps):
    x, y = data()
    for _ in range(num_steps):
        state = step(state, x, y)
    return state


def momentum(convention):
    # A schedule, so that the state holds a step count the resume must restore.
    return momentax.momentum(warmup_then_decay, 0.9, convention=convention)


def assert_bitwise_equal(a, b):
    # Paths, not treedefs: each TrainState holds its own bound apply_fn.
    a, b = (jax.tree_util.tree_flatten_with_path(tree)[0] for tree in (a, b))
    assert [path for path, _ in a] == [path for path, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert jnp.dtype(x.dtype) == jnp.dtype(y.dtype)
        np.testing.assert_array_equal(
            np.atleast_1d(np.asarray(x)).view(np.uint8),
            np.atleast_1d(np.asarray(y)).view(np.uint8),
        )


# Each convention compiles a TrainState's training and restore: the other
# convention's run is in the slow tier (the refusals below cover both).
@pytest.mark.parametrize(
    "convention", ["sutskever", pytest.param("pytorch", marks=pytest.mark.slow)]
)
def test_a_train_state_resumes_bit_for_bit(tmp_path, convention):
    tx = momentum(convention)
    trained = run(create(tx), TRAINED)
    manager = momentax.training.CheckpointManager(tmp_path / "ckpt")
    manager.save(TRAINED, trained)
    manager.close()

    fresh = create(tx)
    assert fresh.step == 0 and isinstance(fresh.step, int)
    restored = momentax.training.CheckpointManager(tmp_path / "ckpt").restore(fresh)
    assert isinstance(restored, train_state.TrainState)
    # The Python int step comes back as the int32 array a jitted step made.
    assert isinstance(restored.step, jax.Array) and restored.step.dtype == jnp.int32
    assert int(restored.step) == TRAINED
    assert_bitwise_equal(run(restored, CONTINUED), run(trained, CONTINUED))


class Renamed(NamedTuple):
    """A state with optax.TraceState's one field, under another type name."""

    trace: optax.Params


def order(first_rate):
    """The two conventions' shape: the same two pieces in either order."""
    pieces = [optax.scale_by_learning_rate(warmup_then_decay), optax.trace(0.9)]
    return optax.chain(*(pieces if first_rate else pieces[::-1]))


def refused(tmp_path, saved_tx, target_state):
    with momentax.training.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, run(create(saved_tx), 3))
        with pytest.raises(ValueError, match="does not fit the target") as error:
            manager.restore(target_state)
    return str(error.value)


def test_the_other_order_of_a_chain_is_refused_naming_both(tmp_path):
    message = refused(tmp_path, order(True), create(order(False)))
    assert (
        "opt_state/0: checkpoint has ScaleByScheduleState, target has TraceState"
        in (message)
    )
    assert (
        "opt_state/1: checkpoint has TraceState, target has ScaleByScheduleState"
        in (message)
    )


def test_another_state_type_with_the_same_leaves_is_refused(tmp_path):
    target = create(optax.trace(0.9))
    target = target.replace(opt_state=Renamed(target.opt_state.trace))
    message = refused(tmp_path, optax.trace(0.9), target)
    # Same paths, shapes and dtypes: only the container's type tells them apart.
    assert message.endswith(
        "  opt_state: checkpoint has TraceState, target has Renamed"
    )


def test_another_optimizer_is_refused_naming_both(tmp_path):
    message = refused(tmp_path, momentum("pytorch"), create(optax.adam(0.1)))
    # MomentumState against Adam's chain tuple today; the chains' first pieces
    # (momentax's state a chain too) once momentax.momentum is rewritten.
    assert re.search(
        r"opt_state(/0)?: checkpoint has \w+State, target has (tuple|ScaleByAdamState)",
        message,
    )
    assert "opt_state/0/mu/Dense_0/kernel: in the target, not in the checkpoint" in (
        message
    )


@pytest.mark.parametrize(
    ("saved", "target"), [("sutskever", "pytorch"), ("pytorch", "sutskever")]
)
def test_the_other_convention_is_refused_naming_both(tmp_path, saved, target):
    # The velocity means a different thing in each convention (a step, or a
    # gradient sum): restoring one into the other would train wrongly, silently.
    message = refused(tmp_path, momentum(saved), create(momentum(target)))
    assert re.search(
        r"opt_state/\d: checkpoint has \w+State, target has \w+State", message
    )
