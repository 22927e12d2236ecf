"""The estimators :class:`RadFlow` and :class:`RealNVPFlow`: scikit-learn
adapters over one training run, without depending on scikit-learn.

- Every hyperparameter is a constructor parameter stored unmodified; the
  constructor is built from the one table of hyperparameters
  (:mod:`radref.training.hyperparameters`) and the model's layer kind
  (:mod:`radref.core.layers`, its ``DEFAULT_ARCHITECTURE``);
  ``get_params``, ``set_params`` and ``__repr__`` come from
  :class:`~radref.user.params.ParamsMixin`, and nothing is checked before
  :meth:`~_FlowEstimator.fit`, which checks every value against the table.
- ``fit(X, y=None)`` returns ``self``; what it learns ends in an underscore
  (``params_``, ``n_features_in_``, ...).  Training itself, with its
  checkpoints, resuming and Ctrl-C, is :class:`radref.training.run.TrainingRun`.
- Scoring, inference and sampling are :class:`~radref.user.inference.FittedFlow`'s.
- ``__sklearn_tags__`` tells scikit-learn's estimator checks what the
  estimators are (density estimators that also transform: ``X -> Z``); it
  imports scikit-learn only when scikit-learn itself asks.

All arithmetic happens in the functional core (:mod:`radref.core.flow`).
"""
import inspect
import numbers
import os
import warnings

import numpy as np

from radref._version import REMOVED_IN
from radref.checks import check_array, check_int, check_path
from radref.core.flow import FlowConfig
from radref.core.layers import affine, rad
from radref.training.checkpoint import CheckpointError, DamagedCheckpointError, load_checkpoint
from radref.training.hyperparameters import HYPERPARAMETER, HYPERPARAMETERS, check_hyperparameters
from radref.training.run import (CheckpointMismatchError, TrainingInterrupted, TrainingRun,
                                 TrainingSettings, recorded_hyperparameters)
from radref.training.train import NonFiniteError
from radref.user.inference import FittedFlow, NotFittedError
from radref.user.params import ParamsMixin

__all__ = ["RadFlow", "RealNVPFlow", "MODELS", "load_model", "NotFittedError",
           "TrainingInterrupted", "CheckpointMismatchError"]

#: radref 0.1's training keywords of ``fit``, now constructor parameters
_FIT_KEYWORDS_OF_0_1 = ("steps", "batch_size", "lr", "beta1", "beta2", "eps", "eval_every",
                        "progress")


# ----------------------------------------------------- constructor from the table
def _parameter_defaults(kind):
    """The constructor parameters of a model of layer ``kind``, in the table's
    order, with their defaults (the architecture's from the kind)."""
    return {e.name: kind.DEFAULT_ARCHITECTURE.get(e.name, e.default) for e in HYPERPARAMETERS
            if e.group != "architecture" or e.name in kind.DEFAULT_ARCHITECTURE}


def _constructor(kind):
    """``__init__`` with one named keyword per parameter (scikit-learn's
    convention: each stored unchanged as the attribute of the same name)."""
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
           for name, default in _parameter_defaults(kind).items()])

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


def _docstring(summary, kind):
    """The class docstring: ``summary``, then every parameter from the table."""
    lines = [summary, "", "Parameters", "----------"]
    for name, default in _parameter_defaults(kind).items():
        entry = HYPERPARAMETER[name]
        kind_text = {"int": "int", "n_jobs": "int", "real": "float", "bool": "bool",
                     "choice": "{" + ", ".join(map(repr, entry.choices)) + "}"}[entry.type]
        ranged = "" if entry.type in ("bool", "choice") else f", {entry.range_text()}"
        lines += [f"{name} : {kind_text}{' or None' if entry.none else ''}",
                  f"    {entry.help[0].upper()}{entry.help[1:]}{ranged} (default {default!r})."]
    return "\n".join(lines) + "\n"



