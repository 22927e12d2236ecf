"""The piecewise-linear surjection of Rad (paper eq. 9, 14, 23; notes section 1).

Every piece is a line through an anchor point ``(u0, v0)``::

    v = v0 + sign * alpha * (u - u0)

=====  ============  ==================  =========  ====  =====  ===
piece  domain        eq. 23              alpha      u0    v0     k
=====  ============  ==================  =========  ====  =====  ===
0      u < -1        alpha_-(u+1) - 1    alpha_-    -1    -1     0
1      -1 <= u < a   alpha_1(u+1) - 1    alpha_1    -1    -1     0
2      a <= u < b    -alpha_2(u-a) + 1   alpha_2    a     +1     1
3      b <= u <= 1   alpha_3(u-1) + 1    alpha_3    +1    +1     2
4      u > 1         alpha_+(u-1) + 1    alpha_+    +1    +1     2
=====  ============  ==================  =========  ====  =====  ===

``k`` is 0-based in code (paper: k = 1, 2, 3).  ``|f'(u)| = alpha`` of the piece.

Tie-break rule at breakpoints (ports must follow it): the folded interval
``[-1, 1]`` is closed; inside it a breakpoint ``a`` or ``b`` belongs to the
piece on its right.  So ``u = -1`` is piece 1, ``u = a`` piece 2, ``u = b``
piece 3, ``u = 1`` piece 3.  With this rule ``|u| <= 1`` exactly when
``|v| <= 1``, and the gating (which uses P and Q at ``v = +-1``) always meets a
slope of the folded region, so the log-likelihood at a breakpoint equals its
(common) one-sided limits.

The three-piece surjection of eq. 14 is pieces 1, 2, 3 extended to the whole
line (piece 1 for ``u < a``).  It cannot satisfy the boundary conditions at
``u = +-1`` (paper Fig. 6): kept as a teaching and negative example.

Saturated gating (docs/errors.md, "Numerical extremes"): the log-slopes are
exact in log space (:mod:`radref.core.slopes`) but a slope ``alpha = exp(L)`` need
not be a float64 (``P2 = e^-1000`` gives ``alpha_2 = e^1000``).  Every product
``factor * alpha`` (and ``factor / alpha`` in the inverse) is therefore
evaluated directly, bit for bit as written above, only where no intermediate
can overflow (``|L| <= 230`` and factors ``<= 2^300``); elsewhere it is
``sign * exp(L + sum log|factor|)``: exact zero when a factor is zero (``u`` at
the anchor of a piece whose slope is ``e^1000`` gives ``v = v0``, not
``inf * 0 = NaN``), ``+-inf`` when the true value exceeds float64 (a point on
an outer piece of slope ``e^1000`` has ``v`` beyond 1e308), a relative error of
about ``eps * |L|`` otherwise; never a NaN or a floating-point warning.
"""
from typing import NamedTuple

import numpy as np

from radref.core.slopes import Slopes

#: piece -> discrete latent k (0-based)
PIECE_TO_K = np.array([0, 0, 1, 2, 2])
_SIGN = np.array([1.0, 1.0, -1.0, 1.0, 1.0])
_V0 = np.array([-1.0, -1.0, 1.0, 1.0, 1.0])
#: u0 of each piece (the middle piece's anchor is ``a``, filled in per point)
_U0 = np.array([-1.0, -1.0, 0.0, 1.0, 1.0])
#: Range of v on each piece of the five, so that rounding cannot carry v across +-1 against
#: u (the tie-break rule promises |u| <= 1 exactly when |v| <= 1): e.g.
#: u = b - 1 ulp gave v = -1 - 4e-16 on piece 2, and the gating, which reads
#: v, then returned log p(k | z) = -inf.
_V_LO = np.array([-np.inf, -1.0, -1.0, -1.0, np.nextafter(1.0, np.inf)])
_V_HI = np.array([np.nextafter(-1.0, -np.inf), 1.0, 1.0, 1.0, np.inf])


#: ``exp(L)`` overflows float64 for ``L`` above this (``exp(_LOG_MAX)`` is finite)
_LOG_MAX = float(np.log(np.finfo(np.float64).max))
#: ``factor * exp(L)`` is computed directly when ``|L| <= _DIRECT_LOG`` and every
#: ``|factor| <= _DIRECT_FACTOR``: then no intermediate can overflow
#: (``e^230 * 2^300 * 2^300 < 2^932``).
_DIRECT_LOG = 230.0
_DIRECT_FACTOR = 2.0 ** 300


class SurjectionCache(NamedTuple):
    u: np.ndarray
    piece: np.ndarray  # int, which of the five pieces (0..4)
    slope: np.ndarray  # alpha of that piece, = |f'(u)| (inf if beyond float64)
    slopes: Slopes
    log_slope: np.ndarray  # log alpha of that piece (always finite)
    offset: np.ndarray  # u - u0 of that piece
    direct: object = False  # True if _direct(log_slope, offset) held everywhere


