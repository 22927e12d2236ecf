"""The cost model of docs/performance.md (issue 26): what the machine charges,
and what one coupling layer asks of it.

Usage, from the repository root, on one quiet core with one BLAS thread::

    OPENBLAS_NUM_THREADS=1 taskset -c 1 python validation/cost_model.py --label native
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell \\
        OPENBLAS_NUM_THREADS=1 taskset -c 1 python validation/cost_model.py --label avx2

(the second line lowers NumPy's SIMD level to AVX2 and OpenBLAS's kernels to
Haswell, by hand only).  Writes ``validation/results/timing/cost_model_<label>.json``
and prints a summary.

**The machine** (:func:`machine_numbers`), each the minimum over repetitions
(the machine's noise only ever adds time):

- the fixed cost of one NumPy call: ``np.add`` of two 8-element arrays,
  with a new output and with ``out=``, and a ``(8, 2) @ (2, 8)`` product;
- the cost per element of calls that stay in the L1/L2 cache (4,096
  elements): a contiguous addition, a product broadcast along a last axis of
  3 (the model's 3-way quantities), a product of two strided columns, and
  ``exp``, ``log``, ``sin``, ``cos``, ``tanh``;
- memory bandwidth: a copy of 256 MiB (main memory) and of 256 KiB (L2);
- the cost of a page fault (first touch of freshly mapped memory);
- the parallel share of two threads: ``np.exp`` of 4,096 elements in two
  threads against one (NumPy releases the GIL inside the loop, not around
  the call's set-up).

**The layers** (:func:`layer_costs`): one coupling layer of each of the
paper's models, forward (what the log-density runs) and backward, on 500
rows (a training batch) and on one chunk of rows.  Every NumPy operation is
counted by running the layer on arrays of a counting subclass (its
``__array_ufunc__`` and ``__array_function__`` see every ufunc, operator and
array function; copies and assignments into arrays are counted too): the
calls, the elements they produce and the bytes they read and write.  Each
layer is also timed plainly (thread CPU time, minimum over repetitions) and
its page faults counted (``getrusage``).  The model is then::

    time ~ calls x (call cost) + bytes / (L2 bandwidth) + transcendental elements x (their cost)
           + page faults x (fault cost)

and the JSON keeps each term beside the measured time.
"""
import argparse
import collections
import importlib
import json
import mmap
import os
import pkgutil
import platform
import resource
import sys
import threading
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from radref.core.chunks import CHUNK_ROWS  # noqa: E402
from radref.core.flow import FlowConfig, flow_init, layer_params  # noqa: E402
from radref.core.layers import layer_kind  # noqa: E402

PAPER_MODELS = {"rad": FlowConfig("rad", 2, 6, 8, 8), "affine": FlowConfig("affine", 2, 6, 56)}
TRANSCENDENTAL = ("exp", "log", "sin", "cos", "tanh")


def best_of(fn, number, repeat=15, clock=time.perf_counter):
    """Minimum over ``repeat`` rounds of the time of one call, ``number`` calls a round."""
    times = []
    for _ in range(repeat):
        start = clock()
        for _ in range(number):
            fn()
        times.append((clock() - start) / number)
    return min(times)


# ------------------------------------------------------------------ the machine

