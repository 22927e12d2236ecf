"""An independent port of Rad, written from docs/golden.md alone, as a test helper.

Nothing of radref's numerics is imported (only its checker, in
:func:`failing_cases`): the formulas, layouts and conventions are those
stated in docs/golden.md, and the gradients come from a small reverse-mode
automatic differentiation written here (:class:`Var`), not from radref's
hand-derived backward passes.  The port computes in a chosen precision
(``dtype``): float64, float32 (a port "computing entirely in float32": inputs
rounded once, every operation in float32) or longdouble (x87 extended
precision, to estimate the golden vectors' own rounding errors).

``variants`` switches on deliberately wrong ("naive") versions of single
conventions, the porting mistakes the golden cases must catch:

- ``"no_clip"``            v is not clipped after the surjection
- ``"clip_grad_zero"``     the clip passes no gradient where it changed v
- ``"direct_product"``     ``exp(L) * (u - u0)`` formed directly (inf * 0 = NaN,
                           inf where the product is finite)
- ``"no_max_shift"``       log-softmax as ``x - log(sum(exp(x)))``
- ``"log_of_softmax"``     log-softmax as ``log(softmax(x))`` (probability space)
- ``"minus_one_left"``     ``u = -1`` is always the piece on its left inside
                           [-1, 1] (piece 1), even where ``a`` rounds to -1
- ``"tie_nonstrict"``      breakpoints belong to the piece on their left (``<=``
                           instead of ``<``: ``u = a`` on piece 1, ``u = 1`` on piece 4)
- ``"strict_cdf"``         branch sampling with ``u > c`` instead of ``u >= c``
- ``"no_range_screen"``    no out-of-range screening in the flows' forward pass
- ``"no_gate_zero"``       a Rad layer's gating network reads the out-of-range rows of
                           ``z`` as they are (no stand-in ``z = 0``)
- ``"sample_gate_at_zero"``  the sampling step's gating network reads ``z = 0`` for
                           out-of-range rows (golden.md: it reads ``z`` as it is)
- ``"range_in_working_precision"``  the range test ``|z| <= 1e120`` with 1e120 rounded
                           to the working precision (inf in float32: inf passes)
- ``"float64_thresholds"`` the overflow-safe product's "plain product" region of
                           float64 used in any precision (exp(95) overflows float32)
- ``"naive_one_minus_p"``  ``1 - p`` formed as ``1 - exp(log p)`` in the
                           gradient of ``log p(k | z)`` (loses digits in float32)
- ``"one_minus_tanh_squared"``  the tanh head's derivative formed as
                           ``1 - tanh(a)^2`` (loses digits where tanh is near +-1)
- ``"eps_in_sqrt"``        Adam with ``sqrt(v_hat + eps)``
- ``"strict_range"``       the range test ``|z| < 1e120`` (golden.md: an entry of
                           exactly 1e120 is in range)

``EQUIVALENT_VARIANTS`` are mathematically identical formulations that a port
may well choose; each must *pass* (docs/golden.md §5: the tolerances cover them):

- ``"logaddexp"``          ``log_alpha_2 = logaddexp(0, logaddexp(r_p, r_q))``
- ``"reversed_sums"``      every sum in the other order (log-softmax's sum of
                           exponentials, the sums of a layer's terms, matrix
                           products over their inner index, the gradients' sums
                           over rows)
- ``"expm1_forms"``        ``a = expm1(log 2 - log_alpha_1)``, ``b = -expm1(log 2 -
                           log_alpha_3)`` and ``1 - p_k = -expm1(log p_k)``
- ``"cos_squared"``        the gating weight ``(1 + cos pi v) / 2`` as ``cos(pi v / 2)^2``
- ``"naive_one_minus_p"``  (also above) ``1 - p_k`` formed directly as ``1 - exp(log p_k)``

Use :func:`run_port` to turn a golden document into a port document.
"""
import math

import numpy as np

RANGE = 1e120
VARIANTS = ("no_clip", "clip_grad_zero", "direct_product", "no_max_shift", "log_of_softmax",
            "minus_one_left", "tie_nonstrict", "strict_cdf", "no_range_screen", "no_gate_zero",
            "sample_gate_at_zero", "range_in_working_precision", "float64_thresholds",
            "naive_one_minus_p", "one_minus_tanh_squared", "eps_in_sqrt", "strict_range",
            "logaddexp", "reversed_sums", "expm1_forms", "cos_squared")
EQUIVALENT_VARIANTS = ("logaddexp", "reversed_sums", "expm1_forms", "cos_squared",
                       "naive_one_minus_p")


# ------------------------------------------------------------ reverse-mode AD