def _warn_if_nothing_to_train(run, settings, what):
    """A continued fit that will train no step says so (a ``UserWarning``):
    all ``steps`` are done, or early stopping has already stopped the run."""
    stopper = run.stopper
    if stopper is not None and stopper.stopped_at is not None:
        warnings.warn(f"fit: {what} was stopped by early stopping at step "
                      f"{stopper.stopped_at}; it trains no further (start afresh to train "
                      f"again)", UserWarning, stacklevel=4)
    elif settings.steps == run.step:
        warnings.warn(f"fit: {what} has already done its {run.step} steps; raise steps to "
                      f"train further", UserWarning, stacklevel=4)

class _FlowEstimator(FittedFlow, ParamsMixin):
    """What :class:`RadFlow` and :class:`RealNVPFlow` share; ``_kind`` is the
    layer kind module (:data:`radref.core.layers.LAYER_KINDS`)."""

    _kind = None

    # ------------------------------------------------------------ the model
    @classmethod
    def parameter_names(cls):
        """The constructor parameters (the table's entries this model takes)."""
        return cls._parameter_names()

    @classmethod
    def default_architecture(cls):
        """The model's default architecture, ``gate_hidden`` resolved (the paper's)."""
        defaults = cls._parameter_defaults()
        return {name: defaults[name] if name != "gate_hidden" or defaults[name] is not None
                else defaults["hidden"] for name in cls._kind.DEFAULT_ARCHITECTURE}

    @classmethod
    def display_name(cls):
        """The model's name for people (``"Real NVP"``)."""
        return cls._kind.DISPLAY_NAME

    # ------------------------------------------------------------ parameters
    def _hyperparameters(self):
        """Every constructor parameter, checked against the table."""
        return check_hyperparameters({name: getattr(self, name)
                                      for name in self._parameter_names()})

    def _architecture(self, hp):
        """The checkpoint's ``hyperparameters`` (without ``dim``): the kind's
        architecture, ``gate_hidden`` resolved, and the seed."""
        architecture = {name: hp[name] for name in self._kind.DEFAULT_ARCHITECTURE}
        if architecture.get("gate_hidden", 0) is None:  # None: as wide as the conditioner
            architecture["gate_hidden"] = architecture["hidden"]
        return dict(architecture, random_state=hp["random_state"])

    def _config(self, dim, hp):
        a = self._architecture(hp)
        return FlowConfig(self._kind.NAME, dim, a["n_layers"], a["hidden"],
                          a.get("gate_hidden", 0))

    def _plain_params(self, hp):
        """The constructor parameters as JSON values (what a checkpoint records)."""
        return {name: hp[name] for name in self._parameter_names()}

    # --------------------------------------------------------------- fitting
    def fit(self, X, y=None, X_val=None, checkpoint=None, checkpoint_every=1000, **fit_params):
        """Fit by maximum likelihood with Adam (paper §4.2).

        Parameters
        ----------
        X : array_like, shape (n, d), d >= 2
            Training data.
        y : ignored
            Present for scikit-learn's API (pipelines pass it).
        X_val : array_like, shape (m, d), optional
            Held-out data, scored every ``eval_every`` steps and at the end
            (``history_``).
        checkpoint : path, optional
            Training state is saved there every ``checkpoint_every`` steps, at
            the end, and when Ctrl-C interrupts training.  If the file exists,
            training resumes from it (same class, architecture, data and
            training settings required, else
            :class:`~radref.training.run.CheckpointMismatchError`) and
            reaches bit-identical parameters to an uninterrupted run.
        checkpoint_every : int
            Steps between two saves of ``checkpoint``.
        **fit_params
            Deprecated (removed in radref 0.4): radref 0.1's training keywords
            (``steps``, ``batch_size``, ``lr``, ``beta1``, ``beta2``, ``eps``,
            ``eval_every``, ``progress``); ``fit(X, steps=50)`` is
            ``set_params(steps=50).fit(X)``.

        Returns
        -------
        self

        Raises
        ------
        TrainingInterrupted
            Ctrl-C (SIGINT) arrived: training stopped after the step under
            way, the checkpoint (if any) was saved, and the model holds that
            step's parameters.  A second Ctrl-C stops at once.
        NonFiniteError
            Training diverged; the model holds the last finite parameters.
            Finite is not usable: parameters one step from overflowing may
            still overflow on other points (``score`` then raises
            ``FloatingPointError``); refit with a smaller ``lr``.
        """
        self._take_fit_params(fit_params)
        if isinstance(y, numbers.Number):
            raise TypeError(f"y is ignored by a density estimator and must be None or an "
                            f"array, got the number {y!r} (radref 0.1's fit(X, steps): pass "
                            f"steps to the constructor, {type(self).__name__}(steps=...))")
        hp = self._hyperparameters()
        X = check_array("X", X, min_columns=2)
        config = self._config(X.shape[1], hp)
        if X_val is not None:
            X_val = check_array("X_val", X_val, dim=X.shape[1], owner=type(self).__name__)
        if checkpoint is not None:
            checkpoint = check_path("checkpoint", checkpoint)
        checkpoint_every = check_int("checkpoint_every", checkpoint_every)
        if hp["early_stopping"] and X.shape[0] < 2:
            raise ValueError("early_stopping=True needs at least 2 training points")
        settings = TrainingSettings.from_hyperparameters(hp)
        name, architecture = type(self).__name__, self._architecture(hp)
        if checkpoint is not None and os.path.exists(checkpoint):
            run = TrainingRun.resume(checkpoint, name, architecture, config, settings, X)
            _warn_if_nothing_to_train(run, settings, f"the checkpoint {checkpoint}")
        elif hp["warm_start"] and self.__sklearn_is_fitted__():
            run = self._continued(config, settings)
        else:
            run = TrainingRun.start(name, architecture, config, settings, hp["random_state"],
                                    hp["out_std"])
        try:
            run.train(X, X_val, checkpoint, checkpoint_every, self._plain_params(hp))
        except (NonFiniteError, TrainingInterrupted):
            self._set_fitted(run)  # the last consistent step
            raise
        self._set_fitted(run)
        return self

    def _take_fit_params(self, fit_params):
        unknown = sorted(set(fit_params) - set(_FIT_KEYWORDS_OF_0_1))
        if unknown:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
        if fit_params:
            warnings.warn(f"fit({', '.join(f'{k}=...' for k in fit_params)}) is deprecated and "
                          f"will be removed in {REMOVED_IN}: set the training hyperparameters "
                          f"on the estimator ({type(self).__name__}(...) or set_params)",
                          DeprecationWarning, stacklevel=3)
        self.set_params(**fit_params)

    def _continued(self, config, settings):
        """``warm_start``: a copy of this model's run (a failed fit must not
        change the model)."""
        if config.dim != self.config_.dim:
            raise ValueError(f"X has {config.dim} features, but {type(self).__name__} is "
                             f"expecting {self.config_.dim} features as input (warm_start=True "
                             f"continues the fitted model)")
        run = self._run.continued(config, settings)
        if run.entropy is None:  # a radref 0.1 model file: the seed it was trained with
            run.entropy = int(np.random.SeedSequence(self.random_state).entropy)
        _warn_if_nothing_to_train(run, settings, "warm_start=True: the model")
        return run

    def _set_fitted(self, run):
        """The fitted attributes.  ``params_`` (what scoring, sampling and
        inference use) are the best parameters of early stopping, else the
        parameter average, else the last iterate; ``training_params_`` is
        always the last iterate (what training continues from)."""
        self._run = run
        self.config_, self.training_params_ = run.config, run.params
        self.optimizer_state_, self.params_ = run.adam_state, run.model_params()
        self.n_steps_, self.history_ = run.step, run.history
        self.n_features_in_ = run.config.dim
        self.n_training_rows_ = run.n_training_rows  # None for a loaded model
        stopper = run.stopper
        self.best_validation_score_ = None if stopper is None else stopper.best_score
        self.best_step_ = None if stopper is None else stopper.best_step
        self.stopped_at_ = None if stopper is None else stopper.stopped_at

    # ----------------------------------------------------------- persistence
    def save(self, path):
        """Save the model (see :mod:`radref.training.checkpoint`): parameters,
        Adam state, every constructor parameter, the history and, after a
        fit, the training settings, so that ``fit(checkpoint=path)`` with the
        same data continues it bit-identically."""
        self._check_fitted()
        hp = self._hyperparameters()
        self._run.to_checkpoint(check_path("path", path), self._plain_params(hp))

    @classmethod
    def load(cls, path):
        """Load a model saved by :meth:`save` (or by ``fit(checkpoint=...)``,
        ``radref train``, or radref 0.1); the file must hold this class.

        A file written before the training hyperparameters were constructor
        parameters records only some of them: ``batch_size`` and the Adam
        settings when ``fit`` wrote it, ``steps`` as the steps done; the rest
        take their defaults.
        """
        meta = load_checkpoint(path, expected_model=cls.__name__)[0]
        try:
            hyper = dict(meta["hyperparameters"])
            dim = check_int("dim", hyper.pop("dim"), minimum=2)
            check_int("step", meta["step"], minimum=0)
            model = cls(**recorded_hyperparameters(meta))
            hp = model._hyperparameters()
            if model._architecture(hp) != hyper:
                raise ValueError(f"estimator parameters {meta['extra'].get('estimator_params')} "
                                 f"do not match the architecture {hyper}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedCheckpointError(f"{path}: invalid model description in the checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
        model._set_fitted(TrainingRun.from_checkpoint(
            path, cls.__name__, hyper, model._config(dim, hp),
            TrainingSettings.from_hyperparameters(hp)))
        return model

    def __sklearn_tags__(self):
        """Tags for scikit-learn's estimator checks (imported only when
        scikit-learn asks): a density estimator that also transforms
        (``transform(X)`` is the latent ``Z``, float64 whatever the input),
        unsupervised, refusing NaN and sparse input."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags
        return Tags(estimator_type="density_estimator",
                    target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float64"]),
                    input_tags=InputTags(allow_nan=False, sparse=False),
                    requires_fit=True)


class RadFlow(_FlowEstimator):
    _kind = rad
    __doc__ = _docstring(
        "Rad flow: Rad coupling layers with a standard normal base (paper §4.2).\n\n"
        "The learning rate of Adam step ``t`` is "
        ":func:`radref.training.schedules.learning_rate`; with ``ema_decay`` the\n"
        "average is ``params_`` and the last iterate ``training_params_``; with\n"
        "``early_stopping`` the best scored parameters are ``params_`` (``best_step_``,\n"
        "``best_validation_score_``, ``stopped_at_``).", _kind)
    __init__ = _constructor(_kind)


class RealNVPFlow(_FlowEstimator):
    _kind = affine
    __doc__ = _docstring("Real NVP baseline: affine coupling layers with a standard normal "
                         "base (the paper's baseline, §4.2).", _kind)
    __init__ = _constructor(_kind)


#: The one registry of models: a layer kind's model name -> its estimator
#: (whose class name the kind records as its MODEL_CLASS, a checkpoint's "model").
MODELS = {cls._kind.MODEL_NAME: cls for cls in (RadFlow, RealNVPFlow)}


def load_model(path):
    """Load a checkpoint written by :meth:`RadFlow.save` or :meth:`RealNVPFlow.save`,
    whichever class it holds."""
    meta, _, _ = load_checkpoint(path)
    classes = {cls.__name__: cls for cls in MODELS.values()}
    if meta["model"] not in classes:
        raise CheckpointError(f"{path}: unknown model class {meta['model']!r}")
    return classes[meta["model"]].load(path)
