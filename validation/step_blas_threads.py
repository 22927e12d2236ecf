"""Does OpenBLAS's thread pool slow radref's training step?  (issue 26,
docs/performance.md "Results").

In the benchmark's default mode (OpenBLAS free to use every core) radref's
training step measured slower than in one thread, although radref starts no
thread of its own in a step and its batch-500 products are small.  This
script times the step in **one process**, switching OpenBLAS between one
thread and its default with threadpoolctl (the ``bench`` extra) in turn, so
both settings see the same machine at the same moments.  Usage, from the
repository root, on a quiet machine::

    python validation/step_blas_threads.py            # --rounds 20 --reps 30

Prints, per paper model and BLAS setting, the median over the rounds of each
round's median step time, and the threads OpenBLAS reported in that setting
(the default is every available CPU, whatever ``OPENBLAS_NUM_THREADS`` says).
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # radref need not be installed
sys.path.insert(0, HERE)

from benchmark import PAPER_MODELS, PROBLEM, paper_config  # noqa: E402


def main(argv=None):
    from threadpoolctl import threadpool_info, threadpool_limits

    from radref import datasets
    from radref.checks import available_cpus
    from radref.core.flow import flow_init
    from radref.training.train import mean_loglik_and_grad
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args(argv)
    print("BLAS:", [(i["internal_api"], i["num_threads"], i.get("architecture"))
                    for i in threadpool_info() if i["user_api"] == "blas"])
    batch = datasets.sample(PROBLEM, 500, random_state=0)
    models = {kind: (paper_config(kind), flow_init(paper_config(kind), random_state=0))
              for kind in PAPER_MODELS}
    medians, threads = {}, {}
    for _ in range(args.rounds):
        for kind, (config, params) in models.items():
            for limit in (1, available_cpus()):  # one thread, and OpenBLAS's default
                with threadpool_limits(limits=limit, user_api="blas"):
                    threads[limit] = [i["num_threads"] for i in threadpool_info()
                                      if i["user_api"] == "blas"]
                    times = []
                    for _ in range(args.reps):
                        start = time.perf_counter()
                        mean_loglik_and_grad(batch, params, config)
                        times.append(time.perf_counter() - start)
                medians.setdefault((kind, limit), []).append(np.median(times))
    for (kind, limit), values in medians.items():
        label = "1 thread" if limit == 1 else "default"
        print(f"{kind:6s} BLAS {label:8s}: step {np.median(values) * 1e3:.3f} ms "
              f"(fastest round {min(values) * 1e3:.3f} ms; BLAS threads {threads[limit]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
