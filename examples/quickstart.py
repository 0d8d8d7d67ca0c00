"""Fit the notebook's y = 2x with plain SGD, momentum and Nesterov momentum.

Run with ``python examples/quickstart.py``. A linear model y = k*x + b starts
at k = b = 0 and takes 20 full-batch steps at lr 0.1, momentum 0.9, as in the
notebook momentax started from; like the notebook, the table shows the loss at the
start of each epoch, before that epoch's step.
"""

import jax
import jax.numpy as jnp
import optax

import momentax

X = jnp.array([1.0, 2.0, 3.0])
Y = 2.0 * X


def loss_fn(params):
    return jnp.mean((params["k"] * X + params["b"] - Y) ** 2)


def train(opt, epochs=20):
    params = {"k": jnp.array(0.0), "b": jnp.array(0.0)}

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state, losses = opt.init(params), []
    for _ in range(epochs):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return params, losses


def main():
    optimizers = {
        "sgd": momentax.momentum(0.1, momentum=0),
        "momentum": momentax.momentum(0.1, momentum=0.9),
        "nesterov": momentax.momentum(0.1, momentum=0.9, nesterov=True),
    }
    results = {name: train(opt) for name, opt in optimizers.items()}
    print("epoch " + "".join(f"{name:>12}" for name in results))
    for epoch in range(20):
        row = "".join(f"{losses[epoch]:12.4f}" for _, losses in results.values())
        print(f"{epoch + 1:5d} {row}")
    for name, (params, _) in results.items():
        print(f"{name:>9}: k = {float(params['k']):.4f}, b = {float(params['b']):.4f}")


if __name__ == "__main__":
    main()
