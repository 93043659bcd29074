"""The compiled one-pass optimizer updates give bit for bit the NumPy updates they replace."""

import numpy as np
import pytest

import caviar
from caviar import data as D
from caviar import optim
from caviar.autodiff import Tensor
from caviar.optim import fused
from caviar.train.population import Population


def test_the_kernels_compile_here():
    # without this, every comparison below would compare the NumPy update with itself
    assert set(fused.kernels()) == {"gd", "momentum", "rmsprop", "adam"}
    assert fused.available(np.zeros(fused.MIN_SIZE, np.float32))
    assert not fused.available(np.zeros(fused.MIN_SIZE - 1, np.float32))
    assert not fused.available(np.zeros(fused.MIN_SIZE, np.int64))


def _train(monkeypatch, compiled, name, dtype, per_member, K, shape, steps=4):
    monkeypatch.setenv("CAVIAR_FUSED", "1" if compiled else "0")
    r = np.random.default_rng(7)
    params = [Tensor(r.standard_normal((K,) + shape).astype(dtype), requires_grad=True, name="W1"),
              Tensor(r.standard_normal((K, 1, shape[-1])).astype(dtype), requires_grad=True, name="b1")]
    options = {k: (r.uniform(0.3, 1.0, (K, 1)) * d) if per_member else d for k, d in optim.lookup(name).defaults.items()}
    opt = optim.build(name, **options)
    if name == "momentum" and not per_member:
        opt.bias_correction = True  # its other coefficient
    for _ in range(steps):
        for p in params:  # gradients over many magnitudes, some exactly zero
            g = r.standard_normal(p.data.shape) * 10.0 ** r.uniform(-9, 3, p.data.shape)
            g[r.random(p.data.shape) < 0.05] = 0.0
            p.grad = g.astype(dtype)
        opt.step(params)
    return [p.data.copy() for p in params], opt


@pytest.mark.parametrize("size", ["small", "split over members", "split over columns"])
@pytest.mark.parametrize("per_member", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gd", "momentum", "rmsprop", "adam"])
def test_a_compiled_update_equals_the_numpy_update(monkeypatch, name, dtype, per_member, size):
    K, shape = {"small": (3, (40, 50)), "split over members": (5, (300, 200)), "split over columns": (1, (700, 400))}[size]
    if K * shape[0] * shape[1] >= fused.SPLIT:
        assert size != "small"
    reference, _ = _train(monkeypatch, False, name, dtype, per_member, K, shape)
    compiled, _ = _train(monkeypatch, True, name, dtype, per_member, K, shape)
    for a, b in zip(reference, compiled):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_a_population_trains_alike_with_and_without_the_kernels(monkeypatch):
    ds = D.load("digits")
    X = D.Normalizer().fit_transform(ds.X)
    members = [dict(seed=s, lr=lr, l2=l2, keep_prob=kp) for s, lr, l2, kp in
               [(1, 1e-3, 0.0, 1.0), (2, 3e-3, 0.1, 0.8), (3, 1e-2, 1.0, 0.9), (4, 3e-4, 0.01, 1.0)]]
    weights = {}
    for compiled in (False, True):
        monkeypatch.setenv("CAVIAR_FUSED", "1" if compiled else "0")
        pop = Population([64, 32, 10], members, optimizer="adam")
        assert fused.available(np.zeros(pop.size * 2410, np.float32)) == compiled  # the (K, P) block
        pop.fit(X[:600], ds.y[:600], epochs=2, batch_size=64, shuffle_seed=3)
        weights[compiled] = {i: pop.results[i][1].params for i in range(len(members))}
    for i in range(len(members)):
        for name, p in weights[False][i].items():
            np.testing.assert_array_equal(weights[True][i][name].data, p.data, err_msg=f"member {i} {name}")


def test_a_single_network_trains_alike_with_and_without_the_kernels(monkeypatch):
    ds = D.load("digits")
    X = D.Normalizer().fit_transform(ds.X)
    params = {}
    for compiled in (False, True):
        monkeypatch.setenv("CAVIAR_FUSED", "1" if compiled else "0")
        net = caviar.Network([64, 128, 10], seed=0)
        caviar.fit(net, X, ds.y, optimizer="momentum", lr=0.05, epochs=2, seed=0, verbose=False)
        params[compiled] = {k: p.data.copy() for k, p in net.params.items()}
    assert fused.available(params[True]["W1"])
    for name in params[False]:
        np.testing.assert_array_equal(params[True][name], params[False][name], err_msg=name)
