"""The fused ops against PyTorch on the CPU, on the same inputs (float64)."""

import numpy as np
import pytest

import caviar
from caviar import functional as F

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(2)


def both(array):
    """The same float64 data as a caviar Variable and a torch leaf tensor."""
    return caviar.Variable(array.copy()), torch.tensor(array.copy(), requires_grad=True)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_cross_entropy_matches_torch(one_hot):
    z, zt = both(RNG.standard_normal((32, 10)) * 3)
    labels = RNG.integers(0, 10, size=32)
    targets = np.eye(10)[labels] if one_hot else labels
    cost = F.softmax_cross_entropy(z, targets)
    cost_t = torch.nn.functional.cross_entropy(zt, torch.tensor(targets))
    cost.backward()
    cost_t.backward()
    np.testing.assert_allclose(cost.data, cost_t.item(), rtol=1e-13)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-12, atol=1e-16)


def test_softmax_and_log_softmax_match_torch():
    z, zt = both(RNG.standard_normal((8, 5)))
    g = RNG.standard_normal((8, 5))
    for ours, theirs in [(F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)]:
        z.zero_grad()
        zt.grad = None
        out, out_t = ours(z), theirs(zt, dim=-1)
        out.backward(g)
        out_t.backward(torch.tensor(g))
        np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_sigmoid_cross_entropy_matches_torch_bce_with_logits(scale):
    z, zt = both(RNG.standard_normal((40, 1)) * scale)
    y = (RNG.random((40, 1)) < 0.5).astype(np.float64)
    cost = F.sigmoid_cross_entropy(z, y)
    cost_t = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(y))
    cost.backward()
    cost_t.backward()
    np.testing.assert_allclose(cost.data, cost_t.item(), rtol=1e-12)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-10, atol=1e-16)


def test_batch_norm_matches_torch_in_training_and_eval_mode():
    """caviar momentum=beta (0.9) is torch momentum=1-beta (0.1); torch's running variance takes
    the unbiased batch variance (times m/(m-1)), caviar's (like the notes and Keras) the biased one."""
    m, n, beta_ewa, eps = 16, 5, 0.9, 1e-5
    bn = torch.nn.BatchNorm1d(n, momentum=1 - beta_ewa, eps=eps, dtype=torch.float64)
    gamma0, beta0 = RNG.standard_normal(n) + 1, RNG.standard_normal(n)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma0))
        bn.bias.copy_(torch.tensor(beta0))
    gamma, beta = caviar.Variable(gamma0.copy()), caviar.Variable(beta0.copy())
    run_mean, run_var = np.zeros(n), np.ones(n)
    expected_var = np.ones(n)  # what caviar's running variance must be, step by step

    for step in range(3):  # several training steps: forward, backward, running statistics
        x = RNG.standard_normal((m, n)) * (step + 1) + step
        z, zt = both(x)
        g = RNG.standard_normal((m, n))
        gamma.zero_grad(), beta.zero_grad()
        bn.zero_grad()
        out = F.batch_norm(z, gamma, beta, (run_mean, run_var), training=True, momentum=beta_ewa, epsilon=eps)
        bn.train()
        out_t = bn(zt)
        out.backward(g)
        out_t.backward(torch.tensor(g))
        np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(gamma.grad, bn.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(beta.grad, bn.bias.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(run_mean, bn.running_mean.numpy(), rtol=1e-12)
        expected_var = beta_ewa * expected_var + (1 - beta_ewa) * x.var(0)
        np.testing.assert_allclose(run_var, expected_var, rtol=1e-12)

    # Eval mode against torch with caviar's running statistics loaded into it.
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(run_mean))
        bn.running_var.copy_(torch.tensor(run_var))
    bn.eval()
    x = RNG.standard_normal((7, n))
    z, zt = both(x)
    g = RNG.standard_normal((7, n))
    out = F.batch_norm(z, gamma, beta, (run_mean, run_var), training=False, epsilon=eps)
    out_t = bn(zt)
    out.backward(g)
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_batch_norm_running_variance_mapping_to_torch():
    """torch running_var = (1 - p) * rv + p * var * m / (m - 1): the documented difference."""
    m, n = 10, 3
    x = RNG.standard_normal((m, n))
    bn = torch.nn.BatchNorm1d(n, momentum=0.1, dtype=torch.float64)
    bn.train()
    bn(torch.tensor(x))
    run_mean, run_var = np.zeros(n), np.ones(n)
    F.batch_norm(caviar.Tensor(x), caviar.Tensor(np.ones(n)), caviar.Tensor(np.zeros(n)), (run_mean, run_var), momentum=0.9)
    np.testing.assert_allclose(run_mean, bn.running_mean.numpy(), rtol=1e-12)
    unbiased_part = bn.running_var.numpy() - 0.9  # = 0.1 * var * m / (m - 1)
    np.testing.assert_allclose(run_var - 0.9, unbiased_part * (m - 1) / m, rtol=1e-12)


def test_inverted_dropout_scaling_matches_torch():
    keep_prob = 0.7
    x = np.abs(RNG.standard_normal((300, 40))) + 1.0
    ours = F.dropout(caviar.Tensor(x), keep_prob, rng=caviar.backend.rng(0)).data
    torch.manual_seed(0)
    theirs = torch.nn.functional.dropout(torch.tensor(x), p=1 - keep_prob, training=True).numpy()
    # Masks come from different generators; every kept unit is scaled by 1 / keep_prob in both.
    for out in (ours, theirs):
        kept = out != 0
        np.testing.assert_allclose(out[kept], x[kept] / keep_prob, rtol=1e-12)
        assert abs(kept.mean() - keep_prob) < 0.02
