"""Sharded training on 8 simulated CPU devices (see conftest.py).

The velocity must be created with its param's sharding (eagerly, under jit and
abstractly), keep it through every step, never be gathered, and sharded
training must give the params of single-device training.
"""

import functools
import gc
import itertools
import re
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import momentax
import momentax.training
from momentax import tasks
from tests.helpers import TOL, pairwise

NUM_DEVICES = 8
CPUS = jax.devices("cpu")
pytestmark = pytest.mark.skipif(
    len(CPUS) < NUM_DEVICES,
    reason="needs 8 CPU devices: run under tests/conftest.py, which sets them",
)
AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}
TASK = tasks.wide_regression(num_examples=64, num_features=32, num_outputs=8)
NUM_STEPS = 150


def velocity(state):
    return optax.tree.get(state, "velocity")


def make_mesh(shape, names, kind="auto"):
    types = (AXIS_TYPES[kind],) * len(names)
    return jax.make_mesh(shape, names, axis_types=types, devices=CPUS[:NUM_DEVICES])


def init_params():
    return tasks.linear_init(32, 8)


def placements(kind):
    grid = make_mesh((2, 4), ("data", "model"), kind)
    return {
        "data_parallel": momentax.training.Placement.data_parallel(
            make_mesh((NUM_DEVICES,), ("data",), kind)
        ),
        "fully_sharded": momentax.training.Placement.fully_sharded(grid),
        "both": momentax.training.Placement.fully_sharded(grid, batch_axis="data"),
    }


def optimizer(convention):
    return momentax.momentum(
        TASK.reference.learning_rate, TASK.reference.momentum, convention=convention
    )


def assert_same_sharding(tree, like):
    """Each leaf of ``tree`` is sharded as the matching leaf of ``like``.

    A leaf of ``tree`` may be an array, a ``ShapeDtypeStruct`` or a sharding.
    ``jax.eval_shape`` answers with abstract meshes: those compare by axis
    names and sizes and by partition spec.
    """

    def check(path, x, ref):
        name = jax.tree_util.keystr(path)
        sharding = getattr(x, "sharding", x)
        assert sharding is not None, name
        if isinstance(sharding.mesh, jax.sharding.AbstractMesh):
            assert sharding.mesh.shape_tuple == ref.sharding.mesh.shape_tuple, name
            ndim = len(ref.shape)
            pad = (None,) * ndim
            assert (tuple(sharding.spec) + pad)[:ndim] == (
                tuple(ref.sharding.spec) + pad
            )[:ndim], f"{name}: {sharding.spec} is not {ref.sharding.spec}"
            return
        assert sharding.is_equivalent_to(ref.sharding, len(ref.shape)), (
            f"{name}: {sharding} is not {ref.sharding}"
        )

    jax.tree_util.tree_map_with_path(check, tree, like)


def sharded_params(kind):
    mesh = make_mesh((2, 4), ("data", "model"), kind)
    specs = {"w": P("model", None), "b": P("model")}
    return jax.device_put(
        init_params(), {k: NamedSharding(mesh, s) for k, s in specs.items()}
    ), mesh


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("kind", AXIS_TYPES)
@pytest.mark.parametrize("how", ["eager", "jit", "abstract"])
def test_init_gives_velocity_the_params_sharding(convention, kind, how):
    params, mesh = sharded_params(kind)
    opt = optimizer(convention)
    with jax.set_mesh(mesh):
        if how == "eager":
            state = opt.init(params)
        elif how == "jit":
            state = jax.jit(opt.init)(params)
        else:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                params,
            )
            state = momentax.training.opt_state_sharding(opt, abstract)
            if kind == "explicit":  # eval_shape sees shardings on Explicit axes.
                assert_same_sharding(
                    velocity(jax.eval_shape(opt.init, abstract)), params
                )
    assert_same_sharding(velocity(state), params)


@pytest.mark.parametrize("kind", AXIS_TYPES)
def test_state_sharding_follows_params_and_replicates_the_rest(kind):
    params, mesh = sharded_params(kind)
    opt = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(lambda n: 0.1))
    shardings = momentax.training.opt_state_sharding(opt, params)
    adam, schedule = shardings
    assert_same_sharding(adam.mu, params)
    assert_same_sharding(adam.nu, params)
    for count in (adam.count, schedule.count):
        assert count.is_equivalent_to(NamedSharding(mesh, P()), 0)


def test_state_sharding_keeps_no_optimizer_alive():
    # opt_state_sharding compiles nothing and caches its answers only while the
    # optimizer lives: the optimizer is freed with its last reference.
    params, _ = sharded_params("auto")

    def shardings_once():
        opt = momentax.momentum(0.1, 0.9)
        momentax.training.opt_state_sharding(opt, params)
        return weakref.ref(opt.init), weakref.ref(opt.update)

    refs = shardings_once()
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_optax_jit_init_replicates_the_velocity():
    """The failure that momentax's buffer prevents, shown on optax.sgd (the control)."""
    params, mesh = sharded_params("auto")
    with jax.set_mesh(mesh):
        trace = jax.jit(optax.sgd(0.1, momentum=0.9).init)(params)[0].trace
    assert trace["w"].sharding.is_fully_replicated


