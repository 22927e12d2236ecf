"""Run the number-comparing tests as other CPUs would: lower NumPy SIMD levels
and older OpenBLAS kernels, simulated on this machine (issue 21, docs/golden.md
§5 "Bit-identical or toleranced").

Two knobs change the last bits of radref's arithmetic without changing the code:

- ``NPY_DISABLE_CPU_FEATURES`` lowers the SIMD level NumPy dispatches to (its
  exp, log, tanh, ... kernels differ per level).  It only ever lowers features,
  so it is safe on any machine: ``.ci/run`` runs the test suite under every
  level below the machine's own (``--levels`` prints them).
- ``OPENBLAS_CORETYPE`` picks OpenBLAS's kernel (its matrix products sum in
  another order).  It is explored **by hand only**, never in tests or CI: some
  machines pin it on purpose, because older OpenBLAS builds crash or compute
  wrong results on their processors.  This script tries the kernels older than
  the machine's own.

Usage::

    python validation/platforms.py --levels            # SIMD levels below this machine's
    python validation/platforms.py                     # every setting, the default tests
    python validation/platforms.py --simd-only tests/test_golden.py
    python validation/platforms.py --json validation/platforms.json --md validation/platforms.md

Each setting runs ``python -m pytest -q -p no:cacheprovider TESTS`` in a fresh
process and records the failing tests; the verdict is that every setting passes.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

#: The test files run by default: every file that compares numbers (the
#: documentation site's browser tests are left out: they compare no numbers
#: that the platform could change, and take minutes).
DEFAULT_TESTS = ("tests",)
DEFAULT_IGNORE = ("tests/test_site.py",)

#: OpenBLAS kernels for x86-64, oldest first (OpenBLAS's own names).  "Zen"
#: shares Haswell's kernels, "Cooperlake" SkylakeX's.
X86_CORETYPES = ("Prescott", "Nehalem", "Sandybridge", "Haswell", "SkylakeX", "Cooperlake",
                 "SapphireRapids")


def simd_levels():
    """NumPy's dispatch targets this machine runs, highest first.

    Each is one simulated CPU: ``NPY_DISABLE_CPU_FEATURES=X`` is "a CPU without
    X" (NumPy also drops the targets that imply X: disabling ``X86_V4`` leaves
    the AVX2 kernels, disabling ``X86_V3`` the baseline ones).
    """
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [f for f in reversed(__cpu_dispatch__) if __cpu_features__.get(f)]


def openblas_kernel(env=None):
    """The OpenBLAS kernel (``architecture``) NumPy's BLAS uses under ``env``."""
    code = ("import threadpoolctl, numpy;"
            "print(next((i.get('architecture') for i in threadpoolctl.threadpool_info()"
            " if i.get('internal_api') == 'openblas'), ''))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip()


def settings(simd_only=False):
    """``[(label, extra environment)]``: this machine, each lower SIMD level, and
    (unless ``simd_only``) each OpenBLAS kernel older than the machine's own."""
    result = [("this machine", {})]
    result += [(f"NPY_DISABLE_CPU_FEATURES={level}", {"NPY_DISABLE_CPU_FEATURES": level})
               for level in simd_levels()]
    if simd_only or platform.machine() not in ("x86_64", "AMD64"):
        return result
    own = openblas_kernel()
    older = X86_CORETYPES[:X86_CORETYPES.index(own)] if own in X86_CORETYPES else ()
    result += [(f"OPENBLAS_CORETYPE={kernel}", {"OPENBLAS_CORETYPE": kernel})
               for kernel in older]
    return result


def run_tests(tests, ignore, extra_env):
    env = dict(os.environ, **extra_env)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    command += [f"--ignore={path}" for path in ignore]
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)))
    summary = (out.stdout.strip().splitlines() or [""])[-1]
    return {"returncode": out.returncode, "failed": failed, "summary": summary,
            "seconds": round(time.perf_counter() - start, 1),
            "blas_kernel": openblas_kernel(env)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="*", default=list(DEFAULT_TESTS))
    parser.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE))
    parser.add_argument("--levels", action="store_true",
                        help="print the SIMD levels below this machine's, one per line, and exit")
    parser.add_argument("--simd-only", action="store_true",
                        help="lower SIMD levels only (no OpenBLAS kernels)")
    parser.add_argument("--json", help="write the results as JSON")
    parser.add_argument("--md", help="write the results as a Markdown table")
    args = parser.parse_args(argv)
    if args.levels:
        print("\n".join(simd_levels()))
        return 0
    results = []
    for label, extra in settings(args.simd_only):
        print(f"{label} ...", flush=True)
        result = dict(run_tests(args.tests, args.ignore, extra), setting=label)
        print(f"  {result['summary']} ({result['seconds']} s, BLAS kernel "
              f"{result['blas_kernel']})", flush=True)
        for name in result["failed"]:
            print(f"  FAILED {name}", flush=True)
        results.append(result)
    record = {"machine": platform.processor() or platform.machine(),
              "numpy_simd_levels": simd_levels(), "tests": args.tests, "results": results}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    if args.md:
        rows = ["| setting | BLAS kernel | result | failing tests |", "|---|---|---|---|"]
        rows += [f"| {r['setting']} | {r['blas_kernel']} | {r['summary']} | "
                 f"{', '.join(r['failed']) or '—'} |" for r in results]
        with open(args.md, "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
