"""Optimizers (against torch.optim and their formulas), the weighted average, schedules, batches."""

import numpy as np
import pytest

import caviar
from caviar import optim, schedules
from caviar.train import minibatch_indices

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(5)


def run_both(ours, make_theirs, steps=6, shape=(4, 3)):
    """Feed the same parameters and the same gradient sequence to both optimizers."""
    w0 = RNG.standard_normal(shape)
    grads = [RNG.standard_normal(shape) for _ in range(steps)]
    w = caviar.Variable(w0.copy())
    wt = torch.tensor(w0.copy(), requires_grad=True)
    theirs = make_theirs([wt])
    for g in grads:
        w.grad = g.copy()
        ours.step([w])
        wt.grad = torch.tensor(g.copy())
        theirs.step()
        np.testing.assert_allclose(w.data, wt.detach().numpy(), rtol=1e-12, atol=1e-13)
    return w


def test_gradient_descent_matches_torch_sgd():
    run_both(optim.GradientDescent(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1))


def test_momentum_maps_to_torch_sgd_with_scaled_lr():
    """Notes: v = beta v + (1-beta) dW, W -= lr v.  torch: buf = beta buf + dW, W -= lr' buf.
    They agree with lr' = lr * (1 - beta)."""
    lr, beta = 0.1, 0.9
    run_both(optim.Momentum(lr, beta=beta), lambda p: torch.optim.SGD(p, lr=lr * (1 - beta), momentum=beta))


def test_rmsprop_maps_to_torch_rmsprop_with_alpha_beta2():
    run_both(optim.RMSprop(0.01, beta2=0.999, epsilon=1e-8),
             lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.999, eps=1e-8))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.95)])
def test_adam_matches_torch_adam(betas):
    run_both(optim.Adam(0.01, beta1=betas[0], beta2=betas[1], epsilon=1e-8),
             lambda p: torch.optim.Adam(p, lr=0.01, betas=betas, eps=1e-8))


def test_a_torch_setting_mapped_the_wrong_way_disagrees():
    """Negative control: Momentum with torch's lr unscaled is a different optimizer."""
    with pytest.raises(AssertionError):
        run_both(optim.Momentum(0.1, beta=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))


