"""From one fold to a trained 2-D Rad model: ``python validation/tutorial.py``.

Three steps, each printing its numbers (docs/tutorial.md walks through the
output, which it shows between markers):

1. one uniform fold of a density on [-1, 1] (radref.reference.theory, paper §3.3):
   mass, smoothing, the folds Theorem 1 asks for, exact reconstruction;
2. the one-dimensional Rad model (radref.core.layer1d, eq. 15 and 23): its density
   integrates to 1 and its exact samples follow it;
3. a small RadFlow on two moons (radref.RadFlow, radref.datasets): 1500 Adam
   steps (under a minute on one core), held-out log-likelihood, exact
   inference and inverse, samples.

Everything is seeded: the output is the same on every run of the same build.
Step 3 trains a network, and training amplifies rounding: another BLAS
kernel (the CPU decides which one OpenBLAS takes) or another NumPy sums in
another order and prints other step-3 numbers after training. Step 3 therefore
starts with a line naming the NumPy and the BLAS that computed it.

    python validation/tutorial.py                 # print the three steps
    python validation/tutorial.py --update-docs   # ... and write them into docs/tutorial.md

tests/test_tutorial.py runs the script and fails when docs/tutorial.md shows
other output: after a change that moves the numbers, run ``--update-docs``.
The training time goes to stderr, so stdout is the same on every run.
"""
import argparse
import contextlib
import io
import re
import sys
import time
from pathlib import Path

import numpy as np

import radref
from radref import datasets
from radref.core.layer1d import rad1d_forward, rad1d_init, rad1d_inverse, rad1d_sample
from radref.core.slopes import slopes_forward
from radref.reference.theory import (bump_mixture_density, derivative_sup, folds_needed, grid, integrate,
                           lipschitz_constant, posterior_gating, reconstruct,
                           sup_distance_to_uniform, uniform_fold, uniform_fold_slopes,
                           uniform_folds)


def step_1_one_fold():
    print("== Step 1: one uniform fold (radref.reference.theory, paper eq. 34) ==")
    p_x = bump_mixture_density(means=[-0.62, 0.05, 0.7], widths=[0.1, 0.22, 0.07],
                               weights=[0.35, 0.4, 0.25], floor=0.1)
    p_z = uniform_fold(p_x)
    print(f"mass of p_X                       {integrate(p_x.pdf):.15f}")
    print(f"mass of p_Z = fold(p_X)           {integrate(p_z.pdf):.15f}")
    d_x, d_z = derivative_sup(p_x), derivative_sup(p_z)
    print(f"||p_X'||_inf in                   [{d_x.lower:.6f}, {d_x.upper:.6f}]")
    print(f"||p_Z'||_inf in                   [{d_z.lower:.6f}, {d_z.upper:.6f}]"
          f"   (<= ||p_X'|| / 3 = {d_x.upper / 3:.6f})")
    lip_x, lip_z = lipschitz_constant(p_x), lipschitz_constant(p_z)
    print(f"Lipschitz ratio Lip(p_Z)/Lip(p_X) {lip_z.lower / lip_x.lower:.4f}")
    print(f"||p_X - 1/2||_inf                 {sup_distance_to_uniform(p_x).lower:.6f}")
    print(f"||p_Z - 1/2||_inf                 {sup_distance_to_uniform(p_z).lower:.6f}")

    slopes = uniform_fold_slopes()
    gating = posterior_gating(p_x, slopes)
    print("exact gating p(k | z) at z = -1, 0, 1:")
    for z, prob in zip((-1.0, 0.0, 1.0), gating(np.array([-1.0, 0.0, 1.0]))):
        print(f"  z = {z:+.0f}: ({prob[0]:.4f}, {prob[1]:.4f}, {prob[2]:.4f})")
    x = grid(2001)
    err = np.max(np.abs(reconstruct(p_x, [slopes])(x) - p_x.pdf(x)))
    print(f"max |p_Z(f(x)) p(k|f(x)) 3 - p_X(x)| on 2001 points: {err:.2e}")

    for eps in (0.1, 0.01):
        n = folds_needed(eps, d_x.upper)
        top = uniform_folds(p_x, n)[-1]
        print(f"epsilon = {eps}: eq. 35 asks N = {n} folds; then "
              f"||p_N - 1/2||_inf <= {sup_distance_to_uniform(top, 201).upper:.2e}")


