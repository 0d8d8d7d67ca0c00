"""Train your own model with momentax's training utilities.

Run with ``python examples/own_model.py``. A small MLP learns y = sin(3x) from 512
noisy points in minibatches of 64, twice:

1. with ``momentax.training.fit``: 8 minibatches stacked on the device, 100
   epochs as 800 steps inside ``lax.scan``, 200 steps per compiled call, with a
   progress callback and a per-step history of the loss and of the velocity of the
   last layer;
2. with ``momentax.training.make_train_step``: the path to take when batches come
   from Python (a data loader): one donated, jitted call per step.

Both runs use the same steps in the same order, so they end at the same params.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import momentax
import momentax.training
from momentax.training import RECORDABLE

BATCH, NUM_BATCHES, EPOCHS = 64, 8, 100


def init_mlp(key, sizes=(1, 32, 32, 1)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "b": jnp.zeros(n_out),
        }
        for k, (n_in, n_out) in zip(keys, itertools.pairwise(sizes), strict=True)
    ]


def mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((mlp(params, x) - y) ** 2)


def data(seed=0):
    """512 noisy points, stacked as NUM_BATCHES minibatches of BATCH."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (NUM_BATCHES, BATCH, 1)).astype(np.float32)
    y = np.sin(3.0 * x) + 0.05 * rng.normal(size=x.shape).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def last_velocity(info):
    """The velocity of the last layer after a step (a record of fit)."""
    return info.velocity[-1]


def main():
    batches = data()
    optimizer = momentax.momentum(0.05, momentum=0.9, nesterov=True)

    # 1. Many steps per compiled call; the history stays on the device.
    result = momentax.training.fit(
        loss_fn,
        optimizer,
        init_mlp(jax.random.key(0)),
        batches,
        stacked=True,
        num_steps=EPOCHS * NUM_BATCHES,
        steps_per_call=200,
        record={"loss": RECORDABLE["loss"], "last_velocity": last_velocity},
        callback=lambda done, total: print(f"fit: {done}/{total} steps"),
    )
    losses = result.history["loss"].reshape(EPOCHS, NUM_BATCHES).mean(axis=1)
    print(f"fit: mean loss epoch 1 {losses[0]:.4f}, epoch {EPOCHS} {losses[-1]:.4f}")
    shape = result.history["last_velocity"]["w"].shape
    print(f"fit: velocity history of the last layer {shape}")

    # 2. One jitted call per step, batches from Python.
    step = momentax.training.make_train_step(loss_fn, optimizer)
    params = init_mlp(jax.random.key(0))
    state = optimizer.init(params)
    for _ in range(EPOCHS):
        for i in range(NUM_BATCHES):
            batch = (batches[0][i], batches[1][i])
            params, state, records = step(params, state, batch)
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(params), jax.tree.leaves(result.params), strict=True
        )
    )
    print(
        f"train step: last loss {records['loss']:.4f}; "
        f"largest param difference to fit {gap:.1e}"
    )


if __name__ == "__main__":
    main()
