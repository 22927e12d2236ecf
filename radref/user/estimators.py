"""The estimators :class:`RadFlow` and :class:`RealNVPFlow`, with
scikit-learn's conventions and without depending on scikit-learn.

- Every hyperparameter, of the architecture and of training alike, is a
  constructor parameter stored unmodified; ``get_params``, ``set_params``
  and ``__repr__`` come from :class:`~radref.user.params.ParamsMixin`, and
  nothing is checked before :meth:`~_FlowEstimator.fit`.
- ``fit(X, y=None)`` returns ``self``; what it learns ends in an underscore
  (``params_``, ``n_features_in_``, ...).  The data-dependent arguments of
  ``fit`` are held-out data (``X_val``) and a checkpoint file.
- ``warm_start=True`` continues a fitted model up to ``steps`` in total,
  drawing the minibatches an uninterrupted run would draw.
- ``__sklearn_tags__`` tells scikit-learn's estimator checks what the
  estimators are (density estimators that also transform: ``X -> Z``); it
  imports scikit-learn only when scikit-learn itself asks.

They are thin wrappers around the functional core (:mod:`radref.core.flow`,
:mod:`radref.training.train`): all arithmetic happens there.
"""
import contextlib
import hashlib
import numbers
import os
import signal
import sys
import threading
import warnings

import numpy as np

from radref.checks import (check_array, check_bool, check_float, check_generator, check_int,
                           check_path, check_random_state, check_real)
from radref.core.layers.masks import split
from radref.core.flow import (FlowConfig, flow_forward, flow_init, flow_inverse, flow_log_density,
                              flow_sample, flow_sample_from_noise)
from radref.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from radref.training.optim import AdamConfig, adam_init, check_adam_config
from radref.training.schedules import (LR_SCHEDULES, EarlyStopping, LRSchedule,
                                       ParameterAverage, check_lr_schedule, validation_split)
from radref.training.train import NonFiniteError, mean_loglik_and_grad, train
from radref.user.params import ParamsMixin
from radref.training.progress import TrainingProgress, display_mode

#: Defaults of the training hyperparameters, one set for Python and the
#: ``radref`` command: 3000 Adam steps of minibatches of 500 at lr 5e-3 (the
#: demo's settings, which reach within ~0.1 nats of the best achievable
#: held-out log-likelihood on two moons), Adam's usual betas and eps.
TRAINING_DEFAULTS = dict(steps=3000, batch_size=500, lr=5e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         eval_every=250)
#: the 0.1 keywords of ``fit``, now constructor parameters (still accepted by fit)
_FIT_KEYWORDS_OF_0_1 = ("steps", "batch_size", "lr", "beta1", "beta2", "eps", "eval_every",
                        "progress")
#: Defaults of the training recipe beyond the paper's (issue 15): all off, so
#: that a default fit is the paper's training bit for bit.
RECIPE_DEFAULTS = dict(lr_schedule="constant", lr_decay_steps=None, lr_final_fraction=0.0,
                       lr_step_size=1000, lr_gamma=0.5, ema_decay=None, early_stopping=False,
                       validation_fraction=0.1, n_iter_no_change=10)


class NotFittedError(RuntimeError, ValueError, AttributeError):
    """The model is used before :meth:`fit` or :meth:`load`.

    A ``RuntimeError`` (as in radref 0.1) that is also a ``ValueError`` and an
    ``AttributeError``, like scikit-learn's ``NotFittedError``.
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :meth:`fit` between two steps.

    The model holds the parameters after ``step`` steps (a consistent,
    usable state); ``checkpoint`` is the file written at that step, or
    ``None`` when ``fit`` was given no checkpoint path.
    """

    def __init__(self, step, checkpoint=None):
        self.step, self.checkpoint = step, checkpoint
        where = f"; training state saved to {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"training interrupted after step {step}{where}")


class _Run:
    """Where a fit starts: parameters, Adam state, steps done, history and seed,
    and the state of the training recipe (``recipe``: see :func:`_recipe_state`)."""

    def __init__(self, params, state, start, history, entropy, recipe=None):
        self.params, self.state, self.start = params, state, start
        self.history, self.entropy, self.recipe = history, entropy, recipe or {}


