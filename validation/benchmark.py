"""Performance of radref, side by side with PyTorch and JAX peers (issue 8).

Usage, from the repository root::

    python validation/benchmark.py [--quick] [--out validation/results/benchmark.json]
                                   [--markdown docs/performance.md] [--figure PNG]
                                   [--peers all|none|torch|jax|torch,jax]
                                   [--modes single,default]

What is measured (docs/performance.md describes the method):

1. Training-step time at batch 500 of the paper's models, Rad
   ``FlowConfig("rad", 2, 6, 8, 8)`` and Real NVP ``FlowConfig("affine", 2, 6, 56)``:
   one step is ``radref.training.train.mean_loglik_and_grad`` + ``radref.training.optim.adam_update_inplace``.
2. Log-density throughput on 100,000 points (no gradient) and sampling
   throughput (``radref.core.flow.flow_sample``) on 100,000 points.
3. Scaling of the time per point with the batch size, the data dimension and
   the depth (radref only), plotted to docs/figures/performance_scaling.png.
4. Peak memory of a 100,000-point log-density (tracemalloc and the growth of
   the peak resident set size (VmHWM, reset before the call), each in a fresh subprocess).
5. The machine, Python, NumPy, BLAS and thread settings.
6. Peers: PyTorch eager and JAX jit (CPU, float64) on identical parameters and
   batches, for the training step and the log-density; before timing, each
   peer's log-likelihood must agree with radref's to 1e-10 and one training
   step must move the parameters identically (1e-9).

Every number is the median over repetitions after a warm-up, timed with
``time.perf_counter`` with the garbage collector disabled.  The script runs
itself twice as a subprocess: once with single-threaded BLAS
(``OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1`` set before NumPy is
imported, ``torch.set_num_threads(1)``, XLA without its thread pool) and once
with the libraries' default threading, and merges the two into one JSON file.

``--quick`` is a smoke test of every code path with tiny sizes and repetition
counts; its numbers mean nothing.  ``--figure-only`` measures nothing: it
redraws the scaling figure from the JSON results (``--out``).  Exit status: 0, or 1 if a peer disagreed
with radref or a subprocess failed.
"""
import argparse
import contextlib
import copy
import datetime
import functools
import gc
import io
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# NumPy, radref and the peers are imported only in the worker subprocesses, once
# the thread environment is final (the top-level process starts them with it).

MODES = {
    "single": {"label": "1 thread",
               "env": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
                       "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false "
                                    "intra_op_parallelism_threads=1"}},
    "default": {"label": "default threads", "env": {}},
}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "XLA_FLAGS")

PAPER_MODELS = {"rad": ("rad", 2, 6, 8, 8), "affine": ("affine", 2, 6, 56, 0)}
MODEL_LABELS = {"rad": "Rad", "affine": "Real NVP"}
LOGLIK_TOL = 1e-10  # relative, max norm, per-point log-likelihood
STEP_TOL = 1e-9  # absolute, parameters after one Adam step (the step is ~lr = 1e-3)
PROBLEM = "ring"  # the 2-D data set of the batches (radref.datasets)
MARK_START, MARK_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def markers(isa="environment", machine=None):
    """The Markdown block's delimiters: one block per instruction-set setting
    (``--isa native`` and ``--isa avx2`` each keep their own, so the page shows
    both; a run with the environment's variables as they are has the plain
    pair), and per ``--machine`` label (another computer's runs beside the
    page's own, which have none)."""
    if isa == "environment" and machine is None:
        return MARK_START, MARK_END
    tag = f"isa={isa}" + (f" machine={machine}" if machine else "")
    return f"<!-- benchmark:start {tag} -->", f"<!-- benchmark:end {tag} -->"


def machine_label(text):
    """``--machine``: a short label of lower-case letters, digits and hyphens
    (it names the Markdown block, the JSON file and the figure)."""
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use lower-case letters, digits and "
                                         f"hyphens (for example intel-xeon)")
    return text


class Timing(NamedTuple):
    """Repetition policy: ``warmup`` untimed calls, then up to ``reps`` timed
    calls, stopping early once ``budget_s`` seconds are spent and at least
    ``min_reps`` calls are timed."""

    warmup: int
    reps: int
    min_reps: int
    budget_s: float


class Settings(NamedTuple):
    n_points: int  # log-density and sampling throughput
    batch: int  # training step
    n_batches: int  # distinct training batches, cycled
    pretrain_steps: int  # radref Adam steps before anything is measured
    step: Timing
    bulk: Timing  # log-density and sampling of n_points
    scaling: Timing
    batch_sizes: tuple
    dims: tuple
    depths: tuple
    scaling_batch: int  # training step of the dimension and depth curves
    scaling_points: int  # log-density of the dimension and depth curves
    thread_points: tuple = (100_000, 1_000_000)  # radref's n_jobs speed-up (default mode)


FULL = Settings(n_points=100_000, batch=500, n_batches=10, pretrain_steps=100,
                step=Timing(warmup=20, reps=300, min_reps=30, budget_s=15.0),
                bulk=Timing(warmup=2, reps=30, min_reps=7, budget_s=30.0),
                scaling=Timing(warmup=2, reps=30, min_reps=5, budget_s=4.0),
                batch_sizes=(100, 300, 1000, 3000, 10_000, 30_000, 100_000),
                dims=(2, 4, 8, 16, 32, 64), depths=(2, 4, 8, 16, 32),
                scaling_batch=500, scaling_points=10_000)
