"""The functional core: the paper's mathematics as pure functions.

Parameters are plain dicts of arrays; every ``*_forward`` returns its outputs
and an explicit cache, and the matching ``*_backward(upstream, cache)``
returns gradients (derivations in docs/derivations.md).  Modules, from the
bottom up (each imports only those above it in this list):

- :mod:`radref.core.numerics`    range limit, overflow thresholds, overflow-safe products
- :mod:`radref.core.softmax`     log-softmax over the 3-way axis
- :mod:`radref.core.slopes`      boundary gating P, Q -> slopes and breakpoints (eq. 26-30)
- :mod:`radref.core.surjection`  five-piece (eq. 23) and three-piece (eq. 14) surjections
- :mod:`radref.core.gating`      the gating distribution p(k | z) (eq. 31-33)
- :mod:`radref.core.base`        standard normal base density
- :mod:`radref.core.mlp`         conditioner and gating networks
- :mod:`radref.core.layer1d`     a complete one-dimensional Rad model
- :mod:`radref.core.layers`      coupling layers: one contract, a registry, Rad and affine kinds
- :mod:`radref.core.chunks`      rows a chunk at a time, in one thread or several (``n_jobs``)
- :mod:`radref.core.flow`        stacks of coupling layers: log-density, inference, sampling
"""
