"""Bias/variance diagnosis, per-layer norms (vanishing/exploding), plots, ensembles."""

import numpy as np
import pytest

import caviar
from caviar import data as D
from caviar.diagnose import GradientNorms, activation_norms, diagnose, gradient_norms
from caviar.diagnose import plots
from caviar.diagnose.recipe import HIGH_BIAS_RECIPE, HIGH_VARIANCE_RECIPE
from caviar.train import Ensemble, Snapshots


@pytest.mark.parametrize(
    "train,dev,human,kind",
    [
        (0.01, 0.11, 0.0, "high variance"),
        (0.15, 0.16, 0.0, "high bias"),
        (0.15, 0.30, 0.0, "high bias and high variance"),
        (0.005, 0.01, 0.0, "fine"),
        (0.15, 0.16, 0.15, "fine"),  # with human error 15%, 15% train error is not high bias
    ],
)
def test_the_notes_table(train, dev, human, kind):
    d = diagnose(train, dev, human)
    assert d.kind == kind
    assert d.avoidable_bias == pytest.approx(train - human)
    assert d.variance == pytest.approx(dev - train)


def test_recommendations_follow_the_basic_recipe_in_order():
    assert diagnose(0.15, 0.16).recommendations == HIGH_BIAS_RECIPE
    assert diagnose(0.01, 0.11).recommendations == HIGH_VARIANCE_RECIPE
    both = diagnose(0.15, 0.30).recommendations
    assert both == HIGH_BIAS_RECIPE + HIGH_VARIANCE_RECIPE[:-1]  # bias first, "another architecture" once
    assert len(both) == len(set(both))
    assert diagnose(0.005, 0.01).recommendations == []
    assert HIGH_BIAS_RECIPE[0].startswith("bigger network") and HIGH_VARIANCE_RECIPE[0].startswith("more data")


def test_thresholds_are_parameters():
    assert diagnose(0.04, 0.05).kind == "high bias"
    assert diagnose(0.04, 0.05, bias_threshold=0.05).kind == "fine"
    assert diagnose(0.01, 0.04, variance_threshold=0.05).kind == "fine"


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x"])
def test_error_rates_must_be_fractions(bad):
    with pytest.raises(ValueError, match="train_error must be an error rate"):
        diagnose(bad, 0.1)


def _deep_linear(scale, L=12, n=4):
    net = caviar.Network([n] * (L + 1), activation="linear", output="linear", seed=0, dtype="float64")
    for l in range(1, L + 1):
        net.params[f"W{l}"].data[...] = scale * np.eye(n)
    return net


@pytest.mark.parametrize("scale", [1.5, 0.5])
def test_deep_linear_network_shows_the_notes_growth_and_decay(scale):
    L = 12
    net = _deep_linear(scale, L)
    X = np.ones((3, 4))
    norms = activation_norms(net, X)
    for l in range(1, L + 1):  # ||a[l]|| = scale^l ||x||
        assert norms[f"A{l}"] == pytest.approx(scale**l * 2.0, rel=1e-9)
    # With target 0, dJ/dW[1] = x^T (s^(L-1) * dZ[L]) and dZ[L] grows like s^L: ||dW[1]|| ~ s^(2L-1).
    # Doubling the depth from 6 to 12 layers multiplies it by s^12: exploding at 1.5, vanishing at 0.5.
    first_grad = {}
    for depth in (6, L):
        deep = _deep_linear(scale, depth)
        deep.zero_grad()
        deep.cost(X, np.zeros((3, 4)), training=True).backward()
        first_grad[depth] = gradient_norms(deep)["W1"]
    assert first_grad[L] / first_grad[6] == pytest.approx(scale**12, rel=1e-9)


def test_gradient_norms_callback_records_every_parameter():
    ds = D.load("iris")
    X = D.Normalizer().fit_transform(ds.X)
    net = caviar.Network([4, 8, 3], seed=0)
    cb = GradientNorms(every=2, probe=X[:10])
    h = caviar.fit(net, X, ds.y, epochs=2, batch_size=50, callbacks=[cb], verbose=False)
    assert [r["iteration"] for r in h.grad_norms] == [2, 4, 6]
    assert set(h.grad_norms[0]) == {"iteration", "W1", "b1", "W2", "b2"}
    assert all(v > 0 for v in h.grad_norms[0].values())
    assert [a["epoch"] for a in cb.activations] == [1, 2] and "A2" in cb.activations[0]


def test_plots_are_written_as_png(tmp_path):
    X, y = D.load("moons").X, D.load("moons").y
    net = caviar.Network([2, 8, 2], seed=0)
    stop = caviar.train.EarlyStopping(patience=1)
    h = caviar.fit(net, X[:800], y[:800], epochs=6, validation_data=(X[800:], y[800:]), callbacks=[stop, GradientNorms()], verbose=False)
    for fn, arg, name in [(plots.plot_cost, h, "cost.png"), (plots.plot_learning_curves, h, "curves.png"),
                          (plots.plot_gradient_norms, h.grad_norms, "norms.png")]:
        path = fn(arg, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


# -- ensembles -------------------------------------------------------------------------------


def _digits():
    ds = D.load("digits")
    s = D.split(ds.X, ds.y, seed=0)
    norm = D.Normalizer().fit(s.train[0])
    return norm.transform(s.train[0]), s.train[1], norm.transform(s.dev[0]), s.dev[1]


def test_ensemble_is_no_worse_than_its_average_member():
    Xtr, ytr, Xd, yd = _digits()
    ens = Ensemble.train(lambda seed: caviar.Network([64, 32, 10], seed=seed), Xtr, ytr, k=5,
                         epochs=8, verbose=False)
    result = ens.evaluate(Xd, yd)
    members = [m["accuracy"] for m in result["members"]]
    assert len(members) == 5 and len(set(members)) > 1  # members really differ
    assert 1 - result["accuracy"] <= 1 - np.mean(members)
    assert result["cost"] < np.mean([m["cost"] for m in result["members"]])
    np.testing.assert_allclose(ens.predict_proba(Xd), np.mean([m.predict_proba(Xd) for m in ens.members], axis=0))


def test_snapshot_ensemble_and_saving(tmp_path):
    Xtr, ytr, Xd, yd = _digits()
    net = caviar.Network([64, 32, 10], seed=0)
    snaps = Snapshots(every=2)
    caviar.fit(net, Xtr, ytr, epochs=6, callbacks=[snaps], verbose=False)
    assert len(snaps.snapshots) == 3
    ens = Ensemble.from_snapshots(net, snaps.snapshots)
    np.testing.assert_array_equal(ens.members[-1].predict_proba(Xd), net.predict_proba(Xd))  # last = final weights
    ens.save(tmp_path / "ens")
    loaded = caviar.train.load_model(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict(Xd), ens.predict(Xd))
