"""Maximum-likelihood training of a flow with Adam over seeded minibatches."""
import sys
import time
import warnings

import numpy as np

from radref.core.flow import CHUNK_ROWS, flow_backward, flow_forward, flow_log_density, row_chunks
from radref.core.layers import LAYER_KINDS
from radref.training.diagnostics import (RUN_LABEL, DivergenceWarning, DivergenceWatch,
                                         far_outside, locate_non_finite)
from radref.training.progress import TrainingProgress, display_mode
from radref.training.optim import (AdamConfig, PackedAdam, adam_init, adam_update,
                                   check_adam_config)
from radref.training.schedules import check_lr_schedule, learning_rate


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient.

    The parameters are left at their last finite values.  ``step`` is the
    1-based step that failed; ``where`` names the first offending parameter
    (``"<layer>.<net>.<name>"``), ``"loss"`` (the minibatch log-likelihood is not
    finite, or its forward pass overflows) or ``"gradient"`` (the backward pass
    overflows); ``layer`` is the first layer where the failing batch goes wrong
    (an int, or ``None`` when the training point itself is out of range or the
    base density is at fault); ``row`` the index, in the training set, of a
    training point that triggers it (or ``None``); ``history`` the training
    history up to the last finite step.
    """

    def __init__(self, step, where, history=None, layer=None, row=None, detail=None):
        self.step, self.where, self.history = step, where, history
        self.layer, self.row, self.detail = layer, row, detail
        if where in ("loss", "gradient"):
            place = f"in the {where}"
            if layer is not None:
                place += f" (first in layer {layer}"
                place += f": {detail})" if detail else ")"
            elif detail:
                place += f" ({detail})"
        else:
            self.layer = int(where.split(".")[0])
            place = (f"in layer {self.layer} (parameter {where}"
                     + (f": {detail})" if detail else ")"))
        super().__init__(f"non-finite value at training step {step} {place}; "
                         "the parameters keep their last finite values")


def mean_loglik_and_grad(x, params, config, chunk_rows=CHUNK_ROWS):
    """Mean log-likelihood of ``x`` (shape ``(n, d)``) and its gradient with
    respect to every parameter (flat dict, same keys as ``params``).

    A batch of more than ``chunk_rows`` rows is processed ``chunk_rows`` rows
    at a time, summing the chunks' gradients (each with upstream ``1/n``), so
    that memory stays bounded and the time per point does not grow with the
    batch; up to ``chunk_rows`` rows it is one forward and one backward pass.
    """
    n = x.shape[0]
    if n <= chunk_rows:
        log_px, _, _, cache = flow_forward(x, params, config)
        _, grads = flow_backward(np.full(n, 1.0 / n), cache)
        return float(np.mean(log_px)), grads
    total, grads = 0.0, None
    for rows in row_chunks(n, chunk_rows):
        chunk = x[rows]
        log_px, _, _, cache = flow_forward(chunk, params, config)
        _, chunk_grads = flow_backward(np.full(len(chunk), 1.0 / n), cache)
        total += float(np.sum(log_px))
        if grads is None:
            grads = chunk_grads
        else:
            for name, g in chunk_grads.items():
                grads[name] = grads[name] + g
    return total / n, grads


def _first_non_finite(grads):
    """The name of the first gradient holding a non-finite value, or None."""
    # One check of all the gradients joined (the common case: all finite); the
    # search for the offending parameter runs only when there is one.
    values = list(grads.values())
    if values and np.all(np.isfinite(np.concatenate(values, axis=None))):
        return None
    for name, g in grads.items():
        if not np.all(np.isfinite(g)):
            return name
    return None


def _first_adam_overflow(params, descent, state, adam):
    """The first parameter whose Adam update overflows (nothing is modified):
    the same update, :meth:`PackedAdam.update` via :func:`adam_update`, one
    parameter at a time (the formula is elementwise, so the one that overflows
    alone is one that overflows in the packed update)."""
    for name in params:
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                adam_update({name: params[name]}, {name: descent[name]},
                            {"t": state["t"], "m": {name: state["m"][name]},
                             "v": {name: state["v"][name]}}, adam)
        except FloatingPointError:
            return name
    return next(iter(params))


class MinibatchSchedule:
    """Which rows of the training set each step uses.

    Epoch ``e = step // (n // batch_size)`` shuffles the rows with a generator
    seeded by ``seed_sequence`` extended with ``e``; step ``i`` of the epoch takes
    rows ``[i * batch_size, (i + 1) * batch_size)`` of that permutation (the
    ``n % batch_size`` leftover rows of an epoch are skipped).  The schedule is a
    pure function of ``(seed, step)``, so a resumed run draws the same batches
    as an uninterrupted one.
    """

    def __init__(self, n, batch_size, seed_sequence):
        self.n, self.batch_size, self.seed_sequence = n, batch_size, seed_sequence
        self.per_epoch = n // batch_size
        self._epoch, self._permutation = None, None

    def indices(self, step):
        """Row indices (shape ``(batch_size,)``) for the 0-based ``step``."""
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            ss = self.seed_sequence
            epoch_seed = np.random.SeedSequence(ss.entropy,
                                                spawn_key=tuple(ss.spawn_key) + (epoch,))
            self._epoch = epoch
            self._permutation = np.random.default_rng(epoch_seed).permutation(self.n)
        return self._permutation[position * self.batch_size:(position + 1) * self.batch_size]


def as_seed_sequence(random_state):
    """``None``, an int or a SeedSequence -> SeedSequence."""
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    return np.random.SeedSequence(random_state)


def train(params, config, x, steps, batch_size=500, adam=AdamConfig(), random_state=None,
          optimizer_state=None, start_step=0, x_val=None, eval_every=1000, progress=None,
          callback=None, callback_every=1000, lr_schedule=None, average=None, stopper=None):
    """Maximise the mean log-likelihood of ``x`` with Adam; updates ``params`` in place.

    Parameters
    ----------
    params : dict
        Flat flow parameters (updated in place).
    config : FlowConfig
    x : ndarray, shape (n, d)
        Training data.
    steps : int
        Total number of Adam steps; the loop runs steps ``start_step + 1 .. steps``.
    batch_size : int
        Minibatch size (see :class:`MinibatchSchedule`).
    adam : AdamConfig
    random_state : None, int or SeedSequence
        Seeds the minibatch schedule.
    optimizer_state : dict, optional
        Adam state to continue from (``adam_init(params)`` if not given).
    start_step : int
        Steps already done (when resuming from a checkpoint).
    x_val : ndarray, optional
        Held-out data, scored every ``eval_every`` steps and at the end.
    progress : bool or None
        Show progress (:mod:`radref.training.progress`): ``None`` on a
        terminal and in a Jupyter notebook, ``True`` also as plain lines on
        stderr elsewhere (a pipe, a log file), ``False`` never.
    callback : callable, optional
        ``callback(step, params, optimizer_state, history)`` every
        ``callback_every`` steps and after the last one (e.g. to checkpoint).
    lr_schedule : LRSchedule, optional
        The learning rate of step ``t`` is
        :func:`~radref.training.schedules.learning_rate` ``(t, adam.lr,
        lr_schedule)``; ``None`` (or ``"constant"``) keeps ``adam.lr``.
    average : ParameterAverage, optional
        Updated after every step with the new parameters; the held-out and
        validation scores are then those of the averaged parameters.
    stopper : EarlyStopping, optional
        Scores its validation split (rows of the training data) every
        ``eval_every`` steps and at the end; the loop stops after the step
        (and its callback) at which ``stopper.record`` says so.  A stopper
        that has already stopped (resumed from a checkpoint) runs no step.

    ``params`` always holds the raw (last) iterate, which is what resuming
    needs; the parameters a fitted model should use are
    ``stopper.best_params``, else ``average.average()``, else ``params``.

    Returns
    -------
    history : dict
        ``"step"``, ``"loglik"`` (minibatch mean log-likelihood per step),
        ``"val_step"``, ``"val_loglik"``, ``"divergence"`` (one entry per
        divergence warning: ``{"step", "start_loglik", "message"}``), and
        ``"optimizer_state"``.

    Raises
    ------
    NonFiniteError
        The parameters keep their last finite values.  It names a training
        point only when that point is the cause (beyond +-1e120, or far
        outside the other points); otherwise it says no single point is at fault.

    Warns
    -----
    DivergenceWarning
        Once, when the run is diverging (:class:`~radref.training.diagnostics.DivergenceWatch`);
        it starts with ``run <label>:`` inside
        :func:`~radref.training.diagnostics.naming_the_run`.
    """
    check_adam_config(adam)
    if lr_schedule is not None:
        lr_schedule = check_lr_schedule(lr_schedule)
    schedule = MinibatchSchedule(x.shape[0], batch_size, as_seed_sequence(random_state))
    state = optimizer_state if optimizer_state is not None else adam_init(params)
    history = {"step": [], "loglik": [], "val_step": [], "val_loglik": [], "divergence": []}
    display = TrainingProgress(steps, start_step, display_mode(progress, sys.stderr),
                               label=LAYER_KINDS[config.kind].DISPLAY_NAME)
    watch = DivergenceWatch()
    val = None
    if stopper is not None and stopper.stopped_at is not None:
        steps = start_step  # stopped early before the checkpoint: nothing left to do
    # the display is ended (its line closed) whatever stops the loop
    with display, PackedAdam(params, state, adam) as packed:  # restores the arrays on exit
        for step in range(start_step + 1, steps + 1):
            if lr_schedule is not None and lr_schedule.kind != "constant":
                packed.config = adam._replace(lr=learning_rate(step, adam.lr, lr_schedule))
            indices = schedule.indices(step - 1)
            loglik = _update_on_batch(x, indices, step, params, config, packed, history)
            diverging = watch.update(step, loglik)
            if diverging is not None:  # (an error, not a warning, under a filter "error")
                message = (f"{diverging}; try a smaller --lr (the estimators' lr; now "
                           f"{packed.config.lr:g})")
                history["divergence"].append({"step": step, "start_loglik": float(watch.start),
                                              "message": message})
                label = RUN_LABEL.get()
                warning = DivergenceWarning(message if label is None else f"run {label}: "
                                                                          f"{message}")
                warning.step, warning.start = step, watch.start
                warnings.warn(warning, stacklevel=2)
            history["step"].append(step)
            history["loglik"].append(loglik)
            if average is not None:
                average.update(params)
            evaluate = step % eval_every == 0 or step == steps
            scored = params if average is None or not evaluate else average.average()
            stop = False
            if stopper is not None and evaluate:
                stop = stopper.record(step, _held_out_score(stopper.x, scored, config), scored)
            if x_val is not None and evaluate:
                val = _held_out_score(x_val, scored, config)
                history["val_step"].append(step)
                history["val_loglik"].append(val)
            display.update(step, loglik, val)  # it smooths every step, draws when due
            if callback is not None and (step % callback_every == 0 or step == steps or stop):
                callback(step, params, state, history)
            if stop:
                break
    history["optimizer_state"] = state
    return history


def _update_on_batch(x, indices, step, params, config, packed, history):
    """Loss and gradient on the batch of rows ``indices`` of the training set
    ``x``, finiteness checks, one Adam update; returns the mean
    log-likelihood.  Raises :class:`NonFiniteError` with the parameters
    untouched."""
    batch = x[indices]
    try:
        # Floating-point errors (overflow, invalid operations) stop training at
        # this step instead of turning into warnings and NaN further on.
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            loglik, grads = mean_loglik_and_grad(batch, params, config)
    except FloatingPointError:
        loglik = None
    if loglik is None or not np.isfinite(loglik):
        where, layer, row, detail = locate_non_finite(
            batch, params, config, [f"training point {i}" for i in indices])
        row = None if row is None else int(indices[row])
        if row is not None and not _at_fault(x, row, detail):
            # an ordinary point where parameters thrown far away fail first:
            # naming it would send the user looking for a bad data row
            detail = (detail.replace(f"training point {row}", "a training point")
                      + "; no single training point is at fault, none lies far outside the "
                        "others: the parameters diverged")
            row = None
        raise NonFiniteError(step, where or "loss", history, layer, row, detail or None)
    g = packed.flatten(grads)
    if not np.all(np.isfinite(g)):
        raise NonFiniteError(step, _first_non_finite(grads), history)
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            packed.update(-g)  # all or nothing
    except FloatingPointError:
        descent = {k: -grads[k] for k in params}
        where = _first_adam_overflow(params, descent, packed.state, packed.config)
        raise NonFiniteError(step, where, history, detail="Adam's update overflows") from None
    return loglik


def _at_fault(x, row, detail):
    """Whether training point ``row``, where the loss first fails, is itself the
    cause: it lies beyond the range (out of range: +-1e120), or far outside
    the other training points (:func:`~radref.training.diagnostics.far_outside`)."""
    return "out of range" in detail or far_outside(x, row)


def _held_out_score(x_val, params, config):
    """Mean log-likelihood of the held-out data (``-inf`` if it overflows float64)."""
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            return float(np.mean(flow_log_density(x_val, params, config)))
    except FloatingPointError:
        return -np.inf  # the new parameters overflow float64 on the held-out data
