"""Network construction, initializers, inference, whole-network gradient checks, bad input."""

import numpy as np
import pytest

import caviar
from caviar.nn import init as initializers

RNG = np.random.default_rng(4)


def toy(m=12, n_x=3, classes=3):
    return RNG.standard_normal((m, n_x)), RNG.integers(0, classes, size=m)


def test_layers_and_parameter_names_follow_the_notes():
    net = caviar.Network([4, 20, 7, 5, 3])
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]
    assert net.params["W1"].shape == (4, 20) and net.params["b4"].shape == (3,)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert all(np.all(net.params[f"b{l}"].data == 0) for l in range(1, 5))  # biases start at zero


def test_batchnorm_layers_have_no_bias_and_keep_running_statistics():
    net = caviar.Network([4, 6, 5, 2], batchnorm=True)
    assert list(net.params) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert set(net.buffers) == {"running_mean1", "running_var1", "running_mean2", "running_var2"}


def test_keep_prob_per_hidden_layer_and_none_on_input_unless_asked():
    net = caviar.Network([4, 6, 5, 2], keep_prob=[0.5, 0.9])
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [layer.keep_prob for layer in net.layers if kinds[net.layers.index(layer)] == "Dropout"] == [0.5, 0.9]
    net = caviar.Network([4, 6, 2], keep_prob=0.8, input_keep_prob=0.9)
    assert type(net.layers[0]).__name__ == "Dropout" and net.layers[0].keep_prob == 0.9


@pytest.mark.parametrize(
    "init,scale,expected",
    [
        ("he", None, np.sqrt(2 / 400)),
        ("xavier", None, np.sqrt(1 / 400)),
        ("glorot", None, np.sqrt(2 / (400 + 300))),
        ("random", None, 0.01),
        ("random", 10.0, 10.0),  # the notes' "large" initialization
        ("he", 0.5, 0.5 * np.sqrt(2 / 400)),  # init_scale multiplies any scheme
    ],
)
def test_initializers_have_the_notes_standard_deviations(init, scale, expected):
    net = caviar.Network([400, 300, 2], init=init, init_scale=scale, seed=0)
    assert net.params["W1"].data.std() == pytest.approx(expected, rel=0.02)
    assert abs(net.params["W1"].data.mean()) < 0.01 * expected + 1e-4


def test_zeros_init_and_auto_init():
    assert np.all(caviar.Network([4, 3, 2], init="zeros").params["W1"].data == 0)
    assert initializers.resolve("auto", "relu") == "he"
    assert initializers.resolve("auto", "tanh") == "xavier"


def test_seed_makes_initialization_reproducible():
    a, b = caviar.Network([5, 4, 3], seed=7), caviar.Network([5, 4, 3], seed=7)
    np.testing.assert_array_equal(a.params["W1"].data, b.params["W1"].data)
    assert not np.array_equal(a.params["W1"].data, caviar.Network([5, 4, 3], seed=8).params["W1"].data)


def test_predict_predict_proba_evaluate():
    X, y = toy()
    net = caviar.Network([3, 8, 3], seed=0)
    proba = net.predict_proba(X)
    assert proba.shape == (12, 3)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(net.predict(X), proba.argmax(1))  # hardmax
    result = net.evaluate(X, y)
    assert set(result) == {"cost", "accuracy"}
    assert result["accuracy"] == pytest.approx((net.predict(X) == y).mean())