def test_adam_step_is_the_notes_formula():
    w0, g1, g2 = RNG.standard_normal(5), RNG.standard_normal(5), RNG.standard_normal(5)
    w = caviar.Variable(w0.copy())
    opt = optim.Adam(0.05, beta1=0.9, beta2=0.999, epsilon=1e-8)
    v = s = np.zeros(5)
    expected = w0.copy()
    for t, g in enumerate([g1, g2], start=1):
        w.grad = g
        opt.step([w])
        v = 0.9 * v + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        expected = expected - 0.05 * (v / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(w.data, expected, rtol=1e-12)


def test_momentum_bias_correction_and_l2_as_weight_decay():
    w = caviar.Variable(np.array([1.0]))
    opt = optim.Momentum(0.1, beta=0.9, bias_correction=True)
    w.grad = np.array([2.0])
    opt.step([w])
    # v1 = 0.1 * 2 = 0.2, corrected 0.2 / (1 - 0.9) = 2: the first step is a full gradient step.
    np.testing.assert_allclose(w.data, [1.0 - 0.1 * 2.0])
    # L2 appears in the gradient as lambd/m * W
    W = caviar.Variable(np.array([[3.0]]))
    caviar.functional.l2_penalty([W], 0.4, 2).backward()
    np.testing.assert_allclose(W.grad, [[0.4 / 2 * 3.0]])


def test_optimizers_update_in_place():
    w = caviar.Variable(np.ones(3))
    buffer = w.data
    for opt in [optim.GradientDescent(0.1), optim.Momentum(0.1), optim.RMSprop(0.1), optim.Adam(0.1)]:
        w.grad = np.ones(3)
        opt.step([w])
        assert w.data is buffer


@pytest.mark.parametrize("name", ["gd", "momentum", "rmsprop", "adam"])
def test_per_member_hyperparameters_update_every_member_as_its_own_optimizer(name):
    """A population's optimizer (arrays of shape (K, 1)) updates all parameters as one (K, P)
    array; each member must get exactly the update of a scalar optimizer of its own, also
    after members are removed (the parameters' arrays replaced)."""
    K, lrs, betas = 3, np.array([0.1, 0.01, 0.001]), np.array([0.9, 0.8, 0.99])
    extra = {"momentum": ("beta",), "rmsprop": ("beta2",), "adam": ("beta1", "beta2")}.get(name, ())
    make = lambda lr, beta: optim.get(name, lr, **{k: beta for k in extra})  # noqa: E731
    W = caviar.Variable(RNG.standard_normal((K, 4, 3)))
    b = caviar.Variable(RNG.standard_normal((K, 1, 3)))
    members = [[caviar.Variable(W.data[k].copy()), caviar.Variable(b.data[k].copy())] for k in range(K)]
    ours = make(lrs.reshape(-1, 1), betas.reshape(-1, 1))
    theirs = [make(float(lrs[k]), float(betas[k])) for k in range(K)]
    for step in range(5):
        if step == 3:  # member 1 leaves, as Population.keep does it
            W.data, b.data = W.data[[0, 2]], b.data[[0, 2]]
            for attr in ("lr",) + extra:
                setattr(ours, attr, getattr(ours, attr)[[0, 2]])
            for state in ours.state.values():
                for key, value in state.items():
                    if hasattr(value, "shape"):
                        state[key] = value[[0, 2]]
            members, theirs = [members[0], members[2]], [theirs[0], theirs[2]]
        gW, gb = RNG.standard_normal(W.shape), RNG.standard_normal(b.shape)
        W.grad, b.grad = gW.copy(), gb.copy()
        ours.step([W, b])
        for k, (opt, (w, c)) in enumerate(zip(theirs, members)):
            w.grad, c.grad = gW[k].copy(), gb[k].copy()
            opt.step([w, c])
            np.testing.assert_array_equal(W.data[k], w.data)
            np.testing.assert_array_equal(b.data[k], c.data)


def test_bias_correction_powers_are_python_s_float_powers():
    """``power`` gives each member beta**t as Python's float power rounds it (NumPy's SIMD
    power can differ by an ulp), whether the members share one beta or each has its own."""
    from caviar.optim.base import power

    for betas in ([0.9] * 5, [0.9, 0.8, 0.999, 0.9, 0.5], [0.999]):
        column = np.asarray(betas).reshape(-1, 1)
        for t in (1, 2, 7, 1000):
            got = power(column, t)
            assert got.shape == column.shape and got.dtype == np.float64
            assert got.ravel().tolist() == [b**t for b in betas]
    assert power(0.9, 3) == 0.9**3


def parabola(p):
    return ((p - 3.0) ** 2).sum()


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


@pytest.mark.parametrize(
    "opt,problem,start,target,steps,tol",
    [
        (optim.GradientDescent(0.1), parabola, [0.0, 0.0], [3.0, 3.0], 200, 1e-3),
        (optim.Momentum(0.1), parabola, [0.0, 0.0], [3.0, 3.0], 300, 1e-3),
        (optim.RMSprop(0.01), parabola, [0.0, 0.0], [3.0, 3.0], 2000, 5e-2),
        (optim.Adam(0.1), parabola, [0.0, 0.0], [3.0, 3.0], 500, 1e-3),
        (optim.Momentum(0.003, beta=0.9), rosenbrock, [-1.0, 1.0], [1.0, 1.0], 3000, 5e-2),
        (optim.RMSprop(0.002), rosenbrock, [-1.0, 1.0], [1.0, 1.0], 3500, 5e-2),
        (optim.Adam(0.05), rosenbrock, [-1.0, 1.0], [1.0, 1.0], 1000, 5e-2),
    ],
    ids=["gd-parabola", "momentum-parabola", "rmsprop-parabola", "adam-parabola",
         "momentum-rosenbrock", "rmsprop-rosenbrock", "adam-rosenbrock"],
)
def test_optimizers_converge(opt, problem, start, target, steps, tol):
    p = caviar.Variable(np.array(start))
    for _ in range(steps):
        opt.minimize(lambda: problem(p), [p])
    np.testing.assert_allclose(p.data, target, atol=tol)


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr="fast"), dict(lr=float("inf")), dict(lr=float("nan"))])
def test_optimizer_rejects_bad_learning_rate(bad):
    with pytest.raises(ValueError, match="lr must be a non-negative finite number"):
        optim.Adam(**bad)


