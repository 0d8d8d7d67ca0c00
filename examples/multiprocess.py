"""Train with several JAX processes on one machine, as a multi-host job would.

Run with ``python examples/multiprocess.py --num-processes 2``. The launcher
starts N copies of this script as workers on the loopback interface and waits
for them (with a timeout, killing them all if one fails). Each worker:

1. joins the others with ``jax.distributed.initialize`` (process 0 is the
   coordinator at ``127.0.0.1:PORT``; CPU collectives go over gloo);
2. builds the same many-feature regression task (same seed in every process)
   and a mesh over the global devices, one per process here;
3. trains it with ``momentax.training.fit`` and a
   ``momentax.training.Placement``: data-parallel
   (``--layout data_parallel``: each process holds half the examples) or fully
   sharded (``--layout fully_sharded``: each holds half of every param and of
   its velocity), saving every 25 steps to one
   ``momentax.training.CheckpointManager`` in ``--out/checkpoints`` (run it
   again after a kill and it resumes from the latest step);
4. restores the last step into an abstract target of its own shardings,
   checks it shard by shard against its params and, fully sharded, that it
   never held a whole param or velocity; writes its loss history to
   ``--out/process_<i>.npz``.

The launcher then restores the last step onto its one device (from N
processes' shards to one array each) and writes it to ``--out/params.npz``.
On a GPU cluster the same worker code runs with one process per host (or per
GPU) and the coordinator address of the first host: only the launch differs.
"""

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

TASK_SIZE = {"num_examples": 256, "num_features": 64, "num_outputs": 8}
NUM_STEPS = 100
LAYOUTS = ("data_parallel", "fully_sharded")


CHECKPOINT_EVERY = 25


def problem():
    """The task, the optimizer and the initial params, the same in every process."""
    import momentax
    from momentax import tasks

    task = tasks.wide_regression(**TASK_SIZE)
    reference = task.reference
    optimizer = momentax.momentum(reference.learning_rate, reference.momentum)
    params = tasks.linear_init(TASK_SIZE["num_features"], TASK_SIZE["num_outputs"])
    return task, optimizer, params


def train(placement=None, checkpoint=None):
    """Trains the task from zero params; returns the fit result.

    With ``placement=None`` this is the single-process run the workers must
    match.
    """
    import momentax
    from momentax import tasks

    task, optimizer, params = problem()
    return momentax.training.fit(
        tasks.linear_loss,
        optimizer,
        params,
        data=task.train,
        num_steps=NUM_STEPS,
        placement=placement,
        checkpoint=checkpoint,
        checkpoint_every=None if checkpoint is None else CHECKPOINT_EVERY,
    )


def held_here(array):
    """How many elements of ``array`` this process holds (each shard once)."""
    return sum(shard.data.size for shard in array.addressable_shards)


def check_restored(manager, result, layout):
    """Restores the last step in this process's shardings and checks it."""
    import jax
    import optax

    state = {"params": result.params, "opt_state": result.opt_state}
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
    restored = manager.restore(target)  # the latest step: NUM_STEPS
    pairs = zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True)
    for got, want in pairs:
        shards = zip(got.addressable_shards, want.addressable_shards, strict=True)
        for mine, theirs in shards:
            assert mine.index == theirs.index
            assert np.array_equal(np.asarray(mine.data), np.asarray(theirs.data))
    if layout == "fully_sharded":  # no process ever holds a whole param or velocity
        velocity = optax.tree.get(restored["opt_state"], "velocity")
        for leaf in jax.tree.leaves((restored["params"], velocity)):
            assert held_here(leaf) < leaf.size, "a process holds a whole array"


def worker(args):
    import jax

    # One CPU device per process, whatever XLA_FLAGS the launcher inherited.
    jax.config.update("jax_num_cpu_devices", 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=args.timeout,
    )
    from jax.experimental import multihost_utils

    import momentax

    devices = jax.devices()  # global: every process's devices
    if args.layout == "data_parallel":
        mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
        placement = momentax.training.Placement.data_parallel(mesh)
    else:
        mesh = jax.make_mesh((1, len(devices)), ("data", "model"), devices=devices)
        placement = momentax.training.Placement.fully_sharded(mesh)
    directory = pathlib.Path(args.out) / "checkpoints"
    with momentax.training.CheckpointManager(directory, max_to_keep=2) as manager:
        result = train(placement, checkpoint=manager)
        check_restored(manager, result, args.layout)
        steps = manager.all_steps()
    # The loss history is small: gathering it is fine (never the params). It
    # is empty when a rerun finds the run complete in the checkpoints.
    loss = result.history.get("loss", np.zeros(0, np.float32))
    loss = multihost_utils.process_allgather(loss, tiled=True)
    np.savez(pathlib.Path(args.out) / f"process_{args.process_id}.npz", loss=loss)
    w = result.params["w"]
    first, last = (float(loss[i]) if loss.size else float("nan") for i in (0, -1))
    print(
        f"process {jax.process_index()}/{jax.process_count()}: "
        f"{jax.local_device_count()} of {jax.device_count()} devices, "
        f"holds {held_here(w)} of w's {w.size} elements, "
        f"loss {first:.4f} -> {last:.4f}, "
        f"checkpoints {steps} restored and checked"
    )
    jax.distributed.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args):
    """Starts the workers, waits for all, and restores their last checkpoint."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--num-processes",
                str(args.num_processes),
                "--process-id",
                str(i),
                "--port",
                str(port),
                "--layout",
                args.layout,
                "--out",
                str(out),
                "--timeout",
                str(args.timeout),
            ],
            start_new_session=True,  # its own process group, to kill it whole
        )
        for i in range(args.num_processes)
    ]
    deadline = time.monotonic() + args.timeout
    try:
        codes = [w.wait(timeout=max(deadline - time.monotonic(), 0)) for w in workers]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()
    if codes is None:
        sys.exit(f"timed out after {args.timeout} s; all workers were killed.")
    if any(codes):
        sys.exit(f"workers exited with codes {codes}.")
    import momentax

    _, optimizer, params = problem()
    target = {"params": params, "opt_state": optimizer.init(params)}
    with momentax.training.CheckpointManager(out / "checkpoints") as manager:
        restored = manager.restore(target)  # every process's shards, on one device
        step = manager.latest_step()
    np.savez(out / "params.npz", **restored["params"])
    print(
        f"{args.num_processes} processes ({args.layout}) trained {NUM_STEPS} steps; "
        f"their checkpoint of step {step} restored on one device."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, help="set for workers only")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--layout", choices=LAYOUTS, default="data_parallel")
    parser.add_argument("--out", default="multiprocess-out")
    parser.add_argument("--timeout", type=int, default=300, help="seconds")
    args = parser.parse_args(argv)
    if args.num_processes < 1:
        parser.error("--num-processes must be >= 1")
    if args.timeout < 1:
        parser.error("--timeout must be >= 1")
    if args.process_id is None:
        launch(args)
    else:
        worker(args)


if __name__ == "__main__":
    main()