QUICK = Settings(n_points=2000, batch=500, n_batches=2, pretrain_steps=5,
                 step=Timing(1, 3, 3, 0.0), bulk=Timing(1, 2, 2, 0.0),
                 scaling=Timing(1, 2, 2, 0.0), batch_sizes=(100, 1000), dims=(2, 4),
                 depths=(2, 4), scaling_batch=100, scaling_points=500,
                 thread_points=(5000,))


# --------------------------------------------------------------------- timing

def _summary(times, warmup):
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "q1_s": quartiles[0],
            "q3_s": quartiles[2], "reps": len(times), "warmup": warmup}


def time_calls(fn, timing):
    """Median and spread of the wall time of ``fn()`` under ``timing``."""
    return time_interleaved({"fn": fn}, timing)["fn"]


def time_interleaved(fns, timing, block=10):
    """Median and spread of the wall time of each ``fns[name]()``, the
    implementations interleaved in blocks: a round makes ``block`` timed calls
    of each (the order rotating from round to round), so that a change in the
    machine's speed during the measurement affects every implementation alike
    and their ratio stays fair, while within a block the caches are warm as in
    a training loop (the first, colder call of a block is outweighed in the
    median).  The budget of ``timing`` is per function."""
    for fn in fns.values():
        for _ in range(timing.warmup):
            fn()
    names = list(fns)
    block = max(1, min(block, timing.reps))
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    times = {name: [] for name in names}
    try:
        start, round_ = time.perf_counter(), 0
        while len(times[names[0]]) < timing.reps:
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                for _ in range(min(block, timing.reps - len(times[name]))):
                    t0 = time.perf_counter()
                    fns[name]()
                    times[name].append(time.perf_counter() - t0)
            round_ += 1
            if (len(times[names[0]]) >= timing.min_reps
                    and time.perf_counter() - start > timing.budget_s * len(names)):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: _summary(times[name], timing.warmup) for name in names}


def fmt_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_rate(points_per_s):
    return f"{points_per_s:,.0f} points/s"


# ------------------------------------------------------------- implementations

class Radref:
    """radref behind the peers' interface (see validation/peers/__init__.py)."""

    name = "radref"
    label = "radref (NumPy)"

    def __init__(self, params, config, adam, n_jobs=None):
        from radref.training.optim import PackedAdam, adam_init
        self.params, self.config, self.adam = copy.deepcopy(params), config, adam
        self.n_jobs = n_jobs  # threads of the log-density (the training step has none)
        self.state = adam_init(self.params)
        # As in radref.training.train.train: the parameters live in one vector while training.
        self.packed = PackedAdam(self.params, self.state, adam).__enter__()

    @staticmethod
    def prepare(x):
        return x

    def loglik(self, x):
        from radref.core.flow import flow_log_density
        return flow_log_density(x, self.params, self.config, **threads(self.n_jobs))

    @staticmethod
    def to_numpy(value):
        return value

    def train_step(self, x):
        """One step as in radref.training.train.train: loss, gradient, Adam."""
        from radref.training.train import mean_loglik_and_grad
        loglik, grads = mean_loglik_and_grad(x, self.params, self.config)
        self.packed.update(-self.packed.flatten(grads))
        return loglik

    def params_numpy(self):
        return self.params


def threads(n_jobs):
    """radref's ``n_jobs`` keyword, left out when ``None`` (one thread), so that
    the single-threaded mode also times revisions from before ``n_jobs``."""
    return {} if n_jobs is None else {"n_jobs": n_jobs}


def peer_classes(names, log):
    """``{name: Peer class}`` for the peers that import; the others get a reason."""
    import peers
    found, missing = {}, {}
    for name in names:
        try:
            found[name] = peers.load(name).Peer
        except ImportError as exc:
            missing[name] = str(exc)
            log(f"peer {name}: not available, {exc}")
    return found, missing


# ------------------------------------------------------------------ environment

#: /proc/cpuinfo's fields that name the core, and their keys in the JSON
CPUINFO_FIELDS = {"cpu family": "cpu_family", "model": "cpu_model_number",
                  "stepping": "cpu_stepping", "cache size": "cpu_cache_size"}


def machine_info():
    """CPU, memory, OS, Python, NumPy and BLAS of this process."""
    import numpy as np
    info = {"cpu_model": None, "logical_cpus": os.cpu_count(), "physical_cores": None,
            "platform": platform.platform(), "python": platform.python_version(),
            "python_implementation": platform.python_implementation(), "numpy": np.__version__}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            cores, block = set(), {}
            for line in f.read().splitlines() + [""]:
                if ":" in line:
                    key, value = (s.strip() for s in line.split(":", 1))
                    block[key] = value
                    if key == "model name" and info["cpu_model"] is None:
                        info["cpu_model"] = value
                    # a virtual machine's model name is often generic ("Intel(R)
                    # Xeon(R) Processor"): family, model and stepping name the core
                    field = CPUINFO_FIELDS.get(key)
                    if field and field not in info:
                        info[field] = value
                elif block:
                    if "core id" in block:
                        cores.add((block.get("physical id"), block["core id"]))
                    block = {}
            info["physical_cores"] = len(cores) or None
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        config = np.show_config(mode="dicts")
        info["blas"] = config.get("Build Dependencies", {}).get("blas")
        info["simd"] = config.get("SIMD Extensions")
    except TypeError:  # NumPy < 1.25: text only
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            np.show_config()
        info["blas"] = {"show_config": text.getvalue()}
    return info


#: variables that choose NumPy's SIMD level and OpenBLAS's kernels (recorded; a
#: machine may pin them: --isa changes or unsets them for the benchmark's processes only)
KERNEL_VARS = ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
               "OPENBLAS_L2_SIZE", "ATEN_CPU_CAPABILITY")