def _rad1d_integral(params, weight=None):
    """Integral of p(x) (times weight(x)) by Gauss-Legendre between the
    breakpoints of the surjection (the density is smooth in between) and out to
    |z| = 12 on both sides (beyond which the tails hold < 1e-30)."""
    slopes, _ = slopes_forward(params["p_logits"], params["q_logits"])
    u_break = np.array([-1.0, float(slopes.a), float(slopes.b), 1.0])
    x_break = u_break * np.exp(params["log_scale_in"]) + params["shift_in"]
    x_tails = rad1d_inverse(np.array([-12.0, 12.0]), np.array([0, 2]), params)
    edges = np.concatenate([[x_tails[0]], x_break, [x_tails[1]]])

    def integrand(x):
        px = np.exp(rad1d_forward(x, params)[0])
        return px if weight is None else px * weight(x)

    return sum(integrate(integrand, lo, hi, n_panels=50) for lo, hi in zip(edges[:-1], edges[1:]))


def step_2_rad1d():
    print("== Step 2: the 1-D Rad model (radref.core.layer1d, eq. 15 and 23) ==")
    params = rad1d_init(random_state=0)
    slopes, _ = slopes_forward(params["p_logits"], params["q_logits"])
    alphas = np.exp([slopes.log_alpha_minus, slopes.log_alpha_1, slopes.log_alpha_2,
                     slopes.log_alpha_3, slopes.log_alpha_plus])
    print("slopes alpha_-, alpha_1, alpha_2, alpha_3, alpha_+ = "
          + ", ".join(f"{a:.4f}" for a in alphas))
    print(f"breakpoints a = {float(slopes.a):.4f}, b = {float(slopes.b):.4f}; "
          f"1/alpha_1 + 1/alpha_2 + 1/alpha_3 = {np.sum(1 / alphas[1:4]):.15f}")
    mass = _rad1d_integral(params)
    mean = _rad1d_integral(params, weight=lambda x: x)
    second = _rad1d_integral(params, weight=lambda x: x * x)
    print(f"integral of p(x) dx               {mass:.12f}")
    x, k = rad1d_sample(200_000, params, random_state=1)
    std = np.sqrt(second - mean**2)
    print(f"mean of p: {mean:.4f}, exact samples: {x.mean():.4f} "
          f"(standard error {x.std() / np.sqrt(x.size):.4f})")
    print(f"std  of p: {std:.4f}, exact samples: {x.std():.4f}")
    _, cache = rad1d_forward(x, params)
    print(f"exact inference gives back the sampled branch k for "
          f"{np.mean(cache['k'] == k):.0%} of the samples; branch frequencies "
          + ", ".join(f"{np.mean(k == j):.3f}" for j in range(3)))


