"""The comparison the main job runs: SGD, momentum, Nesterov, heavy ball, autotune."""

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from momentax import autotune, heavy_ball_tuning
from momentax import momentum as momentum_transform
from momentax.hyperparams import check_integer
from momentax.tasks._exact import Optimum, curvature_bounds, exact_loss
from momentax.tasks._line import LineTask, init_params, mse_loss
from momentax.training import RECORDABLE, fit


class Contender(NamedTuple):
    """Holds one optimizer of the comparison and its settings.

    Attributes:
        name: A short name: ``"sgd"``, ``"momentum"``, ``"nesterov"``,
            ``"heavy-ball"``, ``"autotune"`` or ``"autotune-hvp"``.
        learning_rate: Its learning rate, or None for a contender that tunes
            its own (:attr:`Run.learning_rate` holds the values it chose).
        momentum: Its momentum (0 for plain SGD), or None likewise.
        nesterov: Whether it uses Nesterov momentum.
        optimizer: The optimizer (lr inside the velocity, as in both write-ups,
            "Gradient Descent: Exploring Momentum" and "SGD with Momentum (From
            Scratch)").
    """

    name: str
    learning_rate: float | None
    momentum: float | None
    nesterov: bool
    optimizer: optax.GradientTransformation

    @property
    def tuned(self) -> bool:
        """Whether it sets its own learning rate and momentum while it trains."""
        return self.learning_rate is None


def momentum_problem(momentum: float) -> str:
    """Why ``momentum`` cannot be the comparison's momentum, or ``""`` if it can.

    Examples:
        >>> from momentax import tasks
        >>> tasks.momentum_problem(0.0)
        '0 would make momentum and Nesterov plain SGD, the sgd row'
        >>> tasks.momentum_problem(0.9)
        ''
    """
    if not momentum >= 0:  # written so that NaN is refused too
        return "a negative momentum is not momentum" if momentum < 0 else "not a number"
    if momentum == 0:
        return "0 would make momentum and Nesterov plain SGD, the sgd row"
    if momentum > 1:
        return "above 1 the velocity grows without bound"
    return ""


