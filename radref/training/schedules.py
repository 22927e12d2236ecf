"""A training recipe beyond the paper's (issue 15): learning-rate schedules,
an exponential moving average (EMA) of the parameters, and early stopping on
a validation split carved from the training data.

Each piece is optional, and with all three off the training loop
(:func:`radref.training.train.train`) is exactly the paper's: constant
learning rate, the last iterate, every step done.

- :func:`learning_rate` is a pure function of ``(t, lr, schedule)``, so a
  resumed run applies the same learning rates as an uninterrupted one.
- :class:`ParameterAverage` holds the EMA accumulator and the number of
  averaged steps: its state (arrays plus one integer) is what a checkpoint
  stores to resume it bit-identically.
- :class:`EarlyStopping` scores a validation split (rows of the training set,
  chosen by :func:`validation_split`), keeps the best parameters, and says
  when ``n_iter_no_change`` scores in a row did not improve on the best.
"""
import math
from typing import NamedTuple

import numpy as np

from radref.checks import check_int
from radref.training.hyperparameters import HYPERPARAMETER, check_hyperparameter

#: the names of the learning-rate schedules
LR_SCHEDULES = HYPERPARAMETER["lr_schedule"].choices


class LRSchedule(NamedTuple):
    """A learning-rate schedule (checked by :func:`check_lr_schedule`).

    Attributes
    ----------
    kind : {"constant", "cosine", "step"}
        The shape of the schedule.
    horizon : int
        ``"cosine"``: steps over which the rate decays (the run's ``steps``).
    final_fraction : float
        ``"cosine"``: the rate reached at ``horizon``, as a fraction of ``lr``.
    step_size : int
        ``"step"``: steps between two decays.
    gamma : float
        ``"step"``: factor applied at each decay.
    """

    kind: str = "constant"
    horizon: int = 1
    final_fraction: float = 0.0
    step_size: int = 1
    gamma: float = 1.0


def check_lr_schedule(schedule):
    """Validate an :class:`LRSchedule`; returns it with plain Python numbers.

    Raises
    ------
    TypeError, ValueError
        Naming the first offending field: ``horizon`` and ``step_size`` are
        integers >= 1, ``final_fraction`` is in ``[0, 1]``, ``gamma`` in
        ``(0, 1]`` (a schedule decays; a zero rate would stop training).
    """
    if not isinstance(schedule, LRSchedule):
        raise TypeError(f"schedule must be an LRSchedule, got {type(schedule).__name__}")
    # the ranges are those of the one table of hyperparameters
    kind = check_hyperparameter("lr_schedule", schedule.kind)
    horizon = check_int("lr_schedule horizon", schedule.horizon)
    step_size = check_hyperparameter("lr_step_size", schedule.step_size)
    final_fraction = check_hyperparameter("lr_final_fraction", schedule.final_fraction)
    gamma = check_hyperparameter("lr_gamma", schedule.gamma)
    return LRSchedule(kind, horizon, final_fraction, step_size, gamma)


