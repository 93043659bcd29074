"""Every primitive op passes a float64 gradient check, broadcasting cases included, and its
forward value matches a NumPy formula."""

import numpy as np
import pytest

import caviar
from caviar import ops

RNG = np.random.default_rng(0)


def _inputs(shapes, positive=False):
    out = []
    for i, shape in enumerate(shapes):
        data = RNG.standard_normal(shape)
        if positive:
            data = np.abs(data) + 0.5
        out.append(caviar.Variable(data, name=f"x{i}"))
    return out


def _check(fn, tensors):
    """Check d sum(fn(...) * weights) / d inputs, with random weights so no symmetry hides a bug."""
    out = fn(*tensors)
    weights = caviar.Tensor(RNG.standard_normal(out.shape))
    result = caviar.gradient_check(lambda: (fn(*tensors) * weights).sum(), tensors)
    assert result.difference < 1e-7, str(result)
    return out


# (name, function, input shapes, NumPy reference, positive inputs only)
CASES = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)], lambda a, b: a + b, False),
    ("add broadcast row", lambda a, b: a + b, [(3, 4), (4,)], lambda a, b: a + b, False),
    ("add broadcast col", lambda a, b: a + b, [(3, 4), (3, 1)], lambda a, b: a + b, False),
    ("add broadcast both", lambda a, b: a + b, [(3, 1), (1, 4)], lambda a, b: a + b, False),
    ("add scalar tensor", lambda a, b: a + b, [(2, 3), ()], lambda a, b: a + b, False),
    ("sub", lambda a, b: a - b, [(3, 4), (4,)], lambda a, b: a - b, False),
    ("rsub number", lambda a: 2.0 - a, [(3,)], lambda a: 2.0 - a, False),
    ("mul", lambda a, b: a * b, [(3, 4), (3, 4)], lambda a, b: a * b, False),
    ("mul broadcast 3d", lambda a, b: a * b, [(2, 3, 4), (3, 1)], lambda a, b: a * b, False),
    ("div", lambda a, b: a / b, [(3, 4), (3, 4)], lambda a, b: a / b, True),
    ("div broadcast", lambda a, b: a / b, [(3, 4), (1, 4)], lambda a, b: a / b, True),
    ("rdiv number", lambda a: 1.0 / a, [(3,)], lambda a: 1.0 / a, True),
    ("neg", lambda a: -a, [(3, 2)], lambda a: -a, False),
    ("pow 2", lambda a: a**2, [(3, 2)], lambda a: a**2, False),
    ("pow -1.5", lambda a: a**-1.5, [(3, 2)], lambda a: a**-1.5, True),
    ("rpow", lambda a: 2.0**a, [(3, 2)], lambda a: 2.0**a, False),
    ("matmul", lambda a, b: a @ b, [(3, 4), (4, 5)], lambda a, b: a @ b, False),
    ("matmul stacked", lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)], lambda a, b: a @ b, False),
    ("matmul broadcast", lambda a, b: a @ b, [(2, 3, 4), (4, 5)], lambda a, b: a @ b, False),
    ("matmul vector", lambda a, b: a @ b, [(4,), (4, 3)], lambda a, b: a @ b, False),
    ("matmul vector-vector", lambda a, b: a @ b, [(4,), (4,)], lambda a, b: a @ b, False),
    ("matmul stacked-vector", lambda a, b: a @ b, [(4,), (2, 4, 3)], lambda a, b: a @ b, False),
    ("matmul matrix-vector", lambda a, b: a @ b, [(3, 4), (4,)], lambda a, b: a @ b, False),
    ("sum all", lambda a: a.sum(), [(3, 4)], lambda a: a.sum(), False),
    ("sum axis 0", lambda a: a.sum(axis=0), [(3, 4)], lambda a: a.sum(axis=0), False),
    ("sum axis -1 keepdims", lambda a: a.sum(axis=-1, keepdims=True), [(2, 3, 4)],
     lambda a: a.sum(axis=-1, keepdims=True), False),
    ("sum axes (0, 2)", lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)], lambda a: a.sum(axis=(0, 2)), False),
    ("mean all", lambda a: a.mean(), [(3, 4)], lambda a: a.mean(), False),
    ("mean axis 1 keepdims", lambda a: a.mean(axis=1, keepdims=True), [(3, 4)],
     lambda a: a.mean(axis=1, keepdims=True), False),
    ("exp", lambda a: a.exp(), [(3, 4)], np.exp, False),
    ("log", lambda a: a.log(), [(3, 4)], np.log, True),
    ("sqrt", lambda a: a.sqrt(), [(3, 4)], np.sqrt, True),
    ("abs", lambda a: a.abs(), [(3, 4)], np.abs, False),
    ("maximum", ops.maximum, [(3, 4), (3, 4)], np.maximum, False),
    ("maximum broadcast", ops.maximum, [(3, 4), (4,)], np.maximum, False),
    ("relu", lambda a: a.relu(), [(3, 4)], lambda a: np.maximum(a, 0), False),
    ("leaky relu", lambda a: a.leaky_relu(), [(3, 4)], lambda a: np.where(a > 0, a, 0.01 * a), False),
    ("leaky relu 0.2", lambda a: a.leaky_relu(0.2), [(3, 4)], lambda a: np.where(a > 0, a, 0.2 * a), False),
    ("tanh", lambda a: a.tanh(), [(3, 4)], np.tanh, False),
    ("sigmoid", lambda a: a.sigmoid(), [(3, 4)], lambda a: 1 / (1 + np.exp(-a)), False),
    ("reshape", lambda a: a.reshape(4, 3), [(3, 4)], lambda a: a.reshape(4, 3), False),
    ("reshape -1", lambda a: a.reshape(-1), [(2, 3, 2)], lambda a: a.reshape(-1), False),
    ("transpose", lambda a: a.T, [(3, 4)], lambda a: a.T, False),
    ("transpose axes", lambda a: a.transpose(1, 2, 0), [(2, 3, 4)], lambda a: a.transpose(1, 2, 0), False),
    ("index int", lambda a: a[1], [(3, 4)], lambda a: a[1], False),
    ("slice", lambda a: a[1:, ::2], [(3, 4)], lambda a: a[1:, ::2], False),
    ("fancy index repeated", lambda a: a[[0, 2, 0]], [(3, 4)], lambda a: a[[0, 2, 0]], False),
    ("boolean mask", lambda a: a[np.array([True, False, True])], [(3, 4)],
     lambda a: a[np.array([True, False, True])], False),
    ("concatenate axis 0", lambda a, b: caviar.concatenate([a, b]), [(2, 3), (4, 3)],
     lambda a, b: np.concatenate([a, b]), False),
    ("concatenate axis -1", lambda a, b: caviar.concatenate([a, b], axis=-1), [(2, 3), (2, 1)],
     lambda a, b: np.concatenate([a, b], axis=-1), False),
    ("stack", lambda a, b: caviar.stack([a, b], axis=1), [(2, 3), (2, 3)],
     lambda a, b: np.stack([a, b], axis=1), False),
    ("composite", lambda a, b, c: ((a @ b).tanh() * c).sum(axis=0).exp().mean(), [(3, 4), (4, 2), (2,)], None, False),
]


@pytest.mark.parametrize("name,fn,shapes,reference,positive", CASES, ids=[c[0] for c in CASES])
def test_op_gradient_and_value(name, fn, shapes, reference, positive):
    tensors = _inputs(shapes, positive)
    out = _check(fn, tensors)
    if reference is not None:
        np.testing.assert_allclose(out.data, reference(*[t.data for t in tensors]), rtol=1e-12, atol=1e-12)


def test_maximum_splits_gradient_at_ties():
    a, b = caviar.Variable(np.array([1.0, 2.0])), caviar.Variable(np.array([1.0, 3.0]))
    ops.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 0.0])
    np.testing.assert_array_equal(b.grad, [0.5, 1.0])


def test_gradient_is_summed_back_over_broadcast_axes():
    a = caviar.Variable(np.ones((1, 3)))
    b = caviar.Variable(np.ones((4, 1)))
    (a * b).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((1, 3), 4.0))
    np.testing.assert_array_equal(b.grad, np.full((4, 1), 3.0))


def test_gradients_accumulate_when_a_tensor_is_used_twice():
    x = caviar.Variable(np.array([2.0, -1.0]))
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * np.array([2.0, -1.0]) + 1)
