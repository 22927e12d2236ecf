"""Profile of one training step of the paper's models (docs/performance.md).

Runs the benchmark's radref training step (``validation/benchmark.py``: same
data, same pre-trained parameters, batch 500) under the standard-library
profiler and prints where the time goes, by function, per step.  Run it on a
quiet machine with one BLAS thread::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python validation/profile_step.py [--steps 300] [--out FILE]

The profiler adds a fixed cost per Python function call, so the per-step
totals it reports are larger than the benchmark's timings; the proportions
are what this is for.
"""
import argparse
import cProfile
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import benchmark  # noqa: E402  (validation/benchmark.py)
from radref.training.optim import AdamConfig  # noqa: E402


def profile(kind, steps, settings=benchmark.FULL):
    """cProfile statistics of ``steps`` radref training steps of model ``kind``."""
    config = benchmark.paper_config(kind)
    batches, train, _ = benchmark.make_data(settings)
    params = benchmark.pretrained_params(config, train, settings)
    step = benchmark.Cycle(benchmark.Radref(params, config, AdamConfig()).train_step, batches)
    for _ in range(20):  # warm-up
        step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    return pstats.Stats(profiler)


def report(kind, stats, steps, top):
    """Text table: self time and calls per step of the ``top`` costliest functions."""
    total = stats.total_tt / steps
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    lines = [f"{benchmark.MODEL_LABELS[kind]} training step (batch 500), profiled: "
             f"{total * 1e3:.2f} ms per step over {steps} steps",
             f"{'self ms/step':>12s} {'share':>6s} {'calls/step':>10s}  function"]
    for (path, line, name), (_, ncalls, tottime, _, _) in rows:
        where = f"{os.path.relpath(path, os.path.dirname(HERE))}:{line}" if os.path.isabs(path) \
            else path
        lines.append(f"{tottime / steps * 1e3:12.3f} {tottime / stats.total_tt:6.1%} "
                     f"{ncalls / steps:10.0f}  {name} ({where})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the benchmark's quick data and pre-training")
    args = parser.parse_args(argv)
    settings = benchmark.QUICK if args.quick else benchmark.FULL
    text = "\n\n".join(report(kind, profile(kind, args.steps, settings), args.steps, args.top)
                       for kind in benchmark.PAPER_MODELS)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
