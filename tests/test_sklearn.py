"""RadFlow and RealNVPFlow inside scikit-learn: its own estimator checks, clone,
GridSearchCV, cross_val_score and a Pipeline.  scikit-learn is a test
dependency only (the ``test`` extra); radref never imports it at run time."""
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import radref
from radref import RadFlow, RealNVPFlow, datasets

CLASSES = [RadFlow, RealNVPFlow]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(radref.__file__)))

# The estimators keep their default architecture (6 layers, 8 or 56 hidden
# units); only training is shortened, through a parameter, so that the ~50
# checks, most of which fit several models, take seconds.
SHORT = dict(steps=10)

# scikit-learn warns that an estimator which does not inherit from its
# BaseEstimator "might lead to unexpected behavior": radref implements the
# protocol itself so as not to depend on scikit-learn at run time.
NOT_A_BASE_ESTIMATOR = "ignore:Estimator .* does not inherit from `sklearn.base.BaseEstimator`"

# check_array_api_input runs only when the environment variable SCIPY_ARRAY_API
# is set before SciPy is imported; in this process it reports a skip, so it is
# run on its own in a subprocess below (test_array_api_check_in_its_own_process).
ARRAY_API_CHECK = "check_array_api_input"


@pytest.mark.filterwarnings(NOT_A_BASE_ESTIMATOR)
@pytest.mark.parametrize("cls", CLASSES)
def test_check_estimator(cls):
    results = check_estimator(cls(**SHORT), on_skip=None, on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    skipped = [r["check_name"] for r in results if r["status"] == "skipped"]
    assert not failed, failed
    assert skipped == [ARRAY_API_CHECK], skipped
    assert len(results) > 40  # the whole suite ran, not an early exit


@pytest.mark.parametrize("cls", CLASSES)
def test_array_api_check_in_its_own_process(cls):
    code = (
        "import warnings\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        f"from radref import {cls.__name__} as cls\n"
        "warnings.simplefilter('error')\n"
        "warnings.filterwarnings('ignore', message='Estimator .* does not inherit')\n"
        # as check_estimator calls it for an estimator without array API support
        f"check_array_api_input('{cls.__name__}', cls(steps=10), array_namespace='numpy',"
        " expect_only_array_outputs=False)\n"
        "print('passed')\n")
    env = dict(os.environ, SCIPY_ARRAY_API="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "passed"


@pytest.mark.parametrize("cls", CLASSES)
def test_clone_gives_an_unfitted_copy_with_the_same_parameters(cls):
    X = datasets.sample("ring", 200, random_state=0)
    model = cls(n_layers=2, hidden=4, steps=5, batch_size=50, random_state=1).fit(X)
    copy = clone(model)
    assert type(copy) is cls and copy is not model
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "params_")
    copy.fit(X)
    for name, value in model.parameters().items():
        assert copy.parameters()[name].tobytes() == value.tobytes(), name


def _fold_scores(make_model, X, n_splits):
    """Held-out mean log-likelihood per fold, computed by hand."""
    scores = []
    for train_rows, test_rows in KFold(n_splits).split(X):
        scores.append(make_model().fit(X[train_rows]).score(X[test_rows]))
    return np.array(scores)


@pytest.mark.parametrize("cls", CLASSES)
def test_cross_val_score_is_the_held_out_log_likelihood_per_fold(cls):
    X = datasets.sample("two_moons", 300, random_state=0)
    settings = dict(n_layers=2, hidden=4, steps=20, batch_size=100, random_state=0)
    scores = cross_val_score(cls(**settings), X, cv=KFold(3))
    np.testing.assert_array_equal(scores, _fold_scores(lambda: cls(**settings), X, 3))


def test_grid_search_picks_the_best_held_out_likelihood():
    X = datasets.sample("two_moons", 300, random_state=0)
    settings = dict(n_layers=2, steps=30, batch_size=100, random_state=0)
    search = GridSearchCV(RadFlow(**settings), {"hidden": [4, 8]}, cv=KFold(3)).fit(X)
    by_hand = {hidden: _fold_scores(lambda: RadFlow(hidden=hidden, **settings), X, 3).mean()
               for hidden in (4, 8)}
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               [by_hand[4], by_hand[8]], rtol=1e-12)
    assert search.best_params_ == {"hidden": max(by_hand, key=by_hand.get)}
    # refit on all the data with the best setting
    best = RadFlow(hidden=search.best_params_["hidden"], **settings).fit(X)
    assert search.best_estimator_.get_params() == best.get_params()
    np.testing.assert_array_equal(search.score_samples(X), best.score_samples(X))


def test_pipeline_with_a_scaler():
    # Standardising first: the flow models the scaled data (its log-density
    # is that of the scaled points, without the scaler's Jacobian).
    X = datasets.sample("spiral", 400, random_state=0) * 10.0 + 5.0
    settings = dict(n_layers=2, hidden=4, steps=20, batch_size=100, random_state=0)
    pipeline = Pipeline([("scale", StandardScaler()), ("flow", RadFlow(**settings))]).fit(X)
    scaler = StandardScaler().fit(X)
    flow = RadFlow(**settings).fit(scaler.transform(X))
    X_new = datasets.sample("spiral", 50, random_state=1) * 10.0 + 5.0
    np.testing.assert_array_equal(pipeline.score_samples(X_new),
                                  flow.score_samples(scaler.transform(X_new)))
    assert pipeline.score(X_new) == flow.score(scaler.transform(X_new))
    np.testing.assert_array_equal(pipeline.transform(X_new), flow.transform(scaler.transform(X_new)))
    # the whole pipeline is a parameter grid too
    assert pipeline.get_params()["flow__hidden"] == 4
    pipeline.set_params(flow__steps=5)
    assert pipeline.named_steps["flow"].steps == 5
