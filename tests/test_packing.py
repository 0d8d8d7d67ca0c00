"""Packed params: layout, round trip, gradients, and identical training results."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
import momentax.training
from tests.helpers import TOL, gradient_stream, nested_params, run


def mixed_params():
    """Nested float32 leaves plus an int32 and a float16 leaf, and a None."""
    params = nested_params()
    params["steps"] = jnp.int32(3)
    params["half"] = jnp.arange(5, dtype=jnp.float16)
    params["unused"] = None
    return params


def velocity(state):
    """The momentax velocity, or the trace of optax.sgd."""
    found = optax.tree.get(state, "velocity")
    return optax.tree.get(state, "trace") if found is None else found


def mlp_loss(params, batch):
    """A two-layer model over many leaves; the loss sees the unpacked tree."""
    assert isinstance(params, dict), type(params)
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    out = hidden @ params["w2"] + params["b2"]
    # squeeze, not out[:, 0]: jax 0.8 differentiates a slice into a pad, which
    # would hide whether unpack's own gradient is free of pads.
    return jnp.mean((jnp.squeeze(out, axis=1) - y) ** 2) + sum(
        jnp.sum(b**2) for b in params["biases"]
    )


def mlp_setup():
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 8)), jnp.float32),
        "b1": jnp.zeros(8),
        "w2": jnp.asarray(rng.normal(size=(8, 1)), jnp.float32),
        "b2": jnp.zeros(1),
        "biases": [jnp.asarray(rng.normal(size=4), jnp.float32) for _ in range(5)],
    }
    x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    return params, (x, jnp.sin(x[:, 0]))


def test_round_trip_keeps_structure_shapes_dtypes_and_values():
    params = mixed_params()
    packed = momentax.training.pack(params)
    # Buffers come in the order their dtype first occurs (dict keys sorted).
    assert packed.dtypes == tuple(map(np.dtype, ("float32", "float16", "int32")))
    assert packed.num_leaves == 8
    assert [b.shape for b in packed.buffers] == [(21,), (5,), (1,)]
    assert repr(packed) == "Packed(8 leaves in float32[21], float16[5], int32[1])"
    chex.assert_trees_all_equal(packed.unpack(), params, strict=True)


def test_the_buffers_are_the_pytree_leaves():
    packed = momentax.training.pack(mixed_params())
    assert jax.tree.leaves(packed) == list(packed.buffers)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(packed)]
    assert paths == ["['float32']", "['float16']", "['int32']"]
    doubled = jax.tree.map(lambda b: b * 2, packed)
    assert isinstance(doubled, momentax.training.Packed)
    assert doubled.unpack()["half"][1] == 2


def test_pack_rejects_packed_and_non_numeric_leaves():
    with pytest.raises(TypeError, match="already a Packed"):
        momentax.training.pack(momentax.training.pack({"a": jnp.zeros(2)}))
    with pytest.raises(TypeError, match=r"\['key'\] has dtype key"):
        momentax.training.pack({"key": jax.random.key(0)})


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"a": "x"}, r"tree\['a'\] is 'x', a str\. Pack the arrays only"),
        ({"w": jnp.zeros(2), "f": [len]}, r"tree\['f'\]\[0\] is .*, a builtin"),
        ({"s": np.array(["a"])}, r"tree\['s'\] is array\(\['a'\], .*, a ndarray"),
    ],
)
def test_pack_names_the_leaf_that_is_not_a_number(tree, message):
    with pytest.raises(TypeError, match=message):
        momentax.training.pack(tree)


def test_gradient_through_unpack_matches_the_tree_gradient():
    params, batch = mlp_setup()
    expected = jax.grad(mlp_loss)(params, batch)
    grads = jax.grad(lambda p: mlp_loss(p.unpack(), batch))(
        momentax.training.pack(params)
    )
    assert isinstance(grads, momentax.training.Packed)
    # Same per-leaf arithmetic, only the layout differs: exactly equal.
    chex.assert_trees_all_equal(grads.unpack(), expected)


def test_gradient_is_one_concatenation_not_a_sum_of_pads():
    params, batch = mlp_setup()
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: mlp_loss(p.unpack(), batch)))(
        momentax.training.pack(params)
    )
    primitives = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert "pad" not in primitives
    assert "concatenate" in primitives


@pytest.mark.parametrize(
    "opt",
    [
        momentax.momentum(0.05, 0.9),
        momentax.momentum(0.05, 0.9, nesterov=True, convention="pytorch"),
        momentax.momentum(0.05, 0.9, weight_decay=1e-2, dampening=0.1),
        optax.sgd(0.05, momentum=0.9),
    ],
    ids=["sutskever", "pytorch-nesterov", "decay-dampening", "optax-sgd"],
)
def test_optimizer_on_packed_params_matches_the_tree(opt):
    params = nested_params()
    grads = gradient_stream(params, steps=20)
    expected_params, expected_state = run(opt, params, grads, wrap=jax.jit)
    packed_params, packed_state = run(
        opt,
        momentax.training.pack(params),
        [momentax.training.pack(g) for g in grads],
        wrap=jax.jit,
    )
    # The same elementwise formula on the same values, but XLA may contract
    # a*b + c into a fused multiply-add in a vector loop and not for a scalar
    # leaf (seen: 1 ulp with weight decay), so not always bit for bit.
    tol = TOL[jnp.dtype("float32")]
    chex.assert_trees_all_close(packed_params.unpack(), expected_params, **tol)
    chex.assert_trees_all_close(
        velocity(packed_state).unpack(),
        velocity(expected_state),
        **tol,
    )


def test_train_step_and_fit_on_packed_params_match_the_tree():
    params, batch = mlp_setup()
    opt = momentax.momentum(0.05, 0.9)
    step = momentax.training.make_train_step(mlp_loss, opt, donate=False)
    tree, tree_state = params, opt.init(params)
    packed = momentax.training.pack(params)
    packed_state = opt.init(packed)
    for _ in range(5):
        tree, tree_state, tree_out = step(tree, tree_state, batch)
        packed, packed_state, packed_out = step(packed, packed_state, batch)
        assert tree_out["loss"] == packed_out["loss"]
    chex.assert_trees_all_equal(packed.unpack(), tree)

    result = momentax.training.fit(
        mlp_loss,
        opt,
        momentax.training.pack(params),
        data=batch,
        num_steps=5,
        record=("loss", "params"),
    )
    assert isinstance(result.params, momentax.training.Packed)
    assert isinstance(result.history["params"], momentax.training.Packed)
    chex.assert_trees_all_equal(result.params.unpack(), tree)


def test_packed_step_does_not_retrace_across_calls():
    params, batch = mlp_setup()
    opt = momentax.momentum(0.05, 0.9)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.grad(lambda p: mlp_loss(p.unpack(), batch))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    packed = momentax.training.pack(params)
    state = opt.init(packed)
    for _ in range(3):
        packed, state = step(packed, state)
    # A fresh pack of the same tree has an equal layout: still no retrace.
    step(momentax.training.pack(params), state)


def test_a_velocity_in_another_dtype_says_so():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.bfloat16)}
    packed = momentax.training.pack(params)
    opt = momentax.momentum(0.1, 0.9, accumulator_dtype=jnp.float32)
    velocity = optax.tree.get(opt.init(packed), "velocity")
    assert packed.dtypes == (np.dtype(jnp.bfloat16),)
    assert velocity.dtypes == (np.dtype(jnp.float32),)
    assert repr(velocity) == "Packed(2 leaves in float32[9])"
    assert velocity.unpack()["w"].dtype == jnp.float32


def test_pack_and_unpack_outside_jit_compile_nothing():
    # Eager slicing compiled one program per leaf shape and offset: 10 s for 300
    # leaves. Concrete buffers on one device are sliced on the host instead.
    tree = {f"leaf{i}": jnp.full((i % 7 + 1, 2), i, jnp.float32) for i in range(300)}
    tree["half"] = jnp.arange(3, dtype=jnp.float16)
    jax.block_until_ready(tree)
    compiles = []

    def listen(event, duration, **kwargs):
        if "compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        packed = momentax.training.pack(tree)
        unpacked = packed.unpack()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    chex.assert_trees_all_equal(unpacked, tree, strict=True)
    assert {leaf.devices().pop() for leaf in jax.tree.leaves(unpacked)} == {
        jax.devices()[0]
    }


def test_unpack_under_jit_still_slices_in_xla():
    packed = momentax.training.pack({"a": jnp.arange(3.0), "b": jnp.ones((2, 2))})
    # The traced program (not the compiler's output): slices of the buffer.
    jaxpr = str(jax.make_jaxpr(lambda p: p.unpack())(packed))
    assert jaxpr.count(" slice[") == 2, jaxpr


@pytest.mark.parametrize("committed", [False, True])
def test_unpack_outside_jit_keeps_the_device_and_its_commitment(committed):
    device = jax.devices()[-1] if committed else jax.devices()[0]
    tree = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    if committed:
        tree = jax.device_put(tree, device)
    packed = momentax.training.pack(tree)
    for leaf in [*packed.buffers, *jax.tree.leaves(packed.unpack())]:
        assert leaf.devices() == {device}
        assert leaf.committed == committed
