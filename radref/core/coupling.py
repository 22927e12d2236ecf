"""The coupling-layer functions under their radref 0.x names (``radref.coupling``).

Kept importable for code written against 0.x; new code uses the contract of
:mod:`radref.core.layers` (``radref.core.layers.rad.forward``, ...).  Each
name is the contract function itself, except the three ``affine_coupling_*``
wrappers below, which keep their 0.x signatures (no ``gate_hidden``, no
``k``).
"""
from radref.core.layers import affine, rad
from radref.core.layers.affine import AffineCouplingCache
from radref.core.layers.masks import Columns, columns, split
from radref.core.layers.rad import RadCouplingCache

__all__ = ["N_RAD_FEATURES", "N_AFFINE_FEATURES", "split", "columns", "Columns",
           "RadCouplingCache", "AffineCouplingCache",
           "rad_coupling_init", "rad_coupling_forward", "rad_coupling_backward",
           "rad_coupling_inverse", "rad_coupling_sample", "affine_coupling_init",
           "affine_coupling_forward", "affine_coupling_backward", "affine_coupling_inverse"]

N_RAD_FEATURES = rad.N_FEATURES
N_AFFINE_FEATURES = affine.N_FEATURES
rad_coupling_init = rad.init
rad_coupling_forward = rad.forward
rad_coupling_backward = rad.backward
rad_coupling_inverse = rad.inverse
rad_coupling_sample = rad.sample
affine_coupling_backward = affine.backward


def affine_coupling_init(dim, layer, hidden, out_std=0.01, random_state=None):
    """:func:`radref.core.layers.affine.init` without its (unused) ``gate_hidden``."""
    return affine.init(dim, layer, hidden, out_std=out_std, random_state=random_state)


def affine_coupling_forward(x, params, layer):
    """``(z, term, cache)``: :func:`radref.core.layers.affine.forward` without its ``k = None``."""
    z, _, term, cache = affine.forward(x, params, layer)
    return z, term, cache


def affine_coupling_inverse(z, params, layer):
    """:func:`radref.core.layers.affine.inverse` without its ``k``."""
    return affine.inverse(z, None, params, layer)
