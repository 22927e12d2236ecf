"""Independent autodiff cross-check of radref's log-likelihood and gradients.

Re-implements the Rad and Real NVP log-likelihoods in PyTorch (CPU, float64;
the model lives in validation/peers/torch_flows.py, shared with the benchmark)
straight from the formulas of the Rad notes (slopes in log space from the
boundary gating P, Q; five-piece surjection with radref's tie-break rule;
trigonometric gating; affine couplings; standard normal base) -- none of
radref's forward or backward code is called for the torch side -- and lets
torch's autograd differentiate it.  Only radref's *conventions* are shared:
the flat parameter names, the conditioner output column layout, the
alternating masks and the 0-based k.

1. For each of the six problems of radref.datasets, a Rad flow and a Real NVP
   flow (paper architectures) are trained briefly with radref (200 Adam
   steps), so that the parameters are non-trivial.  On 1000 held-out points
   the per-point log-likelihoods must agree to 1e-12 (relative, max norm) and
   the gradient of the mean log-likelihood with respect to every parameter
   array to 1e-10 (radref.reference.gradcheck.max_norm_relative_error).
   The inferred z and k are compared as well.
2. The torch implementation is run as a *port* on the golden flow cases
   (``radref golden --where``, blocks rad_flow and realnvp_flow, except the
   cases flagged OutOfRange): in float64 it must
   pass ``radref check-port`` at the float64 tolerances, and in float32 (inputs
   and parameters rounded to float32, all arithmetic in float32) at the
   float32 tolerances -- the measured float32 errors back the tolerances
   documented in docs/golden.md.

Run from the repository root (needs ``pip install torch==2.13.0``; torch is
never a runtime dependency of radref)::

    python validation/crosscheck_torch.py > validation/crosscheck_torch.txt

Exit status 0 if every check passes, 1 otherwise.
"""
import os
import sys
import time

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("crosscheck_torch.py needs PyTorch: pip install torch==2.13.0")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from radref import datasets  # noqa: E402
from radref.reference import golden  # noqa: E402
from radref.user.estimators import RadFlow, RealNVPFlow  # noqa: E402
from radref.core.flow import flow_forward  # noqa: E402
from radref.reference.gradcheck import max_norm_relative_error  # noqa: E402
from radref.training.train import mean_loglik_and_grad  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers.torch_flows import t_flow, to_torch  # noqa: E402  (the torch model)

LOGLIK_TOL = 1e-12
GRAD_TOL = 1e-10
STEPS = 200
N_TRAIN, N_EVAL = 2000, 1000


# ---------------------------------------------------------------- part 1

def crosscheck_problem(problem, cls):
    X = datasets.sample(problem, N_TRAIN, random_state=0)
    X_eval = datasets.sample(problem, N_EVAL, random_state=1)
    model = cls(random_state=0, steps=STEPS, lr=5e-3, progress=False).fit(X)
    config, params = model.config_, model.params_
    log_px, z, k, _ = flow_forward(X_eval, params, config)
    mean_ll, grads = mean_loglik_and_grad(X_eval, params, config)

    tp = to_torch(params, torch.float64)
    t_log_px, t_z, t_k = t_flow(torch.tensor(X_eval), tp, config.kind, config.n_layers)
    t_mean = torch.mean(t_log_px)
    t_mean.backward()
    ll_err = max_norm_relative_error(t_log_px.detach().numpy(), log_px)
    mean_err = abs(float(t_mean.detach()) - mean_ll) / abs(mean_ll)
    grad_errs = {name: max_norm_relative_error(tp[name].grad.numpy(), grads[name])
                 for name in params}
    worst = max(grad_errs, key=grad_errs.get)
    z_err = max_norm_relative_error(t_z.detach().numpy(), z)
    k_diff = int(np.sum(t_k.numpy() != k))
    ok = ll_err <= LOGLIK_TOL and mean_err <= LOGLIK_TOL and grad_errs[worst] <= GRAD_TOL \
        and k_diff == 0 and z_err <= LOGLIK_TOL
    kinds = np.bincount(k[k >= 0].ravel(), minlength=3) if config.kind == "rad" else None
    return dict(problem=problem, model=cls.__name__, n_params=model.n_parameters(),
                mean_ll=mean_ll, ll_err=ll_err, mean_err=mean_err, grad_err=grad_errs[worst],
                worst=worst, z_err=z_err, k_diff=k_diff, ok=ok, kinds=kinds)


# ---------------------------------------------------------------- part 2