def machine_numbers():
    """The machine's costs (seconds, bytes per second); see the module docstring."""
    tiny_a, tiny_b, tiny_out = np.ones(8), np.ones(8), np.empty(8)
    m8, m2 = np.ones((8, 2)), np.ones((2, 8))
    numbers = {
        "call_new_output_s": best_of(lambda: np.add(tiny_a, tiny_b), 20000),
        "call_out_s": best_of(lambda: np.add(tiny_a, tiny_b, out=tiny_out), 20000),
        "call_matmul_s": best_of(lambda: m8 @ m2, 20000),
    }
    n = 4096
    x, y, out = np.linspace(-1, 1, n), np.linspace(1, 2, n), np.empty(n)
    x3, x1, out3 = np.ones((n, 1, 3)), np.ones((n, 1, 1)), np.empty((n, 1, 3))
    wide = np.ones((n, 10))
    per_element = {
        "add": lambda: np.add(x, y, out=out),
        "multiply_broadcast_last_axis_3": lambda: np.multiply(x1, x3, out=out3),
        "multiply_strided_columns": lambda: np.multiply(wide[:, 0], wide[:, 8], out=out),
    }
    per_element.update({name: (lambda f=getattr(np, name): f(y if f is np.log else x, out=out))
                        for name in TRANSCENDENTAL})
    call = numbers["call_out_s"]
    sizes = {"multiply_broadcast_last_axis_3": 3 * n}
    numbers["per_element_s"] = {
        name: (best_of(fn, 500) - call) / sizes.get(name, n) for name, fn in per_element.items()}
    numbers["matmul_flops_per_s"] = _skinny_matmul_rate(n)
    numbers["bandwidth_memory_Bps"] = _copy_bandwidth(256 << 20, 3)
    numbers["bandwidth_l2_Bps"] = _copy_bandwidth(256 << 10, 2000)
    numbers["page_fault_s"] = _page_fault_cost()
    numbers["two_threads_exp_4096_speedup"] = _two_thread_speedup(n)
    return numbers


def _skinny_matmul_rate(n):
    """Flops per second of the layers' skinny products, ``(n, k) @ (k, m)``
    with ``k, m`` among 2 ... 57 (the mean time of the four shapes below)."""
    shapes = ((2, 8), (8, 10), (2, 56), (57, 4))
    flops = seconds = 0.0
    for k, m in shapes:
        a, b, out = np.ones((n, k)), np.ones((k, m)), np.empty((n, m))
        seconds += best_of(lambda: np.matmul(a, b, out=out), 200)
        flops += 2.0 * n * k * m
    return flops / seconds


