"""What a fitted flow does: score, infer, invert and sample (paper §3), for
the estimators of :mod:`radref.user.estimators`.

:class:`FittedFlow` reads the fitted attributes ``config_`` and ``params_``
and the model's layer kind ``_kind`` (:mod:`radref.core.layers`); every
input is checked (:func:`radref.checks.check_array`), and every evaluation
refuses non-finite parameters and raises on floating-point errors
(:func:`_arithmetic`) instead of returning NaN.
"""
import contextlib
import warnings

import numpy as np

from radref.checks import check_array, check_generator, check_int, effective_n_jobs
from radref.core.flow import (flow_infer, flow_inverse, flow_log_density, flow_sample,
                              flow_sample_from_noise)
from radref.core.layers import columns
from radref.training.train import mean_loglik_and_grad


class NonFiniteSampleWarning(UserWarning):
    """:meth:`FittedFlow.sample` drew samples that are not finite (rows of inf)."""


class NotFittedError(RuntimeError, ValueError, AttributeError):
    """The model is used before :meth:`fit` or :meth:`load`.

    A ``RuntimeError`` (as in radref 0.1) that is also a ``ValueError`` and an
    ``AttributeError``, like scikit-learn's ``NotFittedError``.
    """


class FittedFlow:
    """Inference of a fitted flow (a mixin of the estimators)."""

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_")

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or load()")

    def _check_X(self, name, X):
        return check_array(name, X, dim=self.config_.dim, owner=type(self).__name__)

    def _threads(self):
        """The threads ``n_jobs`` asks for on this machine, checked (scikit-learn's
        convention; a model unpickled from before ``n_jobs`` existed has one)."""
        return effective_n_jobs("n_jobs", getattr(self, "n_jobs", None))

    def score_samples(self, X):
        """Log-density ``log p(x)`` in nats of each row of ``X`` (shape ``(n,)``),
        by the change of variables of paper eq. 3 with the Rad terms of §3.
        Chunks of rows run in ``n_jobs`` threads (the same numbers for any
        ``n_jobs``)."""
        self._check_fitted()
        X, threads = self._check_X("X", X), self._threads()
        with _arithmetic("score_samples", self.params_):
            return flow_log_density(X, self.params_, self.config_, n_jobs=threads)

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

        Chunks of rows run in ``n_jobs`` threads (the same numbers for any
        ``n_jobs``).

        Returns
        -------
        Z : ndarray, shape (n, d)
        K : ndarray of int, shape (n, n_layers, d)
            Branch per layer and column, ``-1`` where a layer has no discrete
            latent for that column.
        """
        self._check_fitted()
        X, threads = self._check_X("X", X), self._threads()
        with _arithmetic("infer", self.params_):
            return flow_infer(X, self.params_, self.config_, n_jobs=threads)

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
            The uniforms are all drawn before any layer runs, so the result
            does not depend on ``n_jobs``.

        Returns
        -------
        X : ndarray, shape (n, d)
        """
        self._check_fitted()
        Z, threads = self._check_X("Z", Z), self._threads()
        if K is None and self._kind.HAS_DISCRETE_LATENTS:
            rng = check_generator("random_state", random_state)
            uniforms = rng.random((Z.shape[0], self.config_.n_layers, self.config_.dim))
            with _arithmetic("inverse_transform", self.params_):
                return flow_sample_from_noise(Z, uniforms, self.params_, self.config_,
                                              threads)[0]
        K = self._check_K(Z, K)
        try:
            with _arithmetic("inverse_transform", self.params_):
                return flow_inverse(Z, K, self.params_, self.config_, threads)
        except ValueError as exc:  # from surjection_inverse: a branch without preimage
            raise ValueError(f"K does not match Z: {exc} (the K that infer() returns "
                             f"for the same points always matches)") from None

    def _check_K(self, Z, K):
        expected = (Z.shape[0], self.config_.n_layers, self.config_.dim)
        if K is None:  # a kind without discrete latents
            return np.full(expected, -1)
        try:
            K = np.asarray(K)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"K must be an integer array: {exc}") from None
        if K.shape != expected or not np.issubdtype(K.dtype, np.integer):
            raise ValueError(f"K must be an integer array of shape {expected}, "
                             f"got {K.dtype} {K.shape}")
        if self._kind.HAS_DISCRETE_LATENTS:
            transformed = np.zeros(expected[1:], dtype=bool)
            for layer in range(self.config_.n_layers):
                transformed[layer, columns(self.config_.dim, layer).transformed] = True
            top = self._kind.N_BRANCHES - 1
            bad = transformed & ((K < 0) | (K > top))
            if bad.any():
                i, layer, j = (int(a[0]) for a in np.nonzero(bad))
                raise ValueError(f"K must be a branch {', '.join(map(str, range(top)))} or "
                                 f"{top} where layer {layer} transforms column {j}, got "
                                 f"K[{i}, {layer}, {j}] = {K[i, layer, j]}")
        return K

    def sample(self, n, random_state=None):
        """Draw ``n`` exact samples, shape ``(n, d)`` (paper §3, Fig. 1b).

        A sample the flow maps beyond +-1e120 is a row of ``inf``
        (docs/errors.md, "Out of range"); a trained model never does that,
        so :class:`NonFiniteSampleWarning` says how many rows it concerns.
        The noise is drawn before any layer runs and chunks of rows are then
        inverted in ``n_jobs`` threads: the samples of one ``random_state``
        are the same for any ``n_jobs``.
        """
        self._check_fitted()
        n, threads = check_int("n", n), self._threads()
        rng = check_generator("random_state", random_state)
        with _arithmetic("sample", self.params_):
            X = flow_sample(n, self.params_, self.config_, rng, threads)[0]
        bad = int(np.count_nonzero(~np.all(np.isfinite(X), axis=1)))
        if bad:
            warnings.warn(NonFiniteSampleWarning(
                f"{bad} of {n} samples are not finite (inf: the flow maps them beyond "
                f"+-1e120): this model's parameters are extreme, as after a diverging "
                f"training; retrain with a smaller learning rate (--lr)"), stacklevel=2)
        return X

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
