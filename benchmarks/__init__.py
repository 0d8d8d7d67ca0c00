"""momentax's benchmark suite: ``python -m benchmarks`` (``--help`` for options).

It measures, side by side in one run, the device's memory bandwidth, one
momentum step from 10^3 to 5x10^7 params, pytrees of many leaves, the blog's
linear regression end to end, and the peak memory of a training step, against
``optax.sgd``, a hand-written ``jax.numpy`` step and ``torch.optim.SGD``. It
writes a JSON file, a markdown table and a PNG plot.
"""