#: --isa avx2: the instruction set of a CPU without AVX-512, for NumPy (its x86
#: features are grouped by level since NumPy 2.4: "AVX512F" alone is ignored),
#: OpenBLAS, PyTorch and XLA (appended to XLA_FLAGS)
AVX2_VARS = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
             "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2"}
AVX2_XLA_FLAG = "--xla_cpu_max_isa=AVX2"


def isa_environment(env, isa):
    """``env`` for the benchmark's processes: as it is (``"environment"``), with
    every kernel variable unset (``"native"``: what this CPU does by itself),
    or set to an AVX2 machine's (``"avx2"``)."""
    if isa == "environment":
        return env
    env = {k: v for k, v in env.items() if k not in KERNEL_VARS}
    if isa == "avx2":
        env.update(AVX2_VARS)
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {AVX2_XLA_FLAG}".strip()
    return env


def simd_and_kernels():
    """The SIMD extensions NumPy dispatches to in this process, the kernels the
    BLAS libraries run (threadpoolctl's ``architecture``, if installed) and
    the variables that set them."""
    import numpy as np
    info = {"kernel_variables": {var: os.environ.get(var) for var in KERNEL_VARS},
            "xla_flags": os.environ.get("XLA_FLAGS")}
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        info["numpy_simd_dispatched"] = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    except ImportError:
        info["numpy_simd_dispatched"] = None
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: v for k, v in lib.items() if k != "filepath"}
                               for lib in threadpool_info()]
    except ImportError:
        info["threadpools"] = None
    del np
    return info


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ------------------------------------------------------------------- workloads

def paper_config(kind, dim=None, n_layers=None):
    from radref.core.flow import FlowConfig
    kind_, d, layers, hidden, gate_hidden = PAPER_MODELS[kind]
    return FlowConfig(kind_, dim or d, n_layers or layers, hidden, gate_hidden)


def make_data(settings):
    """Training batches and the n_points evaluation set, from the ring problem."""
    from radref import datasets
    train = datasets.sample(PROBLEM, settings.batch * settings.n_batches, random_state=0)
    evaluation = datasets.sample(PROBLEM, max(settings.n_points, max(settings.batch_sizes)),
                                 random_state=1)
    batches = [train[i * settings.batch:(i + 1) * settings.batch]
               for i in range(settings.n_batches)]
    return batches, train, evaluation


def pretrained_params(config, train, settings):
    """radref Adam steps from flow_init(seed 0), so parameters are non-trivial."""
    from radref.core.flow import flow_init
    from radref.training.optim import AdamConfig
    from radref.training.train import train as radref_train
    params = flow_init(config, random_state=0)
    radref_train(params, config, train, steps=settings.pretrain_steps, batch_size=settings.batch,
                 adam=AdamConfig(lr=5e-3), random_state=0, progress=False)
    return params


class Cycle:
    """Calls ``fn(batches[i])`` with i cycling, so steps see different batches."""

    def __init__(self, fn, batches):
        self.fn, self.batches, self.i = fn, batches, 0

    def __call__(self):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return self.fn(batch)


def check_agreement(peer_cls, params, config, adam, batch, evaluation):
    """A peer against radref on identical inputs: the per-point log-likelihood,
    then one training step each.  Returns (report, the peer after its step)."""
    import numpy as np
    from radref.reference.gradcheck import max_norm_relative_error
    ref = Radref(params, config, adam)
    peer = peer_cls(params, config, adam)
    ll_ref = ref.loglik(evaluation)
    ll_peer = peer.to_numpy(peer.loglik(peer.prepare(evaluation)))
    mean_ref = ref.train_step(batch)
    mean_peer = peer.train_step(peer.prepare(batch))
    after_ref, after_peer = ref.params_numpy(), peer.params_numpy()
    report = {
        "loglik_rel_err": float(max_norm_relative_error(ll_peer, ll_ref)),
        "step_loglik_rel_err": abs(mean_peer - mean_ref) / abs(mean_ref),
        "step_param_abs_err": max(float(np.max(np.abs(after_peer[k] - after_ref[k])))
                                  for k in after_ref),
    }
    report["ok"] = bool(report["loglik_rel_err"] <= LOGLIK_TOL
                        and report["step_loglik_rel_err"] <= LOGLIK_TOL
                        and report["step_param_abs_err"] <= STEP_TOL)
    return report, peer