def test_sigmoid_output_thresholds_at_one_half_and_linear_output_reports_regression_metrics():
    X, _ = toy()
    yb = RNG.integers(0, 2, size=12)
    net = caviar.Network([3, 5, 1], output="sigmoid", seed=0)
    np.testing.assert_array_equal(net.predict(X), (net.predict_proba(X)[:, 0] > 0.5).astype(int))
    assert 0 <= net.evaluate(X, yb)["accuracy"] <= 1
    reg = caviar.Network([3, 5, 1], output="linear", seed=0)
    target = RNG.standard_normal(12)
    res = reg.evaluate(X, target)
    assert set(res) == {"cost", "mse", "rmse", "mae", "r2"}
    from sklearn import metrics

    pred = reg.predict(X)
    assert res["mse"] == pytest.approx(metrics.mean_squared_error(target, pred), rel=1e-5)
    assert res["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(target, pred)), rel=1e-5)
    assert res["mae"] == pytest.approx(metrics.mean_absolute_error(target, pred), rel=1e-5)
    assert res["r2"] == pytest.approx(metrics.r2_score(target, pred), rel=1e-5)


def test_regression_metrics_of_several_outputs_and_of_a_population_match_scikit_learn():
    from sklearn import metrics

    from caviar.nn import heads

    z = RNG.standard_normal((3, 20, 2))  # three members, 20 examples, two outputs
    y = RNG.standard_normal((20, 2))
    got = heads.get("linear").metrics(z, y)
    for k in range(3):
        assert got["r2"][k] == pytest.approx(metrics.r2_score(y, z[k]), rel=1e-12)
        assert got["mae"][k] == pytest.approx(metrics.mean_absolute_error(y, z[k]), rel=1e-12)
        assert got["mse"][k] == pytest.approx(metrics.mean_squared_error(y, z[k]), rel=1e-12)
    constant = np.ones((20, 1))
    assert heads.get("linear").metrics(np.ones((20, 1)), constant)["r2"] == 1.0  # as r2_score
    assert heads.get("linear").metrics(np.zeros((20, 1)), constant)["r2"] == metrics.r2_score(constant, np.zeros(20))


def test_dropout_is_off_and_batch_norm_uses_running_statistics_outside_training():
    X, y = toy(m=32)
    net = caviar.Network([3, 16, 3], keep_prob=0.5, batchnorm=True, seed=0)
    caviar.fit(net, X, y, epochs=3, batch_size=8, verbose=False)
    p1, p2 = net.predict_proba(X), net.predict_proba(X)
    np.testing.assert_array_equal(p1, p2)  # no dropout noise
    singles = np.concatenate([net.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(singles, p1, rtol=1e-5, atol=1e-7)  # batch statistics not used


GRADCHECK_CASES = [
    dict(activation="relu"),
    dict(activation="tanh"),
    dict(activation="sigmoid"),
    dict(activation="leaky_relu"),
    dict(activation="relu", batchnorm=True),
    dict(activation="tanh", batchnorm=True, output="sigmoid"),
    dict(activation="tanh", output="sigmoid"),
    dict(activation="tanh", output="linear"),
    dict(activation="tanh", l2=0.7),
    dict(activation="tanh", l1=0.3),
    dict(activation="relu", batchnorm=True, l2=0.5, l1=0.1),
]


@pytest.mark.parametrize("config", GRADCHECK_CASES, ids=[str(c) for c in GRADCHECK_CASES])
def test_whole_network_gradient_check(config):
    output = config.get("output", "softmax")
    n_y = 3 if output == "softmax" else 1
    X = RNG.standard_normal((10, 4))
    if output == "softmax":
        y = RNG.integers(0, 3, size=10)
    elif output == "sigmoid":
        y = RNG.integers(0, 2, size=10)
    else:
        y = RNG.standard_normal(10)
    net = caviar.Network([4, 6, 5, n_y], seed=1, **config)
    before = {k: b.copy() for k, b in net.buffers.items()}
    res = caviar.gradient_check(net, X, y)
    assert res.difference < 1e-7, str(res)
    for k, b in net.buffers.items():  # running statistics are left as they were
        np.testing.assert_array_equal(b, before[k])


def test_network_gradient_check_refuses_dropout():
    X, y = toy()
    net = caviar.Network([3, 5, 3], keep_prob=0.8, seed=0)
    with pytest.raises(caviar.GradientCheckError, match="dropout"):
        caviar.gradient_check(net, X, y)


def test_network_gradient_check_includes_the_regularization_term(monkeypatch):
    """Break the L2 term's backward: the checker must notice, so the term is part of J."""
    from caviar import functional as F
    from caviar.autodiff import result

    def l2_without_gradient(weights, lambd, m):
        total = sum(float((w.data**2).sum()) for w in weights)
        return result(np.asarray(lambd / (2 * m) * total), tuple(weights), lambda g: tuple(None for _ in weights), "l2")

    X, y = toy()
    net = caviar.Network([3, 5, 3], l2=5.0, seed=0)
    monkeypatch.setattr(F, "l2_penalty", l2_without_gradient)
    assert caviar.gradient_check(net, X, y).verdict != "great"


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(layer_sizes=[4]), r"at least \[n_x, n_y\]"),
        (dict(layer_sizes=[4, 0, 2]), "positive integers, got 0"),
        (dict(layer_sizes=[4, 2.5, 2]), "positive integers, got 2.5"),
        (dict(layer_sizes=[4, 3, 2], activation="swish"), "unknown activation 'swish'"),
        (dict(layer_sizes=[4, 3, 2], output="softplus"), "unknown output 'softplus'"),
        (dict(layer_sizes=[4, 3, 1], output="softmax"), "n_y >= 2"),
        (dict(layer_sizes=[4, 3, 2], init="lecun"), "unknown init 'lecun'"),
        (dict(layer_sizes=[4, 3, 2], keep_prob=0.0), r"keep_prob must be in \(0, 1\], got 0.0"),
        (dict(layer_sizes=[4, 3, 2], keep_prob=1.2), r"got 1.2"),
        (dict(layer_sizes=[4, 3, 3, 2], keep_prob=[0.5]), "1 entries but the network has 2 hidden layers"),
        (dict(layer_sizes=[4, 3, 2], l2=-0.1), "l2 must be a non-negative number, got -0.1"),
        (dict(layer_sizes=[4, 3, 2], l1=-1), "l1 must be a non-negative number, got -1"),
    ],
)
def test_bad_configuration_names_the_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        caviar.Network(**kwargs)


