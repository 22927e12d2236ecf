"""Diagnostics: where a flow's log-likelihood or gradient first goes wrong.

Used by :mod:`radref.training.train` to turn a non-finite loss into a precise error
(:class:`radref.training.train.NonFiniteError`); it re-runs one minibatch layer by layer,
so it costs nothing in normal training.
"""
import contextlib
import contextvars

import numpy as np

from radref.core.base import normal_logpdf_forward
from radref.core.flow import FlowCache, flow_layers, flow_layers_backward
from radref.core.numerics import RANGE, out_of_range_rows


def locate_non_finite(x, params, config, row_names=None):
    """Where the log-likelihood of ``x`` (or its gradient) first goes wrong.

    Re-runs the flow's layer loop (:func:`radref.core.flow.flow_layers`) with
    floating-point errors raised, stopping at the first layer whose output
    leaves the range or whose term is not finite, then (if the forward pass
    is clean) the backward sweep (:func:`radref.core.flow.flow_layers_backward`).

    Parameters
    ----------
    x : ndarray, shape (n, d)
    params, config
        As for :func:`radref.core.flow.flow_forward`.
    row_names : sequence, optional
        How to name row ``i`` of ``x`` in ``detail`` (default ``"row i"``).

    Returns
    -------
    where : {"loss", "gradient"} or None
        ``None`` if nothing goes wrong.
    layer : int or None
    row : int or None
        A row of ``x`` concerned (when known).
    detail : str
    """
    def first(rows):
        return int(np.flatnonzero(rows)[0])

    def name(row):
        return f"row {row}" if row_names is None else str(row_names[row])

    limit = f"{RANGE:g}".replace("e+", "e")
    outside = out_of_range_rows(x)
    if outside.any():
        row = first(outside)
        return "loss", None, row, f"{name(row)} lies beyond +-{limit}: out of range"
    records = []
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            for record in flow_layers(x, params, config):
                if record.out_of_range.any():
                    row = first(record.out_of_range)
                    return "loss", record.layer, row, \
                        f"its output leaves +-{limit} for {name(row)}"
                if not np.all(np.isfinite(record.term)):
                    row = first(~np.isfinite(record.term))
                    return "loss", record.layer, row, \
                        f"its log-likelihood term is not finite for {name(row)}"
                records.append(record)
        except FloatingPointError as exc:  # raised by the layer after the last record
            return "loss", len(records), None, f"{exc} in its forward pass"
        try:
            log_base, base_cache = normal_logpdf_forward(records[-1].z)
        except FloatingPointError as exc:
            return "loss", None, None, f"{exc} in the base density"
        if not np.all(np.isfinite(log_base)):
            row = first(~np.isfinite(log_base))
            return "loss", None, row, f"the base density is not finite for {name(row)}"
        cache = FlowCache(config, [r.cache for r in records], base_cache, outside)
        running = config.n_layers - 1  # the layer whose backward pass runs next
        try:
            for layer, dz, grads in flow_layers_backward(np.full(len(x), 1.0 / len(x)), cache):
                if not (np.all(np.isfinite(dz))
                        and all(np.all(np.isfinite(g)) for net in grads.values()
                                for g in net.values())):
                    return "gradient", layer, None, "its gradient is not finite"
                running = layer - 1
        except FloatingPointError as exc:
            return "gradient", running, None, f"{exc} in its backward pass"
    return None, None, None, ""


def far_outside(x, row):
    """Whether training point ``row`` of ``x`` is, on its own, a cause of
    trouble: beyond the range of the other training points, in some
    coordinate, by more than that range's width (an outlier, not merely the
    most extreme of ordinary points).  With a single training point there is
    nothing to compare with: ``False``."""
    if len(x) < 2:
        return False
    others = np.delete(x, row, axis=0)
    lo, hi = others.min(axis=0), others.max(axis=0)
    # Near the largest float64 a width or a bound overflows to inf; inf is
    # then the right answer (no float lies beyond it), so no warning is due.
    with np.errstate(over="ignore"):
        width = hi - lo
        return bool(np.any((x[row] > hi + width) | (x[row] < lo - width)))


# ------------------------------------------------------------- divergence
class DivergenceWarning(UserWarning):
    """Training is diverging: the smoothed minibatch log-likelihood has fallen
    far below its value at the first step (:class:`DivergenceWatch`).  To stop
    instead of warning, turn it into an error:
    ``warnings.simplefilter("error", DivergenceWarning)``."""


#: The name of the run being trained, or None: several runs share one log
#: (``radref reproduce``), and a divergence warning must say whose training
#: diverged.  A context variable: each thread (a Dask worker's) has its own.
RUN_LABEL = contextvars.ContextVar("radref_run_label", default=None)


@contextlib.contextmanager
def naming_the_run(label):
    """Within the block, divergence warnings of this thread's training start
    with ``run <label>:`` (:data:`RUN_LABEL`)."""
    token = RUN_LABEL.set(label)
    try:
        yield
    finally:
        RUN_LABEL.reset(token)


class DivergenceWatch:
    """Recognises a diverging training run from its minibatch log-likelihoods.

    Training that works raises the log-likelihood; a learning rate too large
    for the problem throws the parameters far away, and the log-likelihood
    falls, often by orders of magnitude (two moons at lr 10: -4.9e20 nats
    after a few steps, from -2.6 at the start).  The watch smooths the
    per-step values (exponential average, weight :data:`SMOOTHING` on the
    past) and, from step :data:`GRACE` of a fit on (early spikes that recover
    within it are common at high learning rates), reports the first step at
    which the smoothed value lies more than ``max(MARGIN, 10% of |start|)``
    nats below the first step's value.  It reports once.
    """

    GRACE, MARGIN, SMOOTHING = 100, 10.0, 0.9

    def __init__(self):
        self.start, self.smoothed, self.seen, self.reported = None, None, 0, False

    @classmethod
    def far_below(cls, start, value):
        """Whether the log-likelihood ``value`` lies more than ``max(MARGIN,
        10% of |start|)`` nats below ``start``: diverged, and, at the end of
        a run that diverged on the way, not recovered."""
        return value < start - max(cls.MARGIN, 0.1 * abs(start))

    def update(self, step, loglik):
        """Record step ``step``'s log-likelihood; returns the message of a
        divergence when one is first seen there, else ``None``."""
        self.seen += 1
        if self.start is None:
            self.start = self.smoothed = loglik
            return None
        self.smoothed = self.SMOOTHING * self.smoothed + (1.0 - self.SMOOTHING) * loglik
        if self.reported or self.seen < self.GRACE or not self.far_below(self.start,
                                                                         self.smoothed):
            return None
        self.reported = True
        return (f"training is diverging at step {step}: the smoothed log-likelihood is "
                f"{self.smoothed:.4g} nats per point, far below its {self.start:.4g} at the "
                f"start of this fit")