def headline(settings, peer_cls, log, n_jobs=None):
    """Items 1, 2 and 6: training step, log-density and sampling; peers.
    ``n_jobs``: radref's threads for the log-density and sampling."""
    from radref.core.flow import flow_sample
    from radref.training.optim import AdamConfig
    adam = AdamConfig()
    batches, train, evaluation = make_data(settings)
    evaluation = evaluation[:settings.n_points]
    out = {"train_step": {}, "logdensity": {}, "sample": {}, "agreement": {}, "models": {}}
    for kind in PAPER_MODELS:
        config = paper_config(kind)
        params = pretrained_params(config, train, settings)
        out["models"][kind] = {"config": list(config),
                               "n_params": int(sum(p.size for p in params.values()))}
        impls = [Radref(params, config, adam, n_jobs)]
        for name, cls in peer_cls.items():
            report, peer = check_agreement(cls, params, config, adam, batches[0], evaluation)
            out["agreement"].setdefault(name, {})[kind] = report
            log(f"agreement {name:<6s} {kind:<6s} loglik {report['loglik_rel_err']:.1e}  "
                f"step loglik {report['step_loglik_rel_err']:.1e}  step params "
                f"{report['step_param_abs_err']:.1e}  {'ok' if report['ok'] else 'FAILED'}")
            if report["ok"]:
                impls.append(peer)
            else:
                log(f"peer {name} disagrees with radref on {kind}: not timed")
        steps = {impl.name: Cycle(impl.train_step, [impl.prepare(b) for b in batches])
                 for impl in impls}
        for name, r in time_interleaved(steps, settings.step).items():
            out["train_step"].setdefault(name, {})[kind] = r
            log(f"train step (batch {settings.batch}) {kind:<6s} {name:<6s} "
                f"{fmt_time(r['median_s'])}  ({r['reps']} reps, interleaved)")
        densities = {impl.name: functools.partial(impl.loglik, impl.prepare(evaluation))
                     for impl in impls}
        for name, r in time_interleaved(densities, settings.bulk, block=3).items():
            r["points_per_s"] = settings.n_points / r["median_s"]
            out["logdensity"].setdefault(name, {})[kind] = r
            log(f"log-density ({settings.n_points} points) {kind:<6s} {name:<6s} "
                f"{fmt_time(r['median_s'])}  {fmt_rate(r['points_per_s'])}  "
                f"({r['reps']} reps, interleaved)")
        r = time_calls(lambda: flow_sample(settings.n_points, params, config, random_state=0,
                                           **threads(n_jobs)), settings.bulk)
        r["points_per_s"] = settings.n_points / r["median_s"]
        out["sample"].setdefault("radref", {})[kind] = r
        log(f"sampling ({settings.n_points} points) {kind:<6s} radref "
            f"{fmt_time(r['median_s'])}  {fmt_rate(r['points_per_s'])}")
    return out


def thread_speedup(settings, log):
    """radref's ``n_jobs=-1`` against one thread, interleaved, for the
    log-density and sampling of each paper model on ``settings.thread_points``
    points (the results are bit for bit the same; only the time differs).

    "One thread" is radref single-threaded, BLAS included (threadpoolctl
    limits it to one thread for those calls, as the single mode's
    environment does); ``n_jobs=None`` with BLAS's own threads is timed too
    (``blas_threads_s``): in the default mode a matrix product may use every
    core even when radref's chunks run in one thread."""
    from threadpoolctl import threadpool_limits
    from radref.core.flow import flow_log_density, flow_sample
    from radref import datasets

    def single(fn):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(None)
    batches, train, _ = make_data(settings)
    out = []
    for kind in PAPER_MODELS:
        config = paper_config(kind)
        params = pretrained_params(config, train, settings)
        for n in settings.thread_points:
            x = datasets.sample(PROBLEM, n, random_state=1)
            ops = {"logdensity": lambda j: flow_log_density(x, params, config, n_jobs=j),
                   "sample": lambda j: flow_sample(n, params, config, random_state=0, n_jobs=j)}
            for op, fn in ops.items():
                timed = time_interleaved({"1": functools.partial(single, fn),
                                          "blas": functools.partial(fn, None),
                                          "all": functools.partial(fn, -1)}, settings.bulk,
                                         block=1)
                row = {"kind": kind, "op": op, "n_points": n,
                       "one_thread_s": timed["1"]["median_s"],
                       "blas_threads_s": timed["blas"]["median_s"],
                       "all_cpus_s": timed["all"]["median_s"]}
                row["speedup"] = row["one_thread_s"] / row["all_cpus_s"]
                out.append(row)
                log(f"n_jobs=-1 vs 1: {op} {kind:<6s} {n} points {fmt_time(row['one_thread_s'])}"
                    f" (BLAS's threads {fmt_time(row['blas_threads_s'])})"
                    f" -> {fmt_time(row['all_cpus_s'])}  x{row['speedup']:.2f}")
            del x
    return out


def scaling(settings, log):
    """Item 3 (radref only): time per point over batch size, dimension, depth.

    Batch curve: the paper models (pretrained), both operations at each batch
    size.  Dimension and depth curves: fresh flow_init parameters, the training
    step at ``scaling_batch`` points and the log-density at ``scaling_points``.
    """
    import numpy as np
    from radref.core.flow import flow_init
    from radref.training.optim import AdamConfig
    batches, train, evaluation = make_data(settings)
    rows = []

    def measure(axis, value, kind, config, params, x_step, x_density):
        impl = Radref(params, config, AdamConfig())
        for op, x, fn in (("train_step", x_step, impl.train_step),
                          ("logdensity", x_density, impl.loglik)):
            r = time_calls(lambda: fn(x), settings.scaling)
            r.update(axis=axis, value=value, kind=kind, op=op, n=len(x),
                     per_point_s=r["median_s"] / len(x))
            rows.append(r)
            log(f"scaling {axis:<5s} {value:>6d} {kind:<6s} {op:<10s} n={len(x):<6d} "
                f"{r['per_point_s'] * 1e6:8.3f} µs/point")

    for kind in PAPER_MODELS:
        config = paper_config(kind)
        params = pretrained_params(config, train, settings)
        for n in settings.batch_sizes:
            measure("batch", n, kind, config, params, evaluation[:n], evaluation[:n])
    rng = np.random.default_rng(0)
    for kind in PAPER_MODELS:
        for dim in settings.dims:
            config = paper_config(kind, dim=dim)
            x = rng.standard_normal((max(settings.scaling_batch, settings.scaling_points), dim))
            measure("dim", dim, kind, config, flow_init(config, random_state=0),
                    x[:settings.scaling_batch], x[:settings.scaling_points])
        for depth in settings.depths:
            config = paper_config(kind, n_layers=depth)
            measure("depth", depth, kind, config, flow_init(config, random_state=0),
                    evaluation[:settings.scaling_batch], evaluation[:settings.scaling_points])
    return rows


