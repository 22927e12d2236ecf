"""Maximum-likelihood training of a flow with Adam over seeded minibatches."""
import sys
import time

import numpy as np

from radref.flow import flow_backward, flow_forward
from radref.optim import AdamConfig, adam_init, adam_update_inplace, check_adam_config


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient.

    The parameters are left at their last finite values.  ``step`` is the
    1-based step that failed; ``where`` names the first offending parameter
    (``"<layer>.<net>.<name>"``) or ``"loss"``.
    """

    def __init__(self, step, where):
        self.step, self.where = step, where
        layer = where.split(".")[0] if where != "loss" else None
        place = f"in layer {layer} (parameter {where})" if layer is not None else "in the loss"
        super().__init__(f"non-finite value at training step {step} {place}; "
                         "the parameters keep their last finite values")


def mean_loglik_and_grad(x, params, config):
    """Mean log-likelihood of ``x`` (shape ``(n, d)``) and its gradient with
    respect to every parameter (flat dict, same keys as ``params``)."""
    log_px, _, _, cache = flow_forward(x, params, config)
    n = x.shape[0]
    _, grads = flow_backward(np.full(n, 1.0 / n), cache)
    return float(np.mean(log_px)), grads


def _first_non_finite(grads):
    for name, g in grads.items():
        if not np.all(np.isfinite(g)):
            return name
    return None


class Progress:
    """One-line progress display on a terminal (silent otherwise)."""

    def __init__(self, total, enabled=None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled, self.total, self.start = enabled, total, time.perf_counter()

    def update(self, step, loglik, val_loglik=None):
        if not self.enabled:
            return
        val = "" if val_loglik is None else f"  held-out {val_loglik:.4f}"
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\rstep {step}/{self.total}  loglik {loglik:.4f}{val}  {elapsed:.1f}s")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def train(params, config, x, steps, batch_size=500, adam=AdamConfig(), random_state=None,
          optimizer_state=None, x_val=None, eval_every=1000, progress=None,
          start_step=0):
    """Maximise the mean log-likelihood of ``x`` with Adam; updates ``params`` in place.

    Parameters
    ----------
    params : dict
        Flat flow parameters (updated in place).
    config : FlowConfig
    x : ndarray, shape (n, d)
        Training data.
    steps : int
        Number of Adam steps.
    batch_size : int
        Minibatch size; each step draws a batch without replacement from an
        epoch-wise permutation of the data.
    adam : AdamConfig
    random_state : None, int or Generator
        Seeds the minibatch order.
    optimizer_state : dict, optional
        Adam state to continue from (from :func:`radref.optim.adam_init`).
    x_val : ndarray, optional
        Held-out data, scored every ``eval_every`` steps and at the end.
    progress : bool or None
        Show progress; ``None`` means only when stderr is a terminal.
    start_step : int
        Steps already done (for the display and the history only).

    Returns
    -------
    history : dict
        ``"step"``, ``"loglik"`` (minibatch mean log-likelihood per step),
        ``"val_step"``, ``"val_loglik"``, and ``"optimizer_state"``.

    Raises
    ------
    NonFiniteError
        The parameters keep their last finite values.
    """
    check_adam_config(adam)
    rng = np.random.default_rng(random_state)
    state = optimizer_state if optimizer_state is not None else adam_init(params)
    n = x.shape[0]
    order, cursor = rng.permutation(n), 0
    history = {"step": [], "loglik": [], "val_step": [], "val_loglik": []}
    display = Progress(start_step + steps, enabled=progress)
    val = None
    for i in range(1, steps + 1):
        if cursor + batch_size > n:
            order, cursor = rng.permutation(n), 0
        batch = x[order[cursor:cursor + batch_size]]
        cursor += batch_size
        loglik, grads = mean_loglik_and_grad(batch, params, config)
        step = start_step + i
        if not np.isfinite(loglik):
            raise NonFiniteError(step, "loss")
        bad = _first_non_finite(grads)
        if bad is not None:
            raise NonFiniteError(step, bad)
        adam_update_inplace(params, {k: -g for k, g in grads.items()}, state, adam)
        history["step"].append(step)
        history["loglik"].append(loglik)
        if x_val is not None and (i % eval_every == 0 or i == steps):
            val = float(np.mean(flow_forward(x_val, params, config)[0]))
            history["val_step"].append(step)
            history["val_loglik"].append(val)
        if i % 50 == 0 or i == steps:
            display.update(step, loglik, val)
    display.close()
    history["optimizer_state"] = state
    return history
