"""A population's tape-free step (caviar.train.step) gives the tape's gradients bit for bit, and
its members still equal their solo runs."""

import numpy as np
import pytest

import caviar
from caviar import kernels
from caviar.train import population as P
from caviar.train import step as S

pytestmark = pytest.mark.usefixtures("kernels_at_every_size")  # the kernels run on these small arrays too

R = np.random.default_rng(3)
X = R.standard_normal((70, 5))
Y_CLASS = R.integers(0, 3, 70)
Y_BINARY = (X[:, 0] > 0).astype(np.float64)
Y_VALUE = X @ R.standard_normal(5) + 0.1 * R.standard_normal(70)
TARGETS = {"softmax": (Y_CLASS, 3), "sigmoid": (Y_BINARY, 1), "linear": (Y_VALUE, 1)}
MEMBERS = [{"seed": s, "lr": 0.01 * (1 + s), "l2": 0.3 * (s % 3), "keep_prob": (1.0, 0.8, 0.6, 1.0, 0.9)[s]}
           for s in range(5)]


def train(monkeypatch, stacked, output="softmax", activation="relu", batchnorm=False, dropout=True, dtype="float32",
          optimizer="adam", augment=None, threads=1, epochs=3):
    """Every member's weights, buffers and per-step costs after training, with the tape-free step
    or with the tape; ``threads`` 2: the kernels split large work over two threads. Its patches
    end with it (the test's own, kernels at every size, stay)."""
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "THREADS", threads)
        patch.setattr(kernels, "SPLIT", 1 if threads == 2 else kernels.SPLIT)
        if not stacked:
            patch.setattr(S, "supports", lambda pop: False)
        else:
            real = S.run

            def counted(pop, Xb, yb):
                runs.append(1)
                return real(pop, Xb, yb)

            patch.setattr(S, "run", counted)
        y, n_y = TARGETS[output]
        members = [dict(m, keep_prob=m["keep_prob"] if dropout else 1.0) for m in MEMBERS]
        pop = P.Population([5, 7, 6, n_y], members, activation=activation, output=output, batchnorm=batchnorm,
                           optimizer=optimizer, dtype=dtype)
        histories = pop.fit(X, y, epochs=epochs, batch_size=16, shuffle_seed=2, augment=augment)
    assert bool(runs) == stacked  # the step ran, or the tape did
    nets = [pop.network(i) for i in range(len(members))]
    return ([{**{k: p.data for k, p in n.params.items()}, **n.buffers} for n in nets],
            [h.iterations for h in histories])


def assert_same(a, b):
    (weights_a, costs_a), (weights_b, costs_b) = a, b
    assert costs_a == costs_b
    for wa, wb in zip(weights_a, weights_b):
        assert wa.keys() == wb.keys()
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_stacked_step_trains_as_the_tape_does(monkeypatch, threads, output, batchnorm, dtype):
    reference = train(monkeypatch, False, output, batchnorm=batchnorm, dtype=dtype)
    assert_same(train(monkeypatch, True, output, batchnorm=batchnorm, dtype=dtype, threads=threads), reference)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu", "linear"])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop"])
def test_every_activation_and_optimizer_steps_as_on_the_tape(monkeypatch, activation, optimizer):
    reference = train(monkeypatch, False, activation=activation, optimizer=optimizer, batchnorm=activation == "tanh")
    assert_same(train(monkeypatch, True, activation=activation, optimizer=optimizer, batchnorm=activation == "tanh"),
                reference)


def test_augmented_batches_one_per_member_step_as_on_the_tape(monkeypatch):
    def noise(Xb, rng):
        return Xb + 0.1 * rng.standard_normal(Xb.shape).astype(Xb.dtype)

    reference = train(monkeypatch, False, augment=noise)
    assert_same(train(monkeypatch, True, augment=noise), reference)


