"""Peer implementations of radref's flows in other frameworks, for validation and
benchmarking (never imported by radref itself).

- :mod:`peers.torch_flows`: PyTorch (autograd), the model of
  ``validation/crosscheck_torch.py``; needs ``torch``.
- :mod:`peers.jax_flows`: JAX (jit, float64), a transcription of the same
  formulas; needs ``jax``.

Both share radref's conventions only: flat parameter names
``"<layer>.<net>.<name>"``, the conditioner output column layout, the alternating
masks and 0-based ``k``.  Each module also has a ``Peer`` class that the
benchmark (``validation/benchmark.py``) drives: it holds a copy of a radref
parameter dict in the framework's own arrays and offers ``loglik(x)`` (per-point
log-density, no gradient) and ``train_step(x)`` (mean log-likelihood, backward,
one Adam step in the framework's own terms).

Import a peer with :func:`load`, which turns a missing framework into a reason.
"""
import importlib

PEERS = ("torch", "jax")
_MODULES = {"torch": "torch_flows", "jax": "jax_flows"}


def load(name):
    """The peer module for ``name`` ("torch" or "jax").

    Raises ImportError (with the pip command in the message) when the framework
    is not installed.
    """
    if name not in _MODULES:
        raise ValueError(f"unknown peer {name!r}; valid names are {', '.join(PEERS)}")
    try:
        importlib.import_module(name)
    except ImportError as exc:
        hint = "pip install torch==2.13.0" if name == "torch" else "pip install jax jaxlib"
        raise ImportError(f"{name} is not installed ({hint}): {exc}") from exc
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")