@pytest.mark.parametrize(
    "X,y,fit_kwargs,pattern",
    [
        (np.zeros((5, 3)), np.zeros(4, dtype=int), {}, "X has 5 examples but y has 4"),
        (np.zeros((5, 3)), np.array([0, 1, 2, 3, 0]), {}, r"label 3 is outside the classes 0..2"),
        (np.zeros((5, 3)), np.array([0, 1, -1, 1, 0]), {}, r"label -1 is outside"),
        (np.zeros((5, 4)), np.zeros(5, dtype=int), {}, "X has 4 columns but the network was built for n_x = 3"),
        (np.zeros(5), np.zeros(5, dtype=int), {}, r"2-D array.*\(5,\)"),
        (np.full((5, 3), np.nan), np.zeros(5, dtype=int), {}, "NaN or inf"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(lr=-0.01), "lr must be a non-negative finite number, got -0.01"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(batch_size=2.5), "got 2.5"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(epochs=-1), "epochs must be a non-negative integer, got -1"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(optimizer="adagrad"), "unknown optimizer 'adagrad'"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(beta1=1.0), r"beta1 must be in \[0, 1\), got 1.0"),
        (np.zeros((5, 3)), np.zeros(5, dtype=int), dict(validation_data=(np.zeros((2, 2)), np.zeros(2))), "X has 2 columns"),
    ],
)
def test_bad_training_input_names_the_value(X, y, fit_kwargs, pattern):
    net = caviar.Network([3, 4, 3], seed=0)
    with pytest.raises(ValueError, match=pattern):
        caviar.fit(net, X, y, verbose=False, **fit_kwargs)


def test_sigmoid_labels_outside_zero_one_are_rejected():
    net = caviar.Network([3, 4, 1], output="sigmoid")
    with pytest.raises(ValueError, match=r"label 2 is outside \[0, 1\]"):
        caviar.fit(net, np.zeros((3, 3)), np.array([0, 1, 2]), verbose=False)


@pytest.mark.parametrize("output,n_y", [("softmax", 2), ("sigmoid", 1)])
def test_two_class_metrics_match_scikit_learn(output, n_y):
    from sklearn import metrics

    X = RNG.standard_normal((200, 3))
    y = (X[:, 0] + RNG.standard_normal(200) > 0).astype(int)
    net = caviar.Network([3, 4, n_y], output=output, seed=0, dtype="float64")
    caviar.fit(net, X, y, epochs=2, verbose=False)
    got = net.evaluate(X, y)
    p = net.predict_proba(X)[:, -1]
    pred = net.predict(X)
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, p), rel=1e-12)
    assert got["f1"] == pytest.approx(metrics.f1_score(y, pred), rel=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y, pred), rel=1e-12)
    tied = caviar.Network([3, 4, n_y], output=output, init="zeros", seed=0, dtype="float64")  # every score tied
    assert tied.evaluate(X, y)["roc_auc"] == 0.5 == metrics.roc_auc_score(y, np.zeros(200))


def test_class_weights_weigh_each_example_s_loss_and_pass_a_gradient_check():
    from caviar.data.prepare import balanced_class_weight

    X = RNG.standard_normal((30, 3))
    y = np.array([0] * 20 + [1] * 7 + [2] * 3)
    weights = balanced_class_weight(y, 3)
    assert weights == pytest.approx([30 / 60, 30 / 21, 30 / 9])
    net = caviar.Network([3, 5, 3], class_weight=weights, seed=0, dtype="float64")
    logits = net.forward(X)
    per_example = caviar.functional.softmax_cross_entropy(logits, y, reduction="none").data
    assert float(net.loss(logits, y).data) == pytest.approx(float((per_example * np.array(weights)[y]).mean()))
    assert net.evaluate(X, y)["cost"] == pytest.approx(float(per_example.mean()))  # evaluation: unweighted
    assert caviar.gradient_check(net, X, y).difference < 1e-7
    with pytest.raises(ValueError, match="one positive weight per class"):
        caviar.Network([3, 5, 3], class_weight=[1.0, 2.0])
