"""The notes' fused ops: float64 gradient checks, the notes' formulas, numerical stability."""

import numpy as np
import pytest

import caviar
from caviar import functional as F

RNG = np.random.default_rng(1)


def var(*shape, scale=1.0, name=None):
    return caviar.Variable(RNG.standard_normal(shape) * scale, name=name)


def weighted(fn, shape_of):
    w = caviar.Tensor(RNG.standard_normal(shape_of))
    return lambda: (fn() * w).sum()


def assert_gradcheck(cost_fn, params):
    result = caviar.gradient_check(cost_fn, params)
    assert result.difference < 1e-7, str(result)
    assert result.verdict == "great"


# -- gradient checks -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5), (2, 4, 3)])
def test_softmax_and_log_softmax_gradients(shape):
    z = var(*shape)
    assert_gradcheck(weighted(lambda: F.softmax(z), shape), [z])
    assert_gradcheck(weighted(lambda: F.log_softmax(z), shape), [z])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_gradient_with_index_labels(reduction):
    z = var(6, 4)
    labels = np.array([0, 3, 1, 1, 2, 0])
    if reduction == "none":
        cost = weighted(lambda: F.softmax_cross_entropy(z, labels, reduction="none"), (6,))
    else:
        cost = lambda: F.softmax_cross_entropy(z, labels, reduction=reduction)  # noqa: E731
    assert_gradcheck(cost, [z])


def test_softmax_cross_entropy_gradient_with_one_hot_and_soft_labels_and_population_axis():
    z = var(3, 5, 4)  # K=3 models, m=5 examples, 4 classes
    y = F.one_hot(RNG.integers(0, 4, size=(3, 5)), 4, np.float64)
    assert_gradcheck(lambda: F.softmax_cross_entropy(z, y), [z])
    soft = np.abs(RNG.standard_normal((3, 5, 4)))
    soft /= soft.sum(-1, keepdims=True)
    assert_gradcheck(lambda: F.softmax_cross_entropy(z, soft), [z])


def test_softmax_cross_entropy_value_and_gradient_are_the_notes_formulas():
    z = var(5, 3)
    labels = np.array([2, 0, 1, 1, 0])
    y = np.eye(3)[labels]
    yhat = np.exp(z.data) / np.exp(z.data).sum(1, keepdims=True)
    cost = F.softmax_cross_entropy(z, labels)
    np.testing.assert_allclose(cost.data, -(y * np.log(yhat)).sum(1).mean(), rtol=1e-12)
    cost.backward()
    np.testing.assert_allclose(z.grad, (yhat - y) / 5, rtol=1e-12, atol=1e-15)  # dZ = Yhat - Y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 10), (8, 16, 3), (5, 40)])
def test_class_indices_give_bit_for_bit_the_one_hot_loss_and_gradient(shape, dtype):
    # class indices take -log p of the class and subtract 1 from one entry (no one-hot array);
    # the notes' -sum(y log yhat) and yhat - y with y one-hot give the very same numbers
    z = (RNG.standard_normal(shape) * 20).astype(dtype)
    labels = RNG.integers(0, shape[-1], shape[:-1])
    one_hot = F.one_hot(labels, shape[-1], dtype)
    for reduction in ("none", "mean"):
        a, b = caviar.Variable(z.copy()), caviar.Variable(z.copy())
        la, lb = F.softmax_cross_entropy(a, labels, reduction), F.softmax_cross_entropy(b, one_hot, reduction)
        np.testing.assert_array_equal(la.data, lb.data)
        seed = np.ones(la.shape, dtype) if reduction == "none" else None
        la.backward(seed)
        lb.backward(seed)
        np.testing.assert_array_equal(a.grad, b.grad)


def test_row_max_is_numpy_s_max_nan_included():
    z = RNG.standard_normal((6, 7, 12)).astype(np.float32)
    z[0, 0, 5], z[1, 2, 0] = np.nan, np.inf
    for n in (1, 2, 12, F.ROW_LOOP + 1):
        w = np.resize(z, (6, 7, n))
        np.testing.assert_array_equal(F.row_max(w), w.max(axis=-1, keepdims=True))
    np.testing.assert_array_equal(F.row_max(z, axis=0), z.max(axis=0, keepdims=True))


