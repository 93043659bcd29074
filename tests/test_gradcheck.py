"""The gradient checker: it passes correct gradients, and it can fail."""

import numpy as np
import pytest

import caviar
from caviar import functional as F
from caviar.autodiff import result
from caviar.diagnose import relative_difference, verdict_for

RNG = np.random.default_rng(3)


def two_layer():
    X = caviar.Tensor(RNG.standard_normal((8, 3)))
    y = RNG.integers(0, 4, size=8)
    params = {
        "W1": caviar.Variable(RNG.standard_normal((3, 5)) * 0.5),
        "b1": caviar.Variable(RNG.standard_normal(5) * 0.1),
        "W2": caviar.Variable(RNG.standard_normal((5, 4)) * 0.5),
        "b2": caviar.Variable(RNG.standard_normal(4) * 0.1),
    }

    def cost():
        h = (X @ params["W1"] + params["b1"]).tanh()
        return F.softmax_cross_entropy(h @ params["W2"] + params["b2"], y)

    return cost, params


def test_correct_gradients_are_great():
    cost, params = two_layer()
    res = caviar.gradient_check(cost, params)
    assert res.verdict == "great" and res.difference < 1e-7
    assert [p.name for p in res.params] == ["W1", "b1", "W2", "b2"]
    assert res["W1"].shape == (3, 5)
    assert "great" in str(res)


def test_a_wrong_sign_in_one_vjp_is_caught_and_located(monkeypatch):
    def tanh_with_wrong_sign(a):
        out = np.tanh(a.data)
        return result(out, (a,), lambda g: (-g * (1 - out * out),), "tanh")

    monkeypatch.setattr(caviar.Tensor, "tanh", tanh_with_wrong_sign)
    cost, params = two_layer()
    res = caviar.gradient_check(cost, params)
    assert res.verdict == "bug"
    # tanh sits between layer 1 and layer 2: layer 1's parameters are wrong, layer 2's right.
    assert res.worst_param.name in ("W1", "b1")
    assert res["W1"].difference > 1e-3 and res["b1"].difference > 1e-3
    assert res["W2"].difference < 1e-7 and res["b2"].difference < 1e-7
    # the worst entries are reported with both values, of opposite sign
    index, analytic, numeric = res["W1"].worst[0]
    assert len(index) == 2 and analytic * numeric < 0
    assert "W1" in str(res) and "backprop" in str(res)


def test_a_wrong_regularization_gradient_names_the_one_parameter(monkeypatch):
    cost, params = two_layer()

    def l2_with_wrong_sign(weights, lambd, m):
        w = weights[0]
        return result(np.asarray(lambd / (2 * m) * (w.data**2).sum()), (w,), lambda g: (-g * lambd / m * w.data,), "l2")

    res = caviar.gradient_check(lambda: cost() + l2_with_wrong_sign([params["W2"]], 5.0, 8), params)
    assert res.verdict == "bug"
    assert res.worst_param.name == "W2"
    assert res["W1"].difference < 1e-7


def test_too_large_epsilon_makes_the_check_fail():
    cost, params = two_layer()
    res = caviar.gradient_check(cost, params, epsilon=0.5)
    assert res.verdict != "great" and res.difference > 1e-7


def test_directional_check_passes_correct_and_catches_wrong_gradients(monkeypatch):
    cost, params = two_layer()
    res = caviar.gradient_check(cost, params, directions=4)
    assert res.verdict == "great" and "random directions" in res.method

    def relu_with_wrong_sign(a):
        return result(np.maximum(a.data, 0), (a,), lambda g: (-g * (a.data > 0),), "relu")

    monkeypatch.setattr(caviar.Tensor, "relu", relu_with_wrong_sign)
    W = caviar.Variable(RNG.standard_normal((3, 4)), name="W")
    X = caviar.Tensor(RNG.standard_normal((6, 3)))
    res = caviar.gradient_check(lambda: ((X @ W).relu() ** 2).sum(), [W], directions=3)
    assert res.verdict == "bug" and res.worst_param.name == "W"


def test_dropout_in_training_mode_is_refused_and_eval_mode_is_checked():
    cost, params = two_layer()
    rng = caviar.backend.rng(0)
    with pytest.raises(caviar.GradientCheckError, match=r"keep_prob=0.8.*inconsistent"):
        caviar.gradient_check(lambda: F.dropout(cost(), 0.8, rng, training=True).sum(), params)
    res = caviar.gradient_check(lambda: F.dropout(cost(), 0.8, rng, training=False), params)
    assert res.verdict == "great"
    # outside a check, dropout works again
    assert F.dropout(caviar.Tensor(np.ones(4)), 0.5, rng).shape == (4,)


def test_float32_parameters_are_checked_in_float64_and_restored():
    W = caviar.Variable(RNG.standard_normal((4, 3)).astype(np.float32), name="W")
    before = W.data.copy()
    W.grad = np.full((4, 3), 7.0, dtype=np.float32)
    X = caviar.Tensor(RNG.standard_normal((5, 4)).astype(np.float32))
    res = caviar.gradient_check(lambda: (X @ W).tanh().sum(), [W])
    assert res.verdict == "great"
    assert W.dtype == np.float32
    np.testing.assert_array_equal(W.data, before)
    np.testing.assert_array_equal(W.grad, np.full((4, 3), 7.0))


def test_cost_must_be_a_scalar_tensor():
    W = caviar.Variable(np.ones((2, 2)))
    with pytest.raises(caviar.GradientCheckError, match=r"scalar.*\(2, 2\)"):
        caviar.gradient_check(lambda: W * 2, [W])
    with pytest.raises(ValueError, match="epsilon"):
        caviar.gradient_check(lambda: W.sum(), [W], epsilon=0)
    with pytest.raises(TypeError, match="not a caviar Tensor"):
        caviar.gradient_check(lambda: W.sum(), {"W": np.ones(2)})


@pytest.mark.parametrize("difference,verdict", [(1e-9, "great"), (9.9e-8, "great"), (1e-5, "inspect"), (1e-3, "bug"), (0.5, "bug")])
def test_verdict_thresholds_are_the_notes(difference, verdict):
    assert verdict_for(difference) == verdict


def test_relative_difference():
    assert relative_difference(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_difference(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(1.0)
    assert relative_difference(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0.0
