"""User-facing estimators with scikit-learn conventions: :class:`RadFlow` and
:class:`RealNVPFlow`.

They are thin wrappers around the functional core (:mod:`radref.core.flow`,
:mod:`radref.training.train`): all arithmetic happens there.
"""
import contextlib
import hashlib
import numbers
import os

import numpy as np

from radref.checks import check_array, check_float, check_int
from radref.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from radref.core.coupling import split
from radref.core.flow import (FlowConfig, flow_forward, flow_init, flow_inverse, flow_log_density,
                         flow_sample)
from radref.training.optim import AdamConfig, adam_init, check_adam_config
from radref.training.train import NonFiniteError, mean_loglik_and_grad, train


class NotFittedError(RuntimeError):
    """The model is used before :meth:`fit` or :meth:`load`."""


class _FlowEstimator:
    _kind = None

    def _set_common(self, n_layers, hidden, out_std, random_state):
        """Check and store the hyperparameters both flows share."""
        self.n_layers = check_int("n_layers", n_layers)
        self.hidden = check_int("hidden", hidden)
        self.out_std = check_float("out_std", out_std, positive=False)
        if self.out_std < 0:
            raise ValueError(f"out_std must be >= 0, got {out_std}")
        self.random_state = _check_random_state(random_state)

    def _hyperparameters(self):
        raise NotImplementedError

    def _config(self, dim):
        raise NotImplementedError

    # ------------------------------------------------------------- fitting
    def fit(self, X, steps=1000, batch_size=500, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
            X_val=None, eval_every=1000, progress=None, checkpoint=None, checkpoint_every=1000):
        """Fit by maximum likelihood with Adam.

        Parameters
        ----------
        X : array_like, shape (n, d), d >= 2
            Training data.
        steps : int
            Total number of Adam steps (>= 1).
        batch_size : int
            Minibatch size, at most ``n``.
        lr, beta1, beta2, eps : float
            Adam hyperparameters.
        X_val : array_like, shape (m, d), optional
            Held-out data, scored every ``eval_every`` steps (``history_``).
        progress : bool or None
            Progress line on stderr; ``None``: only if stderr is a terminal.
        checkpoint : path, optional
            Training state is saved there every ``checkpoint_every`` steps and
            at the end.  If the file exists, training resumes from it (same
            data, model and settings required) and reaches bit-identical
            parameters to an uninterrupted run.

        Returns
        -------
        self
        """
        X = check_array("X", X)
        if X.shape[1] < 2:
            raise ValueError(f"X must have at least 2 columns for coupling layers, got {X.shape[1]}")
        steps = check_int("steps", steps)
        batch_size = check_int("batch_size", batch_size)
        if batch_size > X.shape[0]:
            raise ValueError(f"batch_size ({batch_size}) is larger than the number of "
                             f"samples in X ({X.shape[0]})")
        eval_every = check_int("eval_every", eval_every)
        checkpoint_every = check_int("checkpoint_every", checkpoint_every)
        if checkpoint is not None:
            checkpoint = _check_path("checkpoint", checkpoint)
        if X_val is not None:
            X_val = check_array("X_val", X_val, dim=X.shape[1])
        adam = check_adam_config(AdamConfig(check_float("lr", lr), _real("beta1", beta1),
                                            _real("beta2", beta2), _real("eps", eps)))

        seed = np.random.SeedSequence(self._seed())
        settings = {"batch_size": batch_size, "adam": list(adam), "entropy": str(seed.entropy),
                    "data_sha256": hashlib.sha256(X.tobytes()).hexdigest()}
        # Everything is built in locals and assigned to the model only at the end,
        # so a failed fit never leaves a half-updated model.
        config = self._config(X.shape[1])
        state, start, history = None, 0, None
        if checkpoint is not None and os.path.exists(checkpoint):
            params, state, start, history, settings = self._resume(checkpoint, config, settings)
            seed = np.random.SeedSequence(int(settings["entropy"]))
        init_seed, order_seed = seed.spawn(2)
        if state is None:
            params = flow_init(config, out_std=self.out_std,
                               random_state=np.random.default_rng(init_seed))
            state = adam_init(params)

        def save_state(step, params, optimizer_state, new_history):
            extra = dict(settings, history=_merge(history, new_history))
            self._write(checkpoint, config, params, optimizer_state, step, extra)

        try:
            new_history = train(params, config, X, steps, batch_size, adam,
                                random_state=order_seed, optimizer_state=state,
                                start_step=start, x_val=X_val, eval_every=eval_every,
                                progress=progress,
                                callback=save_state if checkpoint is not None else None,
                                callback_every=checkpoint_every)
        except NonFiniteError as err:
            # Keep the last finite parameters (train updates only after its checks).
            self._set_fitted(config, params, state, err.step - 1, _merge(history, err.history))
            raise
        new_history.pop("optimizer_state")
        self._set_fitted(config, params, state, max(steps, start), _merge(history, new_history))
        return self

    def _set_fitted(self, config, params, state, n_steps, history):
        self.config_, self.params_, self.optimizer_state_ = config, params, state
        self.n_steps_, self.history_ = n_steps, history

    def _resume(self, path, config, settings):
        meta, params, state = load_checkpoint(path, expected_model=type(self).__name__)
        hyper = dict(meta["hyperparameters"])
        if hyper.pop("dim") != config.dim or hyper != self._hyperparameters():
            raise ValueError(f"checkpoint {path} was written by a model with other "
                             f"hyperparameters: {meta['hyperparameters']}")
        saved = dict(meta["extra"])
        history = saved.pop("history", None)
        mine = {k: v for k, v in settings.items() if k != "entropy"}
        theirs = {k: saved.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"checkpoint {path} was written with other data or training "
                             f"settings: {theirs} (now {mine})")
        if state is None:
            raise ValueError(f"checkpoint {path} holds no optimizer state to resume from")
        return _checked_params(params, config, path), state, meta["step"], history, saved

    def _seed(self):
        return self.random_state

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or load()")

    # ------------------------------------------------------------ inference
    def score_samples(self, X):
        """Log-density ``log p(x)`` in nats of each row of ``X`` (shape ``(n,)``)."""
        self._check_fitted()
        X = check_array("X", X, dim=self.config_.dim)
        with _arithmetic("score_samples", self.params_):
            return flow_log_density(X, self.params_, self.config_)

    def score(self, X):
        """Mean log-likelihood of ``X`` in nats (a mean, not a sum)."""
        return float(np.mean(self.score_samples(X)))

    def transform(self, X):
        """Exact inference ``X -> (Z, K)``.

        Returns
        -------
        Z : ndarray, shape (n, d)
        K : ndarray of int, shape (n, n_layers, d)
            Branch (0, 1, 2) per layer and column, ``-1`` where a layer has no
            discrete latent for that column.
        """
        self._check_fitted()
        X = check_array("X", X, dim=self.config_.dim)
        with _arithmetic("transform", self.params_):
            _, Z, K, _ = flow_forward(X, self.params_, self.config_)
        return Z, K

    def inverse_transform(self, Z, K=None):
        """Exact inverse ``(Z, K) -> X`` of :meth:`transform`.

        ``K`` is required for a Rad flow; a Real NVP flow has no discrete
        latent and accepts ``K=None``.  Entries of ``K`` where a layer has no
        discrete latent (``-1`` in the output of :meth:`transform`) are ignored.
        """
        self._check_fitted()
        Z = check_array("Z", Z, dim=self.config_.dim)
        if K is None and self.config_.kind == "affine":
            K = np.full((Z.shape[0], self.config_.n_layers, self.config_.dim), -1)
        elif K is None:
            raise ValueError("K is required to invert a Rad flow (the branch of every fold)")
        try:
            K = np.asarray(K)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"K must be an integer array: {exc}") from None
        expected = (Z.shape[0], self.config_.n_layers, self.config_.dim)
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
        try:
            with _arithmetic("inverse_transform", self.params_):
                return flow_inverse(Z, K, self.params_, self.config_)
        except ValueError as exc:  # from surjection_inverse: a branch without preimage
            raise ValueError(f"K does not match Z: {exc} (the K that transform() returns "
                             f"for the same points always matches)") from None

    def sample(self, n, random_state=None):
        """Draw ``n`` exact samples, shape ``(n, d)``."""
        self._check_fitted()
        n = check_int("n", n)
        try:
            rng = np.random.default_rng(random_state)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"random_state must be None, a non-negative int, a sequence of "
                            f"them, a SeedSequence or a Generator, got {random_state!r} "
                            f"({exc})") from None
        with _arithmetic("sample", self.params_):
            return flow_sample(n, self.params_, self.config_, rng)[0]

    # ----------------------------------------------------------- parameters
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
        X = check_array("X", X, dim=self.config_.dim)
        with _arithmetic("loglik_and_grad", self.params_):
            return mean_loglik_and_grad(X, self.params_, self.config_)

    # ---------------------------------------------------------- persistence
    def save(self, path):
        """Save model, hyperparameters and optimizer state (see :mod:`radref.training.checkpoint`)."""
        self._check_fitted()
        self._save(path, {})

    def _save(self, path, extra):
        self._write(path, self.config_, self.params_, getattr(self, "optimizer_state_", None),
                    getattr(self, "n_steps_", 0), extra)

    def _write(self, path, config, params, optimizer_state, step, extra):
        path = _check_path("path", path)
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"parameter {name} has non-finite values: not saved")
        hyper = dict(self._hyperparameters(), dim=config.dim)
        save_checkpoint(path, type(self).__name__, hyper, params, optimizer_state, step,
                        extra=extra)

    @classmethod
    def load(cls, path):
        """Load a model saved by :meth:`save`; the file must hold this class."""
        meta, params, adam_state = load_checkpoint(path, expected_model=cls.__name__)
        try:
            hyper = dict(meta["hyperparameters"])
            dim = check_int("dim", hyper.pop("dim"), minimum=2)
            model = cls(**hyper)
            step = check_int("step", meta["step"], minimum=0)
            history = meta["extra"].get("history")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: invalid model description in the checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
        model.config_ = model._config(dim)
        model.params_ = _checked_params(params, model.config_, path)
        model.optimizer_state_ = adam_state
        model.n_steps_ = step
        if history is not None:
            model.history_ = history
        return model


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