class _FlowEstimator(ParamsMixin):
    """What :class:`RadFlow` and :class:`RealNVPFlow` share."""

    #: names of the constructor parameters stored as the checkpoint's
    #: ``hyperparameters`` (the architecture and seed, as radref 0.1 wrote them)
    _ARCHITECTURE = ("n_layers", "hidden", "out_std", "random_state")

    # ------------------------------------------------------------ parameters
    def _checked(self):
        """Every constructor parameter, checked (``TypeError``/``ValueError``
        naming the parameter), plus ``"adam"``, the checked :class:`AdamConfig`."""
        out_std = check_float("out_std", self.out_std, positive=False)
        if out_std < 0:
            raise ValueError(f"out_std must be >= 0, got {self.out_std}")
        checked = dict(
            n_layers=check_int("n_layers", self.n_layers), hidden=check_int("hidden", self.hidden),
            out_std=out_std, steps=check_int("steps", self.steps),
            batch_size=check_int("batch_size", self.batch_size),
            lr=check_float("lr", self.lr), beta1=check_real("beta1", self.beta1),
            beta2=check_real("beta2", self.beta2), eps=check_real("eps", self.eps),
            eval_every=check_int("eval_every", self.eval_every),
            warm_start=check_bool("warm_start", self.warm_start),
            progress=None if self.progress is None else check_bool("progress", self.progress),
            random_state=check_random_state("random_state", self.random_state))
        checked["adam"] = check_adam_config(AdamConfig(checked["lr"], checked["beta1"],
                                                       checked["beta2"], checked["eps"]))
        checked.update(self._checked_recipe(checked["steps"]))
        return checked

    def _checked_recipe(self, steps):
        """The recipe's constructor parameters, checked, plus ``"schedule"``
        (the :class:`LRSchedule`) and ``"recipe"`` (the non-default ones, as
        a checkpoint records them; empty for the paper's training)."""
        decay_steps = (None if self.lr_decay_steps is None
                       else check_int("lr_decay_steps", self.lr_decay_steps))
        schedule = check_lr_schedule(LRSchedule(
            self.lr_schedule, steps if decay_steps is None else decay_steps,
            self.lr_final_fraction, self.lr_step_size, self.lr_gamma))
        ema_decay = self.ema_decay
        if ema_decay is not None:
            ema_decay = check_real("ema_decay", ema_decay)
            if not 0 < ema_decay < 1:
                raise ValueError(f"ema_decay must be None or in (0, 1), got {self.ema_decay}")
        fraction = check_real("validation_fraction", self.validation_fraction)
        if not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), "
                             f"got {self.validation_fraction}")
        checked = dict(lr_schedule=schedule.kind, lr_decay_steps=decay_steps,
                       lr_final_fraction=schedule.final_fraction,
                       lr_step_size=schedule.step_size, lr_gamma=schedule.gamma,
                       ema_decay=ema_decay,
                       early_stopping=check_bool("early_stopping", self.early_stopping),
                       validation_fraction=fraction,
                       n_iter_no_change=check_int("n_iter_no_change", self.n_iter_no_change))
        checked["early_stopping"] = bool(checked["early_stopping"])
        checked["recipe"] = {k: v for k, v in checked.items() if v != RECIPE_DEFAULTS[k]}
        if schedule.kind == "cosine":
            # the horizon sets every rate: record it even when it is the fit's
            # steps, so that no fit continues a checkpoint under another decay
            checked["recipe"]["lr_decay_steps"] = schedule.horizon
        checked["schedule"] = schedule
        return checked

    def _architecture(self, checked):
        """The checkpoint's ``hyperparameters`` (without ``dim``)."""
        return {name: checked[name] for name in self._ARCHITECTURE}

    def _config(self, dim, checked):
        raise NotImplementedError

    def _plain_params(self, checked):
        """The constructor parameters as JSON values (for a checkpoint)."""
        return {name: checked[name] for name in self._parameter_names()}

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
            training resumes from it (same class, architecture, data,
            ``batch_size`` and Adam settings required, else ``ValueError``)
            and reaches bit-identical parameters to an uninterrupted run.
        checkpoint_every : int
            Steps between two saves of ``checkpoint``.
        **fit_params
            radref 0.1's training keywords (``steps``, ``batch_size``, ``lr``,
            ``beta1``, ``beta2``, ``eps``, ``eval_every``, ``progress``), kept
            so that code written for 0.1 runs: ``fit(X, steps=50)`` is
            ``set_params(steps=50).fit(X)``.  Deprecated: set them on the
            estimator.

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
        """
        self._take_fit_params(fit_params)
        if isinstance(y, numbers.Number):
            raise TypeError(f"y is ignored by a density estimator and must be None or an "
                            f"array, got the number {y!r} (radref 0.1's fit(X, steps): pass "
                            f"steps to the constructor, {type(self).__name__}(steps=...))")
        checked = self._checked()
        X = check_array("X", X, min_columns=2)
        config = self._config(X.shape[1], checked)
        if X_val is not None:
            X_val = check_array("X_val", X_val, dim=X.shape[1], owner=type(self).__name__)
        if checkpoint is not None:
            checkpoint = check_path("checkpoint", checkpoint)
        checkpoint_every = check_int("checkpoint_every", checkpoint_every)
        if checked["early_stopping"] and X.shape[0] < 2:
            raise ValueError("early_stopping=True needs at least 2 training points")
        n_fit = X.shape[0]
        if checked["early_stopping"]:
            n_fit -= len(validation_split(X.shape[0], checked["validation_fraction"], 0)[1])
        # a batch larger than the data is the whole data (scikit-learn's MLP does the same)
        settings = {"batch_size": min(checked["batch_size"], n_fit),
                    "adam": list(checked["adam"]),
                    "data_sha256": hashlib.sha256(X.tobytes()).hexdigest()}
        if checked["recipe"]:  # absent for the paper's training, as in earlier checkpoints
            settings["recipe"] = checked["recipe"]
        run = self._starting_point(config, checked, settings, checkpoint)
        settings["entropy"] = str(run.entropy)
        self._train(run, X, X_val, config, checked, settings, checkpoint, checkpoint_every)
        return self

    def _take_fit_params(self, fit_params):
        unknown = sorted(set(fit_params) - set(_FIT_KEYWORDS_OF_0_1))
        if unknown:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
        self.set_params(**fit_params)

    def _starting_point(self, config, checked, settings, checkpoint):
        """Resume from ``checkpoint`` if it exists, else continue this model
        (``warm_start``), else start afresh."""
        if checkpoint is not None and os.path.exists(checkpoint):
            return self._resume(checkpoint, config, checked, settings)
        if checked["warm_start"] and self.__sklearn_is_fitted__():
            return self._continue(config, checked)
        entropy = np.random.SeedSequence(checked["random_state"]).entropy
        init_seed = np.random.SeedSequence(entropy).spawn(2)[0]
        params = flow_init(config, out_std=checked["out_std"],
                           random_state=np.random.default_rng(init_seed))
        return _Run(params, adam_init(params), 0, None, entropy)

    def _continue(self, config, checked):
        """``warm_start``: this model's own state, copied (a failed fit must
        not change the model)."""
        if config.dim != self.config_.dim:
            raise ValueError(f"X has {config.dim} features, but {type(self).__name__} is "
                             f"expecting {self.config_.dim} features as input (warm_start=True "
                             f"continues the fitted model)")
        if config != self.config_:
            raise ValueError(f"warm_start=True continues the fitted model, whose architecture "
                             f"{tuple(self.config_)} differs from the parameters' "
                             f"{tuple(config)}: set warm_start=False to start afresh")
        if checked["steps"] < self.n_steps_:
            raise ValueError(f"steps ({checked['steps']}) is below the {self.n_steps_} steps "
                             f"this model has done: with warm_start=True, steps is the total "
                             f"to reach")
        if checked["steps"] == self.n_steps_:
            warnings.warn(f"fit with warm_start=True: the model has already done its "
                          f"{self.n_steps_} steps; raise steps to train further", UserWarning,
                          stacklevel=4)
        entropy = (self._fit_settings or {}).get("entropy")
        if entropy is None:
            entropy = np.random.SeedSequence(checked["random_state"]).entropy
        if checked["recipe"] != (self._fit_settings or {}).get("recipe", {}):
            raise ValueError(f"warm_start=True continues the fitted model, trained with the "
                             f"recipe {(self._fit_settings or {}).get('recipe', {})}: the "
                             f"recipe now is {checked['recipe']}")
        state = self.optimizer_state_
        state = {"t": state["t"], "m": {k: v.copy() for k, v in state["m"].items()},
                 "v": {k: v.copy() for k, v in state["v"].items()}}
        params = {k: v.copy() for k, v in self.training_params_.items()}
        return _Run(params, state, self.n_steps_, self.history_, int(entropy),
                    _copied_recipe_state(self._recipe_state))

    def _resume(self, path, config, checked, settings):
        meta, params, state, groups = load_checkpoint(path, expected_model=type(self).__name__,
                                                      extra_arrays=True)
        hyper = dict(meta["hyperparameters"])
        if hyper.pop("dim", None) != config.dim or hyper != self._architecture(checked):
            raise ValueError(f"checkpoint {path} was written by a model with other "
                             f"hyperparameters: {meta['hyperparameters']}")
        saved = dict(meta["extra"])
        mine = {k: v for k, v in settings.items() if k != "entropy"}
        mine.setdefault("recipe", {})  # a checkpoint of the paper's training has none
        theirs = {k: saved.get(k, {} if k == "recipe" else None) for k in mine}
        recipe = theirs["recipe"]
        if recipe.get("lr_schedule") == "cosine" and "lr_decay_steps" not in recipe:
            # radref 0.2.0 recorded no horizon when it was the fit's steps
            steps = saved.get("estimator_params", {}).get("steps")
            theirs["recipe"] = dict(recipe, lr_decay_steps=steps)
        if mine != theirs:
            raise CheckpointMismatchError(path, _differing(theirs, mine), theirs, mine)
        if state is None:
            raise ValueError(f"checkpoint {path} holds no optimizer state to resume from")
        return _Run(_checked_params(params, config, path), state, meta["step"],
                    saved.get("history"), int(saved["entropy"]),
                    _read_recipe_state(groups, saved, config, path))

    def _train(self, run, X, X_val, config, checked, settings, checkpoint, checkpoint_every):
        """Run the training loop from ``run``; set the fitted attributes at the
        end, or at the last consistent step when training stops early."""
        steps = checked["steps"]
        order_seed = np.random.SeedSequence(run.entropy).spawn(2)[1]
        X_fit, average, stopper = self._recipe(run, X, checked)

        def save(step, params, state, history):
            extra = dict(settings, history=_merge(run.history, history),
                         estimator_params=self._plain_params(checked))
            recipe = _recipe_state(average, stopper)
            extra.update(_recipe_meta(recipe))
            self._write(checkpoint, config, checked, params, state, step, extra,
                        _recipe_arrays(recipe))

        monitor = _Monitor(steps, run.start, display_mode(checked["progress"], sys.stderr),
                           save if checkpoint is not None else None, checkpoint, checkpoint_every)
        try:
            with _deferred_interrupt() as monitor.interrupt:
                history = train(run.params, config, X_fit, steps, settings["batch_size"],
                                checked["adam"], random_state=order_seed,
                                optimizer_state=run.state, start_step=run.start, x_val=X_val,
                                eval_every=checked["eval_every"], progress=False,
                                callback=monitor, callback_every=1,
                                lr_schedule=checked["schedule"], average=average,
                                stopper=stopper)
        except NonFiniteError as err:
            # the parameters keep their last finite values (train updates after its checks);
            # the average and the stopper were last updated at the step before
            run.recipe = _recipe_state(average, stopper)
            self._set_fitted(config, run, err.step - 1, err.history, settings)
            raise
        except TrainingInterrupted:
            run.recipe = _recipe_state(average, stopper)
            self._set_fitted(config, run, monitor.step, monitor.history, settings)
            raise
        finally:
            monitor.close()
        history.pop("optimizer_state")
        run.recipe = _recipe_state(average, stopper)
        done = history["step"][-1] if history["step"] else run.start  # < steps if stopped early
        self._set_fitted(config, run, max(done, run.start), history, settings)

    def _recipe(self, run, X, checked):
        """The training rows, the :class:`ParameterAverage` (or ``None``) and
        the :class:`EarlyStopping` (or ``None``) of this fit, from the run's
        recipe state.  The validation split of early stopping is carved from
        ``X`` (the training data) with a seed derived from the run's entropy,
        so that a resumed fit sets aside the same rows."""
        recipe = run.recipe
        average = None
        if checked["ema_decay"] is not None:
            average = ParameterAverage(checked["ema_decay"], run.params,
                                       recipe.get("ema"), recipe.get("ema_count", 0))
        if not checked["early_stopping"]:
            return X, average, None
        train_rows, validation_rows = validation_split(
            X.shape[0], checked["validation_fraction"], _validation_seed(run.entropy))
        stopping = recipe.get("stopping", {})
        stopper = EarlyStopping(X[validation_rows], checked["n_iter_no_change"],
                                best_params=recipe.get("best"), **stopping)
        return X[train_rows], average, stopper

    def _set_fitted(self, config, run, n_steps, new_history, settings):
        """The fitted attributes.  ``params_`` (what scoring, sampling and
        inference use) are the best parameters of early stopping, else the
        parameter average, else the last iterate; ``training_params_`` is
        always the last iterate (what training continues from)."""
        self.config_, self.training_params_ = config, run.params
        self.optimizer_state_ = run.state
        self._recipe_state = run.recipe
        self.params_ = _model_params(run.params, run.recipe)
        self.n_steps_, self.history_ = n_steps, _merge(run.history, new_history)
        self.n_features_in_ = config.dim
        self._fit_settings = dict(settings)
        stopping = run.recipe.get("stopping")
        self.best_validation_score_ = None if stopping is None else stopping["best_score"]
        self.best_step_ = None if stopping is None else stopping["best_step"]
        self.stopped_at_ = None if stopping is None else stopping["stopped_at"]

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_")

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or load()")

    def _check_X(self, name, X):
        return check_array(name, X, dim=self.config_.dim, owner=type(self).__name__)

    # ------------------------------------------------------------- inference
    def score_samples(self, X):
        """Log-density ``log p(x)`` in nats of each row of ``X`` (shape ``(n,)``),
        by the change of variables of paper eq. 3 with the Rad terms of §3."""
        self._check_fitted()
        X = self._check_X("X", X)
        with _arithmetic("score_samples", self.params_):
            return flow_log_density(X, self.params_, self.config_)

    def score(self, X, y=None):
        """Mean log-likelihood of ``X`` in nats (a mean, not a sum); ``y`` is ignored."""
        return float(np.mean(self.score_samples(X)))

    def transform(self, X):
        """The real latent ``Z``, shape ``(n, d)``, of exact inference (paper §3).

        A Rad flow also infers a discrete latent ``K`` (the branch of each
        fold), which :meth:`infer` returns with ``Z``;
        :meth:`inverse_transform` needs it to go back.
        """
        return self.infer(X)[0]

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X, y, **fit_params).transform(X)``."""
        return self.fit(X, y, **fit_params).transform(X)

    def infer(self, X):
        """Exact inference ``X -> (Z, K)`` (paper §3, Fig. 1c).

        Returns
        -------
        Z : ndarray, shape (n, d)
        K : ndarray of int, shape (n, n_layers, d)
            Branch (0, 1, 2) per layer and column, ``-1`` where a layer has no
            discrete latent for that column.
        """
        self._check_fitted()
        X = self._check_X("X", X)
        with _arithmetic("infer", self.params_):
            _, Z, K, _ = flow_forward(X, self.params_, self.config_)
        return Z, K

    def inverse_transform(self, Z, K=None, random_state=None):
        """Exact inverse ``(Z, K) -> X`` of :meth:`infer` (paper §3, Fig. 1d).

        Parameters
        ----------
        Z : array_like, shape (n, d)
        K : array_like of int, shape (n, n_layers, d), optional
            The branches, as :meth:`infer` returns them; entries where a layer
            has no discrete latent (``-1``) are ignored.  A Real NVP flow has
            no discrete latent and ignores ``K``.  For a Rad flow without
            ``K``, the branches are drawn from the gating distribution
            ``p(k | z)`` (eq. 31-33) layer by layer, as :meth:`sample` draws
            them: the model's conditional ``p(x | z)``, so that
            ``inverse_transform(Z)`` of standard normal ``Z`` is an exact sample.
        random_state : seed for ``np.random.default_rng``, optional
            Seeds that draw (unused when ``K`` is given or the flow is Real NVP).

        Returns
        -------
        X : ndarray, shape (n, d)
        """
        self._check_fitted()
        Z = self._check_X("Z", Z)
        if K is None and self.config_.kind == "rad":
            rng = check_generator("random_state", random_state)
            uniforms = rng.random((Z.shape[0], self.config_.n_layers, self.config_.dim))
            with _arithmetic("inverse_transform", self.params_):
                return flow_sample_from_noise(Z, uniforms, self.params_, self.config_)[0]
        K = self._check_K(Z, K)
        try:
            with _arithmetic("inverse_transform", self.params_):
                return flow_inverse(Z, K, self.params_, self.config_)
        except ValueError as exc:  # from surjection_inverse: a branch without preimage
            raise ValueError(f"K does not match Z: {exc} (the K that infer() returns "
                             f"for the same points always matches)") from None

    def _check_K(self, Z, K):
        expected = (Z.shape[0], self.config_.n_layers, self.config_.dim)
        if K is None:  # a Real NVP flow: no discrete latent
            return np.full(expected, -1)
        try:
            K = np.asarray(K)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"K must be an integer array: {exc}") from None
        if K.shape != expected or not np.issubdtype(K.dtype, np.integer):
            raise ValueError(f"K must be an integer array of shape {expected}, "
                             f"got {K.dtype} {K.shape}")
        if self.config_.kind == "rad":
            transformed = np.zeros(expected[1:], dtype=bool)
            for layer in range(self.config_.n_layers):
                transformed[layer, split(self.config_.dim, layer)[1]] = True
            bad = transformed & ((K < 0) | (K > 2))
            if bad.any():
                i, layer, j = (int(a[0]) for a in np.nonzero(bad))
                raise ValueError(f"K must be a branch 0, 1 or 2 where layer {layer} transforms "
                                 f"column {j}, got K[{i}, {layer}, {j}] = {K[i, layer, j]}")
        return K

    def sample(self, n, random_state=None):
        """Draw ``n`` exact samples, shape ``(n, d)`` (paper §3, Fig. 1b)."""
        self._check_fitted()
        n = check_int("n", n)
        rng = check_generator("random_state", random_state)
        with _arithmetic("sample", self.params_):
            return flow_sample(n, self.params_, self.config_, rng)[0]

    # ------------------------------------------------------------ parameters
    def parameters(self):
        """The live parameter dict (name -> array); mutating an array changes the model."""
        self._check_fitted()
        return self.params_

    def n_parameters(self):
        """Number of scalar parameters."""
        return int(sum(p.size for p in self.parameters().values()))

    def loglik_and_grad(self, X):
        """Mean log-likelihood of ``X`` and its gradient, keyed like :meth:`parameters`."""
        self._check_fitted()
        X = self._check_X("X", X)
        with _arithmetic("loglik_and_grad", self.params_):
            return mean_loglik_and_grad(X, self.params_, self.config_)

    # ----------------------------------------------------------- persistence
    def save(self, path):
        """Save the model (see :mod:`radref.training.checkpoint`): parameters,
        Adam state, every constructor parameter, the history and, after a
        fit, the training settings, so that ``fit(checkpoint=path)`` with the
        same data continues it bit-identically."""
        self._check_fitted()
        checked = self._checked()
        extra = dict(self._fit_settings or {}, estimator_params=self._plain_params(checked))
        if self.history_ is not None:
            extra["history"] = self.history_
        extra.update(_recipe_meta(self._recipe_state))
        self._write(path, self.config_, checked, self.training_params_, self.optimizer_state_,
                    self.n_steps_, extra, _recipe_arrays(self._recipe_state))

    def _write(self, path, config, checked, params, optimizer_state, step, extra,
               extra_arrays=None):
        path = check_path("path", path)
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"parameter {name} has non-finite values: not saved")
        hyper = dict(self._architecture(checked), dim=config.dim)
        save_checkpoint(path, type(self).__name__, hyper, params, optimizer_state, step,
                        extra=extra, extra_arrays=extra_arrays)

    @classmethod
    def load(cls, path):
        """Load a model saved by :meth:`save` (or by ``fit(checkpoint=...)``,
        ``radref train``, or radref 0.1); the file must hold this class.

        A file written before the training hyperparameters were constructor
        parameters records only some of them: ``batch_size`` and the Adam
        settings when ``fit`` wrote it, ``steps`` as the steps done; the rest
        take their defaults.
        """
        meta, params, adam_state, groups = load_checkpoint(path, expected_model=cls.__name__,
                                                           extra_arrays=True)
        try:
            hyper = dict(meta["hyperparameters"])
            dim = check_int("dim", hyper.pop("dim"), minimum=2)
            step = check_int("step", meta["step"], minimum=0)
            extra = dict(meta["extra"])
            model = cls(**_recorded_params(hyper, extra, step))
            checked = model._checked()
            if model._architecture(checked) != hyper:
                raise ValueError(f"estimator parameters {extra.get('estimator_params')} do not "
                                 f"match the architecture {hyper}")
            history = extra.get("history")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: invalid model description in the checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
        config = model._config(dim, checked)
        settings = {k: extra[k] for k in ("batch_size", "adam", "data_sha256", "entropy",
                                          "recipe") if k in extra}
        run = _Run(_checked_params(params, config, path), adam_state, step, None, None,
                   _read_recipe_state(groups, extra, config, path))
        model._set_fitted(config, run, step, history, settings)
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