def _copy_bandwidth(nbytes, number):
    """Bytes read and written per second by ``np.copyto`` of ``nbytes``."""
    src, dst = np.ones(nbytes // 8), np.empty(nbytes // 8)
    return 2 * nbytes / best_of(lambda: np.copyto(dst, src), number, repeat=7)


def _page_fault_cost(nbytes=64 << 20):
    """Seconds per page fault: the first touch of ``nbytes`` freshly mapped."""
    costs = []
    for _ in range(3):
        region = mmap.mmap(-1, nbytes)
        pages = np.frombuffer(region, dtype=np.uint8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        pages[::mmap.PAGESIZE] = 1
        elapsed = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del pages
        region.close()
        costs.append(elapsed / max(faults, 1))
    return min(costs)


def _two_thread_speedup(n, calls=20000):
    """Time of ``calls`` ``np.exp`` of ``n`` elements in one thread over that
    of the same calls shared by two threads (2.0: fully parallel)."""
    def work(count):
        a, out = np.linspace(-1, 1, n), np.empty(n)
        for _ in range(count):
            np.exp(a, out=out)

    def run(threads):
        pool = [threading.Thread(target=work, args=(calls // threads,)) for _ in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - start

    return min(run(1) for _ in range(3)) / min(run(2) for _ in range(3))


# ------------------------------------------------------------ counting NumPy calls

class _Log:
    """The operations recorded while :data:`_Log.on`; nested calls (inside an
    array function) are not counted twice."""

    records = []
    depth = 0
    flops = 0


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, Counted) else a


def _unwrap(x):
    if isinstance(x, Counted):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(y) for y in x)
    return x


def _wrap(r):
    if isinstance(r, np.ndarray) and not isinstance(r, Counted):
        return r.view(Counted)
    if isinstance(r, (list, tuple)):
        return type(r)(_wrap(x) for x in r)
    return r


def _total(x, attribute):
    """The sum of ``attribute`` (``"nbytes"``, ``"size"``) over the arrays in ``x``."""
    if isinstance(x, np.ndarray):
        return getattr(x, attribute)
    if isinstance(x, (list, tuple)):
        return sum(_total(y, attribute) for y in x)
    return 0


def _record(name, produced, moved, seconds):
    if _Log.depth == 0:
        _Log.records.append((name, produced, moved, seconds))


def _timed(fn, *args, **kwargs):
    _Log.depth += 1
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs), time.perf_counter() - start
    finally:
        _Log.depth -= 1


class Counted(np.ndarray):
    """An array whose every NumPy operation is recorded in :class:`_Log`:
    ``(name, elements produced, bytes read and written, seconds)``."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [_plain(a) for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(o) for o in kwargs["out"])
        result, seconds = _timed(getattr(ufunc, method), *args, **kwargs)
        written = 0 if "out" in kwargs else _total(result, "nbytes")
        _record(ufunc.__name__ + ("" if method == "__call__" else "." + method),
                _total(result, "size"),
                _total(args, "nbytes") + _total(kwargs.get("out", ()), "nbytes") + written,
                seconds)
        if ufunc is np.matmul:  # 2 m k n flops, counted apart
            _Log.flops += 2 * _total(result, "size") * np.shape(args[0])[-1]
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        args, kwargs = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
        result, seconds = _timed(func, *args, **kwargs)
        _record(func.__name__, _total(result, "size"),
                _total(args, "nbytes") + _total(result, "nbytes"), seconds)
        return _wrap(result)

    def __getitem__(self, index):
        plain = self.view(np.ndarray)
        result, seconds = _timed(plain.__getitem__, _unwrap(index))
        if isinstance(result, np.ndarray) and not np.shares_memory(result, plain):
            _record("getitem (copy)", result.size, 2 * result.nbytes, seconds)
        return _wrap(result)

    def __setitem__(self, index, value):
        plain = self.view(np.ndarray)
        _, seconds = _timed(plain.__setitem__, _unwrap(index), _plain(value))
        written = plain[_unwrap(index)]
        _record("setitem", np.size(written), 2 * np.size(written) * plain.itemsize, seconds)

    def copy(self, order="C"):
        result, seconds = _timed(self.view(np.ndarray).copy, order)
        _record("copy", result.size, 2 * result.nbytes, seconds)
        return _wrap(result)

    def astype(self, *args, **kwargs):
        result, seconds = _timed(self.view(np.ndarray).astype, *args, **kwargs)
        _record("astype", result.size, _total(self, "nbytes") + _total(result, "nbytes"), seconds)
        return _wrap(result)


#: NumPy functions that create arrays: made to create counted ones
_CREATORS = {"empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like",
             "full_like", "eye", "array", "asarray", "asanyarray", "concatenate", "arange",
             "asfortranarray", "ascontiguousarray"}
#: of those, the ones that copy numbers (a pass over memory, counted)
_COPIES = {"concatenate", "asfortranarray", "ascontiguousarray"}


class _CountingNumPy(types.ModuleType):
    """``numpy`` as the core modules see it while counting: every array they
    create is a :class:`Counted`; everything else is NumPy's."""

    def __getattr__(self, name):
        attribute = getattr(np, name)
        if name not in _CREATORS:
            return attribute

        def create(*args, **kwargs):
            result, seconds = _timed(attribute, *_unwrap(args), **kwargs)
            source = _unwrap(args[0]) if args else None
            if name in _COPIES and not (isinstance(source, np.ndarray)
                                        and np.shares_memory(source, result)):
                _record(name, _total(result, "size"), 2 * _total(result, "nbytes"), seconds)
            return _wrap(result)
        return create


def instrument_core():
    """Make every module of ``radref.core`` use :class:`_CountingNumPy` and its
    module-level arrays counted ones (for the rest of this process)."""
    import radref.core
    proxy = _CountingNumPy("numpy")
    for info in pkgutil.walk_packages(radref.core.__path__, "radref.core."):
        module = importlib.import_module(info.name)
        if getattr(module, "np", None) is np:
            module.np = proxy
        for key, value in list(vars(module).items()):
            if type(value) is np.ndarray:
                setattr(module, key, value.view(Counted))


# ------------------------------------------------------------------- the layers

def _layer_inputs(config, n, seed=1):
    params = flow_init(config, out_std=0.3, random_state=0)
    x = np.random.default_rng(seed).normal(size=(n, config.dim))
    return layer_params(params, 0), x


def _layer_call(config, nested, x, what):
    """A function making one forward of layer 0 on ``x``, or one backward (from
    a forward made once, before)."""
    kind = layer_kind(config.kind)
    if what == "forward":
        return lambda: kind.forward(x, nested, 0)
    z, _, _, cache = kind.forward(x, nested, 0)
    dz, dterm = np.full(z.shape, 1.0 / len(x)), np.full(len(x), 1.0 / len(x))
    return lambda: kind.backward(dz, dterm, cache)


def count_operations(config, n, what, rounds=12):
    """``[(name, elements, bytes, seconds)]`` of one forward or backward of layer
    0 on ``n`` rows, counted (:func:`instrument_core` must have run); seconds
    are the median over ``rounds``."""
    nested, x = _layer_inputs(config, n)
    counted = {net: {k: v.view(Counted) for k, v in d.items()} for net, d in nested.items()}
    call = _layer_call(config, counted, x.view(Counted), what)
    runs = []
    for _ in range(rounds):
        _Log.records, _Log.flops = [], 0
        call()
        runs.append(list(_Log.records))
    seconds = np.median([[r[3] for r in run] for run in runs[2:]], axis=0)
    return [(r[0], r[1], r[2], s) for r, s in zip(runs[-1], seconds)], _Log.flops


def measure_layer(config, n, what, number):
    """Thread CPU seconds (minimum over rounds) and page faults per call of
    one plain (uncounted) forward or backward of layer 0."""
    nested, x = _layer_inputs(config, n)
    fn = _layer_call(config, nested, x, what)
    for _ in range(3):
        fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = best_of(fn, number, repeat=9, clock=time.thread_time)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (9 * number)
    return seconds, faults


def summarize(operations, n, flops):
    """Totals of :func:`count_operations`: calls, and per point the elements
    and bytes of the calls whose size grows with ``n``, and the matrix
    products' flops."""
    grows = [op for op in operations if op[1] >= n]
    by_name = collections.defaultdict(lambda: [0, 0, 0, 0.0])
    for name, elements, moved, seconds in operations:
        entry = by_name[name]
        entry[0] += 1
        entry[1] += elements / n
        entry[2] += moved / n
        entry[3] += seconds
    return {
        "calls": len(operations),
        "calls_growing_with_n": len(grows),
        "elements_per_point": sum(op[1] for op in grows) / n,
        "bytes_per_point": sum(op[2] for op in grows) / n,
        "transcendental_elements_per_point": sum(op[1] for op in grows
                                                 if op[0] in TRANSCENDENTAL) / n,
        "matmul_flops_per_point": flops / n,
        "counted_seconds": float(sum(op[3] for op in operations)),
        "by_operation": {name: dict(calls=c, elements_per_point=e, bytes_per_point=b, seconds=s)
                         for name, (c, e, b, s) in sorted(by_name.items(), key=lambda kv: -kv[1][3])},
    }


def model_seconds(summary, n, faults, machine):
    """The terms of the cost model for one layer call on ``n`` rows: the
    NumPy calls at their fixed cost, the bytes of the other calls at the L2
    bandwidth, each transcendental function's elements at its own cost, the
    page faults at theirs."""
    per, ops = machine["per_element_s"], summary["by_operation"]
    terms = {
        "calls": summary["calls"] * machine["call_new_output_s"],
        "bytes_at_l2_bandwidth": n * sum(op["bytes_per_point"] for name, op in ops.items()
                                         if name not in TRANSCENDENTAL + ("matmul",))
        / machine["bandwidth_l2_Bps"],
        "matmul_flops": n * summary["matmul_flops_per_point"] / machine["matmul_flops_per_s"],
        "transcendental": n * sum(op["elements_per_point"] * per[name] for name, op in ops.items()
                                  if name in TRANSCENDENTAL),
        "page_faults": faults * machine["page_fault_s"],
    }
    terms["total"] = sum(terms.values())
    return terms


def layer_costs(machine, sizes):
    """Counts, measurements and model terms of every paper model, direction and size."""
    results = {}
    measured = {}
    for model, config in PAPER_MODELS.items():  # plain timings first, before instrumenting
        for what in ("forward", "backward"):
            for n in (8,) + tuple(sizes):  # 8 rows: the fixed cost of a call
                measured[model, what, n] = measure_layer(config, n, what, max(1, 20000 // n))
    instrument_core()
    for (model, what, n), (seconds, faults) in measured.items():
        if n == 8:
            continue
        operations, flops = count_operations(PAPER_MODELS[model], n, what)
        summary = summarize(operations, n, flops)
        fixed = measured[model, what, 8][0]
        results[f"{model}/{what}/{n}"] = dict(
            summary, rows=n, measured_seconds=seconds, page_faults=faults,
            fixed_seconds=fixed, per_point_seconds=(seconds - fixed) / n,
            model=model_seconds(summary, n, faults, machine))
    return results


# ------------------------------------------------------------------- reporting

def environment():
    """CPU, NumPy's SIMD dispatch, OpenBLAS's kernel and the variables that set them."""
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    info = {"cpu": _cpu_model(), "python": platform.python_version(), "numpy": np.__version__,
            "numpy_simd_baseline": list(__cpu_baseline__),
            "numpy_simd_dispatched": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
            "env": {k: os.environ.get(k) for k in ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
                                                   "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")},
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average": os.getloadavg()}
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [{k: v for k, v in lib.items() if k != "filepath"} for lib in threadpool_info()]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(result):
    m = result["machine"]
    lines = [f"{result['label']}: {result['environment']['cpu']}; NumPy SIMD "
             f"{result['environment']['numpy_simd_dispatched']}; BLAS "
             f"{[b.get('architecture') for b in result['environment']['blas']] if isinstance(result['environment']['blas'], list) else '?'}",
             f"  call: {m['call_new_output_s'] * 1e9:.0f} ns (new output), {m['call_out_s'] * 1e9:.0f} ns "
             f"(out=), matmul {m['call_matmul_s'] * 1e9:.0f} ns; page fault {m['page_fault_s'] * 1e6:.2f} us",
             f"  bandwidth: memory {m['bandwidth_memory_Bps'] / 1e9:.1f} GB/s, L2 "
             f"{m['bandwidth_l2_Bps'] / 1e9:.1f} GB/s; two threads of np.exp(4096): x"
             f"{m['two_threads_exp_4096_speedup']:.2f}; skinny matmul "
             f"{m['matmul_flops_per_s'] / 1e9:.1f} GFlop/s",
             "  per element (ns): " + ", ".join(f"{k} {v * 1e9:.2f}" for k, v in m["per_element_s"].items())]
    for key, layer in result["layers"].items():
        model = layer["model"]
        lines.append(
            f"  {key:22s} {layer['calls']:4d} calls, {layer['elements_per_point']:5.0f} elements and "
            f"{layer['bytes_per_point']:5.0f} B per point, {layer['page_faults']:6.1f} faults; "
            f"measured {layer['measured_seconds'] * 1e6:7.1f} us (fixed {layer['fixed_seconds'] * 1e6:.0f} us "
            f"+ {layer['per_point_seconds'] * 1e9:.0f} ns/point), model {model['total'] * 1e6:7.1f} us "
            f"(calls {model['calls'] * 1e6:.0f}, bytes {model['bytes_at_l2_bandwidth'] * 1e6:.0f}, "
            f"matmul {model['matmul_flops'] * 1e6:.0f}, "
            f"transcendental {model['transcendental'] * 1e6:.0f}, faults {model['page_faults'] * 1e6:.0f})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="name of this setting (native, avx2, ...)")
    parser.add_argument("--out", help="JSON path (default validation/results/timing/"
                                      "cost_model_<label>.json)")
    parser.add_argument("--sizes", default=f"500,{CHUNK_ROWS}",
                        help=f"rows of the layer calls (default 500,{CHUNK_ROWS})")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.time()
    machine = machine_numbers()
    result = {"label": args.label, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "environment": environment(), "machine": machine,
              "layers": layer_costs(machine, sizes)}
    result["environment"]["load_average_end"] = os.getloadavg()
    result["seconds"] = time.time() - started
    out = args.out or os.path.join(HERE, "results", "timing", f"cost_model_{args.label}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    print(report(result))
    print(f"written to {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