def test_scale_by_momentum_keeps_the_params_sharding_in_any_chain():
    params, mesh = sharded_params("auto")
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        momentax.scale_by_momentum(0.9, dampening=0.1),
        optax.scale(-0.1),
    )
    with jax.set_mesh(mesh):
        state = jax.jit(opt.init)(params)
        assert_same_sharding(velocity(state), params)
        state = jax.jit(lambda state, grads: opt.update(grads, state)[1])(state, params)
    assert_same_sharding(velocity(state), params)


@functools.cache
def single_device_params(convention):
    """The params after NUM_STEPS of one-device training, on the host."""
    result = momentax.training.fit(
        tasks.linear_loss,
        optimizer(convention),
        init_params(),
        data=TASK.train,
        num_steps=NUM_STEPS,
    )
    return jax.device_get(result.params)


# (layout, axis kind, convention): each compiles a sharded fit. The fast tier takes
# every pair of values (6 cases), the slow tier the other 6.
FIT_GRID = list(
    itertools.product(
        ["data_parallel", "fully_sharded", "both"], AXIS_TYPES, momentax.CONVENTIONS
    )
)
FIT_FAST = pairwise(FIT_GRID)
FIT_CASES = [
    pytest.param(*case, marks=[] if case in FIT_FAST else [pytest.mark.slow])
    for case in FIT_GRID
]


@pytest.mark.parametrize(("layout", "kind", "convention"), FIT_CASES)
def test_sharded_fit_keeps_shardings_and_matches_one_device(layout, kind, convention):
    placement = placements(kind)[layout]
    opt = optimizer(convention)
    single = single_device_params(convention)
    state = placement.init(opt, init_params())
    assert_same_sharding(velocity(state), placement.put_params(init_params()))
    result = momentax.training.fit(
        tasks.linear_loss,
        opt,
        init_params(),
        data=TASK.train,
        num_steps=NUM_STEPS,
        opt_state=state,
        placement=placement,
        steps_per_call=NUM_STEPS // 3,
    )
    assert_same_sharding(result.params, placement.put_params(init_params()))
    assert_same_sharding(velocity(result.opt_state), result.params)
    if layout != "data_parallel":
        assert not result.params["w"].sharding.is_fully_replicated
    # The sharded loss sums in another order (per shard, then across shards):
    # the helpers' float32 tolerance for reordered sums.
    np.testing.assert_allclose(
        result.params["w"], single["w"], **TOL[jnp.dtype(jnp.float32)]
    )
    np.testing.assert_allclose(
        result.params["b"], single["b"], **TOL[jnp.dtype(jnp.float32)]
    )
    assert float(result.history["loss"][-1]) < 0.1 * float(result.history["loss"][0])


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
def test_train_step_with_placement_matches_fit(convention):
    placement = placements("auto")["both"]
    opt = optimizer(convention)
    step = momentax.training.make_train_step(
        tasks.linear_loss, opt, placement=placement
    )
    params, state = init_params(), placement.init(opt, init_params())
    for _ in range(20):
        params, state, _ = step(params, state, TASK.train)
    assert_same_sharding(velocity(state), params)
    fitted = momentax.training.fit(
        tasks.linear_loss,
        opt,
        init_params(),
        data=TASK.train,
        num_steps=20,
        placement=placement,
    )
    np.testing.assert_allclose(
        params["w"], fitted.params["w"], **TOL[jnp.dtype(jnp.float32)]
    )


# --- The compiled step never gathers the velocity --------------------------------

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (.*)$")


def gathered_from(hlo_text, parameters):
    """Names of the all-gathers in the entry computation fed by ``parameters``.

    Parses the compiled (partitioned) HLO's entry computation into a dataflow
    graph and follows every use of the given entry parameter numbers.
    """
    entry = hlo_text[hlo_text.index("\nENTRY ") :]
    entry = entry[: entry.index("\n}")]
    uses, params, gathers = {}, {}, set()
    for line in entry.splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, rhs = match.groups()
        number = re.search(r"\bparameter\((\d+)\)", rhs)
        if number:
            params[int(number.group(1))] = name
        if re.search(r"\ball-gather(-start)?\(", rhs):
            gathers.add(name)
        for operand in re.findall(r"%([\w.\-]+)", rhs):
            uses.setdefault(operand, set()).add(name)
    frontier = [params[i] for i in parameters]
    reached = set(frontier)
    while frontier:
        for user in uses.get(frontier.pop(), ()):
            if user not in reached:
                reached.add(user)
                frontier.append(user)
    return sorted(gathers & reached), len(params)


def velocity_parameters(params, state, batch):
    """Entry parameter numbers of the velocity leaves (flattened argument order)."""
    num_params = len(jax.tree.leaves(params))
    state_leaves = jax.tree_util.tree_leaves_with_path(state)
    numbers = [
        num_params + i
        for i, (path, _) in enumerate(state_leaves)
        if "velocity" in jax.tree_util.keystr(path)
    ]
    total = num_params + len(state_leaves) + len(jax.tree.leaves(batch))
    return numbers, total