def test_a_member_of_the_stacked_step_equals_its_solo_run(monkeypatch):
    pop = P.Population([5, 7, 6, 3], MEMBERS, dtype="float64")
    histories = pop.fit(X, Y_CLASS, epochs=3, batch_size=16, shuffle_seed=2)
    for number in (1, 4):
        m = MEMBERS[number]
        net = caviar.Network([5, 7, 6, 3], keep_prob=m["keep_prob"], l2=m["l2"], seed=m["seed"], dtype="float64")
        history = caviar.fit(net, X, Y_CLASS, optimizer="adam", lr=m["lr"], epochs=3, batch_size=16, seed=m["seed"],
                             shuffle_seed=2)
        assert history.iterations == histories[number].iterations
        for name, p in net.params.items():
            np.testing.assert_array_equal(pop.network(number).params[name].data, p.data, err_msg=name)


def test_the_stacked_step_s_gradients_pass_a_numerical_check():
    # float64, batch norm, no dropout: the step's gradient of the members' summed data losses
    # (the L2 term's gradient is the optimizer's to add) against central differences, 6 random
    # entries of every parameter; and the tape's gradient is the same bit for bit
    pop = P.Population([5, 7, 6, 3], [dict(m, keep_prob=1.0) for m in MEMBERS], batchnorm=True, dtype="float64")
    Xb, yb = X[:16], Y_CLASS[:16]
    assert S.supports(pop)
    losses, _ = S.run(pop, Xb.astype("float64"), yb)
    grads = {name: p.grad.copy() for name, p in pop.net.params.items()}

    def J():  # batch norm in training mode uses the batch's statistics, not the running ones
        return pop.head.member_losses(pop.net.forward(Xb, training=True), yb)

    np.testing.assert_array_equal(losses, J().data)
    r, eps, worst = np.random.default_rng(0), 1e-6, 0.0
    for name, p in pop.net.params.items():
        for flat in r.choice(p.data.size, 6, replace=False):
            i = np.unravel_index(flat, p.data.shape)
            saved = p.data[i]
            p.data[i] = saved + eps
            plus = float(J().data.sum())
            p.data[i] = saved - eps
            minus = float(J().data.sum())
            p.data[i] = saved
            numeric, analytic = (plus - minus) / (2 * eps), grads[name][i]
            worst = max(worst, abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-8))
    assert worst < 1e-6, worst
    for p in pop.net.params.values():
        p.grad = None
    J().sum().backward()
    for name, p in pop.net.params.items():
        np.testing.assert_array_equal(grads[name], p.grad, err_msg=name)


def _fit(monkeypatch, stacked, y, **options):
    calls = []
    with pytest.MonkeyPatch.context() as patch:  # its patches end with it
        if stacked:
            real = S.run
            patch.setattr(S, "run", lambda pop, Xb, yb: calls.append(1) or real(pop, Xb, yb))
        else:
            patch.setattr(S, "supports", lambda pop: False)
        pop = P.Population([5, 7, 3], MEMBERS, **options)
        histories = pop.fit(X, y, epochs=2, batch_size=16, shuffle_seed=2)
    assert bool(calls) == stacked
    return [{k: p.data for k, p in pop.network(i).params.items()} for i in range(len(MEMBERS))], \
        [h.iterations for h in histories]


@pytest.mark.parametrize("case", ["class weights", "one-hot targets"])
def test_class_weights_and_one_hot_targets_step_as_on_the_tape(monkeypatch, case):
    y, options = (Y_CLASS, {"class_weight": [1.0, 3.0, 0.5]}) if case == "class weights" else (np.eye(3)[Y_CLASS], {})
    assert_same(_fit(monkeypatch, True, y, **options), _fit(monkeypatch, False, y, **options))


def test_anomaly_mode_trains_through_the_tape_which_checks_every_op():
    from caviar.autodiff import detect_anomaly

    pop = P.Population([5, 7, 3], MEMBERS[:2])
    assert S.supports(pop)
    with detect_anomaly():
        assert not S.supports(pop)
