"""One training run: its settings, its state, and the one place that starts,
resumes, continues, trains and checkpoints it.

A :class:`TrainingRun` holds everything that decides what the next Adam step
does: the architecture (:class:`~radref.core.flow.FlowConfig`), the typed
:class:`TrainingSettings`, the parameters (the last iterate), Adam's state,
the steps done, the history, the run's seed (``entropy``), and the training
recipe's state (the :class:`~radref.training.schedules.ParameterAverage` and
the :class:`~radref.training.schedules.EarlyStopping`).  Seeds: the run's
``entropy`` spawns the initialisation (child 0), the minibatch order
(child 1) and the early-stopping split (child 2), so a resumed or continued
run draws what an uninterrupted one draws.

A checkpoint (:mod:`radref.training.checkpoint`) stores the training
settings by name (``extra["settings"]``, the entries of
:data:`~radref.training.hyperparameters.RESUME_SETTINGS`); a name missing from
an older file reads as its default, and radref 0.1/0.2 files (``batch_size``,
``adam`` as a list, ``recipe``) are read too.  A checkpoint is resumed only
if its architecture, data and every applicable resume setting are the
same, else :class:`CheckpointMismatchError` names what differs.

The scikit-learn estimators (:mod:`radref.user.estimators`) are thin
adapters over this module.
"""
import contextlib
import copy
import hashlib
import signal
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from radref.checks import check_int, check_real
from radref.core.flow import flow_init
from radref.training.checkpoint import (CheckpointError, DamagedCheckpointError, load_checkpoint,
                                        save_checkpoint)
from radref.training.hyperparameters import HYPERPARAMETER, RESUME_SETTINGS
from radref.training.optim import AdamConfig, adam_init
from radref.training.schedules import (EarlyStopping, LRSchedule, ParameterAverage,
                                       validation_split)
from radref.training.signals import Terminated, defers_sigterm
from radref.training.train import NonFiniteError, train


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training between two steps.

    The run holds the parameters after ``step`` steps (a consistent, usable
    state); ``checkpoint`` is the file written at that step, or ``None``
    when training had no checkpoint path; ``signum`` is the signal that
    asked (``signal.SIGINT`` for Ctrl-C, ``signal.SIGTERM``).
    """

    def __init__(self, step, checkpoint=None, signum=signal.SIGINT):
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        where = f"; training state saved to {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"training interrupted after step {step}{where}")

    def __reduce__(self):  # crosses process boundaries (reproduce's workers)
        return type(self), (self.step, self.checkpoint, self.signum)


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written by another run: another architecture, other
    data, or other training settings.  ``differing`` names them by the
    hyperparameters' names (``"hidden"``, ``"lr"``, ``"lr_decay_steps"``,
    ``"data_sha256"``); ``theirs`` and ``mine`` map those names to the
    checkpoint's values and to this run's."""

    def __init__(self, path, differing, theirs, mine):
        self.path, self.differing, self.theirs, self.mine = path, differing, theirs, mine
        what = ("by a model with other hyperparameters" if self.architecture_differs()
                else "with other data or training settings")
        shown = ", ".join(f"{name} {theirs.get(name)!r} there, {mine.get(name)!r} now"
                          for name in differing)
        super().__init__(f"checkpoint {path} was written {what} ({shown})")

    def architecture_differs(self):
        return any(name == "dim" or (name in HYPERPARAMETER
                                     and HYPERPARAMETER[name].group in ("architecture", "seed"))
                   for name in self.differing)

    def __reduce__(self):  # crosses process boundaries (reproduce's workers)
        return type(self), (self.path, self.differing, self.theirs, self.mine)


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class StoppingSettings:
    """Early stopping: the fraction of training rows set aside, and the
    scores without improvement before stopping."""

    validation_fraction: float
    n_iter_no_change: int


