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
of a slope with a number is therefore one call of
:func:`radref.core.numerics.exp_times`: the product as written wherever it cannot
overflow (every normal input), and elsewhere exact zero when the number is
zero (``u`` at the anchor of a piece of slope ``e^1000`` gives ``v = v0``, not
``inf * 0 = NaN``) or ``+-inf`` when the true value exceeds float64 (a point
on an outer piece of slope ``e^1000`` has ``v`` beyond 1e308); never a NaN or
a floating-point warning.
"""
from typing import NamedTuple

import numpy as np

from radref.core.numerics import exp_times, exp_times_cumulative
from radref.core.slopes import Slopes

#: piece -> discrete latent k (0-based)
PIECE_TO_K = np.array([0, 0, 1, 2, 2])
#: piece -> sign, v0 and u0 of its line (u0 of the middle piece is ``a``, per point);
#: the one piece table (the golden vectors' cases read it too)
PIECE_SIGN = np.array([1.0, 1.0, -1.0, 1.0, 1.0])
PIECE_V0 = np.array([-1.0, -1.0, 1.0, 1.0, 1.0])
_U0 = np.array([-1.0, -1.0, 0.0, 1.0, 1.0])
#: Rounding guard: the range of v on each of the five pieces, so that rounding
#: cannot carry v across +-1 against u (the tie-break rule promises |u| <= 1
#: exactly when |v| <= 1): u = b - 1 ulp gave v = -1 - 4e-16 on piece 2, and the
#: gating, which reads v, then returned log p(k | z) = -inf.
_V_MIN = np.array([-np.inf, -1.0, -1.0, -1.0, np.nextafter(1.0, np.inf)])
_V_MAX = np.array([np.nextafter(-1.0, -np.inf), 1.0, 1.0, 1.0, np.inf])


class SurjectionCache(NamedTuple):
    piece: np.ndarray  # int, which of the five pieces (0..4)
    slopes: Slopes
    log_slope: np.ndarray  # L = log alpha of that piece
    offset: np.ndarray  # u - u0 of that piece


def five_piece_index(u, a, b):
    """Piece index (0..4) of each ``u`` under the tie-break rule of this module."""
    piece = np.where(u < b, 2, 3)
    piece[u < a] = 1
    piece[u < -1.0] = 0
    piece[u > 1.0] = 4
    return piece


def three_piece_index(u, a, b):
    """Piece index (1..3) for the three-piece surjection of eq. 14."""
    piece = np.where(u < b, 2, 3)
    piece[u < a] = 1
    return piece


def _log_alpha(slopes, piece):
    """``L = log alpha`` of each point's piece (the alpha column of the table)."""
    return np.where(piece <= 1, np.where(piece == 0, slopes.log_alpha_minus, slopes.log_alpha_1),
                    np.where(piece == 2, slopes.log_alpha_2,
                             np.where(piece == 3, slopes.log_alpha_3, slopes.log_alpha_plus)))


def _anchor_u(slopes, piece):
    """``u0`` of each point's piece: ``a`` for the middle piece, else -1 or +1."""
    return np.where(piece == 2, slopes.a, _U0[piece])


def _piecewise_forward(u, piece, slopes, side):
    """``v = v0 + sign * alpha * (u - u0)`` on ``piece``; ``side`` is the
    five-piece index of ``u`` (``piece`` itself for eq. 23), whose range
    :data:`_V_MIN`, :data:`_V_MAX` keeps ``v`` on the side of +-1 that ``u`` is on."""
    log_slope = _log_alpha(slopes, piece)
    offset = u - _anchor_u(slopes, piece)
    v = PIECE_V0[piece] + PIECE_SIGN[piece] * exp_times(log_slope, offset)
    v = np.minimum(np.maximum(v, _V_MIN[side]), _V_MAX[side])  # rounding guard
    return v, PIECE_TO_K[piece], log_slope, SurjectionCache(piece, slopes, log_slope, offset)


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
    piece = five_piece_index(u, slopes.a, slopes.b)
    return _piecewise_forward(u, piece, slopes, side=piece)


def three_piece_forward(u, slopes):
    """Three-piece surjection of eq. 14 (no outer pieces); same outputs as
    :func:`surjection_forward`.  Uses only ``alpha_1..3``, ``a`` and ``b``."""
    side = np.where(u < -1.0, 0, np.where(u > 1.0, 4, 2))
    return _piecewise_forward(u, three_piece_index(u, slopes.a, slopes.b), slopes, side)


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
    piece = cache.piece
    # du = dv sign alpha and dv sign alpha (u - u0), alpha = e^L: one call gives both
    du, dlog_alpha_from_v = exp_times_cumulative(cache.log_slope, PIECE_SIGN[piece] * dv,
                                                 cache.offset)
    dlog_alpha = dlog_alpha_from_v + dlog_slope
    on_piece = [piece == i for i in range(5)]
    dslopes = Slopes(
        *(np.where(mask, dlog_alpha, 0.0) for mask in on_piece),
        a=np.where(on_piece[2], -du, 0.0),  # dv/du0 = -sign * alpha = -dv/du
        b=np.zeros_like(du),
        log_p=np.zeros(np.shape(cache.slopes.log_p)),
        log_q=np.zeros(np.shape(cache.slopes.log_q)),
    )
    return du, dslopes


def _check_branches(v, k):
    """``ValueError`` unless every ``k`` is 0, 1 or 2 and ``(v, k)`` has a preimage."""
    if np.any((k < 0) | (k > 2)):
        raise ValueError("k must be 0, 1 or 2 (0-based branch index)")
    if np.any(((v > 1.0) & (k != 2)) | ((v < -1.0) & (k != 0))):
        raise ValueError("(v, k) has no preimage: |v| > 1 requires k = 2 above, k = 0 below")


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
    return _piecewise_inverse(v, k, slopes, outer_pieces=True)


def three_piece_inverse(v, k, slopes):
    """Invert the three-piece surjection of eq. 14 on branch ``k`` (0-based);
    same arguments, result and errors as :func:`surjection_inverse`."""
    return _piecewise_inverse(v, k, slopes, outer_pieces=False)


def _piecewise_inverse(v, k, slopes, outer_pieces):
    """``u = u0 + sign * (v - v0) / alpha`` on the piece of branch ``k``: piece
    ``k + 1``, except beyond +-1 (where ``k`` is 0 below and 2 above) the outer
    piece 0 or 4 if the surjection has outer pieces (eq. 23; eq. 14 has none)."""
    k = np.asarray(k)
    _check_branches(v, k)
    piece = k + 1
    if outer_pieces:
        piece = np.where(v < -1.0, 0, np.where(v > 1.0, 4, piece))
    return _anchor_u(slopes, piece) + PIECE_SIGN[piece] * exp_times(
        -_log_alpha(slopes, piece), v - PIECE_V0[piece])