def test_softmax_cross_entropy_never_takes_log_of_zero():
    z = caviar.Variable(np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]], dtype=np.float32))
    cost = F.softmax_cross_entropy(z, np.array([1, 1]))  # the first example is hopelessly wrong
    assert np.isfinite(cost.data) and float(cost.data) == pytest.approx(1000.0, rel=1e-6)
    cost.backward()
    assert np.isfinite(z.grad).all()
    np.testing.assert_allclose(z.grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


def test_softmax_is_stable_and_sums_to_one():
    p = F.softmax(caviar.Tensor(np.array([[1000.0, 999.0, -1000.0]])))
    np.testing.assert_allclose(p.data.sum(), 1.0)
    np.testing.assert_allclose(F.log_softmax(caviar.Tensor(np.array([[1000.0, 0.0]]))).data, [[0.0, -1000.0]])


@pytest.mark.parametrize(
    "labels,pattern",
    [
        (np.array([0, 3]), "label 3 is outside the classes 0..2"),
        (np.array([-1, 0]), "label -1"),
        (np.array([0, 1, 2]), r"labels of shape \(3,\)"),
        (np.array([0.5, 1.0]), "whole numbers"),
    ],
)
def test_softmax_cross_entropy_rejects_bad_labels(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        F.softmax_cross_entropy(caviar.Tensor(np.zeros((2, 3))), labels)


@pytest.mark.parametrize("shape", [(6, 1), (6, 3), (2, 6, 1)])
def test_sigmoid_cross_entropy_gradient(shape):
    z = var(*shape, scale=3.0)
    y = (RNG.random(shape) < 0.5).astype(np.float64)
    assert_gradcheck(lambda: F.sigmoid_cross_entropy(z, y), [z])
    assert_gradcheck(weighted(lambda: F.sigmoid_cross_entropy(z, y, reduction="none"), shape), [z])


def test_sigmoid_cross_entropy_formula_and_flat_labels():
    z = var(5, 1)
    y = np.array([1, 0, 0, 1, 1])
    a = 1 / (1 + np.exp(-z.data[:, 0]))
    cost = F.sigmoid_cross_entropy(z, y)
    np.testing.assert_allclose(cost.data, -(y * np.log(a) + (1 - y) * np.log(1 - a)).mean(), rtol=1e-12)
    cost.backward()
    np.testing.assert_allclose(z.grad[:, 0], (a - y) / 5, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_cross_entropy_is_stable_at_large_logits(dtype):
    # pyproject turns RuntimeWarnings (overflow, divide by zero) into errors.
    z = caviar.Variable(np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]], dtype=dtype))
    y = np.array([1.0, 0.0, 0.0, 1.0])
    losses = F.sigmoid_cross_entropy(z, y, reduction="none")
    np.testing.assert_allclose(losses.data[:, 0], [0.0, 0.0, 1000.0, 1000.0], rtol=1e-6)
    F.sigmoid_cross_entropy(z, y).backward()
    np.testing.assert_allclose(z.grad[:, 0], np.array([0.0, 0.0, 1.0, -1.0]) / 4, atol=1e-7)
    np.testing.assert_array_equal(caviar.Tensor(np.array([1000.0, -1000.0], dtype=dtype)).sigmoid().data, [1.0, 0.0])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,param_shape", [((8, 3), (3,)), ((2, 8, 3), (2, 1, 3))])
def test_batch_norm_gradient(training, shape, param_shape):
    z = var(*shape, scale=2.0, name="z")
    gamma = caviar.Variable(RNG.standard_normal(param_shape) + 1.0, name="gamma")
    beta = var(*param_shape, name="beta")
    stat_shape = param_shape
    running = (RNG.standard_normal(stat_shape), np.abs(RNG.standard_normal(stat_shape)) + 0.5)
    cost = weighted(lambda: F.batch_norm(z, gamma, beta, running, training=training), shape)
    assert_gradcheck(cost, [z, gamma, beta])


def test_batch_norm_training_formula_and_running_average():
    z = var(16, 4, scale=3.0)
    gamma, beta = caviar.Variable(np.full(4, 2.0)), caviar.Variable(np.full(4, 0.5))
    mean, variance = np.zeros(4), np.ones(4)
    out = F.batch_norm(z, gamma, beta, (mean, variance), training=True, momentum=0.9, epsilon=1e-5)
    mu, s2 = z.data.mean(0), z.data.var(0)  # biased variance, as in the notes
    np.testing.assert_allclose(out.data, 2.0 * (z.data - mu) / np.sqrt(s2 + 1e-5) + 0.5, rtol=1e-12)
    np.testing.assert_allclose(mean, 0.1 * mu, rtol=1e-12)  # 0.9 * 0 + 0.1 * mu
    np.testing.assert_allclose(variance, 0.9 + 0.1 * s2, rtol=1e-12)