def _validation_seed(entropy):
    """The seed of the early-stopping split: a third child of the run's
    entropy (the first two seed initialisation and minibatch order)."""
    return np.random.SeedSequence(entropy, spawn_key=(2,))


def _recipe_state(average, stopper):
    """The training recipe's state as plain data: ``"ema"`` (accumulator) and
    ``"ema_count"``; ``"best"`` (best parameters) and ``"stopping"`` (best
    score and step, scores without improvement, step stopped at)."""
    state = {}
    if average is not None:
        state["ema"], state["ema_count"] = average.accumulator, average.count
        state["ema_decay"] = average.decay
    if stopper is not None:
        state["best"] = stopper.best_params
        state["stopping"] = {"best_score": stopper.best_score, "best_step": stopper.best_step,
                             "bad_scores": stopper.bad_scores, "stopped_at": stopper.stopped_at}
    return state


def _copied_recipe_state(state):
    copied = dict(state)
    for group in ("ema", "best"):
        if copied.get(group) is not None:
            copied[group] = {k: v.copy() for k, v in copied[group].items()}
    if "stopping" in copied:
        copied["stopping"] = dict(copied["stopping"])
    return copied


def _recipe_meta(state):
    """The JSON part of the recipe state (a checkpoint's ``extra``)."""
    meta = {}
    if "ema_count" in state:
        meta["ema_count"], meta["ema_decay"] = int(state["ema_count"]), state["ema_decay"]
    if "stopping" in state:
        meta["stopping"] = dict(state["stopping"])
    return meta