def _status_kib(field):
    """A ``kB`` field of /proc/self/status (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss():
    """Reset the process's peak-RSS mark (Linux); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_probe(impl_name, kind, n):
    """Item 4, run in a fresh subprocess: the memory of one n-point log-density."""
    from radref import datasets
    from radref.core.flow import flow_init
    from radref.training.optim import AdamConfig
    config = paper_config(kind)
    params = flow_init(config, random_state=0)
    x = datasets.sample(PROBLEM, n, random_state=1)
    if impl_name == "radref":
        impl = Radref(params, config, AdamConfig())
    else:
        impl = peer_classes([impl_name], lambda msg: None)[0][impl_name](params, config,
                                                                          AdamConfig())
    xn = impl.prepare(x)
    result = {"impl": impl_name, "kind": kind, "n": n, "input_mb": x.nbytes / 2**20}
    if impl_name == "jax":  # compile for this shape outside the measurement
        run, stats = impl.compile_loglik(xn)
        if stats is not None:
            result["xla_temp_mb"] = stats.temp_size_in_bytes / 2**20
            result["xla_output_mb"] = stats.output_size_in_bytes / 2**20
    else:
        impl.loglik(impl.prepare(x[:100]))  # load every lazily initialised code path
        run = lambda: impl.loglik(xn)  # noqa: E731
    gc.collect()
    # The peak resident set size of this process is already high from importing
    # the peers, so ru_maxrss would not move: reset the kernel's high-water mark
    # (Linux: write 5 to /proc/self/clear_refs) and read VmHWM after the call.
    before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    out = run()
    after = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(maxrss_delta_mb=(after - before) / 1024, maxrss_mb=after / 1024,
                  peak_reset=reset)
    del out
    if impl_name == "radref":  # NumPy reports its allocations to tracemalloc
        gc.collect()
        tracemalloc.start()
        out = run()
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(json.dumps(result))


def memory(settings, impl_names, log):
    rows = []
    for name in impl_names:
        for kind in PAPER_MODELS:
            cmd = [sys.executable, os.path.abspath(__file__), "--_memory-probe", name, kind,
                   str(settings.n_points)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"memory probe {name} {kind} failed:\n{proc.stderr}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            extra = "".join(f", {key} {row[key]:.1f} MB" for key in
                            ("tracemalloc_peak_mb", "xla_temp_mb") if key in row)
            log(f"memory {name:<6s} {kind:<6s} log-density of {row['n']} points: "
                f"peak RSS growth {row['maxrss_delta_mb']:.1f} MB{extra}")
    return rows


# ---------------------------------------------------------------------- worker

def worker(mode, args, out_path):
    """One threading mode, in a subprocess whose environment is already set."""
    settings = QUICK if args.quick else FULL
    label = MODES[mode]["label"]

    def log(message):
        print(f"[{label}] {message}", flush=True)

    start = time.perf_counter()
    load_start = load_average()
    cpus = os.cpu_count() or 1
    if load_start is not None and load_start[0] > 0.25 * cpus:
        log(f"WARNING: the machine is busy (load average {load_start[0]:.2f} on {cpus} CPUs); "
            "timings will be inflated")
    peer_cls, missing = peer_classes(args.peer_names, log)
    threads = {var: os.environ.get(var) for var in THREAD_VARS}
    peer_info = {}
    if "torch" in peer_cls:
        import torch
        if mode == "single":
            torch.set_num_threads(1)
            torch.set_num_interop_threads(1)
    for name, cls in peer_cls.items():
        peer_info[name] = {"available": True, "label": cls.label, **cls.info()}
    for name, reason in missing.items():
        peer_info[name] = {"available": False, "reason": reason}
    log(f"threads: {threads}; peers: {', '.join(peer_cls) or 'none'}")

    result = {"mode": mode, "label": label, "environment_variables": threads,
              "peers": peer_info, "load_average_start": load_start,
              "kernels": simd_and_kernels()}
    # default mode: every library's own threading; radref's is n_jobs=-1 (every CPU)
    n_jobs = None if mode == "single" else -1
    result["radref_n_jobs"] = n_jobs
    result.update(headline(settings, peer_cls, log, n_jobs))
    if mode == "default":
        result["threads"] = thread_speedup(settings, log)
    if not args.no_scaling:
        result["scaling"] = scaling(settings, log)
    if args.memory_here:
        result["memory"] = memory(settings, ["radref", *peer_cls], log)
    result["load_average_end"] = load_average()
    result["elapsed_s"] = time.perf_counter() - start
    log(f"done in {result['elapsed_s']:.0f} s")
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    failed = any(not r["ok"] for per_kind in result["agreement"].values()
                 for r in per_kind.values())
    return 1 if failed else 0


# ------------------------------------------------------------------- reporting

def ratios(mode_result):
    """radref time / peer time for each peer (> 1: radref is slower)."""
    out = {}
    for op in ("train_step", "logdensity"):
        ref = mode_result[op].get("radref", {})
        for peer, per_kind in mode_result[op].items():
            if peer == "radref":
                continue
            for kind, r in per_kind.items():
                out.setdefault(peer, {})[f"{op}.{kind}"] = ref[kind]["median_s"] / r["median_s"]
    return out