@dataclass(frozen=True)
class TrainingSettings:
    """How a run trains (typed; built from checked hyperparameters by
    :meth:`from_hyperparameters`).

    Attributes
    ----------
    steps : int
        Adam steps in total (the step to reach).
    batch_size : int
        Minibatch size as asked (capped at the training rows when training).
    adam : AdamConfig
    schedule : LRSchedule
        With its horizon resolved (``lr_decay_steps``, else ``steps``).
    eval_every : int
    ema_decay : float or None
        Parameter averaging (``None``: off).
    stopping : StoppingSettings or None
        Early stopping (``None``: off).
    progress : bool or None
        The display of :func:`radref.training.train.train`.
    """

    steps: int
    batch_size: int
    adam: AdamConfig
    schedule: LRSchedule = LRSchedule()
    eval_every: int = 250
    ema_decay: Optional[float] = None
    stopping: Optional[StoppingSettings] = None
    progress: Optional[bool] = False

    @classmethod
    def from_hyperparameters(cls, hp):
        """From a dict of checked hyperparameters (name -> value)."""
        horizon = hp["steps"] if hp["lr_decay_steps"] is None else hp["lr_decay_steps"]
        stopping = (StoppingSettings(hp["validation_fraction"], hp["n_iter_no_change"])
                    if hp["early_stopping"] else None)
        return cls(hp["steps"], hp["batch_size"],
                   AdamConfig(hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]),
                   LRSchedule(hp["lr_schedule"], horizon, hp["lr_final_fraction"],
                              hp["lr_step_size"], hp["lr_gamma"]),
                   hp["eval_every"], hp["ema_decay"], stopping, hp["progress"])

    def recorded(self, batch_size):
        """The resume settings by name, as a checkpoint records them
        (``batch_size``: the one used; a cosine's ``lr_decay_steps``: its horizon)."""
        stopping = self.stopping or StoppingSettings(
            HYPERPARAMETER["validation_fraction"].default,
            HYPERPARAMETER["n_iter_no_change"].default)
        schedule = self.schedule
        values = dict(batch_size=batch_size, **self.adam._asdict(), lr_schedule=schedule.kind,
                      lr_decay_steps=schedule.horizon if schedule.kind == "cosine" else None,
                      lr_final_fraction=schedule.final_fraction,
                      lr_step_size=schedule.step_size, lr_gamma=schedule.gamma,
                      ema_decay=self.ema_decay, early_stopping=self.stopping is not None,
                      validation_fraction=stopping.validation_fraction,
                      n_iter_no_change=stopping.n_iter_no_change)
        return {name: values[name] for name in RESUME_SETTINGS}


def differing_settings(theirs, mine, names=RESUME_SETTINGS):
    """Names of the settings in which two recorded settings differ.  A setting
    that applies only when another has some value (``lr_gamma`` with the step
    schedule) is compared only where it applies on both sides."""
    found = []
    for name in names:
        condition = HYPERPARAMETER[name].applies if name in HYPERPARAMETER else None
        if condition is not None:
            other, value = condition
            if theirs.get(other) != value or mine.get(other) != value:
                continue
        if theirs.get(name) != mine.get(name):
            found.append(name)
    return found


# ------------------------------------------------------------ stored runs
def _legacy_settings(extra):
    """The resume settings of a radref 0.1/0.2 checkpoint (``batch_size``,
    ``adam`` as the list ``[lr, beta1, beta2, eps]``, ``recipe`` holding the
    non-default recipe settings); ``None`` for what the file does not hold."""
    settings = {name: HYPERPARAMETER[name].default for name in RESUME_SETTINGS}
    settings["batch_size"] = extra.get("batch_size")
    adam = extra.get("adam")
    settings.update(zip(AdamConfig._fields, adam) if adam is not None
                    else dict.fromkeys(AdamConfig._fields))
    settings.update(extra.get("recipe", {}))
    if settings["lr_schedule"] == "cosine" and "lr_decay_steps" not in extra.get("recipe", {}):
        # radref 0.2.0 recorded no horizon when it was the fit's steps
        settings["lr_decay_steps"] = extra.get("estimator_params", {}).get("steps")
    return settings