def _within(a, bound):
    """``np.all(np.abs(a) <= bound)`` (False if ``a`` has a NaN)."""
    a = np.asarray(a)
    return a.size == 0 or bool(np.abs(a).max() <= bound)


def _direct(log_scale, *factors):
    """Where ``prod(factors) * exp(log_scale)`` can be computed directly: True
    (everywhere, the usual case) or a bool mask."""
    if _within(log_scale, _DIRECT_LOG) and all(_within(f, _DIRECT_FACTOR) for f in factors):
        return True
    ok = np.abs(log_scale) <= _DIRECT_LOG
    for f in factors:
        ok = ok & (np.abs(f) <= _DIRECT_FACTOR)
    return ok


def _exp_product(log_scale, *factors):
    """``prod(factors) * exp(log_scale)`` in log space, for any magnitudes.

    Exact 0 where a factor is 0, ``+-inf`` where the magnitude exceeds float64,
    no floating-point warnings.  (Used only where :func:`_direct` is false.)
    """
    log_mag = np.array(log_scale, dtype=np.float64)
    negative = np.zeros(log_mag.shape, dtype=bool)
    zero = np.zeros(log_mag.shape, dtype=bool)
    for f in factors:
        size = np.abs(f)
        zero = zero | (size == 0)
        negative = negative ^ (f < 0)
        log_mag = log_mag + np.log(np.where(size == 0, 1.0, size))
    mag = np.where(log_mag > _LOG_MAX, np.inf, np.exp(np.minimum(log_mag, _LOG_MAX)))
    mag = np.where(zero, 0.0, mag)
    return np.where(negative, -mag, mag)


def _exp(log_scale):
    """``exp(log_scale)``, ``inf`` (without a warning) where it overflows."""
    return np.where(log_scale > _LOG_MAX, np.inf, np.exp(np.minimum(log_scale, _LOG_MAX)))


def five_piece_index(u, a, b):
    """Piece index (0..4) of each ``u`` under the tie-break rule of this module."""
    piece = np.full(np.shape(u), 3, dtype=np.intp)
    piece[u < b] = 2
    piece[u < a] = 1
    piece[u < -1.0] = 0
    piece[u > 1.0] = 4
    return piece


def three_piece_index(u, a, b):
    """Piece index (1..3) for the three-piece surjection of eq. 14."""
    piece = np.full(np.shape(u), 3, dtype=np.intp)
    piece[u < b] = 2
    piece[u < a] = 1
    return piece


def _log_alpha(slopes, piece):
    """``log alpha`` of each point's piece."""
    return np.where(piece <= 1, np.where(piece == 0, slopes.log_alpha_minus, slopes.log_alpha_1),
                    np.where(piece == 2, slopes.log_alpha_2,
                             np.where(piece == 3, slopes.log_alpha_3, slopes.log_alpha_plus)))


def _anchor_u(slopes, piece):
    return np.where(piece == 2, slopes.a, _U0[piece])


def _piecewise_forward(u, piece, slopes, region=None):
    """``region``: the five-piece index of ``u`` (``piece`` itself unless the
    pieces are those of eq. 14), which sets the range ``v`` is kept in."""
    region = piece if region is None else region
    log_slope = _log_alpha(slopes, piece)
    offset = u - _anchor_u(slopes, piece)
    direct = _direct(log_slope, offset)
    if direct is True:
        slope = np.exp(log_slope)
        v = _V0[piece] + _SIGN[piece] * slope * offset
    else:  # saturated gating or far input: see the module docstring
        slope = _exp(log_slope)
        v = _V0[piece] + np.where(direct, _SIGN[piece] * np.where(direct, slope, 0.0) * offset,
                                  _SIGN[piece] * _exp_product(log_slope, offset))
    v = np.minimum(np.maximum(v, _V_LO[region]), _V_HI[region])
    return v, PIECE_TO_K[piece], log_slope, SurjectionCache(u, piece, slope, slopes,
                                                            log_slope, offset, direct is True)


def surjection_forward(u, slopes):
    """Five-piece surjection ``u -> (v, k, log|f'(u)|)`` (eq. 23).

    Parameters
    ----------
    u : ndarray of float64, shape (...)
        Normalized input.
    slopes : Slopes
        From :func:`radref.core.slopes.slopes_forward`; fields of shape ``(...)``.

    Returns
    -------
    v : ndarray, shape (...)
        ``f(u)``.
    k : ndarray of int, shape (...)
        Which of the three branches (0-based) ``u`` lies on.
    log_slope : ndarray, shape (...)
        ``log |f'(u)|``, the log-slope of the piece.
    cache : SurjectionCache
    """
    return _piecewise_forward(u, five_piece_index(u, slopes.a, slopes.b), slopes)