def markdown_block(result, markdown_path, figure_path, json_path):
    env = result["environment"]
    blas = env.get("blas") or {}
    blas_text = (f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
                 if "name" in blas else "see the JSON")
    versions = [f"Python {env['python']}", f"NumPy {env['numpy']} ({blas_text})"]
    for mode_result in result["modes"].values():
        for name, info in mode_result["peers"].items():
            entry = f"{name} {info['version']}" if info["available"] else f"{name}: not installed"
            if entry not in versions:
                versions.append(entry)
    loads = [m["load_average_start"][0] for m in result["modes"].values()
             if m.get("load_average_start")]
    lines = []
    if result["quick"]:
        lines += ["**QUICK SMOKE RUN: these numbers are not measurements.**", ""]
    elapsed = result["elapsed_s"]
    elapsed = f"{elapsed:.0f} s" if elapsed < 120 else f"{elapsed / 60:.0f} min"
    lines += [f"Run of {result['created']} (`{result['command']}`, {elapsed}). "
              f"Machine: {env.get('cpu_model')}{cpu_id(env)}, {env.get('logical_cpus')} logical CPUs "
              f"({env.get('physical_cores')} cores), {env.get('memory_gib')} GiB; "
              f"{env['platform']}. {', '.join(versions)}."
              + (f" Load average (1 min) at the start of each mode: "
                 f"{', '.join(f'{x:.2f}' for x in loads)}." if loads else ""), ""]
    for mode_result in result["modes"].values():
        set_vars = [f"{k}={v}" for k, v in mode_result["environment_variables"].items() if v]
        torch_info = mode_result["peers"].get("torch", {})
        torch_threads = (f"; torch threads: {torch_info['threads']}"
                         if torch_info.get("available") else "")
        n_jobs = mode_result.get("radref_n_jobs")
        radref_threads = f"; radref `n_jobs={n_jobs}`" if n_jobs is not None else ""
        lines.append(f"- {mode_result['label']}: "
                     f"{', '.join(f'`{v}`' for v in set_vars) or 'no thread variable set'}"
                     f"{torch_threads}{radref_threads}.")
    lines.append("")
    kernels = kernels_text(next(iter(result["modes"].values())).get("kernels", {}))
    if kernels:
        lines += [f"Instruction set (`--isa {result.get('isa', 'environment')}`): {kernels}", ""]
    n = result["settings"]["n_points"]
    lines += [f"| implementation | Rad step | Real NVP step | Rad log-density throughput "
              f"({n:,} points, no grad) |", "|---|---|---|---|"]
    for mode_result in result["modes"].values():
        for impl, per_kind in mode_result["train_step"].items():
            label = Radref.label if impl == "radref" else mode_result["peers"][impl]["label"]
            density = mode_result["logdensity"][impl]["rad"]["points_per_s"]
            lines.append(f"| {label}, {mode_result['label']} | "
                         f"{fmt_time(per_kind['rad']['median_s'])} | "
                         f"{fmt_time(per_kind['affine']['median_s'])} | {fmt_rate(density)} |")
    lines += ["", f"Step: batch {result['settings']['batch']}, log-likelihood + backward + Adam "
              "update; medians. Time ratio radref / peer (> 1: radref is slower):", "",
              "| peer | threads | Rad step | Real NVP step | Rad log-density | "
              "Real NVP log-density |", "|---|---|---|---|---|---|"]
    for mode_result in result["modes"].values():
        for peer, r in ratios(mode_result).items():
            lines.append(f"| {mode_result['peers'][peer]['label']} | {mode_result['label']} | "
                         + " | ".join(f"{r[key]:.2f}" for key in
                                      ("train_step.rad", "train_step.affine", "logdensity.rad",
                                       "logdensity.affine")) + " |")
    lines += ["", "radref only:", "", "| threads | model | log-density throughput | "
              "sampling throughput |", "|---|---|---|---|"]
    for mode_result in result["modes"].values():
        for kind in PAPER_MODELS:
            lines.append(f"| {mode_result['label']} | {MODEL_LABELS[kind]} | "
                         f"{fmt_rate(mode_result['logdensity']['radref'][kind]['points_per_s'])}"
                         f" | {fmt_rate(mode_result['sample']['radref'][kind]['points_per_s'])} |")
    threads = [row for m in result["modes"].values() for row in m.get("threads", [])]
    if threads:
        # runs before blas_threads_s timed "one thread" with BLAS's own threads
        one = ("one thread, BLAS included" if all("blas_threads_s" in r for r in threads)
               else "one thread (BLAS's own threads where that column is empty)")
        lines += ["", f"radref's threads (`n_jobs=-1` against {one}, "
                  "interleaved, default mode; the results are bit for bit the same; "
                  "\"BLAS's threads\": `n_jobs=None` with BLAS's own threads):", "",
                  "| model | operation | points | 1 thread | BLAS's threads | all CPUs | "
                  "speed-up |", "|---|---|---|---|---|---|---|"]
        for row in threads:
            blas = fmt_time(row["blas_threads_s"]) if "blas_threads_s" in row else "—"
            lines.append(f"| {MODEL_LABELS[row['kind']]} | {row['op']} | {row['n_points']:,} | "
                         f"{fmt_time(row['one_thread_s'])} | {blas} | "
                         f"{fmt_time(row['all_cpus_s'])} | {row['speedup']:.2f}× |")
    mem = [row for m in result["modes"].values() for row in m.get("memory", [])]
    if mem:
        lines += ["", f"Peak memory of one {n:,}-point log-density (fresh process, "
                  "1 thread): peak resident set size during the call minus the resident size "
                  "before it (Linux VmHWM after resetting it); for radref also the "
                  "tracemalloc peak, for JAX the temporary buffers XLA reports.", "",
                  "| implementation | model | peak RSS growth | tracemalloc peak | XLA temp |",
                  "|---|---|---|---|---|"]
        for row in mem:
            cells = [f"{row[key]:.1f} MB" if key in row else "—"
                     for key in ("maxrss_delta_mb", "tracemalloc_peak_mb", "xla_temp_mb")]
            lines.append(f"| {row['impl']} | {MODEL_LABELS[row['kind']]} | {' | '.join(cells)} |")
    if figure_path and os.path.exists(figure_path):
        rel = os.path.relpath(figure_path, os.path.dirname(os.path.abspath(markdown_path)))
        lines += ["", f"![time per point over batch size, dimension and depth]({rel})"]
    shown = os.path.relpath(os.path.abspath(json_path), ROOT)
    shown = json_path if shown.startswith("..") else shown
    lines += ["", f"All raw numbers and the environment: `{shown}`."]
    return "\n".join(lines)