def recorded_settings(extra):
    """The resume settings a checkpoint's ``extra`` records, by name (a name
    a file does not record reads as its default)."""
    if "settings" not in extra:
        return _legacy_settings(extra)
    stored = extra["settings"]
    return {name: stored.get(name, HYPERPARAMETER[name].default) for name in RESUME_SETTINGS}


def recorded_hyperparameters(meta):
    """Every hyperparameter a checkpoint records, by name: its architecture
    and seed, and its estimator parameters; a file written before these were
    recorded (radref 0.1) gives ``steps`` as the steps done and, when ``fit``
    wrote it, ``batch_size`` and Adam's settings."""
    params = {k: v for k, v in meta["hyperparameters"].items() if k != "dim"}
    extra = meta["extra"]
    if "estimator_params" in extra:
        params.update(extra["estimator_params"])
        return params
    params["steps"] = max(meta["step"], 1)
    legacy = _legacy_settings(extra)
    params.update({k: legacy[k] for k in ("batch_size",) + AdamConfig._fields
                   if legacy[k] is not None})
    return params


def _checked_params(params, config, path):
    """``params`` as fresh float64 arrays, after checking names and shapes
    against the architecture ``config``."""
    expected = flow_init(config, random_state=0)
    if set(expected) != set(params) or any(expected[k].shape != params[k].shape
                                           for k in expected):
        raise DamagedCheckpointError(f"{path}: parameters do not match the architecture")
    checked = {k: np.array(params[k], dtype=np.float64) for k in expected}
    for name, value in checked.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: parameter {name} has non-finite values")
    return checked


def data_digest(X):
    """SHA-256 of the training points (a checkpoint is resumed on the same data only)."""
    return hashlib.sha256(X.tobytes()).hexdigest()