def test_batch_norm_eval_mode_one_example_at_a_time_equals_a_batch():
    z = var(10, 4)
    gamma, beta = var(4), var(4)
    running = (RNG.standard_normal(4), np.abs(RNG.standard_normal(4)) + 0.1)
    batch = F.batch_norm(z, gamma, beta, running, training=False).data
    singles = np.concatenate([F.batch_norm(z[i : i + 1], gamma, beta, running, training=False).data for i in range(10)])
    np.testing.assert_allclose(singles, batch, rtol=1e-12)


def test_batch_norm_bad_input():
    with pytest.raises(ValueError, match="at least 2 examples"):
        F.batch_norm(var(1, 3), var(3), var(3), training=True)
    with pytest.raises(ValueError, match="running"):
        F.batch_norm(var(4, 3), var(3), var(3), running=None, training=False)


def test_l2_and_l1_penalties_follow_the_notes_and_pass_gradient_check():
    w1, w2 = var(3, 4, name="W1"), var(4, 2, name="W2")
    m, lambd = 7, 0.3
    l2 = F.l2_penalty([w1, w2], lambd, m)
    np.testing.assert_allclose(l2.data, lambd / (2 * m) * ((w1.data**2).sum() + (w2.data**2).sum()))
    l1 = F.l1_penalty([w1, w2], lambd, m)
    np.testing.assert_allclose(l1.data, lambd / (2 * m) * (np.abs(w1.data).sum() + np.abs(w2.data).sum()))
    l2.backward()
    np.testing.assert_allclose(w1.grad, lambd / m * w1.data)  # "weight decay": dW += lambd/m * W
    assert_gradcheck(lambda: F.l2_penalty([w1, w2], lambd, m), [w1, w2])
    assert_gradcheck(lambda: F.l1_penalty([w1, w2], lambd, m), [w1, w2])


# -- dropout -------------------------------------------------------------------------------


def splitmix64(state, n):
    """Outputs 1 .. n of SplitMix64 from ``state``, in Python integers (Vigna's splitmix64.c)."""
    out, mask = [], (1 << 64) - 1
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_is_inverted_dropout_of_the_notes(dtype):
    a = caviar.Variable(np.ones((200, 50), dtype=dtype))
    out = F.dropout(a, 0.8, rng=caviar.backend.rng(0), training=True)
    # rand: SplitMix64 keyed by one raw draw of the layer's generator, its top 53 bits / 2**53
    key = np.random.default_rng(0).bit_generator.random_raw()
    rand = np.array([(x >> 11) / 2.0 ** 53 for x in splitmix64(key, 200 * 50)]).reshape(200, 50)
    d = rand < 0.8  # d = rand < keep_prob
    np.testing.assert_array_equal(out.data, a.data * d / dtype(0.8))
    assert abs(out.data.mean() - 1.0) < 0.02  # expected value is preserved
    out.sum().backward()
    np.testing.assert_array_equal(a.grad, d / dtype(0.8))  # the same mask in backward


def test_dropout_s_uniforms_are_uniform_and_independent():
    """Each mask's keep rate is keep_prob within sampling error; masks of successive calls, and
    of two seeds, are unrelated (their agreement is that of independent draws)."""
    a = np.ones((400, 250))
    rng = caviar.backend.rng(1)
    masks = [F.dropout(a, 0.6, rng=rng).data > 0 for _ in range(3)] + [F.dropout(a, 0.6, rng=2).data > 0]
    sd = (0.6 * 0.4 / a.size) ** 0.5
    for m in masks:
        assert abs(m.mean() - 0.6) < 5 * sd
        assert abs(m[:, :125].mean() - m[:, 125:].mean()) < 10 * sd  # no drift along a row
    agree = 0.6 ** 2 + 0.4 ** 2  # of independent masks
    for i in range(len(masks)):
        for j in range(i):
            assert abs((masks[i] == masks[j]).mean() - agree) < 0.01


def test_dropout_is_identity_outside_training_or_at_keep_prob_one():
    a = var(4, 3)
    assert F.dropout(a, 0.5, training=False) is a
    assert F.dropout(a, 1.0, training=True) is a


def test_dropout_keeps_dtype_and_is_seeded():
    a = caviar.Tensor(np.ones((5, 5), dtype=np.float32))
    x = F.dropout(a, 0.5, rng=caviar.backend.rng(3)).data
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, F.dropout(a, 0.5, rng=caviar.backend.rng(3)).data)


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5, "0.5"])
def test_dropout_rejects_keep_prob_outside_unit_interval(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        F.dropout(var(2, 2), keep_prob)