def _real(name: str, value: object) -> float:
    """``value`` as a float, if it is a Python or NumPy real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number (a Python or NumPy int or float); got "
            f"{value!r} of type {type(value).__name__}"
            + (f": pass float({value!r})." if isinstance(value, str) else ".")
        )
    return float(value)


def contenders(
    task: LineTask,
    *,
    learning_rate: float | None = None,
    momentum: float | None = None,
) -> list[Contender]:
    """Returns the optimizers compared on ``task``.

    Plain SGD, momentum and Nesterov momentum use ``learning_rate`` and
    ``momentum`` (default: the task's reference settings); the heavy ball uses
    Polyak's tuning (:func:`momentax.heavy_ball_tuning`) from the exact curvature
    of the training loss. ``autotune`` is :func:`momentax.autotune` with no
    argument, tuning itself from the gradients alone; ``autotune-hvp`` is the
    same with the training loss as its ``value_fn``, tuning from Lanczos
    estimates of the Hessian's extreme eigenvalues.

    Raises:
        TypeError: If ``learning_rate`` or ``momentum`` is not a real number.
        ValueError: If ``learning_rate`` is not > 0, or ``momentum`` not in
            (0, 1], or another check of :func:`momentax.momentum` fails.
    """
    lr = task.reference.learning_rate if learning_rate is None else learning_rate
    mu = task.reference.momentum if momentum is None else momentum
    lr, mu = _real("learning_rate", lr), _real("momentum", mu)
    problem = momentum_problem(mu)
    if not lr > 0:
        raise ValueError(f"learning_rate must be > 0 to train; got {lr!r}.")
    if problem:
        raise ValueError(f"momentum must be in (0, 1]: {problem}; got {mu!r}.")
    tuning = heavy_ball_tuning(*curvature_bounds(task.train))

    def make(name: str, lr: float, mu: float, nesterov: bool) -> Contender:
        return Contender(
            name, lr, mu, nesterov, momentum_transform(lr, mu, nesterov=nesterov)
        )

    return [
        make("sgd", lr, 0.0, False),
        make("momentum", lr, mu, False),
        make("nesterov", lr, mu, True),
        make("heavy-ball", tuning.learning_rate, tuning.momentum, False),
        Contender("autotune", None, None, False, autotune()),
        Contender(
            "autotune-hvp",
            None,
            None,
            False,
            with_value_fn(autotune(), lambda params: mse_loss(params, task.train)),
        ),
    ]


def with_value_fn(
    optimizer: optax.GradientTransformationExtraArgs,
    value_fn: Callable[[Any], jax.Array],
) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` whose ``update`` always gets ``value_fn=value_fn``.

    For full-batch training with a loop that calls ``update(grads, state,
    params)`` alone (:func:`momentax.training.fit`): the loss of the params is
    the same function at every step.
    """

    def update_fn(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        extra_args = {**extra_args, "value_fn": value_fn}
        new_updates, new_state = optimizer.update(updates, state, params, **extra_args)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(optimizer.init, update_fn)


class Run(NamedTuple):
    """Holds one contender's run, as NumPy arrays indexed by epoch.

    Entry ``t`` of ``trajectory`` and of the losses is the state after ``t``
    epochs (``t = 0`` is the start); entry ``t - 1`` of ``k_grad`` and
    ``k_velocity`` belongs to epoch ``t``: the gradient at its start and the
    velocity after its step.

    Attributes:
        contender: The optimizer that ran.
        trajectory: ``(epochs + 1, 2)`` array of ``(k, b)``.
        train_loss: ``(epochs + 1,)`` training losses (float64, exact at the
            trajectory's float32 params).
        test_loss: ``(epochs + 1,)`` test losses, or None without a test split.
        k_grad: ``(epochs,)`` gradients of the loss in ``k``.
        k_velocity: ``(epochs,)`` velocities of ``k`` as the optimizer state holds
            them, or None for plain SGD, which keeps none.
        learning_rate: ``(epochs,)`` learning rates of a tuned contender, as its
            state holds them after each epoch's step (the one the step used),
            or None for a contender with a fixed one.
        momentum: ``(epochs,)`` its momenta likewise, or None.
    """

    contender: Contender
    trajectory: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    k_grad: np.ndarray
    k_velocity: np.ndarray | None
    learning_rate: np.ndarray | None = None
    momentum: np.ndarray | None = None

    @property
    def final_learning_rate(self) -> float:
        """The learning rate of the last epoch: fixed, or as tuned."""
        if self.learning_rate is None:
            assert self.contender.learning_rate is not None
            return self.contender.learning_rate
        return float(self.learning_rate[-1])

    @property
    def final_momentum(self) -> float:
        """The momentum of the last epoch: fixed, or as tuned."""
        if self.momentum is None:
            assert self.contender.momentum is not None
            return self.contender.momentum
        return float(self.momentum[-1])


def _tuned_value(name: str) -> Callable[[Any], jax.Array]:
    def get(info: Any) -> jax.Array:
        return jnp.asarray(optax.tree.get(info.opt_state, name))

    get.__name__ = get.__qualname__ = name
    return get


# Defined once, so that every run of a tuned contender reuses fit's compilation.
_TUNED_RECORD = {
    "learning_rate": _tuned_value("learning_rate"),
    "momentum": _tuned_value("momentum"),
}


def run(
    task: LineTask,
    contender: Contender,
    epochs: int,
    *,
    steps_per_call: int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> Run:
    """Trains ``contender`` on ``task`` from :func:`init_params` with :func:`fit`.

    All ``epochs`` full-batch steps run on the device, recording the params, the
    gradients and the optimizer's velocity; the history comes back to the host
    once, at the end. The losses along the trajectory are then evaluated exactly
    (:func:`exact_loss`, float64), so that the gap to the optimum is not hidden
    under float32 rounding. A tuned contender also records the learning rate
    and momentum its state holds after each step.

    Raises:
        ValueError: If ``epochs`` is not an integer >= 1.
    """
    epochs = check_integer("epochs", epochs, low=1)
    params = init_params(task.train.x.dtype)
    record: dict[str, Any] = {
        name: RECORDABLE[name] for name in ("params", "grads", "velocity")
    }
    if contender.tuned:
        record.update(_TUNED_RECORD)
    result = fit(
        mse_loss,
        contender.optimizer,
        params,
        data=task.train,
        num_steps=epochs,
        steps_per_call=steps_per_call,
        record=record,
        callback=callback,
    )
    history, final = jax.device_get((result.history, result.params))
    trajectory = np.stack(
        [np.append(history["params"][n], final[n]).astype(np.float64) for n in "kb"],
        axis=1,
    )
    k, b = trajectory.T
    velocity = history["velocity"]
    tuned = {
        name: np.asarray(history[name], np.float64) if name in history else None
        for name in _TUNED_RECORD
    }
    return Run(
        contender,
        trajectory,
        exact_loss(k, b, task.train),
        None if task.test is None else exact_loss(k, b, task.test),
        np.asarray(history["grads"]["k"], np.float64),
        None if velocity is None else np.asarray(velocity["k"], np.float64),
        tuned["learning_rate"],
        tuned["momentum"],
    )


def epochs_to_tolerance(run: Run, optimum: Optimum, rtol: float = 0.01) -> int | None:
    r"""The first epoch from which the params stay within ``rtol`` of the optimum.

    Within means :math:`\|\theta_t - \theta^*\| \le \text{rtol}\,\|\theta^*\|` for
    :math:`\theta = (k, b)`; a distance in parameters rather than in loss, so that
    it means the same on a noiseless task whose optimal loss is 0.

    Returns:
        That epoch (0 if the start is already there), or None if the last epoch
        is not within ``rtol``.
    """
    target = np.array([optimum.params["k"], optimum.params["b"]])
    distance = np.linalg.norm(run.trajectory - target, axis=1)
    # Written as "not within" so that a diverged (NaN) epoch counts as outside.
    outside = np.flatnonzero(~(distance <= rtol * np.linalg.norm(target)))
    if outside.size == 0:
        return 0
    last = int(outside[-1])
    return None if last == len(distance) - 1 else last + 1


class SignChange(NamedTuple):
    """Holds where k's gradient first changes sign, and where its velocity follows.

    Attributes:
        grad_epoch: The first epoch whose k gradient has the opposite sign to the
            epoch before.
        velocity_epoch: The first epoch from ``grad_epoch`` on whose k velocity
            has the opposite sign to the epoch before, or None if it never does
            (or the optimizer keeps no velocity).
    """

    grad_epoch: int
    velocity_epoch: int | None


def _first_flip(values: np.ndarray, from_epoch: int) -> int | None:
    """The first epoch >= ``from_epoch`` whose sign is opposite to the one before.

    ``values[t - 1]`` belongs to epoch ``t``. A zero carries the last nonzero sign
    forward, so a change of sign through an exact zero is found (at the first
    epoch with the new sign), and zeros alone never flip.
    """
    signs = np.sign(values)
    last_nonzero = np.maximum.accumulate(np.where(signs != 0, np.arange(len(signs)), 0))
    carried = signs[last_nonzero]
    epochs = np.flatnonzero(carried[1:] * carried[:-1] < 0) + 2
    epochs = epochs[epochs >= from_epoch]
    return int(epochs[0]) if epochs.size else None


def sign_change(run: Run) -> SignChange | None:
    """Finds the first change of sign of k's gradient in ``run``, or None."""
    grad_epoch = _first_flip(run.k_grad, 2)
    if grad_epoch is None:
        return None
    velocity = run.k_velocity
    velocity_epoch = None if velocity is None else _first_flip(velocity, grad_epoch)
    return SignChange(grad_epoch, velocity_epoch)


def diverged_epoch(run: Run) -> int | None:
    """The first epoch after which ``run``'s training loss is not finite, or None.

    A diverged run's params overflow to infinity or NaN; from then on its numbers
    are not results.

    Examples:
        >>> import numpy as np
        >>> from momentax import tasks
        >>> task = tasks.tiny_line()
        >>> run = tasks.run(task, tasks.contenders(task)[0], 3)
        >>> print(tasks.diverged_epoch(run))
        None
        >>> loss = np.array([18.7, 3e20, np.inf, np.nan])
        >>> tasks.diverged_epoch(run._replace(train_loss=loss))
        2
    """
    bad = np.flatnonzero(~np.isfinite(run.train_loss))
    return int(bad[0]) if bad.size else None
