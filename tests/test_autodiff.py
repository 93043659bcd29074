"""The Tensor, the tape, dtypes, no_grad, and clear errors for bad input."""

import numpy as np
import pytest

import caviar
from caviar import ops


def test_notes_framework_example_reaches_five():
    w = caviar.Variable(0.0)
    opt = caviar.optim.GradientDescent(lr=0.01)
    opt.minimize(lambda: w**2 - 10 * w + 25, [w])
    assert w.data == pytest.approx(0.1, abs=1e-7)
    for _ in range(999):
        opt.minimize(lambda: w**2 - 10 * w + 25, [w])
    assert w.data == pytest.approx(5.0, abs=1e-4)
    assert w.dtype == np.float32


def test_notes_framework_example_with_coefficients_as_data():
    x = caviar.Tensor(np.array([1.0, -10.0, 25.0]))
    w = caviar.Variable(0.0)
    opt = caviar.optim.GradientDescent(lr=0.01)
    cost = opt.minimize(lambda: x[0] * w**2 + x[1] * w + x[2], [w])
    assert float(cost.data) == 25.0  # the cost before the first step
    for _ in range(999):
        opt.minimize(lambda: x[0] * w**2 + x[1] * w + x[2], [w])
    assert w.data == pytest.approx(5.0, abs=1e-4)
    # other coefficients, same code: minimum of (w - 3)^2 at 3
    x.data[:] = [1.0, -6.0, 9.0]
    for _ in range(1000):
        opt.minimize(lambda: x[0] * w**2 + x[1] * w + x[2], [w])
    assert w.data == pytest.approx(3.0, abs=1e-4)


@pytest.mark.parametrize(
    "data,dtype",
    [
        (1.5, np.float32),
        (3, np.float32),
        ([1.0, 2.0], np.float32),
        (np.arange(3), np.float32),
        (np.array([True, False]), np.float32),
        (np.ones(2, dtype=np.float64), np.float64),
        (np.ones(2, dtype=np.float32), np.float32),
        (np.float64(2.0), np.float64),
    ],
)
def test_dtype_policy(data, dtype):
    assert caviar.Tensor(data).dtype == dtype


def test_float64_stays_float64_through_ops_with_python_numbers():
    x = caviar.Variable(np.ones(3))
    y = (2 * x + 1.0) ** 2 / 3.0 - 1
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float64


def test_variable_is_a_trainable_tensor():
    assert caviar.Variable(1.0).requires_grad
    assert not caviar.Tensor(1.0).requires_grad


def test_only_leaves_that_require_grad_get_gradients():
    x = caviar.Tensor(np.ones((2, 3)))
    w = caviar.Variable(np.ones((3, 1)))
    (x @ w).sum().backward()
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, np.full((3, 1), 2.0))


def test_zero_grad_and_accumulation():
    w = caviar.Variable(np.array([1.0, 2.0]))
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad, [6.0, 6.0])
    w.zero_grad()
    assert w.grad is None


def test_no_grad_records_nothing():
    w = caviar.Variable(np.ones(2))
    with caviar.no_grad():
        assert not caviar.is_grad_enabled()
        y = (w * 2).sum()
    assert caviar.is_grad_enabled()
    assert not y.requires_grad and y._parents == ()
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        y.backward()


def test_backward_on_non_scalar_without_seed_is_a_clear_error():
    w = caviar.Variable(np.ones((2, 3)))
    y = w * 2
    with pytest.raises(ValueError, match=r"seed gradient.*\(2, 3\)"):
        y.backward()
    y.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(w.grad, np.full((2, 3), 2.0))


def test_seed_of_wrong_shape_names_both_shapes():
    y = caviar.Variable(np.ones((2, 3))) * 2
    with pytest.raises(caviar.ShapeError, match=r"\(3,\).*\(2, 3\)"):
        y.backward(np.ones(3))


