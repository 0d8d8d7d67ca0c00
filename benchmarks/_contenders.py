"""The contenders: momentum steps in momentax, Optax, jax.numpy and PyTorch.

Every contender runs the same update from the same params and gradients:
learning rate 0.01 and momentum 0.9, ``v <- 0.9 v + g; p <- p - 0.01 v`` or
its lr-inside equivalent, on float32 leaves. A call of a step contender is
one update-and-apply: it reads the params, gradients and velocity and writes
the params and velocity, 5 x 4 bytes per param at best.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax
import momentax.training
from benchmarks import _native
from momentax import tasks

LEARNING_RATE = 0.01
MOMENTUM = 0.9
BYTES_PER_PARAM = 5 * 4  # read p, g, v and write p, v, float32
ONE_PASS = "C one-pass (reference)"
# The same optax.sgd step a second time: the two rows differ only by noise.
OPTAX_AGAIN = "optax.sgd (second instance)"
TRAIN_STEP = "momentax train step, quadratic loss"
TRAIN_STEP_NO_SWEEP = "momentax train step, quadratic loss, single_sweep=False"
TRAIN_FIT = "momentax fit (scan), quadratic loss"
Arrays = list[np.ndarray]


@dataclass(frozen=True)
class Problem:
    """A pytree of ``num_leaves`` float32 vectors of ``leaf_size`` params."""

    num_leaves: int
    leaf_size: int

    @property
    def size(self) -> int:
        """Params in all leaves."""
        return self.num_leaves * self.leaf_size

    @property
    def label(self) -> str:
        """A short name: ``1e+07`` for one leaf, ``1000 x 1000`` for a tree."""
        if self.num_leaves == 1:
            return f"{self.leaf_size:.0e}"
        return f"{self.num_leaves} x {self.leaf_size}"

    def arrays(self, seed: int = 0) -> tuple[Arrays, Arrays]:
        """The initial params and the (fixed) gradients, as NumPy arrays."""
        rng = np.random.default_rng(seed)
        shape = (self.num_leaves, self.leaf_size)
        params = rng.standard_normal(shape, dtype=np.float32)
        grads = rng.standard_normal(shape, dtype=np.float32)
        return list(params), list(grads)


def _unpacked(params: Any) -> Any:
    """The tree a loss sees: a packed pytree unpacked, any other as it is."""
    if isinstance(params, momentax.training.Packed):
        return params.unpack()
    return params


def _flat(leaves: Any) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(leaves)])


def _momentax(convention: str = "sutskever", **options: Any) -> Any:
    return momentax.momentum(LEARNING_RATE, MOMENTUM, convention=convention, **options)


def _optax(**options: Any) -> Any:
    return optax.sgd(LEARNING_RATE, momentum=MOMENTUM, **options)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "momentax sutskever": _momentax,
    "momentax pytorch": lambda **options: _momentax("pytorch", **options),
    "optax.sgd": _optax,
}
"""The optimizers every step problem times, each built with extra options."""


def _update_and_apply(optimizer: optax.GradientTransformation) -> Callable[..., Any]:
    """The step an Optax user writes: ``update``, then ``apply_updates``."""

    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _jax_numpy_step(params: Any, velocity: Any, grads: Any) -> tuple[Any, Any]:
    """The hand-written step: ``v <- mu v - lr g; p <- p + v``."""
    velocity = jax.tree.map(
        lambda v, g: MOMENTUM * v - LEARNING_RATE * g, velocity, grads
    )
    return jax.tree.map(jnp.add, params, velocity), velocity


class JaxStep:
    """One compiled call per step: ``step(params, state, data)`` returns them anew.

    The step may return more (a train step's records), which is dropped.
    """

    def __init__(self, step: Callable[..., Any], params: Any, state: Any, data: Any):
        self._step = step
        self._params = params
        self._state = state
        self._data = data

    def run(self, calls: int) -> None:
        params, state = self._params, self._state
        for _ in range(calls):
            params, state, *_ = self._step(params, state, self._data)
        jax.block_until_ready((params, state))  # type: ignore[no-untyped-call]
        self._params, self._state = params, state

    def params(self) -> np.ndarray:
        return _flat(_unpacked(self._params))


def _linear_loss(params: Any, grads: Any) -> jax.Array:
    """A loss whose gradient is ``grads``: it feeds fixed gradients to ``fit``.

    Its value is never recorded, so XLA drops it: a step costs the same as an
    update-and-apply step.
    """
    grads = _unpacked(grads)
    terms = [
        jnp.vdot(p, g)
        for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True)
    ]
    return jnp.sum(jnp.stack(terms))


class JaxFit:
    """``momentax.training.fit``: ``steps_per_call`` steps per compiled scan."""

    def __init__(
        self,
        optimizer: optax.GradientTransformation,
        params: Any,
        grads: Any,
        steps_per_call: int,
        loss: Callable[[Any, Any], jax.Array] | None = None,
    ):
        self._loss = _linear_loss if loss is None else loss
        self._optimizer = optimizer
        self._params = params
        self._state = optimizer.init(params)
        self._grads = grads
        self.steps_per_call = steps_per_call

    def run(self, calls: int) -> None:
        for _ in range(calls):
            result = momentax.training.fit(
                self._loss,
                self._optimizer,
                self._params,
                opt_state=self._state,
                data=self._grads,
                num_steps=self.steps_per_call,
                record=(),
            )
            self._params, self._state = result.params, result.opt_state
        jax.block_until_ready(self._params)  # type: ignore[no-untyped-call]

    def params(self) -> np.ndarray:
        return _flat(_unpacked(self._params))


def _quadratic_loss(params: Any, targets: Any) -> jax.Array:
    """``0.5 * sum (p - t)^2``: its gradient ``p - t`` is computed in the step.

    With fixed gradients (``_linear_loss``) XLA hoists ``-lr * g`` out of
    ``fit``'s loop into a temporary buffer; here nothing is loop-invariant, as
    in real training.
    """
    terms = [
        0.5 * jnp.sum((p - t) ** 2)
        for p, t in zip(
            jax.tree.leaves(params), jax.tree.leaves(_unpacked(targets)), strict=True
        )
    ]
    return jnp.sum(jnp.stack(terms))


class TorchStep:
    """``torch.optim.SGD.step()`` on tensors whose ``.grad`` is set."""

    def __init__(self, torch: Any, params: Arrays, grads: Arrays, **options: Any):
        self._torch = torch
        self._device = torch.device("cuda" if jax.default_backend() == "gpu" else "cpu")
        self._params = [
            torch.tensor(p, device=self._device, requires_grad=True) for p in params
        ]
        for p, g in zip(self._params, grads, strict=True):
            p.grad = torch.tensor(g, device=self._device)
        self._optimizer = torch.optim.SGD(
            self._params, lr=LEARNING_RATE, momentum=MOMENTUM, **options
        )

    def run(self, calls: int) -> None:
        for _ in range(calls):
            self._optimizer.step()
        if self._device.type == "cuda":
            self._torch.cuda.synchronize()

    def params(self) -> np.ndarray:
        return np.concatenate([p.detach().cpu().numpy().ravel() for p in self._params])


@dataclass(frozen=True)
class Contender:
    """A named way to run momentum steps, and how to set it up.

    Attributes:
        name: The row label.
        make: Builds a fresh runner from the params and the gradients.
        donate: Whether the JAX buffers are donated (None: not JAX).
        steps_per_call: Optimizer steps one call runs (fit runs many).
        words: Float32 arrays of the problem's size the contender keeps alive
            (for grouping within the memory budget).
        family: The update it runs: ``"heavy ball"`` on the fixed gradients,
            ``"nesterov"``, or ``"quadratic loss"`` (gradients computed from
            the params). Contenders are checked against those of their family.
    """

    name: str
    make: Callable[[Arrays, Arrays], Any]
    donate: bool | None = True
    steps_per_call: int = 1
    words: int = 3
    family: str = "heavy ball"


def _jax_leaves(arrays: Arrays) -> list[jax.Array]:
    return [jnp.asarray(a) for a in arrays]


def _jitted(
    step: Callable[..., Any], init: Callable[[Any], Any], donate: bool, pack: bool
) -> Callable[[Arrays, Arrays], JaxStep]:
    """Makes a `JaxStep` of ``step`` under ``jax.jit`` on the leaves (or packed)."""

    def make(params: Arrays, grads: Arrays) -> JaxStep:
        tree = momentax.training.pack if pack else (lambda leaves: leaves)
        p, g = tree(_jax_leaves(params)), tree(_jax_leaves(grads))
        jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
        return JaxStep(jitted, p, init(p), g)

    return make


def _optax_step(
    optimizer: Callable[[], optax.GradientTransformation],
    donate: bool = True,
    pack: bool = False,
) -> Callable[[Arrays, Arrays], JaxStep]:
    """An Optax user's update-and-apply step of a fresh ``optimizer()``."""

    def make(params: Arrays, grads: Arrays) -> JaxStep:
        opt = optimizer()
        return _jitted(_update_and_apply(opt), opt.init, donate, pack)(params, grads)

    return make


def _train_step(optimizer: Callable[[], optax.GradientTransformation]) -> Any:
    """``make_train_step`` on the quadratic loss: the grads serve as its targets."""

    def make(params: Arrays, targets: Arrays) -> JaxStep:
        opt, p = optimizer(), _jax_leaves(params)
        step = momentax.training.make_train_step(_quadratic_loss, opt, record=())
        return JaxStep(step, p, opt.init(p), _jax_leaves(targets))

    return make


def step_contenders(
    *, fit_steps: int, packed: bool, torch: Any | None, trained: bool = False
) -> list[Contender]:
    """The contenders for one problem.

    Args:
        fit_steps: Steps per ``momentax.training.fit`` call.
        packed: Include ``momentax.training.pack``'d params (for many-leaf trees).
        torch: The ``torch`` module, or None to leave PyTorch out.
        trained: Include a train step and ``fit`` on a quadratic loss, whose
            gradients are computed from the params in the step.

    Returns:
        The contenders, momentax first.
    """
    sutskever = OPTIMIZERS["momentax sutskever"]
    out = [
        Contender(
            f"{name} nesterov",
            _optax_step(lambda mk=make: mk(nesterov=True)),
            family="nesterov",
        )
        for name, make in OPTIMIZERS.items()
    ]
    for donate in (True, False):
        suffix = "" if donate else " (no donation)"
        # An undonated step allocates new params and velocity every call.
        words = 3 if donate else 5
        out += [
            Contender(name + suffix, _optax_step(make, donate), donate, words=words)
            for name, make in OPTIMIZERS.items()
        ]
        zeros = partial(jax.tree.map, jnp.zeros_like)
        make = _jitted(_jax_numpy_step, zeros, donate, pack=False)
        out.append(Contender("jax.numpy" + suffix, make, donate, words=words))

    def fit(pack: bool, loss: Any = None) -> Callable[[Arrays, Arrays], JaxFit]:
        tree = momentax.training.pack if pack else (lambda leaves: leaves)
        return lambda p, g: JaxFit(
            sutskever(), tree(_jax_leaves(p)), tree(_jax_leaves(g)), fit_steps, loss
        )

    out.append(Contender("momentax fit (scan)", fit(False), steps_per_call=fit_steps))
    if packed:
        out += [
            Contender("momentax packed", _optax_step(sutskever, pack=True), words=4),
            Contender(
                "momentax packed fit (scan)", fit(True), True, fit_steps, words=4
            ),
        ]
    out.append(Contender(OPTAX_AGAIN, _optax_step(OPTIMIZERS["optax.sgd"])))
    if trained:
        no_sweep = partial(sutskever, single_sweep=False)
        out += [
            Contender(TRAIN_STEP, _train_step(sutskever), family="quadratic loss"),
            Contender(
                TRAIN_STEP_NO_SWEEP, _train_step(no_sweep), family="quadratic loss"
            ),
            Contender(
                TRAIN_FIT,
                fit(False, _quadratic_loss),
                steps_per_call=fit_steps,
                family="quadratic loss",
            ),
        ]
    if _native.library()[0] is not None:
        out.append(
            Contender(
                ONE_PASS,
                lambda p, g: _native.OnePass(
                    "momentum",
                    np.concatenate(p),
                    np.concatenate(g),
                    LEARNING_RATE,
                    MOMENTUM,
                ),
                None,
            )
        )
    if torch is not None:
        out += [
            Contender(
                f"torch {option}",
                lambda p, g, o=option: TorchStep(torch, p, g, **{o: True}),
                None,
            )
            for option in ("foreach", "fused")
        ]
    return out


class Bandwidth:
    """A streaming kernel on donated buffers: ``copy`` or ``triad``.

    ``copy`` scales a vector in place (``x <- s x``: read and write, 2 x 4 bytes
    per element); ``triad`` is ``a <- a + s b`` (3 x 4 bytes). Both are jitted
    with the output written into the donated input, as a momentum step is.
    """

    WORDS: ClassVar[dict[str, int]] = {"copy": 2, "triad": 3}

    def __init__(self, kind: str, size: int):
        self.kind = kind
        scale = jnp.float32(0.999)
        self._a = jnp.ones(size, jnp.float32)
        self._b = jnp.ones(size, jnp.float32)
        if kind == "copy":
            self._kernel = jax.jit(lambda a, b: a * scale, donate_argnums=0)
        else:
            self._kernel = jax.jit(lambda a, b: a + scale * b, donate_argnums=0)

    def run(self, calls: int) -> None:
        a = self._a
        for _ in range(calls):
            a = self._kernel(a, self._b)
        a.block_until_ready()
        self._a = a

    def params(self) -> np.ndarray:
        return np.asarray(self._a)


def regression_setup() -> tuple[tasks.LineTask, optax.GradientTransformation]:
    """The blog's task and optimizer, as the main job runs them."""
    task = tasks.noisy_line()
    reference = task.reference
    return task, momentax.momentum(reference.learning_rate, reference.momentum)
