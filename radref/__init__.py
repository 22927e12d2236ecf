"""radref: the reference NumPy implementation of Rad (Real and Discrete) normalizing flows.

The package is layered; each layer imports only from the layers above it in
this list (``tests/test_architecture.py`` enforces it):

- :mod:`radref.checks`     argument validation, the one home of every check
- :mod:`radref.core`       the functional core: the paper's mathematics as pure
                           ``*_forward -> (outputs, cache)`` / ``*_backward`` pairs
- :mod:`radref.datasets`   the paper's six 2-D problems with exact log-densities
- :mod:`radref.training`   Adam, minibatch maximum likelihood, diagnostics, checkpoints
- :mod:`radref.reference`  gradient checks, Theorem 1, golden vectors for ports
- :mod:`radref.user`       estimators (:class:`RadFlow`, :class:`RealNVPFlow`),
                           the ``radref`` command, plots, the paper reproduction
"""
import importlib
import importlib.util
import sys
import warnings

from radref import datasets
from radref._version import REMOVED_IN, __version__
from radref.user.estimators import NotFittedError, RadFlow, RealNVPFlow, load_model

__all__ = ["datasets", "RadFlow", "RealNVPFlow", "load_model", "NotFittedError", "__version__"]

#: Module paths of radref 0.1 (one flat package), deprecated: each name is
#: the same module object as its new home (``radref.slopes is
#: radref.core.slopes``) and warns that it goes away in REMOVED_IN.
_V0_MODULES = {
    "softmax": "radref.core.softmax", "slopes": "radref.core.slopes",
    "surjection": "radref.core.surjection", "gating": "radref.core.gating",
    "base": "radref.core.base", "mlp": "radref.core.mlp", "layer1d": "radref.core.layer1d",
    "flow": "radref.core.flow",
    "optim": "radref.training.optim", "train": "radref.training.train",
    "diagnostics": "radref.training.diagnostics", "checkpoint": "radref.training.checkpoint",
    "gradcheck": "radref.reference.gradcheck", "theory": "radref.reference.theory",
    "golden": "radref.reference.golden", "estimators": "radref.user.estimators",
    "cli": "radref.user.cli", "plots": "radref.user.plots", "reproduce": "radref.user.reproduce",
}

def _v0_module(short):
    warnings.warn(f"radref.{short} is radref 0.1's path of {_V0_MODULES[short]}; it is "
                  f"deprecated and will be removed in {REMOVED_IN}: import "
                  f"{_V0_MODULES[short]}", DeprecationWarning, stacklevel=3)
    return importlib.import_module(_V0_MODULES[short])


def __getattr__(name):
    # ``radref.slopes`` as an attribute, imported on first use
    if name in _V0_MODULES:
        return _v0_module(name)
    raise AttributeError(f"module 'radref' has no attribute {name!r}")


class _V0Alias:
    """Import hook, until REMOVED_IN: ``import radref.slopes`` (and ``from
    radref.slopes import ...``) warns and gives the module object at its new
    path, not a second copy.  Removed with the 0.1 paths."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        short = fullname[len("radref."):] if fullname.startswith("radref.") else None
        if short not in _V0_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, cls)

    @staticmethod
    def create_module(spec):
        return _v0_module(spec.name[len("radref."):])

    @staticmethod
    def exec_module(module):
        pass


sys.meta_path.append(_V0Alias)
