"""caviar's scikit-learn estimators: the estimator checks, pipelines, searches, pickling."""

import inspect
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import caviar
from caviar.sklearn import CaviarClassifier, CaviarRegressor, expected_failed_checks
from caviar.train import hyperparameters as H

FAST = dict(epochs=30, hidden=(16,), lr=0.01, random_state=0)


@pytest.mark.parametrize("estimator", [CaviarClassifier(), CaviarRegressor()], ids=["classifier", "regressor"])
def test_check_estimator(estimator):
    results = check_estimator(estimator, expected_failed_checks=expected_failed_checks(estimator), on_fail=None)
    assert len(results) > 50
    assert not [r["check_name"] for r in results if r["status"] == "failed"]
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed <= set(expected_failed_checks(estimator))


def test_class_weights_pass_scikit_learn_s_check_with_enough_steps():
    """The one check declared as expected to fail, at the defaults, passes with a larger
    learning rate and more epochs: class weights work; the default budget is small."""
    from sklearn.utils.estimator_checks import check_class_weight_classifiers

    check_class_weight_classifiers("CaviarClassifier", CaviarClassifier(lr=0.01, epochs=200, early_stopping=None,
                                                                        random_state=0))


def test_every_flag_of_caviar_train_is_a_parameter_with_the_command_line_s_default():
    from caviar.cli import build_parser

    defaults = vars(build_parser().parse_args(["train"]))  # what `caviar train` runs with
    params = CaviarClassifier().get_params()
    for name, h in H.SCHEMA.items():
        if h.flag is not None:
            assert params[name] == defaults[name], name
    for name in ("epochs", "batch_size", "early_stopping", "decay", "class_weight"):
        assert params[name] == defaults[name], name
    assert list(params["hidden"]) == defaults["hidden"]
    assert set(inspect.signature(CaviarRegressor).parameters) == set(params) - {"class_weight"}


def messy_frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"income": rng.lognormal(10, 1, n), "city": rng.choice(["Lyon", "Paris", "Nice", None], n),
                          "age": rng.integers(18, 80, n).astype(float)})
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    label = np.where((frame["city"].fillna("x") == "Paris") | (frame["age"].fillna(50) > 60), "yes", "no")
    return frame, label


def test_cross_val_score_on_a_dataframe_with_text_categories_and_missing_cells():
    frame, label = messy_frame()
    scores = cross_val_score(CaviarClassifier(epochs=60, random_state=0), frame, label, cv=3)
    assert len(scores) == 3 and scores.mean() > 0.8  # the rule is learnable; a constant guess scores about 0.5


def test_grid_search_over_lr_inside_a_pipeline():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("net", CaviarClassifier(epochs=15, hidden=(16,), random_state=0))])
    search = GridSearchCV(pipe, {"net__lr": [1e-4, 3e-3]}, cv=3).fit(X, y)
    assert search.best_params_["net__lr"] == 3e-3  # 15 epochs at 1e-4 barely move
    assert search.best_score_ > 0.9 and search.score(X, y) > 0.9


def test_column_transformer_feeds_the_estimator():
    frame, label = messy_frame()
    pre = ColumnTransformer([("n", StandardScaler(), ["age"])], remainder="drop")
    model = Pipeline([("pre", pre), ("net", CaviarClassifier(epochs=5, random_state=0))])
    model.fit(frame.fillna({"age": 50}), label)
    assert set(model.predict(frame.fillna({"age": 50}))) <= {"yes", "no"}


def test_clone_and_pickle_round_trips():
    X, y = load_iris(return_X_y=True)
    est = CaviarClassifier(epochs=10, lr=0.01, hidden=(8, 8), random_state=3)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "network_")
    est.fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    assert again.classes_.tolist() == [0, 1, 2] and again.n_iter_ == est.n_iter_
    np.testing.assert_array_equal(clone(est).fit(X, y).predict_proba(X), est.predict_proba(X))  # seeded: the same fit