@pytest.mark.parametrize(
    "fn,shapes,pattern",
    [
        (lambda a, b: a @ b, [(2, 3), (4, 5)], r"\(2, 3\) and \(4, 5\).*3 and 4"),
        (lambda a, b: a @ b, [(2, 3, 4), (5, 4, 2)], r"\(2, 3, 4\) and \(5, 4, 2\)"),
        (lambda a, b: a + b, [(2, 3), (4,)], r"add.*\(2, 3\) and \(4,\)"),
        (lambda a, b: a * b, [(2, 3), (2,)], r"multiply.*\(2, 3\) and \(2,\)"),
        (lambda a, b: a - b, [(5,), (3,)], r"subtract.*\(5,\) and \(3,\)"),
        (lambda a, b: a / b, [(5,), (3,)], r"divide.*\(5,\) and \(3,\)"),
        (lambda a, b: caviar.concatenate([a, b], axis=0), [(2, 3), (2, 4)], r"\(2, 3\), \(2, 4\)"),
    ],
)
def test_shape_mismatch_names_both_shapes(fn, shapes, pattern):
    tensors = [caviar.Variable(np.ones(s)) for s in shapes]
    with pytest.raises(caviar.ShapeError, match=pattern):
        fn(*tensors)


def test_shape_errors_are_value_errors():
    with pytest.raises(ValueError):
        caviar.Tensor(np.ones((2, 3))) @ caviar.Tensor(np.ones((2, 3)))


def test_bad_reshape_and_axis():
    x = caviar.Tensor(np.ones((2, 3)))
    with pytest.raises(caviar.ShapeError, match=r"\(2, 3\) into \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(caviar.ShapeError, match="axis 2"):
        x.sum(axis=2)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_anomaly_mode_names_the_op_that_made_nan():
    x = caviar.Variable(np.array([-1.0, 4.0]))
    y = x.log()  # NaN at -1, not an error outside anomaly mode
    assert np.isnan(y.data[0])
    with caviar.detect_anomaly():
        with pytest.raises(caviar.AnomalyError, match="log"):
            x.log()
    with pytest.raises(caviar.AnomalyError, match="1 NaN"):
        caviar.check_finite(y, "log-probabilities")
    assert caviar.check_finite(x) is x


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_anomaly_mode_catches_nan_in_backward():
    x = caviar.Variable(np.array([0.0, 4.0]))
    with caviar.detect_anomaly():
        y = x.sqrt().sum()  # sqrt(0) is finite, its gradient 1 / (2 sqrt 0) is not
        with pytest.raises(caviar.AnomalyError, match="sqrt"):
            y.backward()


def test_deep_graph_does_not_hit_recursion_limit():
    x = caviar.Variable(np.array(1.0))
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**5000)


def test_array_on_the_left_of_an_operator_gives_a_tensor():
    w = caviar.Variable(np.ones(3))
    y = np.ones(3) * w + np.ones(3)
    assert isinstance(y, caviar.Tensor)
    (np.full(3, 2.0) @ w).backward()
    np.testing.assert_array_equal(w.grad, np.full(3, 2.0))


def test_power_refuses_tensor_exponent():
    with pytest.raises(TypeError, match="scalar exponent"):
        ops.power(caviar.Variable(np.ones(2)), caviar.Variable(np.ones(2)))


def test_no_grad_and_gradient_checks_hold_in_their_own_thread_only():
    # a fit evaluating its dev set under no_grad() in one thread must not stop another thread's
    # fit from recording its graph (two fits in threads, scikit-learn's threading backend)
    import threading

    from caviar import functional as F

    inside, release = threading.Event(), threading.Event()

    def evaluate():
        with caviar.no_grad(), F.forbid_dropout("a check in the other thread"):
            inside.set()
            release.wait(30)

    other = threading.Thread(target=evaluate)
    other.start()
    try:
        assert inside.wait(30)
        assert caviar.is_grad_enabled()
        w = caviar.Variable(np.ones(3))
        (w * 2.0).sum().backward()
        np.testing.assert_array_equal(w.grad, [2.0, 2.0, 2.0])
        F.dropout(caviar.Tensor(np.ones((4, 4))), 0.5, np.random.default_rng(0))  # not refused here
    finally:
        release.set()
        other.join(30)
