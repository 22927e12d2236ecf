"""Rad and Real NVP log-likelihoods in JAX (CPU, float64, jit).

A line-by-line transcription of the PyTorch model in :mod:`peers.torch_flows`
(itself written from the formulas of the Rad notes) into ``jax.numpy``; none of
radref's code is used, ``jax.grad`` differentiates it.  Shared with radref are
only the conventions: flat parameter names, conditioner column layout,
alternating masks.  The discrete latents ``k`` are computed inside a layer (the
gating term needs them) but not returned, since the benchmark needs only the
log-density.

Importing this module switches JAX to float64 (``jax_enable_x64``).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

_ABOVE_ONE = math.nextafter(1.0, 2.0)
_BELOW_MINUS_ONE = math.nextafter(-1.0, -2.0)


def j_mlp(x, p, prefix, tanh_head):
    h = jax.nn.relu(x @ p[prefix + "W1"] + p[prefix + "b1"])
    a = h @ p[prefix + "W2"] + p[prefix + "b2"]
    return p[prefix + "scale"] * jnp.tanh(a) if tanh_head else a


def j_masks(dim, layer):
    columns = np.arange(dim)
    return columns[(columns + layer) % 2 == 0], columns[(columns + layer) % 2 == 1]


def j_rad_layer(x, p, layer):
    """One Rad coupling layer; returns (z, term).  Same formulas as
    :func:`peers.torch_flows.t_rad_layer`."""
    n, dim = x.shape
    cols_a, cols_b = j_masks(dim, layer)
    nb = len(cols_b)
    c = j_mlp(x[:, cols_a], p, f"{layer}.cond.", True).reshape(n, nb, 10)
    s_in, t_in = c[..., 0], c[..., 1]
    s_out, t_out = c[..., 8], c[..., 9]
    lP = jax.nn.log_softmax(c[..., 2:5], axis=-1)
    lQ = jax.nn.log_softmax(c[..., 5:8], axis=-1)
    L2 = jax.nn.logsumexp(jnp.stack([jnp.zeros_like(s_in), lP[..., 0] - lP[..., 1],
                                     lQ[..., 2] - lQ[..., 1]], axis=-1), axis=-1)
    L1 = L2 + lP[..., 1] - lP[..., 0]
    L3 = L2 + lQ[..., 1] - lQ[..., 2]
    Lm = L1 + lQ[..., 0]
    Lp = L3 + lP[..., 2]
    a = 2.0 * jnp.exp(-L1) - 1.0
    b = 1.0 - 2.0 * jnp.exp(-L3)

    u = (x[:, cols_b] - t_in) * jnp.exp(-s_in)
    # five pieces, tie-break: [-1, 1] closed, a and b belong to the right piece
    left_out, right_out = u < -1.0, u > 1.0
    first = (u >= -1.0) & (u < a)
    middle = (u >= a) & (u < b)
    L = jnp.where(left_out, Lm, jnp.where(first, L1, jnp.where(
        middle, L2, jnp.where(right_out, Lp, L3))))
    slope = jnp.exp(L)
    v = jnp.where(left_out | first, slope * (u + 1.0) - 1.0,
                  jnp.where(middle, -slope * (u - a) + 1.0, slope * (u - 1.0) + 1.0))
    inside_u = ~(left_out | right_out)
    v = jnp.where(inside_u, jnp.clip(v, -1.0, 1.0),
                  jnp.where(right_out, jnp.maximum(v, _ABOVE_ONE),
                            jnp.minimum(v, _BELOW_MINUS_ONE)))
    k = jnp.where(left_out | first, 0, jnp.where(middle, 1, 2))

    z = x.at[:, cols_b].set(v * jnp.exp(s_out) + t_out)
    s = j_mlp(z, p, f"{layer}.gate.", False).reshape(n, nb, 3)
    vc = jnp.clip(v, -1.0, 1.0)
    cw = 0.5 * (1.0 + jnp.cos(math.pi * vc))
    wp = 0.5 * (1.0 + jnp.sin(0.5 * math.pi * vc))
    wq = 0.5 * (1.0 - jnp.sin(0.5 * math.pi * vc))
    lam = cw[..., None] * s + wp[..., None] * lP + wq[..., None] * lQ
    log_gate_in = jnp.take_along_axis(jax.nn.log_softmax(lam, axis=-1), k[..., None],
                                      axis=-1)[..., 0]
    log_gate = jnp.where(jnp.abs(v) <= 1.0, log_gate_in, 0.0)
    term = jnp.sum(log_gate + L - s_in + s_out, axis=1)
    return z, term


def j_affine_layer(x, p, layer):
    n, dim = x.shape
    cols_a, cols_b = j_masks(dim, layer)
    c = j_mlp(x[:, cols_a], p, f"{layer}.cond.", True).reshape(n, len(cols_b), 2)
    z = x.at[:, cols_b].set(x[:, cols_b] * jnp.exp(c[..., 0]) + c[..., 1])
    return z, jnp.sum(c[..., 0], axis=1)


def j_flow(x, p, kind, n_layers):
    """Per-point ``log p(x)``: standard normal base plus the layer terms."""
    dim = x.shape[1]
    layer_fn = j_rad_layer if kind == "rad" else j_affine_layer
    total = jnp.zeros(x.shape[0], dtype=x.dtype)
    z = x
    for layer in range(n_layers):
        z, term = layer_fn(z, p, layer)
        total = total + term
    return total - 0.5 * jnp.sum(z * z, axis=1) - 0.5 * dim * math.log(2.0 * math.pi)


def make_functions(kind, n_layers, adam):
    """Jitted ``loglik(params, x)`` and ``step(params, m, v, t, x)``.

    ``step`` computes the mean log-likelihood and its gradient and applies one
    Adam step on ``-mean`` with radref's formula (docs/derivations-mlp-adam.md),
    written by hand: ``t`` counts the updates already applied.  It returns
    ``(mean loglik, params, m, v, t)``; the old ``params``, ``m`` and ``v`` are
    donated (their buffers may be reused).
    """
    lr, beta1, beta2, eps = adam.lr, adam.beta1, adam.beta2, adam.eps

    def loglik(params, x):
        return j_flow(x, params, kind, n_layers)

    def mean_loglik(params, x):
        return jnp.mean(loglik(params, x))

    def step(params, m, v, t, x):
        value, grads = jax.value_and_grad(mean_loglik)(params, x)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m_, g: beta1 * m_ + (1.0 - beta1) * (-g), m, grads)
        v = jax.tree_util.tree_map(lambda v_, g: beta2 * v_ + (1.0 - beta2) * (g * g), v, grads)
        c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        params = jax.tree_util.tree_map(
            lambda p_, m_, v_: p_ - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps), params, m, v)
        return value, params, m, v, t

    return jax.jit(loglik), jax.jit(step, donate_argnums=(0, 1, 2))


class Peer:
    """The JAX model as a benchmark peer: ``jax.jit``, CPU, float64.

    Holds its own copy of a radref parameter dict; ``adam`` is any object with
    ``lr``, ``beta1``, ``beta2``, ``eps`` and ``config`` needs ``kind`` and
    ``n_layers``.  Every call blocks until its result is ready, so a timed call
    includes the computation and not only its dispatch.  The first call with a
    new batch shape compiles (the benchmark's warm-up does that).
    """

    name = "jax"
    label = "JAX jit"

    def __init__(self, params, config, adam):
        self.params = {name: jnp.asarray(np.array(value, dtype=np.float64))
                       for name, value in params.items()}
        self.m = {name: jnp.zeros_like(value) for name, value in self.params.items()}
        self.v = {name: jnp.zeros_like(value) for name, value in self.params.items()}
        self.t = jnp.asarray(0.0)
        self._loglik, self._step = make_functions(config.kind, config.n_layers, adam)

    @staticmethod
    def info():
        import jaxlib
        return {"version": jax.__version__, "jaxlib": jaxlib.__version__,
                "devices": [str(d) for d in jax.devices()], "x64": bool(jax.config.jax_enable_x64),
                "mode": "jax.jit of the whole step (value_and_grad + hand-written Adam, "
                        "donated buffers)"}

    @staticmethod
    def prepare(x):
        """A batch as a device array (done once, outside the timing)."""
        return jax.device_put(np.ascontiguousarray(x, dtype=np.float64))

    def compile_loglik(self, x):
        """Compile the log-density for the shape of ``x`` ahead of time, without
        running it.  Returns ``(run, memory)``: ``run()`` evaluates the
        log-density of ``x`` with no further compilation, ``memory`` is XLA's
        ``memory_analysis()`` of the executable (or None)."""
        compiled = self._loglik.lower(self.params, x).compile()
        return (lambda: compiled(self.params, x).block_until_ready()), compiled.memory_analysis()

    def loglik(self, x):
        """Per-point log-density of a prepared batch (no gradient)."""
        return self._loglik(self.params, x).block_until_ready()

    @staticmethod
    def to_numpy(value):
        return np.asarray(value)

    def train_step(self, x):
        """Mean log-likelihood, gradient and one Adam step; returns the mean
        log-likelihood before the step."""
        value, self.params, self.m, self.v, self.t = self._step(
            self.params, self.m, self.v, self.t, x)
        jax.block_until_ready((value, self.params, self.m, self.v))
        return float(value)

    def params_numpy(self):
        return {name: np.array(value) for name, value in self.params.items()}
