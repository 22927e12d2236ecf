"""Rad and Real NVP log-likelihoods in PyTorch (CPU; float64 or float32).

Written straight from the formulas of the Rad notes (slopes in log space from the
boundary gating P, Q; five-piece surjection with radref's tie-break rule;
trigonometric gating; affine couplings; standard normal base); none of radref's
forward or backward code is used, torch's autograd differentiates it.  Only
radref's *conventions* are shared: the flat parameter names, the conditioner
output column layout, the alternating masks and the 0-based k.

Used by ``validation/crosscheck_torch.py`` (the autodiff cross-check) and, through
:class:`Peer`, by ``validation/benchmark.py``.
"""
import math

import numpy as np
import torch

def t_mlp(x, p, prefix, tanh_head):
    h = torch.relu(x @ p[prefix + "W1"] + p[prefix + "b1"])
    a = h @ p[prefix + "W2"] + p[prefix + "b2"]
    return p[prefix + "scale"] * torch.tanh(a) if tanh_head else a


def t_masks(dim, layer):
    cols_a = [j for j in range(dim) if (j + layer) % 2 == 0]
    cols_b = [j for j in range(dim) if (j + layer) % 2 == 1]
    return cols_a, cols_b


def t_rad_layer(x, p, layer):
    """One Rad coupling layer (notes §1-4); returns (z, k, term)."""
    n, dim = x.shape
    cols_a, cols_b = t_masks(dim, layer)
    nb = len(cols_b)
    c = t_mlp(x[:, cols_a], p, f"{layer}.cond.", True).reshape(n, nb, 10)
    s_in, t_in = c[..., 0], c[..., 1]
    s_out, t_out = c[..., 8], c[..., 9]
    lP = torch.log_softmax(c[..., 2:5], dim=-1)  # log P, P = p(. | v = +1)
    lQ = torch.log_softmax(c[..., 5:8], dim=-1)  # log Q, Q = p(. | v = -1)
    # slopes in log space (notes §3 and §8; paper indices 1, 2, 3 -> 0, 1, 2)
    L2 = torch.logsumexp(torch.stack([torch.zeros_like(s_in), lP[..., 0] - lP[..., 1],
                                      lQ[..., 2] - lQ[..., 1]], dim=-1), dim=-1)
    L1 = L2 + lP[..., 1] - lP[..., 0]
    L3 = L2 + lQ[..., 1] - lQ[..., 2]
    Lm = L1 + lQ[..., 0]
    Lp = L3 + lP[..., 2]
    a = 2.0 * torch.exp(-L1) - 1.0
    b = 1.0 - 2.0 * torch.exp(-L3)

    u = (x[:, cols_b] - t_in) * torch.exp(-s_in)
    # the five pieces of eq. 23, tie-break: [-1, 1] closed, a and b belong to the right
    with torch.no_grad():
        left_out, right_out = u < -1.0, u > 1.0
        first = (u >= -1.0) & (u < a)
        middle = (u >= a) & (u < b)
    one = torch.ones_like(u)
    L = torch.where(left_out, Lm, torch.where(first, L1, torch.where(
        middle, L2, torch.where(right_out, Lp, L3))))
    slope = torch.exp(L)
    v = torch.where(left_out | first, slope * (u + 1.0) - 1.0,
                    torch.where(middle, -slope * (u - a) + 1.0, slope * (u - 1.0) + 1.0))
    # rounding must not carry v across +-1 against u (|u| <= 1 iff |v| <= 1)
    inside_u = ~(left_out | right_out)
    v = torch.where(inside_u, torch.clamp(v, -1.0, 1.0),
                    torch.where(right_out, torch.clamp(v, min=math.nextafter(1.0, 2.0)),
                                torch.clamp(v, max=math.nextafter(-1.0, -2.0))))
    k = torch.where(left_out | first, 0, torch.where(middle, 1, 2))

    z = x.clone()
    z[:, cols_b] = v * torch.exp(s_out) + t_out
    s = t_mlp(z, p, f"{layer}.gate.", False).reshape(n, nb, 3)
    # gating (notes §2): logits interpolate s, log P, log Q with trigonometric weights
    vc = torch.clamp(v, -1.0, 1.0)
    cw = 0.5 * (1.0 + torch.cos(math.pi * vc))
    wp = 0.5 * (1.0 + torch.sin(0.5 * math.pi * vc))
    wq = 0.5 * (1.0 - torch.sin(0.5 * math.pi * vc))
    lam = cw[..., None] * s + wp[..., None] * lP + wq[..., None] * lQ
    log_gate_in = torch.gather(torch.log_softmax(lam, dim=-1), -1, k[..., None])[..., 0]
    log_gate = torch.where(torch.abs(v) <= 1.0, log_gate_in, torch.zeros_like(v))
    term = torch.sum(log_gate + L - s_in + s_out, dim=1)
    return z, k, term