def _recipe_arrays(state):
    """The array part of the recipe state (a checkpoint's ``ema/`` and ``best/`` groups)."""
    return {group: state[group] for group in ("ema", "best") if state.get(group) is not None}


class CheckpointMismatchError(ValueError):
    """A checkpoint was written with other data or training settings;
    ``differing`` names them (``"lr"``, ``"recipe.lr_decay_steps"``, ...)."""

    def __init__(self, path, differing, theirs, mine):
        self.path, self.differing, self.theirs, self.mine = path, differing, theirs, mine
        super().__init__(f"checkpoint {path} was written with other data or training settings "
                         f"(differing: {', '.join(differing)}): {theirs} (now {mine})")

    def __reduce__(self):  # crosses process boundaries (reproduce's workers)
        return type(self), (self.path, self.differing, self.theirs, self.mine)


def _differing(theirs, mine, prefix=""):
    """Dotted names of the entries in which two settings dicts differ."""
    names = []
    for key in sorted(set(theirs) | set(mine)):
        a, b = theirs.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(prefix + key)
    return names


def _read_recipe_state(groups, extra, config, path):
    """The recipe state stored in a checkpoint (empty for a file without one)."""
    state = {}
    if "ema_count" in extra:
        state["ema"] = _checked_params(groups.get("ema", {}), config, path)
        state["ema_count"] = check_int("ema_count", extra["ema_count"], minimum=0)
        state["ema_decay"] = check_real("ema_decay", extra["ema_decay"])
    if "stopping" in extra:
        state["stopping"] = dict(extra["stopping"])
        state["best"] = _checked_params(groups["best"], config, path) if "best" in groups \
            else None
    return state