# ---------------------------------------------------------------- the run
class TrainingRun:
    """The state of one training run (see the module docstring).

    Attributes
    ----------
    model : str
        The estimator's class name (a checkpoint's ``model``).
    architecture : dict
        The checkpoint's ``hyperparameters`` without ``dim``.
    config : FlowConfig
    settings : TrainingSettings
    params, adam_state : dict
        The last iterate and Adam's state.
    step : int
        Steps done.
    history : dict or None
    entropy : int or None
        The run's seed (``None`` only for a radref 0.1 model file).
    average : ParameterAverage or None
    stopper : EarlyStopping or None
    recorded : dict or None
        The resume settings of the last training (``None`` if unknown).
    data_sha256 : str or None
    n_training_rows : int or None
        Rows of the last training's data trained on (not set aside for
        early stopping); ``None`` before any training.
    """

    def __init__(self, model, architecture, config, settings, params, adam_state, step=0,
                 history=None, entropy=None, average=None, stopper=None, recorded=None,
                 data_sha256=None):
        self.model, self.architecture, self.config = model, architecture, config
        self.settings, self.params, self.adam_state = settings, params, adam_state
        self.step, self.history, self.entropy = step, history, entropy
        self.average, self.stopper = average, stopper
        self.recorded, self.data_sha256 = recorded, data_sha256
        self.n_training_rows = None  # rows trained on (after the early-stopping split)

    # ------------------------------------------------------------ beginnings
    @classmethod
    def start(cls, model, architecture, config, settings, random_state, out_std):
        """A fresh run: parameters drawn from the first child of the seed."""
        entropy = np.random.SeedSequence(random_state).entropy
        init_seed = np.random.SeedSequence(entropy).spawn(2)[0]
        params = flow_init(config, out_std=out_std, random_state=np.random.default_rng(init_seed))
        run = cls(model, architecture, config, settings, params, adam_init(params), 0, None,
                  int(entropy))
        run._recipe_objects({})
        return run

    @classmethod
    def from_checkpoint(cls, path, model, architecture, config, settings):
        """The run a checkpoint holds (its architecture must be ``architecture``
        and ``config``, else :class:`CheckpointMismatchError`)."""
        return cls._read(path, model, architecture, config, settings)[0]

    @classmethod
    def _read(cls, path, model, architecture, config, settings):
        meta, params, adam_state, groups = load_checkpoint(path, expected_model=model,
                                                           extra_arrays=True)
        theirs = dict(meta["hyperparameters"])
        mine = dict(architecture, dim=config.dim)
        differing = [k for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)]
        if differing:
            raise CheckpointMismatchError(path, differing, theirs, mine)
        extra = meta["extra"]
        entropy = extra.get("entropy")
        run = cls(model, architecture, config, settings, _checked_params(params, config, path),
                  adam_state, meta["step"], extra.get("history"),
                  None if entropy is None else int(entropy),
                  recorded=(recorded_settings(extra) if "settings" in extra
                            or "batch_size" in extra else None),
                  data_sha256=extra.get("data_sha256"))
        run._recipe_objects(_recipe_state(groups, extra, config, path))
        return run, extra

    @classmethod
    def resume(cls, path, model, architecture, config, settings, X):
        """The run of an existing checkpoint, to continue training on ``X``
        with ``settings``: refused (:class:`CheckpointMismatchError`) unless
        the checkpoint's architecture, data and resume settings are these."""
        run, extra = cls._read(path, model, architecture, config, settings)
        theirs = dict(recorded_settings(extra), data_sha256=extra.get("data_sha256"))
        mine = dict(settings.recorded(run._batch_size(X)), data_sha256=data_digest(X))
        differing = differing_settings(theirs, mine, RESUME_SETTINGS + ("data_sha256",))
        if differing:
            raise CheckpointMismatchError(path, differing, theirs, mine)
        if run.adam_state is None:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
        if run.step > settings.steps:
            raise ValueError(f"steps ({settings.steps}) is below the {run.step} steps of "
                             f"checkpoint {path}: steps is the total to reach; raise it, or "
                             f"choose another checkpoint path to start afresh")
        return run

    def continued(self, config, settings):
        """A copy of this run to train further with ``settings``
        (``warm_start``): the architecture and the recipe must be the same,
        and ``settings.steps`` at least the steps done."""
        if config != self.config:
            raise ValueError(f"warm_start=True continues the fitted model, whose architecture "
                             f"{tuple(self.config)} differs from the parameters' "
                             f"{tuple(config)}: set warm_start=False to start afresh")
        if settings.steps < self.step:
            raise ValueError(f"steps ({settings.steps}) is below the {self.step} steps this "
                             f"model has done: with warm_start=True, steps is the total to reach")
        recipe = [n for n in RESUME_SETTINGS if HYPERPARAMETER[n].group == "recipe"]
        theirs = (self.settings.recorded(self.settings.batch_size) if self.recorded is None
                  else self.recorded)
        mine = settings.recorded(settings.batch_size)
        differing = differing_settings(theirs, mine, recipe)
        if differing:
            shown = "; ".join(f"{n} {theirs[n]!r} then, {mine[n]!r} now" for n in differing)
            hint = ("; a cosine decay ends at lr_decay_steps, which defaults to steps: to "
                    "train one decay in several fits, set lr_decay_steps to the final total "
                    "from the first fit on" if "lr_decay_steps" in differing else "")
            raise ValueError(f"warm_start=True continues the fitted model, trained with another "
                             f"recipe ({shown}): set warm_start=False to start afresh{hint}")
        run = copy.deepcopy(self)
        run.settings = settings
        return run

    def _recipe_objects(self, state):
        """The average and the stopper of this run's settings, from a stored state."""
        self.average = self.stopper = None
        if self.settings.ema_decay is not None:
            self.average = ParameterAverage(self.settings.ema_decay, self.params,
                                            state.get("ema"), state.get("ema_count", 0))
        if self.settings.stopping is not None:
            self.stopper = EarlyStopping(None, self.settings.stopping.n_iter_no_change,
                                         best_params=state.get("best"),
                                         **state.get("stopping", {}))

    # -------------------------------------------------------------- training
    def _validation_rows(self, n):
        """The training and validation rows of early stopping: the split is
        seeded by the third child of the run's seed, so a resumed run sets
        aside the same rows."""
        seed = np.random.SeedSequence(self.entropy, spawn_key=(2,))
        return validation_split(n, self.settings.stopping.validation_fraction, seed)

    def _batch_size(self, X):
        """The batch size used on ``X`` (a batch larger than the training rows
        is the whole of them, as scikit-learn's MLP does)."""
        n_fit = X.shape[0]
        if self.settings.stopping is not None:
            n_fit -= len(validation_split(X.shape[0], self.settings.stopping.validation_fraction,
                                          0)[1])
        return min(self.settings.batch_size, n_fit)

    def train(self, X, X_val=None, checkpoint=None, checkpoint_every=1000,
              estimator_params=None):
        """Train on ``X`` up to ``settings.steps`` (fewer if early stopping
        stops), checkpointing every ``checkpoint_every`` steps, at the end and
        on Ctrl-C.  The run is updated in place, also when training stops
        with :class:`~radref.training.train.NonFiniteError` (the last finite
        step) or :class:`TrainingInterrupted` (the step under way).
        ``estimator_params`` is what the checkpoints record as the estimator's
        parameters (:func:`recorded_hyperparameters`).
        """
        batch_size = self._batch_size(X)
        self.recorded, self.data_sha256 = self.settings.recorded(batch_size), data_digest(X)
        x_fit = X
        if self.stopper is not None:
            train_rows, validation_rows = self._validation_rows(X.shape[0])
            x_fit, self.stopper.x = X[train_rows], X[validation_rows]
        self.n_training_rows = len(x_fit)
        monitor = _Monitor(self, checkpoint, checkpoint_every, estimator_params)
        order_seed = np.random.SeedSequence(self.entropy).spawn(2)[1]
        s = self.settings
        try:
            with _deferred_interrupt() as monitor.interrupt:
                history = train(self.params, self.config, x_fit, s.steps, batch_size, s.adam,
                                random_state=order_seed, optimizer_state=self.adam_state,
                                start_step=self.step, x_val=X_val, eval_every=s.eval_every,
                                progress=s.progress, callback=monitor, callback_every=1,
                                lr_schedule=s.schedule, average=self.average,
                                stopper=self.stopper)
        except NonFiniteError as err:  # the parameters keep their last finite values
            self._advance(err.step - 1, err.history)
            raise
        except TrainingInterrupted:
            self._advance(monitor.step, monitor.history)
            raise
        history.pop("optimizer_state")
        done = history["step"][-1] if history["step"] else self.step  # < steps if stopped early
        self._advance(max(done, self.step), history)

    def _advance(self, step, new_history):
        self.step, self.history = step, merge_histories(self.history, new_history)

    def model_params(self):
        """The parameters a fitted model uses: the best of early stopping,
        else the average, else the last iterate."""
        if self.stopper is not None and self.stopper.best_params is not None:
            return self.stopper.best_params
        if self.average is not None and self.average.count:
            return self.average.average()
        return self.params

    # ----------------------------------------------------------- checkpoints
    def to_checkpoint(self, path, estimator_params, step=None, params=None, adam_state=None,
                      new_history=None):
        """Write the run to ``path`` (by default its current state; the
        training loop passes the state of the step it is at)."""
        params = self.params if params is None else params
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"parameter {name} has non-finite values: not saved")
        extra = {"estimator_params": estimator_params}
        if self.recorded is not None:
            extra.update(settings=self.recorded, data_sha256=self.data_sha256)
        if self.entropy is not None:
            extra["entropy"] = str(self.entropy)
        extra["history"] = merge_histories(self.history, new_history)
        arrays = {}
        if self.average is not None:
            extra.update(ema_count=int(self.average.count), ema_decay=self.average.decay)
            arrays["ema"] = self.average.accumulator
        if self.stopper is not None:
            st = self.stopper
            extra["stopping"] = {"best_score": st.best_score, "best_step": st.best_step,
                                 "bad_scores": st.bad_scores, "stopped_at": st.stopped_at}
            if st.best_params is not None:
                arrays["best"] = st.best_params
        save_checkpoint(path, self.model, dict(self.architecture, dim=self.config.dim), params,
                        self.adam_state if adam_state is None else adam_state,
                        self.step if step is None else step, extra=extra,
                        extra_arrays=arrays or None)