def simd_level():
    """NumPy's SIMD dispatch targets enabled on this CPU, joined by ``+`` (e.g.
    ``X86_V3+X86_V4+AVX512_ICL``; ``NPY_DISABLE_CPU_FEATURES`` removes some):
    its exp, log, tanh kernels differ per target, in the last bits."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    enabled = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    return "+".join(enabled) if enabled else "baseline"


def blas_description():
    """NumPy's version and SIMD level, and the BLAS library and kernel it calls
    (threadpoolctl names the kernel; without it the kernel is reported unknown)."""
    numpy = f"NumPy {np.__version__} ({simd_level()} SIMD)"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"{numpy}, BLAS unknown (install threadpoolctl to name it)"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            kernel = lib.get("architecture") or "unknown"
            return (f"{numpy}, BLAS {lib.get('internal_api')} "
                    f"{lib.get('version')} ({kernel} kernel)")
    return f"{numpy}, BLAS unknown (threadpoolctl found none)"


def step_3_two_moons():
    print("== Step 3: RadFlow on two moons (radref.RadFlow, radref.datasets) ==")
    print(f"computed with {blas_description()}")
    X_train, X_test = datasets.train_test_split_samples("two_moons", 10_000, 5_000,
                                                        random_state=0)
    best, best_se = datasets.negative_entropy("two_moons")
    print(f"train {X_train.shape}, test {X_test.shape}; best achievable mean "
          f"log-likelihood (negative entropy) {best:.3f} +- {best_se:.3f} nats")
    model = radref.RadFlow(n_layers=6, hidden=8, steps=1500, batch_size=500, lr=5e-3,
                           eval_every=250, progress=False, random_state=0)
    start = time.perf_counter()
    model.fit(X_train, X_val=X_test)
    seconds = time.perf_counter() - start
    print(f"{model.n_parameters()} parameters, 1500 Adam steps (batch 500, lr 5e-3)")
    for step, value in zip(model.history_["val_step"], model.history_["val_loglik"]):
        print(f"  step {step:5d}: held-out mean log-likelihood {value:+.4f}")
    print(f"test mean log-likelihood {model.score(X_test):+.4f} nats "
          f"(gap to the best {best - model.score(X_test):.3f})")
    Z, K = model.infer(X_test)
    X_back = model.inverse_transform(Z, K)
    print(f"exact inference and inverse: max |x - f^-1(f(x))| = "
          f"{np.max(np.abs(X_back - X_test)):.1e}")
    print(f"latent Z: mean ({Z[:, 0].mean():+.3f}, {Z[:, 1].mean():+.3f}), "
          f"std ({Z[:, 0].std():.3f}, {Z[:, 1].std():.3f})  (N(0, I) would give 0 and 1)")
    folded = K >= 0
    print("share of test points on each branch k = 0, 1, 2, per layer "
          "(transformed column only):")
    for layer in range(K.shape[1]):
        ks = K[:, layer][folded[:, layer]]
        print(f"  layer {layer}: " + ", ".join(f"{np.mean(ks == j):.3f}" for j in range(3)))
    samples = model.sample(5000, random_state=1)
    true_logp = datasets.log_density("two_moons", samples)
    print(f"5000 exact samples, log-density under the true two-moons density: "
          f"median {np.median(true_logp):+.4f}, mean {np.mean(true_logp):+.4f} nats")
    print(f"(training took {seconds:.0f} s)", file=sys.stderr)


STEPS = (step_1_one_fold, step_2_rad1d, step_3_two_moons)
PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
#: the page shows the output of step <n> between these two lines
BEGIN = "<!-- tutorial.py output, step {n}: regenerate with python validation/tutorial.py --update-docs -->"
END = "<!-- end of tutorial.py output, step {n} -->"


def run_steps():
    """Run the three steps, printing each; return the text each printed."""
    outputs = []
    for number, step in enumerate(STEPS):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            step()
        sys.stdout.write(("\n" if number else "") + buffer.getvalue())
        sys.stdout.flush()
        outputs.append(buffer.getvalue().rstrip("\n"))
    return outputs


def page_outputs(text, where=PAGE):
    """The output blocks of the page ``text`` (read from ``where``), one string per step."""
    blocks = []
    for n in range(1, len(STEPS) + 1):
        pattern = (re.escape(BEGIN.format(n=n)) + r"\n```text\n(.*?)\n```\n"
                   + re.escape(END.format(n=n)))
        match = re.search(pattern, text, flags=re.DOTALL)
        if match is None:
            raise ValueError(f"{where}: no output block of step {n} between the lines\n"
                             f"{BEGIN.format(n=n)}\n```text\n...\n```\n{END.format(n=n)}")
        blocks.append(match.group(1))
    return blocks


def update_page(outputs, page=PAGE):
    """Write ``outputs`` (one string per step) between the markers of ``page``."""
    text = page.read_text(encoding="utf-8")
    page_outputs(text, page)  # every marker is there
    for n, output in enumerate(outputs, start=1):
        pattern = (re.escape(BEGIN.format(n=n)) + r"\n```text\n.*?\n```\n"
                   + re.escape(END.format(n=n)))
        block = f"{BEGIN.format(n=n)}\n```text\n{output}\n```\n{END.format(n=n)}"
        text = re.sub(pattern, lambda _: block, text, flags=re.DOTALL)
    page.write_text(text, encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true",
                        help=f"write the output into {PAGE.relative_to(PAGE.parent.parent)}")
    args = parser.parse_args(argv)
    np.set_printoptions(precision=4)
    outputs = run_steps()
    if args.update_docs:
        update_page(outputs)
        print(f"wrote the output of the {len(outputs)} steps into {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