def _model_params(raw, state):
    """The parameters a fitted model uses: best of early stopping, else the
    average, else the last iterate ``raw``."""
    if state.get("best") is not None:
        return state["best"]
    if state.get("ema_count"):
        return ParameterAverage(state["ema_decay"], raw, state["ema"],
                                state["ema_count"]).average()
    return raw


def _recorded_params(hyper, extra, step):
    """The constructor parameters a checkpoint records (see :meth:`_FlowEstimator.load`)."""
    params = dict(hyper)
    if "estimator_params" in extra:
        params.update(extra["estimator_params"])
        return params
    params["steps"] = max(step, 1)
    if "batch_size" in extra:
        params["batch_size"] = extra["batch_size"]
    if "adam" in extra:
        params["lr"], params["beta1"], params["beta2"], params["eps"] = extra["adam"]
    return params


def _checked_params(params, config, path):
    """``params`` as fresh float64 arrays, after checking names and shapes
    against the architecture ``config``."""
    expected = flow_init(config, random_state=0)
    if set(expected) != set(params) or any(expected[k].shape != params[k].shape
                                           for k in expected):
        raise CheckpointError(f"{path}: parameters do not match the architecture")
    checked = {k: np.array(params[k], dtype=np.float64) for k in expected}
    for name, value in checked.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: parameter {name} has non-finite values")
    return checked