def _recipe_state(groups, extra, config, path):
    """The recipe state stored in a checkpoint (empty for a file without one)."""
    state = {}
    if "ema_count" in extra:
        state["ema"] = _checked_params(groups.get("ema", {}), config, path)
        state["ema_count"] = check_int("ema_count", extra["ema_count"], minimum=0)
        check_real("ema_decay", extra["ema_decay"])
    if "stopping" in extra:
        state["stopping"] = dict(extra["stopping"])
        state["best"] = _checked_params(groups["best"], config, path) if "best" in groups \
            else None
    return state


def merge_histories(old, new):
    """Concatenate two training histories (either may be ``None``; a history
    of radref 0.2 has no ``"divergence"``: none recorded)."""
    keys = ("step", "loglik", "val_step", "val_loglik", "divergence")
    parts = [h for h in (old, new) if h is not None]
    return {k: [v for h in parts for v in h.get(k, [])] for k in keys}


class _Monitor:
    """The training loop's callback, after every step: periodic checkpoints,
    and the stop that Ctrl-C asked for."""

    def __init__(self, run, checkpoint, every, estimator_params):
        self.run, self.checkpoint, self.every = run, checkpoint, every
        self.estimator_params = estimator_params
        self.interrupt = None  # threading.Event, set by _deferred_interrupt
        self.step, self.history = run.step, None

    def __call__(self, step, params, state, history):
        self.step, self.history = step, history
        saved = False
        stopper = self.run.stopper
        stopped = stopper is not None and stopper.stopped_at == step  # the end, early
        if self.checkpoint is not None and (step % self.every == 0 or stopped
                                            or step == self.run.settings.steps):
            self._save(step, params, state, history)
            saved = True
        if self.interrupt is not None and self.interrupt.is_set():
            if self.checkpoint is not None and not saved:
                self._save(step, params, state, history)
            raise TrainingInterrupted(step, self.checkpoint, self.interrupt.signum)

    def _save(self, step, params, state, history):
        self.run.to_checkpoint(self.checkpoint, self.estimator_params, step, params, state,
                               history)


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a flag that the training
    loop reads between steps, so that training stops at a consistent state (a
    step is never half applied); a second one raises ``KeyboardInterrupt``
    (:class:`~radref.training.signals.Terminated` for SIGTERM) at once.  The
    flag's ``signum`` says which signal asked.

    Only in the main thread, and only for a signal whose handler is Python's
    default or, for SIGTERM, one of radref's own (the ``radref`` command's,
    a sweep worker's: :func:`radref.training.signals.defers_sigterm`): a
    handler the program set up is left alone.
    """
    flag = threading.Event()
    flag.signum = None
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    taken = [sig for sig, ours in (
        (signal.SIGINT, signal.getsignal(signal.SIGINT) is signal.default_int_handler),
        (signal.SIGTERM, defers_sigterm(signal.getsignal(signal.SIGTERM)))) if ours]

    def handler(signum, frame):
        if flag.is_set():
            raise Terminated("terminated by SIGTERM") if signum == signal.SIGTERM \
                else KeyboardInterrupt
        flag.signum = signum
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig in taken}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