def learning_rate(t, lr, schedule):
    """The learning rate of the 1-based Adam step ``t``.

    - ``"constant"``: ``lr`` (the very float given, so the paper's runs are
      unchanged bit for bit).
    - ``"cosine"``: ``lr * (f + (1 - f) * (1 + cos(pi * s / T)) / 2)`` with
      ``T = horizon``, ``f = final_fraction`` and ``s = min(t, T)``: ``lr``
      just before the first step, ``lr * f`` from step ``T`` on (a
      ``warm_start`` beyond the horizon keeps the final rate).
    - ``"step"``: ``lr * gamma ** ((t - 1) // step_size)``: steps
      ``1 .. step_size`` use ``lr``, the next ``step_size`` ``lr * gamma``, ...

    Parameters
    ----------
    t : int
        The step, ``>= 1``.
    lr : float
    schedule : LRSchedule

    Returns
    -------
    float
    """
    if schedule.kind == "constant":
        return lr
    if schedule.kind == "cosine":
        progress = min(t, schedule.horizon) / schedule.horizon
        f = schedule.final_fraction
        return lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule.kind == "step":
        return lr * schedule.gamma ** ((t - 1) // schedule.step_size)
    raise ValueError(f"unknown lr_schedule {schedule.kind!r}")


class ParameterAverage:
    """Exponential moving average of the parameters (Polyak averaging with
    geometric weights), debiased like Adam's moments.

    After the ``n``-th update with parameters ``p_n``::

        a_n = decay * a_{n-1} + (1 - decay) * p_n,   a_0 = 0
        average = a_n / (1 - decay**n)

    so the average is a weighted mean of the iterates ``p_1 .. p_n`` (weights
    proportional to ``decay**(n - i)``, summing to one) and owes nothing to
    the initialisation.

    Parameters
    ----------
    decay : float in (0, 1)
    names : list of str
        The parameter names (the order of the accumulator).
    accumulator : dict of ndarray, optional
        ``a_n`` per parameter (from a checkpoint); zeros if not given.
    count : int
        ``n``, the updates already averaged.
    """

    def __init__(self, decay, params, accumulator=None, count=0):
        self.decay, self.count = float(decay), int(count)
        if accumulator is None:
            accumulator = {name: np.zeros_like(value, dtype=np.float64)
                           for name, value in params.items()}
        self.accumulator = accumulator

    def update(self, params):
        """Fold the parameters after one more step into the average."""
        keep = 1.0 - self.decay
        for name, value in params.items():
            acc = self.accumulator[name]
            acc *= self.decay
            acc += keep * value
        self.count += 1

    def average(self):
        """The debiased average (new arrays); ``None`` before any update."""
        if self.count == 0:
            return None
        scale = 1.0 / (1.0 - self.decay ** self.count)
        return {name: acc * scale for name, acc in self.accumulator.items()}


def validation_split(n, fraction, seed_sequence):
    """Rows of a training set of ``n`` points set aside for early stopping.

    A random ``round(fraction * n)`` of the rows (at least one, at most
    ``n - 1``), drawn with ``np.random.default_rng(seed_sequence)``.

    Returns
    -------
    train_rows, validation_rows : ndarray of int
        Disjoint, sorted, together ``0 .. n - 1``.
    """
    n = check_int("n", n, minimum=2)
    size = min(max(int(round(fraction * n)), 1), n - 1)
    permutation = np.random.default_rng(seed_sequence).permutation(n)
    return np.sort(permutation[size:]), np.sort(permutation[:size])


class EarlyStopping:
    """Score a validation split, keep the best parameters, tell when to stop.

    Parameters
    ----------
    x : ndarray, shape (m, d)
        The validation split: rows of the *training* data (never the test set).
    n_iter_no_change : int
        Stop after this many scores in a row that do not beat the best.
    best_params : dict of ndarray, optional
    best_score : float
    best_step : int
    bad_scores : int
    stopped_at : int or None
        The state to resume from (a checkpoint's); a fresh start has
        ``best_score = -inf``, no best parameters and has not stopped.
    """

    def __init__(self, x, n_iter_no_change, best_params=None, best_score=-math.inf,
                 best_step=0, bad_scores=0, stopped_at=None):
        self.x, self.n_iter_no_change = x, int(n_iter_no_change)
        self.best_params, self.best_score = best_params, float(best_score)
        self.best_step, self.bad_scores = int(best_step), int(bad_scores)
        self.stopped_at = None if stopped_at is None else int(stopped_at)

    def record(self, step, score, params):
        """Record the validation ``score`` of ``params`` after ``step``;
        returns True when training should stop."""
        if score > self.best_score:
            self.best_params = {name: np.array(value, dtype=np.float64)
                                for name, value in params.items()}
            self.best_score, self.best_step, self.bad_scores = float(score), int(step), 0
        else:
            self.bad_scores += 1
        if self.bad_scores >= self.n_iter_no_change:
            self.stopped_at = int(step)
            return True
        return False