def replicate_velocity_first(opt):
    """A broken optimizer: gathers the velocity before updating (the control)."""

    def update(updates, state, params=None):
        velocity = jax.tree.map(
            lambda v: jax.lax.with_sharding_constraint(
                v, NamedSharding(CONTROL_MESH, P())
            ),
            optax.tree.get(state, "velocity"),
        )
        return opt.update(updates, optax.tree.set(state, velocity=velocity), params)

    return optax.GradientTransformation(opt.init, update)


CONTROL_MESH = make_mesh((2, 4), ("data", "model"))


# The partitioned HLO is the compiler's: the codegen tier.
@pytest.mark.codegen
@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("broken", [False, True])
def test_compiled_step_never_gathers_the_velocity(convention, nesterov, broken):
    placement = momentax.training.Placement.fully_sharded(
        CONTROL_MESH, batch_axis="data"
    )
    opt = momentax.momentum(0.05, 0.9, convention=convention, nesterov=nesterov)
    if broken:
        opt = replicate_velocity_first(opt)
    step = momentax.training.make_train_step(
        tasks.linear_loss, opt, placement=placement
    )
    params, state = init_params(), placement.init(opt, init_params())
    hlo = step.lower(params, state, TASK.train).compile().as_text()
    numbers, total = velocity_parameters(params, state, TASK.train)
    gathers, num_entry_params = gathered_from(hlo, numbers)
    assert num_entry_params == total  # every argument kept: numbering is exact
    assert re.search(r"\ball-reduce\(", hlo)  # partitioned: collectives exist
    if broken:
        assert gathers, "the control must show a gather of the velocity"
    else:
        assert gathers == []


# --- Placement validation -----------------------------------------------------------


def test_placement_errors_name_the_problem():
    mesh = make_mesh((2, 4), ("data", "model"))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        momentax.training.Placement("not a mesh")
    with pytest.raises(ValueError, match="axis must name an axis of the mesh"):
        momentax.training.Placement.data_parallel(mesh, axis="batch")
    with pytest.raises(ValueError, match="batch_axis must name an axis"):
        momentax.training.Placement.fully_sharded(mesh, batch_axis="rows")
    bad_axis = momentax.training.Placement(mesh, params=P("rows"))
    with pytest.raises(ValueError, match=r"params\['b'\] uses mesh axes \['rows'\]"):
        bad_axis.param_sharding(init_params())
    uneven = momentax.training.Placement(mesh, params={"w": P(None, "data"), "b": P()})
    with pytest.raises(ValueError, match=r"params\['w'\] splits dimension 1"):
        momentax.training.fit(
            tasks.linear_loss,
            optimizer("pytorch"),
            {"w": jnp.zeros((32, 3)), "b": jnp.zeros(3)},
            data=TASK.train,
            num_steps=1,
            placement=uneven,
        )
    not_a_prefix = momentax.training.Placement(mesh, params={"w": P("model")})
    with pytest.raises(ValueError, match="pytree prefix of params"):
        not_a_prefix.param_sharding(init_params())
    prefix = momentax.training.Placement(mesh, params={"w": P("model"), "b": None})
    specs = jax.tree.map(lambda s: s.spec, prefix.param_sharding(init_params()))
    assert specs == {"w": P("model"), "b": P()}
    too_long = momentax.training.Placement(mesh, params=P(None, None, "model"))
    with pytest.raises(ValueError, match="names 3 dimensions"):
        too_long.param_sharding(init_params())
    with pytest.raises(
        TypeError, match=r"placement must be a momentax\.training\.Placement"
    ):
        momentax.training.make_train_step(
            tasks.linear_loss, optimizer("pytorch"), placement=mesh
        )
    with pytest.raises(ValueError, match="has no sharding"):
        momentax.training.opt_state_sharding(
            optimizer("pytorch"), {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
        )


def test_fully_sharded_rule_splits_the_largest_divisible_dimension():
    mesh = make_mesh((2, 4), ("data", "model"))
    placement = momentax.training.Placement.fully_sharded(mesh)
    tree = {
        "matrix": jax.ShapeDtypeStruct((6, 16, 8), jnp.float32),
        "odd": jax.ShapeDtypeStruct((3, 5), jnp.float32),
        "scalar": jax.ShapeDtypeStruct((), jnp.float32),
    }
    specs = jax.tree.map(lambda s: s.spec, placement.param_sharding(tree))
    assert specs == {"matrix": P(None, "model"), "odd": P(), "scalar": P()}


def test_packed_params_shard_as_flat_buffers():
    placement = momentax.training.Placement.fully_sharded(
        make_mesh((2, 4), ("data", "model"))
    )
    packed = momentax.training.pack(
        init_params()
    )  # 32*8 + 8 = 264 floats, divisible by 4
    opt = optimizer("sutskever")
    result = momentax.training.fit(
        tasks.linear_loss,
        opt,
        packed,
        data=TASK.train,
        num_steps=10,
        placement=placement,
    )
    assert_same_sharding(velocity(result.opt_state), result.params)
    (buffer,) = result.params.buffers
    assert buffer.sharding.spec == P("model")