@pytest.mark.parametrize("cls,kwargs,pattern", [
    (optim.Adam, dict(beta1=1.5), "beta1"), (optim.Adam, dict(beta2=-0.1), "beta2"),
    (optim.Adam, dict(epsilon=0.0), "epsilon"), (optim.Momentum, dict(beta=1.0), "beta"),
])
def test_optimizer_rejects_bad_hyperparameters(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(0.1, **kwargs)


def test_learning_rate_may_be_a_schedule_of_the_step():
    w = caviar.Variable(np.array([0.0]))
    opt = optim.GradientDescent(lambda step: 1.0 / (step + 1))
    for _ in range(3):
        w.grad = np.array([-1.0])
        opt.step([w])
    np.testing.assert_allclose(w.data, [1 + 1 / 2 + 1 / 3])


# -- exponentially weighted average ----------------------------------------------------------


def test_exponential_average_with_and_without_bias_correction():
    values = [10.0, 12.0, 11.0, 15.0]
    raw = optim.ExponentialAverage(0.9, bias_correction=False)(values)
    corrected = optim.ExponentialAverage(0.9)(values)
    v, expected_raw, expected_corr = 0.0, [], []
    for t, x in enumerate(values, start=1):
        v = 0.9 * v + 0.1 * x
        expected_raw.append(v)
        expected_corr.append(v / (1 - 0.9**t))
    np.testing.assert_allclose(raw, expected_raw)
    np.testing.assert_allclose(corrected, expected_corr)
    assert corrected[0] == pytest.approx(10.0)  # bias correction removes the start-up bias
    assert raw[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="before the first update"):
        optim.ExponentialAverage(0.9).value


# -- schedules -------------------------------------------------------------------------------


def test_inverse_time_decay_reproduces_the_notes_table():
    s = schedules.InverseTime(lr0=0.2, decay_rate=1.0)
    np.testing.assert_allclose([s(e) for e in (1, 2, 3, 4)], [0.1, 0.2 / 3, 0.05, 0.04])


def test_other_schedules():
    assert schedules.Exponential(lr0=0.2)(3) == pytest.approx(0.95**3 * 0.2)
    assert schedules.InverseSqrt(lr0=0.2, k=2.0)(4) == pytest.approx(2.0 / 2 * 0.2)
    stairs = schedules.Staircase(lr0=1.0, every=2, factor=0.1)
    np.testing.assert_allclose([stairs(e) for e in (1, 2, 3, 4, 5)], [1, 1, 0.1, 0.1, 0.01])
    table = schedules.Manual({1: 0.1, 3: 0.01})
    assert [table(e) for e in (1, 2, 3, 9)] == [0.1, 0.1, 0.01, 0.01]
    assert schedules.Manual(lambda e: 1.0 / e)(4) == 0.25


def test_schedule_specs_and_bad_schedules():
    assert schedules.parse("inverse-time:0.5").with_lr0(1.0)(2) == pytest.approx(0.5)
    assert schedules.parse("staircase:5:0.5") == schedules.Staircase(every=5, factor=0.5)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        schedules.parse("cosine:1")
    with pytest.raises(ValueError, match="no initial learning rate"):
        schedules.InverseTime()(1)
    with pytest.raises(ValueError, match="base must be in"):
        schedules.Exponential(lr0=1.0, base=1.5)


# -- mini-batches ----------------------------------------------------------------------------


def test_minibatches_partition_shuffled_indices_and_keep_the_last_partial_batch():
    rng = np.random.default_rng(0)
    batches = minibatch_indices(10, 4, rng)
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(10))
    again = minibatch_indices(10, 4, rng)
    assert not np.array_equal(np.concatenate(batches), np.concatenate(again))  # reshuffled each epoch


def test_batch_and_stochastic_gradient_descent_extremes():
    rng = np.random.default_rng(0)
    assert [len(b) for b in minibatch_indices(7, 7, rng)] == [7]
    assert [len(b) for b in minibatch_indices(7, 100, rng)] == [7]
    assert [len(b) for b in minibatch_indices(7, 1, rng)] == [1] * 7
    # batch norm cannot normalize a batch of one: it joins the batch before it
    assert [len(b) for b in minibatch_indices(9, 4, rng, min_last=2)] == [4, 5]


def test_the_optimizer_owns_the_learning_rate_and_a_value_set_by_hand_replaces_the_schedule():
    opt = optim.build("gd", lr=0.2)
    opt.set_schedule(caviar.schedules.InverseTime(decay_rate=1.0))  # starts from the current lr
    opt.start_epoch(1)
    assert opt.lr == pytest.approx(0.1)
    opt.start_epoch(3)
    assert opt.lr == pytest.approx(0.05)
    opt.set_lr(0.3)
    opt.start_epoch(4)
    assert opt.lr == 0.3 and opt.schedule is None


def test_build_takes_the_notes_names_and_each_optimizer_s_own_defaults():
    assert optim.build("momentum", beta1=0.8).beta == 0.8  # momentum's beta is beta1 by the notes' names
    assert optim.build("gd").lr == 0.01 and optim.build("adam").lr == 0.001
    assert optim.build("adam").hyperparameters() == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    with pytest.raises(ValueError, match="optimizer 'momentum' takes no beta2"):
        optim.build("momentum", beta2=0.99)
    assert optim.build("momentum", strict=False, beta2=0.99).hyperparameters()["beta"] == 0.9
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.build("lbfgs")