def three_piece_forward(u, slopes):
    """Three-piece surjection of eq. 14 (no outer pieces); same outputs as
    :func:`surjection_forward`.  Uses only ``alpha_1..3``, ``a`` and ``b``."""
    region = np.where(u < -1.0, 0, np.where(u > 1.0, 4, 2))
    return _piecewise_forward(u, three_piece_index(u, slopes.a, slopes.b), slopes, region)


def surjection_backward(dv, dlog_slope, cache):
    """Backward of :func:`surjection_forward` (and :func:`three_piece_forward`).

    Parameters
    ----------
    dv, dlog_slope : ndarray, shape (...)
        Upstream gradients on ``v`` and on ``log |f'(u)|``.
    cache : SurjectionCache

    Returns
    -------
    du : ndarray, shape (...)
    dslopes : Slopes
        Gradients on the log-slopes and on ``a`` (the anchor of the middle
        piece); ``b``, ``log_p`` and ``log_q`` do not enter ``f`` between
        breakpoints, so their gradients are zero.

    Notes
    -----
    With ``v = v0 + sign * alpha * (u - u0)`` and ``alpha = exp(L)``::

        dv/du = sign * alpha,  dv/dL = sign * alpha * (u - u0),  dv/du0 = -sign * alpha

    and ``d log|f'| / dL = 1`` for the ``L`` of the active piece.
    """
    piece, slope, offset, log_slope = cache.piece, cache.slope, cache.offset, cache.log_slope
    # The forward pass has checked log_slope and offset; usually only dv is new.
    if cache.direct is True and _within(dv, _DIRECT_FACTOR):
        direct = True
    else:
        direct = _direct(log_slope, offset, dv)
    sign = _SIGN[piece]
    if direct is True:
        du = dv * (sign * slope)
        dlog_alpha = du * offset + dlog_slope
    else:  # saturated gating or far input: see the module docstring
        du_direct = dv * (sign * np.where(direct, slope, 0.0))
        du = np.where(direct, du_direct, sign * _exp_product(log_slope, dv))
        dlog_alpha = np.where(direct, du_direct * offset,
                              sign * _exp_product(log_slope, dv, offset)) + dlog_slope
    on_piece = [piece == i for i in range(5)]
    dslopes = Slopes(
        *(np.where(mask, dlog_alpha, 0.0) for mask in on_piece),
        a=np.where(on_piece[2], -du, 0.0),  # dv/du0 = -sign * alpha = -dv/du
        b=np.zeros_like(du),
        log_p=np.zeros(np.shape(cache.slopes.log_p)),
        log_q=np.zeros(np.shape(cache.slopes.log_q)),
    )
    return du, dslopes


def surjection_inverse(v, k, slopes):
    """Invert the five-piece surjection on branch ``k`` (notes section 5).

    Parameters
    ----------
    v : ndarray of float64, shape (...)
    k : ndarray of int, shape (...)
        Branch, 0-based.  For ``v > 1`` only ``k = 2`` has a preimage, for
        ``v < -1`` only ``k = 0``.
    slopes : Slopes

    Returns
    -------
    u : ndarray, shape (...)

    Raises
    ------
    ValueError
        If some ``(v, k)`` has no preimage or ``k`` is not in {0, 1, 2}.
    """
    k = np.asarray(k)
    if np.any((k < 0) | (k > 2)):
        raise ValueError("k must be 0, 1 or 2 (0-based branch index)")
    if np.any(((v > 1.0) & (k != 2)) | ((v < -1.0) & (k != 0))):
        raise ValueError("(v, k) has no preimage: |v| > 1 requires k = 2 above, k = 0 below")
    piece = np.choose(k, [np.where(v < -1.0, 0, 1), 2, np.where(v > 1.0, 4, 3)])
    return _piecewise_inverse(v, piece, slopes)


def three_piece_inverse(v, k, slopes):
    """Invert the three-piece surjection of eq. 14 on branch ``k`` (0-based)."""
    k = np.asarray(k)
    if np.any((k < 0) | (k > 2)):
        raise ValueError("k must be 0, 1 or 2 (0-based branch index)")
    if np.any(((v > 1.0) & (k != 2)) | ((v < -1.0) & (k != 0))):
        raise ValueError("(v, k) has no preimage: |v| > 1 requires k = 2 above, k = 0 below")
    return _piecewise_inverse(v, k + 1, slopes)


def _piecewise_inverse(v, piece, slopes):
    log_inverse_slope = -_log_alpha(slopes, piece)
    offset = v - _V0[piece]
    direct = _direct(log_inverse_slope, offset)
    if direct is True:
        inverse_slope = np.exp(log_inverse_slope)
        return _anchor_u(slopes, piece) + _SIGN[piece] * inverse_slope * offset
    # saturated gating or far input: see the module docstring
    inverse_slope = np.exp(np.where(direct, log_inverse_slope, 0.0))
    return _anchor_u(slopes, piece) + np.where(
        direct, _SIGN[piece] * inverse_slope * offset,
        _SIGN[piece] * _exp_product(log_inverse_slope, offset))