class _Monitor:
    """The training loop's callback, called after every step: progress
    display, periodic checkpoints, and the stop that Ctrl-C asked for."""

    def __init__(self, total, start, mode, save, checkpoint, every):
        self.total, self.save, self.checkpoint, self.every = total, save, checkpoint, every
        self.display = TrainingProgress(total, start, mode) if mode else None
        self.interrupt = None  # threading.Event, set by _deferred_interrupt
        self.step, self.history = start, None

    def __call__(self, step, params, state, history):
        self.step, self.history = step, history
        if self.display is not None:
            val = history["val_loglik"][-1] if history["val_loglik"] else None
            self.display.update(step, history["loglik"][-1], val)
        saved = False
        if self.save is not None and (step % self.every == 0 or step == self.total):
            self.save(step, params, state, history)
            saved = True
        if self.interrupt is not None and self.interrupt.is_set():
            if self.save is not None and not saved:
                self.save(step, params, state, history)
            raise TrainingInterrupted(step, self.checkpoint)

    def close(self):
        if self.display is not None:
            self.display.close()


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C (SIGINT) into a flag that the training loop reads
    between steps, so that training stops at a consistent state (a step is
    never half applied); a second Ctrl-C raises ``KeyboardInterrupt`` at once.

    Only in the main thread, and only while Python's default handler is
    installed (a handler the program set up is left alone).
    """
    flag = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _arithmetic(what, params):
    """Evaluate the flow: never from non-finite parameters (set through
    :meth:`parameters`), and with floating-point errors raised, so that a model
    whose parameters overflow float64 (far beyond what training produces)
    gives an error rather than NaN and RuntimeWarnings."""
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{what}: parameter {name} has non-finite values")
    try:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield
    except FloatingPointError as exc:
        raise FloatingPointError(f"{what}: {exc} in the flow: this model's parameters "
                                 f"overflow float64 for this input") from None


def _merge(old, new):
    """Concatenate two training histories (either may be ``None``)."""
    keys = ("step", "loglik", "val_step", "val_loglik")
    parts = [h for h in (old, new) if h is not None]
    return {k: [v for h in parts for v in h[k]] for k in keys}


class RadFlow(_FlowEstimator):
    """Rad flow: Rad coupling layers with a standard normal base (paper §4.2).

    Parameters
    ----------
    n_layers : int
        Number of coupling layers (paper: 6).
    hidden : int
        Hidden units of each conditioner (paper: 8).
    gate_hidden : int or None
        Hidden units of each gating logit network (``None``: ``hidden``).
    out_std : float
        Standard deviation of the output weights at initialisation (>= 0).
    steps : int
        Adam steps in total (with ``warm_start``, the total to reach).
    batch_size : int
        Minibatch size (a batch larger than the data is the whole data).
    lr, beta1, beta2, eps : float
        Adam's step size, moment decays and denominator constant.
    eval_every : int
        Steps between two scores of the held-out data ``fit(X_val=...)``.
    warm_start : bool
        ``fit`` continues the fitted model (parameters and Adam state) up to
        ``steps`` instead of starting afresh.
    progress : bool or None
        Progress display on stderr: ``None`` only on a terminal, ``True`` also
        plain lines elsewhere, ``False`` none.
    random_state : None or int
        Seeds initialisation, minibatch order and the early-stopping split.
    lr_schedule : {"constant", "cosine", "step"}
        Learning rate of Adam step ``t``
        (:func:`radref.training.schedules.learning_rate`): ``"constant"``
        ``lr`` (the paper's); ``"cosine"`` from ``lr`` down to
        ``lr * lr_final_fraction`` at step ``lr_decay_steps``, then constant;
        ``"step"`` ``lr * lr_gamma ** ((t - 1) // lr_step_size)``.
    lr_decay_steps : int or None
        Horizon of the cosine decay (``None``: ``steps``; set it when a run
        is fitted in segments of growing ``steps``).
    lr_final_fraction : float in [0, 1]
        Final rate of the cosine decay, as a fraction of ``lr``.
    lr_step_size : int
        Steps between two decays of the step schedule.
    lr_gamma : float in (0, 1]
        Factor of each decay of the step schedule.
    ema_decay : float in (0, 1) or None
        Keep an exponential moving average of the parameters (debiased:
        :class:`radref.training.schedules.ParameterAverage`); after fit,
        ``params_`` (scoring, sampling, inference) is the average, and the
        last iterate stays in ``training_params_`` for resuming.  ``None``:
        no averaging.
    early_stopping : bool
        Set aside ``validation_fraction`` of the rows of ``X`` (never
        ``X_val``), score them every ``eval_every`` steps, stop after
        ``n_iter_no_change`` scores without improvement, and keep the best
        scored parameters as ``params_`` (``best_step_``,
        ``best_validation_score_``, ``stopped_at_``).  Training uses the
        other rows.
    validation_fraction : float in (0, 1)
        Fraction of the training rows set aside for early stopping.
    n_iter_no_change : int
        Scores without improvement before early stopping stops.
    """

    _ARCHITECTURE = ("n_layers", "hidden", "gate_hidden", "out_std", "random_state")

    def __init__(self, n_layers=6, hidden=8, gate_hidden=None, out_std=0.01,
                 steps=TRAINING_DEFAULTS["steps"], batch_size=TRAINING_DEFAULTS["batch_size"],
                 lr=TRAINING_DEFAULTS["lr"], beta1=TRAINING_DEFAULTS["beta1"],
                 beta2=TRAINING_DEFAULTS["beta2"], eps=TRAINING_DEFAULTS["eps"],
                 eval_every=TRAINING_DEFAULTS["eval_every"], warm_start=False, progress=None,
                 random_state=None, lr_schedule=RECIPE_DEFAULTS["lr_schedule"],
                 lr_decay_steps=RECIPE_DEFAULTS["lr_decay_steps"],
                 lr_final_fraction=RECIPE_DEFAULTS["lr_final_fraction"],
                 lr_step_size=RECIPE_DEFAULTS["lr_step_size"],
                 lr_gamma=RECIPE_DEFAULTS["lr_gamma"], ema_decay=RECIPE_DEFAULTS["ema_decay"],
                 early_stopping=RECIPE_DEFAULTS["early_stopping"],
                 validation_fraction=RECIPE_DEFAULTS["validation_fraction"],
                 n_iter_no_change=RECIPE_DEFAULTS["n_iter_no_change"]):
        self.n_layers, self.hidden, self.gate_hidden, self.out_std = (n_layers, hidden,
                                                                      gate_hidden, out_std)
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.beta1, self.beta2, self.eps, self.eval_every = beta1, beta2, eps, eval_every
        self.warm_start, self.progress, self.random_state = warm_start, progress, random_state
        self.lr_schedule, self.lr_decay_steps = lr_schedule, lr_decay_steps
        self.lr_final_fraction, self.lr_step_size = lr_final_fraction, lr_step_size
        self.lr_gamma, self.ema_decay, self.early_stopping = lr_gamma, ema_decay, early_stopping
        self.validation_fraction, self.n_iter_no_change = validation_fraction, n_iter_no_change

    def _checked(self):
        checked = super()._checked()
        checked["gate_hidden"] = (None if self.gate_hidden is None
                                  else check_int("gate_hidden", self.gate_hidden))
        return checked

    def _architecture(self, checked):
        # the resolved gating width, as radref 0.1 stored it
        architecture = super()._architecture(checked)
        if architecture["gate_hidden"] is None:
            architecture["gate_hidden"] = checked["hidden"]
        return architecture

    def _config(self, dim, checked):
        gate_hidden = checked["hidden"] if checked["gate_hidden"] is None else checked["gate_hidden"]
        return FlowConfig("rad", dim, checked["n_layers"], checked["hidden"], gate_hidden)


class RealNVPFlow(_FlowEstimator):
    """Real NVP baseline: affine coupling layers with a standard normal base.

    Parameters
    ----------
    n_layers : int
        Number of coupling layers (paper: 6).
    hidden : int
        Hidden units of each conditioner (paper: 56).
    out_std, steps, batch_size, lr, beta1, beta2, eps, eval_every, warm_start, progress, \
random_state, lr_schedule, lr_decay_steps, lr_final_fraction, lr_step_size, lr_gamma, \
ema_decay, early_stopping, validation_fraction, n_iter_no_change
        As for :class:`RadFlow`.
    """

    def __init__(self, n_layers=6, hidden=56, out_std=0.01,
                 steps=TRAINING_DEFAULTS["steps"], batch_size=TRAINING_DEFAULTS["batch_size"],
                 lr=TRAINING_DEFAULTS["lr"], beta1=TRAINING_DEFAULTS["beta1"],
                 beta2=TRAINING_DEFAULTS["beta2"], eps=TRAINING_DEFAULTS["eps"],
                 eval_every=TRAINING_DEFAULTS["eval_every"], warm_start=False, progress=None,
                 random_state=None, lr_schedule=RECIPE_DEFAULTS["lr_schedule"],
                 lr_decay_steps=RECIPE_DEFAULTS["lr_decay_steps"],
                 lr_final_fraction=RECIPE_DEFAULTS["lr_final_fraction"],
                 lr_step_size=RECIPE_DEFAULTS["lr_step_size"],
                 lr_gamma=RECIPE_DEFAULTS["lr_gamma"], ema_decay=RECIPE_DEFAULTS["ema_decay"],
                 early_stopping=RECIPE_DEFAULTS["early_stopping"],
                 validation_fraction=RECIPE_DEFAULTS["validation_fraction"],
                 n_iter_no_change=RECIPE_DEFAULTS["n_iter_no_change"]):
        self.n_layers, self.hidden, self.out_std = n_layers, hidden, out_std
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.beta1, self.beta2, self.eps, self.eval_every = beta1, beta2, eps, eval_every
        self.warm_start, self.progress, self.random_state = warm_start, progress, random_state
        self.lr_schedule, self.lr_decay_steps = lr_schedule, lr_decay_steps
        self.lr_final_fraction, self.lr_step_size = lr_final_fraction, lr_step_size
        self.lr_gamma, self.ema_decay, self.early_stopping = lr_gamma, ema_decay, early_stopping
        self.validation_fraction, self.n_iter_no_change = validation_fraction, n_iter_no_change

    def _config(self, dim, checked):
        return FlowConfig("affine", dim, checked["n_layers"], checked["hidden"])


def load_model(path):
    """Load a checkpoint written by :meth:`RadFlow.save` or :meth:`RealNVPFlow.save`,
    whichever class it holds."""
    meta, _, _ = load_checkpoint(path)
    classes = {cls.__name__: cls for cls in (RadFlow, RealNVPFlow)}
    if meta["model"] not in classes:
        raise CheckpointError(f"{path}: unknown model class {meta['model']!r}")
    return classes[meta["model"]].load(path)