def t_affine_layer(x, p, layer):
    n, dim = x.shape
    cols_a, cols_b = t_masks(dim, layer)
    c = t_mlp(x[:, cols_a], p, f"{layer}.cond.", True).reshape(n, len(cols_b), 2)
    z = x.clone()
    z[:, cols_b] = x[:, cols_b] * torch.exp(c[..., 0]) + c[..., 1]
    return z, None, torch.sum(c[..., 0], dim=1)


def t_flow(x, p, kind, n_layers, layers=False):
    """log p(x) = log N(z_L; 0, I) + sum of the layer terms; returns (log_px, z, k)
    and, with ``layers``, the stacked output and term of every layer."""
    n, dim = x.shape
    layer_fn = t_rad_layer if kind == "rad" else t_affine_layer
    total = torch.zeros(n, dtype=x.dtype)
    k = torch.full((n, n_layers, dim), -1, dtype=torch.int64)
    z = x
    zs, terms = [], []
    for layer in range(n_layers):
        z, k_layer, term = layer_fn(z, p, layer)
        if k_layer is not None:
            k[:, layer, t_masks(dim, layer)[1]] = k_layer
        total = total + term
        zs.append(z)
        terms.append(term)
    log_base = -0.5 * torch.sum(z * z, dim=1) - 0.5 * dim * math.log(2.0 * math.pi)
    if layers:
        return total + log_base, z, k, torch.stack(zs), torch.stack(terms)
    return total + log_base, z, k


def to_torch(params, dtype):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}


# ------------------------------------------------------------------ benchmark peer

class Peer:
    """The torch model as a benchmark peer: eager mode, CPU, float64.

    Holds its own copy of a radref parameter dict (``params``) as leaf tensors
    and a ``torch.optim.Adam`` with the hyperparameters of ``adam`` (any object
    with ``lr``, ``beta1``, ``beta2``, ``eps``, e.g. radref's AdamConfig).
    ``config`` needs ``kind`` and ``n_layers`` (radref's FlowConfig).
    Thread count: set by the caller (``torch.set_num_threads``).
    """

    name = "torch"
    label = "PyTorch eager"

    def __init__(self, params, config, adam):
        self.kind, self.n_layers = config.kind, config.n_layers
        self.params = to_torch(params, torch.float64)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=adam.lr,
                                          betas=(adam.beta1, adam.beta2), eps=adam.eps)

    @staticmethod
    def info():
        return {"version": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "device": "cpu",
                "mode": "eager, autograd; torch.optim.Adam with its defaults"}

    @staticmethod
    def prepare(x):
        """A batch in the peer's own format (done once, outside the timing)."""
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))

    def loglik(self, x):
        """Per-point log-density of a prepared batch, no gradient."""
        with torch.inference_mode():
            return t_flow(x, self.params, self.kind, self.n_layers)[0]

    @staticmethod
    def to_numpy(value):
        return value.detach().numpy()

    def train_step(self, x):
        """Mean log-likelihood of a prepared batch, backward, one Adam step on
        ``-mean``; returns the mean log-likelihood before the step."""
        self.optimizer.zero_grad(set_to_none=True)
        loglik = torch.mean(t_flow(x, self.params, self.kind, self.n_layers)[0])
        (-loglik).backward()
        self.optimizer.step()
        return float(loglik.detach())

    def params_numpy(self):
        return {name: p.detach().numpy().copy() for name, p in self.params.items()}