class Var:
    """A value on the tape: ``value`` (ndarray) and ``parents``, a tuple of
    ``(parent Var, vjp)`` with ``vjp(g)`` the gradient contribution to the parent."""

    __slots__ = ("value", "parents", "grad")

    def __init__(self, value, parents=()):
        self.value = value
        self.parents = parents
        self.grad = None

    @property
    def shape(self):
        return self.value.shape

    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        return mul(self, -1.0)


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the inverse of NumPy broadcasting)."""
    while g.ndim > len(shape):
        g = _sum(g, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = _sum(g, axis=axis, keepdims=True)
    return g


def _lift(x, like):
    if isinstance(x, Var):
        return x
    return Var(np.asarray(x, dtype=like.value.dtype))


def add(a, b):
    like = a if isinstance(a, Var) else b
    a, b = _lift(a, like), _lift(b, like)
    return Var(a.value + b.value, ((a, lambda g: _unbroadcast(g, a.shape)),
                                   (b, lambda g: _unbroadcast(g, b.shape))))


def sub(a, b):
    like = a if isinstance(a, Var) else b
    a, b = _lift(a, like), _lift(b, like)
    return Var(a.value - b.value, ((a, lambda g: _unbroadcast(g, a.shape)),
                                   (b, lambda g: _unbroadcast(-g, b.shape))))


def mul(a, b):
    like = a if isinstance(a, Var) else b
    a, b = _lift(a, like), _lift(b, like)
    return Var(a.value * b.value, ((a, lambda g: _unbroadcast(g * b.value, a.shape)),
                                   (b, lambda g: _unbroadcast(g * a.value, b.shape))))


def exp(a):
    out = np.exp(a.value)
    return Var(out, ((a, lambda g: g * out),))


def tanh(a, naive=False):
    """tanh; its derivative 1 - tanh(a)^2 formed as 4 e^(-2|a|) / (1 + e^(-2|a|))^2
    (golden.md §5: ``1 - t * t`` loses every digit where tanh rounds to +-1)."""
    t = np.tanh(a.value)
    if naive:
        sech2 = 1 - t * t
    else:
        e = np.exp(-2 * np.abs(a.value))
        sech2 = 4 * e / ((1 + e) * (1 + e))
    return Var(t, ((a, lambda g: g * sech2),))


def expm1(a):
    out = np.expm1(a.value)
    return Var(out, ((a, lambda g: g * (out + 1)),))


def sin(a):
    return Var(np.sin(a.value), ((a, lambda g: g * np.cos(a.value)),))


def cos(a):
    return Var(np.cos(a.value), ((a, lambda g: -g * np.sin(a.value)),))


def relu(a):
    """max(a, 0); derivative 0 at a == 0 (golden.md: ReLU'(0) = 0)."""
    on = a.value > 0
    return Var(np.where(on, a.value, 0).astype(a.value.dtype), ((a, lambda g: g * on),))


#: "reversed_sums": every sum in the other order (set by :class:`Port`).
REVERSED = {"on": False}


def _mm(x, y):
    """``x @ y``, summed over the inner index backwards under "reversed_sums"."""
    if REVERSED["on"]:
        return x[..., ::-1] @ y[::-1]
    return x @ y


def matmul(a, b):
    return Var(_mm(a.value, b.value), ((a, lambda g: _mm(g, b.value.T)),
                                       (b, lambda g: _mm(a.value.T, g))))


def _sum(x, axis=-1, keepdims=False):
    if REVERSED["on"]:
        x = np.flip(x, axis=axis)
    return x.sum(axis=axis, keepdims=keepdims)


def sum_last(a):
    return Var(_sum(a.value), ((a, lambda g: np.broadcast_to(g[..., None], a.shape)),))


def take(a, index, axis=-1):
    """``a`` indexed by an int array or int along ``axis`` (a gather)."""
    index = np.asarray(index)
    out = np.take(a.value, index, axis=axis)

    def vjp(g):
        full = np.zeros(a.shape, dtype=g.dtype)
        np.add.at(full, (slice(None),) * (axis % a.value.ndim) + (index,), g)
        return full
    return Var(out, ((a, vjp),))


def rows(a, index):
    """Rows ``index`` of ``a`` (bool mask or int array)."""
    out = a.value[index]

    def vjp(g):
        full = np.zeros(a.shape, dtype=g.dtype)
        full[index] = g
        return full
    return Var(out, ((a, vjp),))


def stack_last(parts):
    out = np.stack([p.value for p in parts], axis=-1)
    return Var(out, tuple((p, (lambda g, i=i: g[..., i])) for i, p in enumerate(parts)))


def set_columns(x, cols, y):
    """``x`` with columns ``cols`` replaced by ``y``."""
    out = x.value.copy()
    out[:, cols] = y.value

    def vjp_x(g):
        g = g.copy()
        g[:, cols] = 0
        return g
    return Var(out, ((x, vjp_x), (y, lambda g: g[:, cols])))


def reshape(a, shape):
    return Var(a.value.reshape(shape), ((a, lambda g: g.reshape(a.shape)),))


def where(mask, a, b):
    """``mask ? a : b`` elementwise (``mask`` a constant bool array)."""
    like = a if isinstance(a, Var) else b
    a, b = _lift(a, like), _lift(b, like)
    out = np.where(mask, a.value, b.value)
    return Var(out, ((a, lambda g: _unbroadcast(np.where(mask, g, 0), a.shape)),
                     (b, lambda g: _unbroadcast(np.where(mask, 0, g), b.shape))))


def pass_through(a, new_value, grad_mask=None):
    """A value with the derivative of the identity (``grad_mask``: where it is
    0 instead).  Used for the clips of golden.md §4."""
    if grad_mask is None:
        return Var(new_value, ((a, lambda g: g),))
    return Var(new_value, ((a, lambda g: np.where(grad_mask, 0, g)),))


def backward(out, seed):
    """Accumulate ``d(sum(seed * out)) / d var`` into ``var.grad`` for every Var."""
    order, seen = [], set()
    stack = [(out, False)]
    while stack:  # iterative depth-first topological sort
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent, _ in node.parents:
            if id(parent) not in seen:
                stack.append((parent, False))
    out.grad = np.asarray(seed, dtype=out.value.dtype)
    for node in reversed(order):
        if node.grad is None:
            continue
        for parent, vjp in node.parents:
            contribution = vjp(node.grad)
            parent.grad = contribution if parent.grad is None else parent.grad + contribution


# ------------------------------------------------------------------- the port

class Port:
    """Rad and Real NVP as docs/golden.md states them, in precision ``dtype``."""

    def __init__(self, dtype=np.float64, variants=()):
        unknown = set(variants) - set(VARIANTS)
        assert not unknown, unknown
        self.dtype = np.dtype(dtype)
        self.variants = set(variants)

    def const(self, x):
        with np.errstate(over="ignore"):  # beyond the range of float32: inf
            return Var(np.asarray(x, dtype=self.dtype))

    # -- log-softmax (golden.md §4: shift by the max, which carries no gradient)

    def log_softmax(self, x):
        if "log_of_softmax" in self.variants:
            e = np.exp(x.value - x.value.max(axis=-1, keepdims=True))
            prob = e / e.sum(axis=-1, keepdims=True)
            out = np.log(prob)
        elif "no_max_shift" in self.variants:
            out = x.value - np.log(np.exp(x.value).sum(axis=-1, keepdims=True))
        else:
            shifted = x.value - x.value.max(axis=-1, keepdims=True)
            out = shifted - np.log(_sum(np.exp(shifted), keepdims=True))

        def vjp(g):
            return g - np.exp(out) * _sum(g, keepdims=True)
        return Var(out, ((x, vjp),))

    def log_softmax_pick(self, x, k):
        """``log_softmax(x)[..., k]``; the gradient is ``g (onehot(k) - p)`` with
        ``1 - p_k`` formed as the sum of the other probabilities (golden.md §5:
        forming it as ``1 - p_k`` loses every digit when ``p_k`` rounds to 1)."""
        log_prob = self.log_softmax(x).value
        picked = np.take_along_axis(log_prob, k[..., None], axis=-1)[..., 0]
        prob = np.exp(log_prob)
        onehot = np.arange(x.shape[-1]) == k[..., None]

        def vjp(g):
            d = -prob * g[..., None]
            if "naive_one_minus_p" in self.variants:
                rest = 1 - np.take_along_axis(prob, k[..., None], axis=-1)[..., 0]
            elif "expm1_forms" in self.variants:
                rest = -np.expm1(picked)
            else:
                rest = _sum(np.where(onehot, 0, prob))
            return np.where(onehot, (rest * g)[..., None], d)
        return Var(picked, ((x, vjp),))

    # -- the overflow-safe product sigma * exp(L) * w (golden.md §4)

    def exp_times(self, log_scale, w):
        """``exp(L) * w`` for any magnitudes: 0 where ``w == 0``, +-inf only where
        the true value exceeds the largest float, else finite."""
        L, wv = log_scale.value, w.value
        if "direct_product" in self.variants:
            value = np.exp(L) * wv
        else:
            value = self._safe_exp_times(L, wv)

        def vjp_log(g):
            return self._safe_exp_times(L, wv * g) if "direct_product" not in self.variants \
                else g * np.exp(L) * wv

        def vjp_w(g):
            return self._safe_exp_times(L, g) if "direct_product" not in self.variants \
                else g * np.exp(L)
        return Var(value, ((log_scale, vjp_log), (w, vjp_w)))

    def _safe_exp_times(self, L, w):
        big = np.log(np.finfo(self.dtype).max)
        log_mag = L + np.log(np.where(w == 0, 1, np.abs(w)))
        mag = np.where(log_mag > big, np.inf, np.exp(np.minimum(log_mag, big)))
        value = np.where(w == 0, 0, np.copysign(mag, w))
        # where nothing can overflow, the plain product is the more accurate
        limits = np.finfo(np.float64 if "float64_thresholds" in self.variants else self.dtype)
        big_plain = np.log(limits.max)
        plain = (np.abs(L) < big_plain / 4) & (np.abs(w) < np.sqrt(limits.max)) \
            & (np.abs(L + np.log(np.where(w == 0, 1, np.abs(w)))) < big_plain / 2)
        with np.errstate(all="ignore"):
            direct = np.exp(np.where(plain, L, 0)) * w
        return np.where(plain, direct, value).astype(self.dtype)

    # -- slopes (golden.md §4, "Slopes, in log space")

    def slopes(self, p_logits, q_logits):
        r_p = take(p_logits, 0) - take(p_logits, 1)
        r_q = take(q_logits, 2) - take(q_logits, 1)
        if "logaddexp" in self.variants:
            log_alpha_2 = self._logaddexp3(r_p, r_q)
        else:
            zero = self.const(np.zeros(r_p.shape))
            log_alpha_2 = -take(self.log_softmax(stack_last([zero, r_p, r_q])), 0)
        log_alpha_1 = log_alpha_2 - r_p
        log_alpha_3 = log_alpha_2 - r_q
        log_p, log_q = self.log_softmax(p_logits), self.log_softmax(q_logits)
        if "expm1_forms" in self.variants:
            log_two = self.dtype.type(np.log(2.0))
            a, b = expm1(log_two - log_alpha_1), -expm1(log_two - log_alpha_3)
        else:
            a, b = 2.0 * exp(-log_alpha_1) - 1.0, 1.0 - 2.0 * exp(-log_alpha_3)
        return {"log_alpha_minus": log_alpha_1 + take(log_q, 0), "log_alpha_1": log_alpha_1,
                "log_alpha_2": log_alpha_2, "log_alpha_3": log_alpha_3,
                "log_alpha_plus": log_alpha_3 + take(log_p, 2),
                "a": a, "b": b, "log_p": log_p, "log_q": log_q}

    def _logaddexp3(self, r_p, r_q):
        """``logsumexp(0, r_p, r_q)`` as ``logaddexp(0, logaddexp(r_p, r_q))``."""
        out = np.logaddexp(self.dtype.type(0), np.logaddexp(r_p.value, r_q.value))
        return Var(out, ((r_p, lambda g: g * np.exp(r_p.value - out)),
                         (r_q, lambda g: g * np.exp(r_q.value - out))))

    # -- the five-piece surjection (golden.md §4)

    SIGN = np.array([1.0, 1.0, -1.0, 1.0, 1.0])
    V0 = np.array([-1.0, -1.0, 1.0, 1.0, 1.0])

    def piece(self, u, a, b):
        if "tie_nonstrict" in self.variants:
            return np.where(u <= -1, 0, np.where(u >= 1, 4, np.where(u <= a, 1,
                                                                  np.where(u <= b, 2, 3))))
        piece = np.where(u < -1, 0, np.where(u > 1, 4, np.where(u < a, 1,
                                                               np.where(u < b, 2, 3))))
        if "minus_one_left" in self.variants:
            piece = np.where(u == -1, 1, piece)
        return piece

    def _piece_log_slope(self, sl, piece):
        names = ("log_alpha_minus", "log_alpha_1", "log_alpha_2", "log_alpha_3",
                 "log_alpha_plus")
        out = sl[names[0]]
        for i in range(1, 5):
            out = where(piece == i, sl[names[i]], out)
        return out

    def _anchor(self, sl, piece):
        fixed = np.array([-1.0, -1.0, 0.0, 1.0, 1.0])[piece]
        return where(piece == 2, sl["a"], self.const(fixed))

    def surjection(self, u, sl):
        piece = self.piece(u.value, sl["a"].value, sl["b"].value)
        L = self._piece_log_slope(sl, piece)
        offset = u - self._anchor(sl, piece)
        raw = self.const(self.V0[piece]) + self.const(self.SIGN[piece]) * self.exp_times(L, offset)
        v = raw
        if "no_clip" not in self.variants:
            lo = np.where(piece == 0, -np.inf, -1).astype(self.dtype)
            hi = np.where(piece == 4, np.inf, 1).astype(self.dtype)
            one = self.dtype.type(1)
            lo = np.where(piece == 4, np.nextafter(one, self.dtype.type(np.inf)), lo)
            hi = np.where(piece == 0, np.nextafter(-one, self.dtype.type(-np.inf)), hi)
            clipped = np.minimum(np.maximum(raw.value, lo), hi)
            changed = clipped != raw.value
            v = pass_through(raw, clipped,
                             changed if "clip_grad_zero" in self.variants else None)
        k = np.array([0, 0, 1, 2, 2])[piece]
        return v, k, L

    def surjection_inverse(self, v, k, sl):
        piece = np.where(k == 0, np.where(v.value < -1, 0, 1),
                         np.where(k == 1, 2, np.where(v.value > 1, 4, 3)))
        L = self._piece_log_slope(sl, piece)
        back = self.exp_times(-L, v - self.const(self.V0[piece]))
        return self._anchor(sl, piece) + self.const(self.SIGN[piece]) * back

    # -- gating (golden.md §4)

    def _interpolation(self, v):
        inside = np.abs(v.value) <= 1
        vc = pass_through(v, np.clip(v.value, -1, 1), ~inside)
        half = sin(0.5 * np.pi * vc)
        if "cos_squared" in self.variants:
            cos_half = cos(0.5 * np.pi * vc)
            c = cos_half * cos_half
        else:
            c = 0.5 * (1.0 + cos(np.pi * vc))
        return inside, c, 0.5 * (1.0 + half), 0.5 * (1.0 - half)

    def _gating_logits(self, v, s, log_p, log_q):
        inside, c, w_p, w_q = self._interpolation(v)

        def expand(w):  # (...,) -> (..., 1), to weight the three logits
            return reshape(w, w.shape + (1,))
        return inside, expand(c) * s + expand(w_p) * log_p + expand(w_q) * log_q

    def log_gating(self, v, k, s, log_p, log_q):
        inside, lam = self._gating_logits(v, s, log_p, log_q)
        picked = self.log_softmax_pick(lam, k)
        forced = np.where(v.value > 1, 2, 0)
        outside = np.where(k == forced, 0.0, -np.inf).astype(self.dtype)
        return where(inside, picked, self.const(outside))

    def gating_probabilities(self, v, s, log_p, log_q):
        _, lam = self._gating_logits(v, s, log_p, log_q)
        prob = np.exp(self.log_softmax(lam).value)
        prob = np.where((v.value > 1)[..., None], np.array([0, 0, 1], dtype=self.dtype), prob)
        return np.where((v.value < -1)[..., None], np.array([1, 0, 0], dtype=self.dtype), prob)

    def sample_branch(self, prob, uniforms):
        c0 = prob[..., 0]
        c1 = prob[..., 0] + prob[..., 1]
        if "strict_cdf" in self.variants:
            return (uniforms > c0).astype(np.int64) + (uniforms > c1).astype(np.int64)
        return (uniforms >= c0).astype(np.int64) + (uniforms >= c1).astype(np.int64)

    # -- networks and layers (golden.md §4: MLP, masks, column layouts)

    def mlp(self, x, p):
        h = relu(matmul(x, p["W1"]) + p["b1"])
        a = matmul(h, p["W2"]) + p["b2"]
        if "scale" not in p:
            return a
        return p["scale"] * tanh(a, naive="one_minus_tanh_squared" in self.variants)

    @staticmethod
    def split(dim, layer):
        j = np.arange(dim)
        return j[(j + layer) % 2 == 0], j[(j + layer) % 2 == 1]

    def _feature(self, c, n_b, width, j):
        return take(c, np.arange(n_b) * width + j, axis=1)

    def rad_layer(self, x, p, layer):
        cols_a, cols_b = self.split(x.shape[1], layer)
        n_b = len(cols_b)
        c = self.mlp(take(x, cols_a, axis=1), p["cond"])
        f = [self._feature(c, n_b, 10, j) for j in range(10)]
        p_logits = stack_last(f[2:5])
        q_logits = stack_last(f[5:8])
        sl = self.slopes(p_logits, q_logits)
        u = (take(x, cols_b, axis=1) - f[1]) * exp(-f[0])
        v, k, log_slope = self.surjection(u, sl)
        z = set_columns(x, cols_b, v * exp(f[8]) + f[9])
        z_gate = z
        if "no_gate_zero" not in self.variants:
            # the stand-in is a constant: no gradient reaches z through it
            z_gate = where(self.out_of_range(z.value)[:, None], self.const(0.0), z)
        s = reshape(self.mlp(z_gate, p["gate"]), (x.shape[0], n_b, 3))
        log_gate = self.log_gating(v, k, s, sl["log_p"], sl["log_q"])
        term = sum_last(log_gate + log_slope - f[0] + f[8])
        return z, k, term

    def rad_layer_invert(self, z, p, layer, k=None, uniforms=None):
        cols_a, cols_b = self.split(z.shape[1], layer)
        n_b = len(cols_b)
        c = self.mlp(take(z, cols_a, axis=1), p["cond"])
        f = [self._feature(c, n_b, 10, j) for j in range(10)]
        sl = self.slopes(stack_last(f[2:5]), stack_last(f[5:8]))
        v = (take(z, cols_b, axis=1) - f[9]) * exp(-f[8])
        if k is None:
            z_gate = z  # golden.md: the sampling step's gating network reads z as it is
            if "sample_gate_at_zero" in self.variants:
                z_gate = where(self.out_of_range(z.value)[:, None], self.const(0.0), z)
            s = reshape(self.mlp(z_gate, p["gate"]), (z.shape[0], n_b, 3))
            prob = self.gating_probabilities(v, s, sl["log_p"], sl["log_q"])
            k = self.sample_branch(prob, uniforms)
        u = self.surjection_inverse(v, k, sl)
        return set_columns(z, cols_b, u * exp(f[0]) + f[1]), k

    def affine_layer(self, x, p, layer):
        cols_a, cols_b = self.split(x.shape[1], layer)
        c = self.mlp(take(x, cols_a, axis=1), p["cond"])
        n_b = len(cols_b)
        log_scale, shift = self._feature(c, n_b, 2, 0), self._feature(c, n_b, 2, 1)
        z = set_columns(x, cols_b, take(x, cols_b, axis=1) * exp(log_scale) + shift)
        return z, sum_last(log_scale)

    def affine_layer_invert(self, z, p, layer):
        cols_a, cols_b = self.split(z.shape[1], layer)
        c = self.mlp(take(z, cols_a, axis=1), p["cond"])
        n_b = len(cols_b)
        log_scale, shift = self._feature(c, n_b, 2, 0), self._feature(c, n_b, 2, 1)
        return set_columns(z, cols_b, (take(z, cols_b, axis=1) - shift) * exp(-log_scale))

    # -- flows (golden.md §4: out-of-range rows)

    def out_of_range(self, z):
        """Rows with an entry beyond +-1e120 or not finite, NaN included (golden.md §4).
        In a precision whose largest number is below 1e120 (float32: 3.4e38) that is
        "an entry not finite"; 1e120 rounded to float32 would be inf, and inf <= inf."""
        with np.errstate(invalid="ignore", over="ignore"):
            if "strict_range" in self.variants:
                return ~np.all(np.abs(z) < RANGE, axis=1)
            if "range_in_working_precision" in self.variants:
                return ~np.all(np.abs(z) <= self.dtype.type(RANGE), axis=1)
            if np.finfo(self.dtype).max < RANGE:
                return ~np.all(np.isfinite(z), axis=1)
            return ~np.all(np.abs(z) <= RANGE, axis=1)

    def flow(self, x, params, cfg):
        """``(log_px, z, k, layer_z, layer_term)`` as Vars/arrays; the rows that
        leave the range are found first, then only the others are evaluated."""
        kind, dim, n_layers = cfg["kind"], cfg["dim"], cfg["n_layers"]
        n = x.shape[0]
        alive = np.ones(n, dtype=bool)
        if "no_range_screen" not in self.variants:
            alive = ~self.out_of_range(x.value)
            changed = True
            while changed:  # a dry run: which rows leave the range at some layer
                changed = False
                z = rows(x, alive)
                for layer in range(n_layers):
                    z = self._layer(z, params, layer, kind)[0]
                    far = self.out_of_range(z.value)
                    if far.any():
                        idx = np.flatnonzero(alive)
                        alive[idx[far]] = False
                        changed = True
                        break
        z = rows(x, alive)
        k = np.full((n, n_layers, dim), -1, dtype=np.int64)
        terms, zs = [], []
        for layer in range(n_layers):
            z, k_layer, term = self._layer(z, params, layer, kind)
            if k_layer is not None:
                k[np.ix_(alive, [layer], self.split(dim, layer)[1])] = k_layer[:, None, :]
            terms.append(term)
            zs.append(z)
        log_px = -0.5 * sum_last(z * z) - 0.5 * dim * math.log(2 * math.pi)
        for term in terms:
            log_px = log_px + term
        return log_px, z, k, alive, zs, terms

    def _layer(self, z, params, layer, kind):
        nested = {net: {name: params[f"{layer}.{net}.{name}"]
                        for name in ("W1", "b1", "W2", "b2", "scale")
                        if f"{layer}.{net}.{name}" in params}
                  for net in ("cond", "gate") if f"{layer}.{net}.W1" in params}
        if kind == "rad":
            return self.rad_layer(z, nested, layer)
        z, term = self.affine_layer(z, nested, layer)
        return z, None, term

    def flow_invert(self, z, params, cfg, k=None, uniforms=None):
        kind, dim, n_layers = cfg["kind"], cfg["dim"], cfg["n_layers"]
        n = z.shape[0]
        k_out = np.full((n, n_layers, dim), -1, dtype=np.int64)
        x = z.value.copy()
        alive = ~self.out_of_range(x)
        for layer in reversed(range(n_layers)):
            nested = {net: {name: params[f"{layer}.{net}.{name}"].value
                            for name in ("W1", "b1", "W2", "b2", "scale")
                            if f"{layer}.{net}.{name}" in params}
                      for net in ("cond", "gate") if f"{layer}.{net}.W1" in params}
            nested = {net: {name: self.const(v) for name, v in d.items()}
                      for net, d in nested.items()}
            cols_b = self.split(dim, layer)[1]
            zin = self.const(x[alive])
            if kind == "rad":
                kl = None if k is None else k[alive][:, layer, cols_b]
                ul = None if uniforms is None else uniforms[alive][:, layer, cols_b]
                new, kl = self.rad_layer_invert(zin, nested, layer, kl, ul)
                k_out[np.ix_(alive, [layer], cols_b)] = kl[:, None, :]
            else:
                new = self.affine_layer_invert(zin, nested, layer)
            x[alive] = new.value
            alive = alive & ~self.out_of_range(x)
        x[~alive] = np.inf
        k_out[~alive] = -1
        return x, k_out

    # -- Adam (golden.md §4)

    def adam(self, inp):
        names = [key[len("params."):] for key in inp if key.startswith("params.")]
        lr, beta1, beta2, eps = (self.dtype.type(inp[h]) for h in ("lr", "beta1", "beta2", "eps"))
        t = int(inp["t"]) + 1
        out = {}
        for n in names:
            g = inp["grads." + n].astype(self.dtype)
            m = beta1 * inp["m." + n].astype(self.dtype) + (1 - beta1) * g
            v = beta2 * inp["v." + n].astype(self.dtype) + (1 - beta2) * g * g
            m_hat = m / (1 - beta1 ** t)
            v_hat = v / (1 - beta2 ** t)
            denom = np.sqrt(v_hat + eps) if "eps_in_sqrt" in self.variants \
                else np.sqrt(v_hat) + eps
            out["params." + n] = inp["params." + n].astype(self.dtype) - lr * m_hat / denom
            out["m." + n], out["v." + n] = m, v
        out["t"] = np.array(t, dtype=np.int64)
        return out


# ------------------------------------------------------------------ the blocks

SLOPE_FIELDS = ("log_alpha_minus", "log_alpha_1", "log_alpha_2", "log_alpha_3",
                "log_alpha_plus", "a", "b")


def _nest(params):
    nested = {}
    for key, value in params.items():
        net, name = key.split(".")
        nested.setdefault(net, {})[name] = value
    return nested


def run_case(port, block, case):
    """``(outputs, grads)`` of one golden case (grads only where the case has
    loss weights), as float64 arrays."""
    f = port.const
    inp = {k: (f(v) if v.dtype.kind == "f" else v) for k, v in case["inputs"].items()}
    par = {k: f(v) for k, v in case["params"].items()}
    cfg = case["config"]
    out = {}
    with np.errstate(all="ignore"):
        if block == "log_softmax":
            lp = port.log_softmax(inp["logits"])
            out = {"log_prob": lp, "prob": exp(lp)}
        elif block == "slopes":
            out = port.slopes(inp["p_logits"], inp["q_logits"])
        elif block == "surjection":
            v, k, L = port.surjection(inp["u"], {s: inp[s] for s in SLOPE_FIELDS})
            out = {"v": v, "k": k, "log_slope": L}
        elif block == "surjection_inverse":
            out = {"u": port.surjection_inverse(inp["v"], inp["k"],
                                                {s: inp[s] for s in SLOPE_FIELDS})}
        elif block == "log_gating":
            out = {"log_gate": port.log_gating(inp["v"], inp["k"], inp["s"], inp["log_p"],
                                               inp["log_q"])}
        elif block == "gating_probabilities":
            out = {"prob": port.gating_probabilities(inp["v"], inp["s"], inp["log_p"],
                                                     inp["log_q"])}
        elif block == "sample_branch":
            out = {"k": port.sample_branch(inp["prob"].value, inp["uniforms"].value)}
        elif block == "mlp":
            out = {"out": port.mlp(inp["x"], par)}
        elif block == "rad_coupling":
            nested, layer = _nest(par), cfg["layer"]
            z, k, term = port.rad_layer(inp["x"], nested, layer)
            inverse_x, _ = port.rad_layer_invert(f(z.value), nested, layer, k=k)
            sample_x, sample_k = port.rad_layer_invert(inp["sample_z"], nested, layer,
                                                       uniforms=inp["sample_uniforms"].value)
            out = {"z": z, "k": k, "term": term, "inverse_x": inverse_x, "sample_x": sample_x,
                   "sample_k": sample_k}
        elif block == "affine_coupling":
            nested, layer = _nest(par), cfg["layer"]
            z, term = port.affine_layer(inp["x"], nested, layer)
            out = {"z": z, "term": term,
                   "inverse_x": port.affine_layer_invert(f(z.value), nested, layer)}
        elif block in ("rad_flow", "realnvp_flow"):
            out = _run_flow(port, inp, par, cfg, case)
        elif block == "adam":
            out = port.adam(case["inputs"])
        else:
            raise KeyError(block)
        grads = {}
        weights = case["loss_weights"]
        if weights:
            total = None
            for name, w in weights.items():
                o = out[name]
                term = sum_last(reshape(mul(o, w.astype(port.dtype)), (-1,)))
                total = term if total is None else total + term
            backward(total, np.ones((), dtype=port.dtype))
            sources = dict(inp, **par)
            for name in list(case["inputs"]) + list(case["params"]):
                var = sources[name]
                if not isinstance(var, Var) or name.startswith("sample_"):
                    continue
                if name in case["grads"]:
                    g = var.grad if var.grad is not None else np.zeros(var.shape)
                    grads[name] = np.asarray(g, dtype=np.float64)
    return {name: _as_result(o) for name, o in out.items()}, grads


def _as_result(o):
    """float64 (floats of any precision) or int64 array."""
    a = np.asarray(o.value if isinstance(o, Var) else o)
    with np.errstate(over="ignore"):  # longdouble beyond float64: inf, as in float64
        return a.astype(np.float64 if a.dtype.kind == "f" else np.int64)


def _run_flow(port, inp, par, cfg, case):
    x = inp["x"]
    n, dim = x.shape
    log_px_alive, z_alive, k, alive, zs, terms = port.flow(x, par, cfg)
    log_px = _scatter_rows(log_px_alive, alive, n, -np.inf, port)
    z = np.full((n, dim), np.inf)
    z[alive] = z_alive.value
    out = {"log_px": log_px, "z": z, "k": k}
    if "layer_z" in case["outputs"]:
        out["layer_z"] = np.stack([zl.value for zl in zs])
        out["layer_term"] = np.stack([t.value for t in terms])
    inverse_x, _ = port.flow_invert(port.const(z), par, cfg, k=k)
    sample_x, sample_k = port.flow_invert(inp["sample_normals"], par, cfg,
                                          uniforms=inp["sample_uniforms"].value)
    out.update(inverse_x=inverse_x, sample_x=sample_x, sample_k=sample_k)
    return out


def _scatter_rows(values, alive, n, fill, port):
    full = np.full(n, fill, dtype=port.dtype)
    full[alive] = values.value
    return Var(full, ((values, lambda g: g[alive]),))


def run_port(golden_doc, dtype=np.float64, variants=(), blocks=None):
    """A port document (in memory, arrays as float64/int64) of every case of
    ``golden_doc`` (or of the blocks named in ``blocks``)."""
    port = Port(dtype, variants)
    out = {"schema": golden_doc["schema"], "schema_version": golden_doc["schema_version"],
           "blocks": {}}
    REVERSED["on"] = "reversed_sums" in variants
    try:
        for name, block in golden_doc["blocks"].items():
            if blocks is not None and name not in blocks:
                continue
            cases = []
            for case in block["cases"]:
                outputs, grads = run_case(port, name, case)
                cases.append({"id": case["id"], "outputs": outputs, "grads": grads})
            out["blocks"][name] = {"cases": cases}
    finally:
        REVERSED["on"] = False
    return out


def failing_cases(port_doc, golden_doc, tolerance="float64"):
    """``{(block, case id), ...}`` of the golden cases the port fails (checked
    one case at a time with the golden block's stated scales)."""
    from radref.reference.golden import check_port
    failing = set()
    for name, gblock in golden_doc["blocks"].items():
        pcases = {c["id"]: c for c in port_doc["blocks"].get(name, {"cases": []})["cases"]}
        for gcase in gblock["cases"]:
            if gcase["id"] not in pcases:
                continue
            report = check_port({"blocks": {name: {"cases": [pcases[gcase["id"]]]}}},
                                {"blocks": {name: dict(gblock, cases=[gcase])}},
                                tolerance=tolerance, partial=True)
            if not report.passed:
                failing.add((name, gcase["id"]))
    return failing
