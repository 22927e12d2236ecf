"""Rows per chunk for threads (issue 26): the measurement behind each layer
kind's ``THREAD_CHUNK_ROWS`` (docs/performance.md, "Threads").

A thread holds the GIL between NumPy's loops.  With chunks of 4,096 rows a
Rad layer's loops are short (a few microseconds), so two threads spend much
of their time handing the GIL to each other; longer chunks make the loops
longer, until the chunk's arrays leave the CPU cache.  This script times the
log-density and the sampling of the paper's models on ``--points`` points
for chunks of 4,096 to 32,768 rows, in one thread and in all CPUs, the
configurations interleaved (one call of each in turn, ``--rounds`` times;
the median is reported), and checks on the way that every result is bit
for bit the one-thread, 4,096-row result.  Usage, from the repository root,
on a quiet machine::

    OPENBLAS_NUM_THREADS=1 python validation/thread_chunks.py --label native
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell \\
        OPENBLAS_NUM_THREADS=1 python validation/thread_chunks.py --label avx2

Writes ``validation/results/timing/thread_chunks_<label>.json`` and prints
one line per configuration: the time and the speed-up over one thread with
4,096-row chunks (what ``n_jobs=None`` runs).
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # radref need not be installed

from radref import datasets  # noqa: E402
from radref.checks import available_cpus  # noqa: E402
from radref.core.flow import flow_init, flow_log_density, flow_sample_from_noise  # noqa: E402
from radref.core.layers import layer_kind  # noqa: E402

sys.path.insert(0, HERE)
from benchmark import PAPER_MODELS, paper_config  # noqa: E402  (the paper's two models)

MODELS = {kind: paper_config(kind) for kind in PAPER_MODELS}
CHUNKS = (4096, 8192, 16384, 32768)


def sweep(config, n, rounds):
    """``{(op, rows, threads): [seconds, ...]}`` for one model, interleaved."""
    params = flow_init(config, random_state=0)
    x = datasets.sample("ring", n, random_state=1)
    rng = np.random.default_rng(2)
    normals, uniforms = rng.standard_normal((n, 2)), rng.random((n, config.n_layers, 2))
    calls = {}
    for rows in CHUNKS:
        for threads in (1, -1):
            calls[("logdensity", rows, threads)] = (
                lambda r=rows, j=threads: flow_log_density(x, params, config, chunk_rows=r,
                                                           n_jobs=j))
            calls[("sample", rows, threads)] = (
                lambda r=rows, j=threads: flow_sample_from_noise(
                    normals, uniforms, params, config, n_jobs=j, chunk_rows=r)[0])
    reference = {op: calls[(op, CHUNKS[0], 1)]() for op in ("logdensity", "sample")}
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            out = call()
            times[key].append(time.perf_counter() - start)
            if out.tobytes() != reference[key[0]].tobytes():
                raise AssertionError(f"{key}: not the bits of one thread with 4,096-row chunks")
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="name of the setting (native, avx2)")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="JSON (default validation/results/timing/"
                        "thread_chunks_<label>.json)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(HERE, "results", "timing", f"thread_chunks_{args.label}.json")
    result = {"label": args.label, "points": args.points, "rounds": args.rounds,
              "cpus": available_cpus(), "cpu": platform.processor() or platform.machine(),
              "numpy": np.__version__, "load_average_start": os.getloadavg(),
              "environment": {k: os.environ.get(k) for k in (
                  "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")},
              "thread_chunk_rows": {kind: layer_kind(c.kind).THREAD_CHUNK_ROWS
                                    for kind, c in MODELS.items()},
              "rows": []}
    for kind, config in MODELS.items():
        times = sweep(config, args.points, args.rounds)
        base = {op: np.median(times[(op, CHUNKS[0], 1)]) for op in ("logdensity", "sample")}
        for (op, rows, threads), seconds in times.items():
            median = float(np.median(seconds))
            row = {"kind": kind, "op": op, "chunk_rows": rows,
                   "threads": "all" if threads == -1 else 1, "median_s": median,
                   "min_s": float(np.min(seconds)), "speedup": float(base[op] / median)}
            result["rows"].append(row)
            print(f"{kind:6s} {op:10s} {rows:6d} rows, {row['threads']:>3} thread(s): "
                  f"{median * 1e3:7.1f} ms  x{row['speedup']:.2f}", flush=True)
    result["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