def _real(name, value):
    """A real number (``bool`` refused), as a float; its range is checked later."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _check_path(name, path):
    """A file path (str, bytes or os.PathLike) whose directory exists."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), "
                        f"got {type(path).__name__} {path!r}")
    directory = os.path.dirname(os.path.abspath(os.fsdecode(path)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name}: directory {directory} does not exist")
    return path


def _check_random_state(random_state):
    """``None`` or a non-negative integer (stored as a plain ``int`` so that it
    can be written to a checkpoint)."""
    if random_state is None:
        return None
    return check_int("random_state", random_state, minimum=0)


def _merge(old, new):
    """Concatenate two training histories (``old`` may be ``None``)."""
    keys = ("step", "loglik", "val_step", "val_loglik")
    if old is None:
        return {k: list(new[k]) for k in keys}
    return {k: list(old[k]) + list(new[k]) for k in keys}


class RadFlow(_FlowEstimator):
    """Rad flow: Rad coupling layers with a standard normal base (paper §4.2).

    Parameters
    ----------
    n_layers : int
        Number of coupling layers (paper: 6).
    hidden : int
        Hidden units of each conditioner (paper: 8).
    gate_hidden : int or None
        Hidden units of each gating logit network (default: ``hidden``).
    out_std : float
        Standard deviation of the output weights at initialisation.
    random_state : None or int
        Seeds initialisation and minibatch order.
    """

    def __init__(self, n_layers=6, hidden=8, gate_hidden=None, out_std=0.01, random_state=None):
        self._set_common(n_layers, hidden, out_std, random_state)
        self.gate_hidden = (self.hidden if gate_hidden is None
                            else check_int("gate_hidden", gate_hidden))

    def _hyperparameters(self):
        return dict(n_layers=self.n_layers, hidden=self.hidden, gate_hidden=self.gate_hidden,
                    out_std=self.out_std, random_state=self.random_state)

    def _config(self, dim):
        return FlowConfig("rad", dim, self.n_layers, self.hidden, self.gate_hidden)


class RealNVPFlow(_FlowEstimator):
    """Real NVP baseline: affine coupling layers with a standard normal base.

    Parameters
    ----------
    n_layers : int
        Number of coupling layers (paper: 6).
    hidden : int
        Hidden units of each conditioner (paper: 56).
    out_std : float
        Standard deviation of the output weights at initialisation.
    random_state : None or int
        Seeds initialisation and minibatch order.
    """

    def __init__(self, n_layers=6, hidden=56, out_std=0.01, random_state=None):
        self._set_common(n_layers, hidden, out_std, random_state)

    def _hyperparameters(self):
        return dict(n_layers=self.n_layers, hidden=self.hidden, out_std=self.out_std,
                    random_state=self.random_state)

    def _config(self, dim):
        return FlowConfig("affine", dim, self.n_layers, self.hidden)


def load_model(path):
    """Load a checkpoint written by :meth:`RadFlow.save` or :meth:`RealNVPFlow.save`,
    whichever class it holds."""
    meta, _, _ = load_checkpoint(path)
    classes = {cls.__name__: cls for cls in (RadFlow, RealNVPFlow)}
    if meta["model"] not in classes:
        raise CheckpointError(f"{path}: unknown model class {meta['model']!r}")
    return classes[meta["model"]].load(path)