def test_save_writes_a_caviar_model_that_load_and_predict_read(tmp_path):
    frame, label = messy_frame()
    est = CaviarClassifier(epochs=10, random_state=0).fit(frame, label)
    path = est.save(tmp_path / "model")
    assert not any(name.endswith((".pkl", ".pickle")) for name in os.listdir(path))
    net = caviar.load(path)
    assert isinstance(net, caviar.Network)
    back = CaviarClassifier.load(path)
    np.testing.assert_array_equal(back.predict_proba(frame), est.predict_proba(frame))
    assert back.predict(frame).tolist() == est.predict(frame).tolist()
    frame.to_csv(tmp_path / "new.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "caviar", "predict", "--model", path, "--data", tmp_path / "new.csv"],
                       capture_output=True, text=True, env={**os.environ, "CAVIAR_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    predicted = [line.split(",")[0] for line in r.stdout.splitlines()[1:]]
    assert predicted == est.predict(frame).tolist()


def test_fitted_attributes_early_stopping_and_history():
    X, y = load_iris(return_X_y=True)
    est = CaviarClassifier(epochs=300, early_stopping=3, lr=0.05, random_state=0).fit(X, y)
    assert est.n_features_in_ == 4 and len(est.loss_curve_) == est.n_iter_ < 300  # stopped early
    assert 1 <= est.best_epoch_ <= est.n_iter_ and len(est.history_.epochs) == est.n_iter_
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    assert CaviarClassifier(**FAST).fit(frame, y).feature_names_in_.tolist() == ["a", "b", "c", "d"]


def test_warm_start_and_partial_fit_continue_training():
    X, y = load_iris(return_X_y=True)
    est = CaviarClassifier(epochs=5, warm_start=True, early_stopping=None, random_state=0).fit(X, y)
    first = est.n_iter_
    est.fit(X, y)
    assert est.n_iter_ == first + 5 and len(est.loss_curve_) == est.n_iter_
    online = CaviarClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        online.partial_fit(X[:50], y[:50])
    online.partial_fit(X[:75], y[:75], classes=[0, 1, 2])
    online.partial_fit(X[75:], y[75:])
    assert online.n_iter_ == 2 and online.predict(X).shape == (150,)
    reg = CaviarRegressor(random_state=0)
    Xd, yd = load_diabetes(return_X_y=True)
    for _ in range(3):
        reg.partial_fit(Xd, yd)
    assert reg.n_iter_ == 3 and np.isfinite(reg.predict(Xd)).all()


def test_sample_weight_moves_the_fit():
    X, y = load_breast_cancer(return_X_y=True)
    w = np.where(y == 0, 20.0, 1.0)
    plain = CaviarClassifier(epochs=5, random_state=0, early_stopping=None).fit(X, y)
    weighted = CaviarClassifier(epochs=5, random_state=0, early_stopping=None).fit(X, y, sample_weight=w)
    assert (weighted.predict(X) == 0).sum() > (plain.predict(X) == 0).sum()  # the heavy class is predicted more
    ones = CaviarClassifier(epochs=5, random_state=0, early_stopping=None).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(ones.predict_proba(X), plain.predict_proba(X))


def test_regressor_predicts_in_the_target_s_units():
    """The target is standardized inside: a target in other units trains the same network,
    and its predictions come back in those units."""
    X, y = load_diabetes(return_X_y=True)
    plain = CaviarRegressor(epochs=60, lr=0.003, random_state=0).fit(X, y)
    scaled = CaviarRegressor(epochs=60, lr=0.003, random_state=0).fit(X, y * 1000 + 5e4)
    np.testing.assert_allclose(scaled.predict(X), plain.predict(X) * 1000 + 5e4, rtol=1e-9)
    assert scaled.score(X, y * 1000 + 5e4) == pytest.approx(plain.score(X, y), abs=1e-9)
    assert plain.score(X, y) > 0.3  # a constant scores 0


def test_ensemble_mode_returns_one_estimator_with_a_greedy_ensemble():
    frame, label = messy_frame(400)
    est = CaviarClassifier(ensemble=True, time=15, epochs=40, random_state=0).fit(frame, label)
    assert est.ensemble_ is not None and len(est.ensemble_.members) == len(est.ensemble_selection_["members"])
    assert est.score(frame, label) > 0.8 and est.predict_proba(frame).shape == (400, 2)
    assert set(est.predict(frame)) <= {"yes", "no"}


def test_balanced_class_weights_in_fit_and_in_partial_fit():
    """'balanced' weighs classes by the counts of the rows trained on (as caviar train counts
    its training split); partial_fit's first call once failed with it."""
    X, y = load_breast_cancer(return_X_y=True)
    keep = np.r_[np.flatnonzero(y == 0)[:30], np.flatnonzero(y == 1)]  # a rare class 0
    X, y = X[keep], y[keep]
    plain = CaviarClassifier(epochs=10, early_stopping=None, random_state=0).fit(X, y)
    balanced = CaviarClassifier(epochs=10, early_stopping=None, random_state=0, class_weight="balanced").fit(X, y)
    assert (balanced.predict(X) == 0).sum() > (plain.predict(X) == 0).sum()
    online = CaviarClassifier(class_weight="balanced", random_state=0).partial_fit(X, y, classes=[0, 1])
    assert online.n_iter_ == 1 and online.predict(X).shape == y.shape
