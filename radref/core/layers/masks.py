"""Which columns a coupling layer conditions on and which it transforms
(paper §4.2, Fig. 10; notes §4).

A coupling layer splits ``x`` (shape ``(n, d)``) into a *conditioning* part
``x_A``, passed through unchanged (``z_A = x_A``) and read by the
conditioner network, and a *transformed* part ``x_B`` of ``d_B`` columns.
The masks alternate: column ``j`` is conditioning in layer ``l`` when
``j + l`` is even.  In 2-D, layer 0 conditions on column 0 and transforms
column 1, layer 1 the reverse, and so on (**choice**: alternating parity
masks).
"""
import functools
from typing import NamedTuple

import numpy as np


def split(dim, layer):
    """Column indices ``(conditioning, transformed)`` of layer ``layer`` for
    data of dimension ``dim``: two int arrays, complementary, in increasing
    order (the ``A`` and ``B`` of the paper)."""
    column = np.arange(dim)
    is_conditioning = (column + layer) % 2 == 0
    return column[is_conditioning], column[~is_conditioning]


class Columns(NamedTuple):
    """The columns of :func:`split` as slices.

    ``x[:, cols.conditioning]`` is ``x_A`` and ``x[:, cols.transformed]`` is
    ``x_B``; a slice selects the same columns as the index arrays of
    :func:`split` but gives a view, not a copy.
    """

    conditioning: slice
    transformed: slice
    n_transformed: int  # d_B


@functools.lru_cache(maxsize=None)
def columns(dim, layer):
    """The :class:`Columns` of layer ``layer`` for dimension ``dim`` (cached:
    one shared object per ``(dim, layer)``)."""
    transformed = slice((layer + 1) % 2, None, 2)
    return Columns(slice(layer % 2, None, 2), transformed, len(range(dim)[transformed]))


def sum_over_transformed(m):
    """``sum_B m``: the row sums of ``m`` (shape ``(n, d_B)``), shape ``(n,)``.

    Written as the matrix-vector product ``m @ 1`` (a speed choice for the
    narrow arrays of a coupling layer; equal to ``np.sum(m, axis=1)`` up to
    the order of the additions).  Its adjoint is the upstream gradient
    broadcast over the ``d_B`` columns.
    """
    return m @ np.ones(m.shape[1])
