"""radref: the reference NumPy implementation of Rad (Real and Discrete) normalizing flows.

Functional core (parameters in, outputs plus an explicit cache out; every
``*_forward`` has a hand-derived ``*_backward``):

- :mod:`radref.slopes`      boundary gating P, Q -> slopes and breakpoints (eq. 26-30)
- :mod:`radref.surjection`  five-piece (eq. 23) and three-piece (eq. 14) surjections
- :mod:`radref.gating`      the gating distribution p(k | z) (eq. 31-33)
- :mod:`radref.base`        standard normal base density
- :mod:`radref.layer1d`     a complete one-dimensional Rad model
- :mod:`radref.mlp`         conditioner and gating networks
- :mod:`radref.coupling`    Rad and affine coupling layers
- :mod:`radref.flow`        stacks of coupling layers: log-density, inference, sampling
- :mod:`radref.optim`       Adam
- :mod:`radref.train`       minibatch maximum-likelihood training

User layer: :class:`RadFlow`, :class:`RealNVPFlow` (scikit-learn conventions),
:mod:`radref.datasets` (the paper's six problems) and the ``radref`` command.
"""
from radref import datasets
from radref._version import __version__
from radref.estimators import NotFittedError, RadFlow, RealNVPFlow, load_model

__all__ = ["datasets", "RadFlow", "RealNVPFlow", "load_model", "NotFittedError", "__version__"]
