"""Auto-tuning on an ill-conditioned quadratic: the figures of docs/tuning.md.

The loss is 0.5 * sum(h_i x_i^2) with 1000 curvatures h_i log-spaced in [1, 1000].
The script prints the Lanczos estimates of the largest and smallest curvature for
30, 40 and 45 Hessian-vector products (keys 0-9), then the steps each optimizer
takes to a relative error ||x|| / ||x_0|| of 1e-4 from a random start: heavy ball
with exactly Polyak's tuning, and momentax.autotune with and without value_fn.
Last, on the noisy quadratic model (curvatures log-spaced in [0.01, 1], gradient
noise of variance h_i / B for a batch size B), the mean loss of the last 200 of
2000 steps, for a grid of momentax.momentum and for momentax.autotune.

Run it from the repository root: ``PYTHONPATH=. python examples/autotune_quadratic.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import momentax

CURVATURES = jnp.logspace(0, 3, 1000)
NUM_STEPS = 1500


def loss(params: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum(CURVATURES * params**2)


def curvature_ranges(num_iterations: int) -> tuple[float, float, float, float]:
    """The extremes, over keys 0-9, of the largest and smallest Ritz values."""
    estimate = jax.jit(
        lambda key: momentax.estimate_curvature(
            loss, jnp.ones(1000), num_iterations=num_iterations, key=key
        )
    )
    found = [estimate(jax.random.key(seed)) for seed in range(10)]
    largest = [float(e.max_curvature) for e in found]
    smallest = [float(e.min_curvature) for e in found]
    return min(largest), max(largest), min(smallest), max(smallest)


def steps_to_target(opt: optax.GradientTransformation, hvp: bool) -> int | None:
    x0 = jax.random.normal(jax.random.key(0), (1000,))

    def body(carry, _):
        params, state = carry
        extra = {"value_fn": loss} if hvp else {}
        updates, state = opt.update(jax.grad(loss)(params), state, params, **extra)
        params = optax.apply_updates(params, updates)
        return (params, state), jnp.linalg.norm(params) / jnp.linalg.norm(x0)

    run = jax.jit(lambda: jax.lax.scan(body, (x0, opt.init(x0)), length=NUM_STEPS))
    errors = np.asarray(run()[1])
    hits = np.nonzero(errors <= 1e-4)[0]
    return int(hits[0]) + 1 if hits.size else None


NOISY_CURVATURES = jnp.logspace(-2, 0, 100)


def noisy_loss(params: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum(NOISY_CURVATURES * params**2)


def noisy_final_loss(
    opt: optax.GradientTransformation, batch_size: int, hvp: bool
) -> float:
    """The mean loss of the last 200 of 2000 steps with noisy gradients."""
    x0 = jnp.ones(100)

    def body(carry, key):
        params, state = carry
        noise = jax.random.normal(key, params.shape)
        grads = (
            NOISY_CURVATURES * params + jnp.sqrt(NOISY_CURVATURES / batch_size) * noise
        )
        extra = {"value_fn": noisy_loss} if hvp else {}
        updates, state = opt.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        return (params, state), noisy_loss(params)

    keys = jax.random.split(jax.random.key(0), 2000)
    run = jax.jit(lambda: jax.lax.scan(body, (x0, opt.init(x0)), keys))
    return float(np.mean(np.asarray(run()[1])[-200:]))


def main() -> None:
    for num_iterations in (30, 40, 45):
        low_max, high_max, low_min, high_min = curvature_ranges(num_iterations)
        print(
            f"{num_iterations} HVPs: largest {low_max:.1f}-{high_max:.1f}, "
            f"smallest {low_min:.2f}-{high_min:.2f}"
        )
    tuning = momentax.heavy_ball_tuning(1000.0, 1.0)
    polyak = momentax.momentum(tuning.learning_rate, momentum=tuning.momentum)
    reference = steps_to_target(polyak, hvp=False)
    print(f"Polyak's tuning: {reference} steps")
    for name, hvp in (("autotune with value_fn", True), ("autotune, gradients", False)):
        steps = steps_to_target(momentax.autotune(), hvp)
        ratio = f"{steps / reference:.2f}x" if steps and reference else "never"
        print(f"{name}: {steps} steps ({ratio})")
    for batch_size in (1, 16, 256):
        grid = min(
            (
                noisy_final_loss(momentax.momentum(lr, momentum=mu), batch_size, False),
                lr,
                mu,
            )
            for lr in (0.03, 0.1, 0.3, 1.0)
            for mu in (0.0, 0.5, 0.9, 0.99)
        )
        gradients = noisy_final_loss(momentax.autotune(), batch_size, False)
        hessian = noisy_final_loss(momentax.autotune(), batch_size, True)
        print(
            f"noisy quadratic, batch {batch_size}: grid best {grid[0]:.4f} "
            f"(lr {grid[1]}, momentum {grid[2]}), autotune {gradients:.4f}, "
            f"with value_fn {hessian:.4f}"
        )


if __name__ == "__main__":
    main()