def cpu_id(env):
    """`` (family 6, model 207, stepping 2)`` when the JSON records them."""
    parts = [f"{name} {env[key]}" for name, key in (
        ("family", "cpu_family"), ("model", "cpu_model_number"), ("stepping", "cpu_stepping"))
        if env.get(key)]
    return f" ({', '.join(parts)})" if parts else ""


def kernels_text(env):
    """One sentence: NumPy's SIMD dispatch and the BLAS kernels of a worker, and
    the variables that chose them."""
    parts = []
    if env.get("numpy_simd_dispatched") is not None:
        parts.append(f"NumPy SIMD: {', '.join(env['numpy_simd_dispatched']) or 'baseline only'}")
    pools = env.get("threadpools") or []
    kernels = [f"{p.get('internal_api')} {p.get('architecture')}" for p in pools
               if p.get("architecture")]
    if kernels:
        parts.append(f"BLAS kernels (threadpoolctl): {', '.join(kernels)}")
    set_vars = [f"`{k}={v}`" for k, v in (env.get("kernel_variables") or {}).items() if v]
    if parts or set_vars:
        parts.append(f"set by {', '.join(set_vars)}" if set_vars else "no kernel variable set")
    return "; ".join(parts) + "." if parts else ""


def update_markdown(path, block, isa="environment", machine=None):
    """Replace the text between the markers of ``isa`` and ``machine``
    (append a section if there are none); the blocks of other settings and
    machines are left as they are."""
    start, end = markers(isa, machine)
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    section = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text else "# Performance\n\n") + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def plot_scaling(result, path):
    """Write :func:`scaling_figure` to ``path``; False (and a note) without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no scaling figure (pip install matplotlib)")
        return False
    fig = scaling_figure(result)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return True


def scaling_figure(result):
    """The time per point over batch size, dimension and depth (log axes),
    training step above, log-density below."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axes_spec = (("batch", "batch size (points)"), ("dim", "data dimension"),
                 ("depth", "coupling layers"))
    ops = (("train_step", "training step"), ("logdensity", "log-density"))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), squeeze=False)
    styles = {"single": "-", "default": "--"}
    colors = {"rad": "tab:blue", "affine": "tab:orange"}
    settings = result["settings"]
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for i, (op, op_label) in enumerate(ops):
        for j, (axis, axis_label) in enumerate(axes_spec):
            ax = axes[i][j]
            for mode, mode_result in result["modes"].items():
                for kind in PAPER_MODELS:
                    rows = sorted((r for r in mode_result.get("scaling", [])
                                   if r["axis"] == axis and r["kind"] == kind and r["op"] == op),
                                  key=lambda r: r["value"])
                    if rows:
                        ax.plot([r["value"] for r in rows],
                                [r["per_point_s"] * 1e6 for r in rows], styles.get(mode, ":"),
                                marker="o", ms=3, color=colors[kind],
                                label=f"{MODEL_LABELS[kind]}, {mode_result['label']}")
            ax.set_xscale("log", base=10 if axis == "batch" else 2)
            ax.set_yscale("log")
            if axis != "batch":
                ax.set_xticks(settings[{"dim": "dims", "depth": "depths"}[axis]])
            ax.xaxis.set_major_formatter(plain)
            # labels at 1, 2 and 5 times a power of ten: every minor tick
            # labelled crowded a decade into overlapping numbers (90 80 70 ...)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(axis_label)
            n = "" if axis == "batch" else (f", {settings['scaling_batch']} points"
                                            if op == "train_step"
                                            else f", {settings['scaling_points']} points")
            ax.set_title(f"{op_label}{n}", fontsize=10)
            ax.set_ylabel("µs per point")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    title = "radref time per point (median)" + (" — QUICK SMOKE RUN" if result["quick"] else "")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def print_summary(result):
    for mode_result in result["modes"].values():
        print(f"\n{mode_result['label']}: time ratio radref / peer (> 1: radref is slower)")
        table = ratios(mode_result)
        if not table:
            print("  no peer timed")
        for peer, r in table.items():
            print("  " + f"{peer:<6s} " + "  ".join(f"{key} {value:.2f}"
                                                   for key, value in r.items()))