def torch_port(golden_doc, dtype):
    """The torch implementation as a port of the flow blocks: a partial port document.
    The cases flagged OutOfRange are left out: the torch model has no range screening
    (docs/golden.md §4), which its users never need (their data lie within 1e120)."""
    blocks = {}
    for bname in ("rad_flow", "realnvp_flow"):
        cases = []
        for case in golden_doc["blocks"][bname]["cases"]:
            if "OutOfRange" in case["flags"]:
                continue
            cfg = case["config"]
            x = torch.tensor(case["inputs"]["x"], dtype=dtype, requires_grad=True)
            tp = to_torch(case["params"], dtype)
            log_px, z, k, layer_z, layer_term = t_flow(x, tp, cfg["kind"], cfg["n_layers"],
                                                       layers=True)
            w = torch.tensor(case["loss_weights"]["log_px"], dtype=dtype)
            torch.sum(w * log_px).backward()
            grads = {"x": x.grad.double().numpy()}
            grads.update({name: tp[name].grad.double().numpy() for name in case["params"]})
            cases.append({"id": case["id"], "comment": "", "flags": [], "config": {},
                          "inputs": {}, "params": {}, "loss_weights": {},
                          "outputs": {"log_px": log_px.detach().double().numpy(),
                                      "z": z.detach().double().numpy(), "k": k.numpy(),
                                      "layer_z": layer_z.detach().double().numpy(),
                                      "layer_term": layer_term.detach().double().numpy()},
                          "grads": grads})
        blocks[bname] = {"cases": cases}
    return {"schema": golden.SCHEMA, "schema_version": golden.SCHEMA_VERSION, "blocks": blocks}


def main():
    torch.set_num_threads(1)
    start = time.perf_counter()
    print("radref vs an independent PyTorch implementation (autograd), float64")
    print(f"torch {torch.__version__}, numpy {np.__version__}; models trained with radref for "
          f"{STEPS} Adam steps (lr 5e-3, batch 500) on {N_TRAIN} points; checked on "
          f"{N_EVAL} held-out points")
    print(f"tolerances: per-point log-likelihood and z {LOGLIK_TOL:.0e}, gradient of the mean "
          f"log-likelihood {GRAD_TOL:.0e} (relative, max norm per array; k exactly)")
    print()
    header = (f"{'problem':<12s} {'model':<12s} {'params':>6s} {'mean loglik':>12s} "
              f"{'loglik err':>10s} {'mean err':>9s} {'z err':>9s} {'k diff':>6s} "
              f"{'grad err':>9s}  {'worst array':<14s} result")
    print(header)
    print("-" * len(header))
    all_ok = True
    rows = []
    for problem in datasets.PROBLEMS:
        for cls in (RadFlow, RealNVPFlow):
            r = crosscheck_problem(problem, cls)
            rows.append(r)
            all_ok &= r["ok"]
            print(f"{r['problem']:<12s} {r['model']:<12s} {r['n_params']:6d} {r['mean_ll']:+12.6f} "
                  f"{r['ll_err']:10.2e} {r['mean_err']:9.2e} {r['z_err']:9.2e} {r['k_diff']:6d} "
                  f"{r['grad_err']:9.2e}  {r['worst']:<14s} {'pass' if r['ok'] else 'FAIL'}",
                  flush=True)
    print()
    print(f"max over problems and models: loglik err {max(r['ll_err'] for r in rows):.2e}, "
          f"mean err {max(r['mean_err'] for r in rows):.2e}, "
          f"grad err {max(r['grad_err'] for r in rows):.2e}")
    counts = sum(r["kinds"] for r in rows if r["kinds"] is not None)
    print(f"branches k = 0, 1, 2 over all Rad evaluations (points x layers x transformed "
          f"columns): {counts.tolist()}")

    golden_dir = golden.default_golden_dir()
    gold = golden.load_document(os.path.join(golden_dir, golden.JSON_NAME))
    for dtype, tolerance in ((torch.float64, "float64"), (torch.float32, "float32")):
        print()
        print(f"The torch implementation in {tolerance} as a port of the golden flow blocks "
              f"(radref check-port --partial --tolerance {tolerance}):")
        port = torch_port(gold, dtype)
        report = golden.check_port(port, gold, tolerance=tolerance, partial=True)
        lines = golden.format_report(report).splitlines()
        print("\n".join(line for line in lines if not line.startswith("not provided")))
        print(f"({len(report.missing)} golden fields not provided by this port: inverse and "
              f"sampling outputs, the cases flagged OutOfRange, and the other blocks)")
        all_ok &= report.passed
    print()
    print(f"{'ALL CHECKS PASS' if all_ok else 'SOME CHECKS FAILED'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
