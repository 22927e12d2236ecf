"""Is radref's training step slower in any process that has a second thread?
(issue 26, docs/performance.md "The default mode's slower Rad step").

The benchmark's default mode (OpenBLAS free to start its threads) timed
radref's Rad training step slower than the single mode, in either order of
the modes, although the step starts no thread and its products are too small
for OpenBLAS to split; switching OpenBLAS's threads in one process
(validation/step_blas_threads.py) made no difference.  What does differ:
with ``OPENBLAS_NUM_THREADS=1`` OpenBLAS starts no thread at all, so the
process stays single-threaded, and a single-threaded process takes glibc's
malloc fast path (no atomic operations); a Rad step makes thousands of
small NumPy temporaries.

This script times the step in fresh processes of four kinds, in turn:

- ``single``: ``OPENBLAS_NUM_THREADS=1``, nothing else (one thread);
- ``idle-thread``: the same, plus one Python thread that only waits (two
  threads, BLAS still in one);
- ``blas-default``: no thread variable (OpenBLAS's own threads, idle);
- ``single-no-aslr``: as ``single``, with the address space's randomisation
  off (``setarch -R``: every process gets the same addresses).

If ``idle-thread`` is as slow as ``blas-default``, the cause is the second
thread's existence, not BLAS.  What the first run of this script found
instead (docs/performance.md): each kind's processes fall into a fast and a
slow group, whatever the kind and the core, and without randomisation every
process is fast: the step's time depends on where the process's memory
lands.  So the script prints every process's time, not only the median.
Each process reports the median over
``--reps`` steps of the step's CPU time of its own thread
(``time.thread_time``: what another process on the machine cannot inflate)
and wall time.  Usage, from the repository root::

    python validation/step_process_threads.py              # --rounds 6 --reps 300
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("single", "idle-thread", "blas-default", "single-no-aslr")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def measure(kind, reps):
    """Median CPU and wall seconds of one training step per paper model (in this process)."""
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    from benchmark import PAPER_MODELS, PROBLEM, paper_config
    from radref import datasets
    from radref.core.flow import flow_init
    from radref.training.train import mean_loglik_and_grad
    if kind == "idle-thread":
        waiting = threading.Event()
        threading.Thread(target=waiting.wait, daemon=True).start()
    batch = datasets.sample(PROBLEM, 500, random_state=0)
    out = {"threads": threading.active_count()}
    for model in PAPER_MODELS:
        config = paper_config(model)
        params = flow_init(config, random_state=0)
        cpu, wall = [], []
        for _ in range(reps):
            c, w = time.thread_time(), time.perf_counter()
            mean_loglik_and_grad(batch, params, config)
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - w)
        out[model] = {"cpu_ms": 1e3 * float(np.median(cpu)),
                      "wall_ms": 1e3 * float(np.median(wall))}
    return out


def environment(kind):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if kind != "blas-default":
        env.update(dict.fromkeys(THREAD_VARS, "1"))
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--json", help="write every process's numbers here")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.reps)))
        return 0
    found = {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:  # interleaved: drift falls on every kind alike
            command = [sys.executable, __file__, "--worker", kind, "--reps", str(args.reps)]
            if kind == "single-no-aslr":
                command = ["setarch", "-R", *command]
            done = subprocess.run(command, env=environment(kind), check=True,
                                  capture_output=True, text=True)
            found[kind].append(json.loads(done.stdout))
    for kind, runs in found.items():
        cells = []
        for model in ("rad", "affine"):
            cpu = np.median([r[model]["cpu_ms"] for r in runs])
            wall = np.median([r[model]["wall_ms"] for r in runs])
            each = " ".join(f"{r[model]['cpu_ms']:.2f}" for r in runs)
            cells.append(f"{model} median {cpu:.2f} ms CPU ({wall:.2f} ms wall); each: {each}")
        print(f"{kind:<14s} ({runs[0]['threads']} Python thread(s)): " + "; ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