# ------------------------------------------------------------------------ main

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny sizes and repetition counts (numbers mean nothing)")
    parser.add_argument("--out", help="JSON results (default validation/results/benchmark.json, "
                        "benchmark_ISA.json with --isa native or avx2, benchmark-quick.json "
                        "with --quick)")
    parser.add_argument("--markdown", help="update this Markdown file between "
                        f"{MARK_START} and {MARK_END} (with --isa native or avx2: "
                        "between that setting's own markers, e.g. "
                        f"{markers('avx2')[0]})")
    parser.add_argument("--figure", help="scaling plot (default docs/figures/"
                        "performance_scaling.png, performance_scaling_ISA.png with --isa "
                        "native or avx2; next to --out with --quick)")
    parser.add_argument("--peers", default="all",
                        help="all (those installed), none, or a comma list of torch, jax")
    parser.add_argument("--modes", default="single,default",
                        help="comma list of threading modes: single, default")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling curves")
    parser.add_argument("--isa", choices=("environment", "native", "avx2"), default="environment",
                        help="instruction set of the benchmark's processes: the variables "
                             "of this environment as they are (default), every kernel variable "
                             "unset (native), or an AVX2 machine's for NumPy, OpenBLAS, PyTorch "
                             "and XLA (avx2)")
    parser.add_argument("--machine", type=machine_label,
                        help="label of a machine other than the page's own (for example "
                             "intel-xeon): its own Markdown block, benchmark_ISA_LABEL.json and "
                             "performance_scaling_ISA_LABEL.png, beside the page's runs")
    parser.add_argument("--figure-only", action="store_true",
                        help="measure nothing: redraw the scaling figure (--figure) from the "
                             "JSON results (--out)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite the --markdown block (and the figure) "
                             "from the JSON results (--out) of an earlier run")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--_memory-here", dest="memory_here", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--_memory-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peers in ("all", "none"):
        args.peer_names = ["torch", "jax"] if args.peers == "all" else []
    else:
        args.peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    bad = [p for p in args.peer_names if p not in ("torch", "jax")]
    args.mode_names = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad += [m for m in args.mode_names if m not in MODES]
    if bad or not args.mode_names:
        parser.error(f"unknown peer or mode: {', '.join(bad) or '(no mode)'}")
    return args


def output_paths(args):
    """``(json_path, figure_path)``: the options' or their defaults."""
    suffix = "" if args.isa == "environment" else f"_{args.isa}"
    suffix += f"_{args.machine}" if args.machine else ""
    out = args.out or os.path.join(HERE, "results", "benchmark-quick.json" if args.quick
                                   else f"benchmark{suffix}.json")
    figure = args.figure or (os.path.splitext(out)[0] + "_scaling.png" if args.quick else
                             os.path.join(ROOT, "docs", "figures",
                                          f"performance_scaling{suffix}.png"))
    return out, figure


def report(result, args, out, figure):
    """Write the figure (unless --no-scaling) and the --markdown block of ``result``."""
    if not args.no_scaling and plot_scaling(result, figure):
        print(f"figure: {figure}")
    if args.markdown:
        update_markdown(args.markdown, markdown_block(result, args.markdown, figure, out),
                        result.get("isa", "environment"), result.get("machine"))
        print(f"markdown: {args.markdown}")


def run_modes(args, argv):
    """Top level: one subprocess per threading mode, then merge and report."""
    settings = QUICK if args.quick else FULL
    out, figure = output_paths(args)
    start = time.perf_counter()
    status = 0
    modes = {}
    with tempfile.TemporaryDirectory(prefix="radref-benchmark-") as tmp:
        for i, mode in enumerate(args.mode_names):
            env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
            env.update(MODES[mode]["env"])
            env = isa_environment(env, args.isa)
            # JAX: compile each shape once per mode (the memory probe reuses it).
            env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tmp, f"jax-cache-{mode}")
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
            part = os.path.join(tmp, f"{mode}.json")
            cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_worker", mode,
                   "--_worker-out", part] + (["--_memory-here"] if i == 0 else [])
            code = subprocess.run(cmd, env=env).returncode
            if code != 0 or not os.path.exists(part):
                print(f"mode {mode}: worker exited with status {code} (a peer disagreed with "
                      "radref, or the worker failed: see above)", file=sys.stderr)
                status = 1
            if os.path.exists(part):
                with open(part) as f:
                    modes[mode] = json.load(f)
    if not modes:
        return 1
    result = {"schema": "radref-benchmark", "schema_version": 1,
              "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(["python", "validation/benchmark.py", *argv]),
              "quick": args.quick, "isa": args.isa, "machine": args.machine,
              "settings": settings._asdict(),
              "tolerances": {"loglik_rel": LOGLIK_TOL, "step_param_abs": STEP_TOL},
              "environment": machine_info(), "modes": modes,
              "elapsed_s": time.perf_counter() - start}
    result["ratios_radref_over_peer"] = {mode: ratios(m) for mode, m in modes.items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nresults: {out}")
    report(result, args, out, figure)
    print_summary(result)
    print(f"\ntotal {result['elapsed_s']:.0f} s")
    return status


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._memory_probe or args._worker:  # subprocesses: find peers/ and radref/
        for path in (HERE, ROOT):  # (radref need not be installed)
            if path not in sys.path:
                sys.path.insert(0, path)
    if args._memory_probe:
        name, kind, n = args._memory_probe
        memory_probe(name, kind, int(n))
        return 0
    if args._worker:
        return worker(args._worker, args, args._worker_out)
    if args.figure_only:
        out, figure = output_paths(args)
        with open(out) as f:
            return 0 if plot_scaling(json.load(f), figure) else 1
    if args.report_only:
        out, figure = output_paths(args)
        with open(out) as f:
            result = json.load(f)
        args.isa = result.get("isa", "environment")  # the block of the run's own setting
        report(result, args, out, figure)
        return 0
    return run_modes(args, argv)


if __name__ == "__main__":
    sys.exit(main())
