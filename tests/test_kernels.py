"""The compiled one-pass kernels give bit for bit the NumPy code they replace."""

import json

import numpy as np
import pytest

import caviar
from caviar import data as D
from caviar import optim
from caviar.autodiff import Tensor
from caviar.nn.heads import HEADS
from caviar import kernels
from caviar.train.population import Population


def test_the_kernels_compile_here():
    # without this, every comparison below would compare the NumPy update with itself
    assert set(kernels.kernels()) == {"gd", "momentum", "rmsprop", "adam", "bias_relu", "dropout", "dropout_over", "bias_relu_dropout",
                                      "relu_grad", "relu_grad_over", "column_sums", "batch_norm", "batch_norm_over",
                                      "batch_norm_relu_dropout_over", "batch_norm_eval", "batch_norm_grad", "batch_norm_grad_over",
                                      "relu_batch_norm_grad_over", "relu_batch_norm_grad_over_plain", "softmax_shift",
                                      "row_sums", "member_squares", "softmax_log_p", "minus_one_at", "hits"}
    assert kernels.usable(np.zeros(kernels.MIN_SIZE, np.float32))
    assert not kernels.usable(np.zeros(kernels.MIN_SIZE - 1, np.float32))
    assert not kernels.usable(np.zeros(kernels.MIN_SIZE, np.int64))
    assert not kernels.usable(np.zeros((kernels.MIN_SIZE, 2), np.float32).T)


def _train(monkeypatch, compiled, name, dtype, per_member, K, shape, steps=4):
    monkeypatch.setattr(kernels, "ENABLED", compiled)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constants_keep_their_values_bits(dtype):
    """``kernels.constants``: -0.0 (a sum's start) and 0 (ReLU's floor) compare and hash alike,
    but each call gets its own value's bits, in either order (a memo keyed by the values once
    handed back the first one asked for)."""
    dt = np.dtype(dtype)
    for first, second in ((0, -0.0), (-0.0, 0)):
        a, b = kernels.constants(dt, first), kernels.constants(dt, second)
        assert a.dtype == b.dtype == dt
        assert np.signbit(a[0]) == (str(first) == "-0.0") and np.signbit(b[0]) == (str(second) == "-0.0")
    both = kernels.constants(dt, 64, -0.0, 1e-5)
    assert np.signbit(both[1]) and both[0] == 64 and both[2] == dt.type(1e-5)
    assert kernels.constants(dt, 64, 0.0, 1e-5)[1] == 0 and not np.signbit(kernels.constants(dt, 64, 0.0, 1e-5)[1])


@pytest.mark.parametrize("size", ["small", "split over members", "split over columns"])
@pytest.mark.parametrize("per_member", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gd", "momentum", "rmsprop", "adam"])
def test_a_compiled_update_equals_the_numpy_update(monkeypatch, name, dtype, per_member, size):
    K, shape = {"small": (3, (40, 50)), "split over members": (5, (300, 200)), "split over columns": (1, (700, 400))}[size]
    monkeypatch.setattr(kernels, "SPLIT", 100_000)  # the two larger sizes split over two threads
    assert (K * shape[0] * shape[1] >= kernels.SPLIT) == (size != "small")
    reference, _ = _train(monkeypatch, False, name, dtype, per_member, K, shape)
    compiled, _ = _train(monkeypatch, True, name, dtype, per_member, K, shape)
    for a, b in zip(reference, compiled):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_networks_of_every_depth_share_an_update_kernel_s_signature():
    """A step's gradients go to an update kernel as a tuple padded to ``kernels.ARITY``: steps
    of 1 to 8 parameter arrays run one compiled signature, with NumPy's values."""
    r = np.random.default_rng(3)
    kernel = kernels.kernels()["gd"]
    counts = []
    for n in (1, 2, 5, 8):
        K, sizes = 2, r.integers(1, 50, n)
        p = r.standard_normal((K, int(sizes.sum())))
        grads = [r.standard_normal((K, int(w))) for w in sizes]
        lr = r.uniform(0.1, 1.0, K)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        expected = p - lr.reshape(K, 1) * np.concatenate(grads, axis=1)  # p -= lr * g
        kernels.update("gd", p, grads, [], [lr], None, list(starts))
        np.testing.assert_array_equal(p, expected)
        counts.append(len(kernel.signatures))
    assert counts[1:] == counts[:1] * 3


def test_an_update_s_decays_are_the_ones_of_its_call():
    """``update`` keeps each set of starts and decays it has laid out for the kernel: calls
    alike but for their decays' values (another L2 factor, another member order) must each
    get their own, and the same values again the same result."""
    r = np.random.default_rng(5)
    K, sizes = 3, [6, 4]
    starts = [0, 6]
    lr = r.uniform(0.1, 1.0, K)
    p0 = r.standard_normal((K, 10))
    grads = [r.standard_normal((K, w)) for w in sizes]
    for decay in (r.uniform(0.0, 1.0, K), r.uniform(0.0, 1.0, K), np.zeros(K), 0.25, -0.0, None):
        for _ in range(2):
            p = p0.copy()
            kernels.update("gd", p, grads, [], [lr], [decay, None], starts)
            d = 0.0 if decay is None else np.broadcast_to(np.asarray(decay, dtype=np.float64), (K,)).reshape(K, 1)
            expected = p0.copy()
            expected[:, :6] = p0[:, :6] - lr.reshape(K, 1) * (grads[0] + d * p0[:, :6])
            expected[:, 6:] = p0[:, 6:] - lr.reshape(K, 1) * grads[1]
            if decay is None:
                expected[:, :6] = p0[:, :6] - lr.reshape(K, 1) * grads[0]
            np.testing.assert_array_equal(p, expected)


@pytest.mark.parametrize("size", ["small", "split over members", "split over columns"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gd", "momentum", "rmsprop", "adam"])
def test_an_update_sums_its_decayed_weights_squares_as_member_squares(monkeypatch, name, dtype, size):
    # the update writes each decayed weight's values and sums their squares in the same pass:
    # the sums member_squares gives on the weights it wrote (the next step's L2 term), bit for
    # bit; a member's rows split over two threads by columns give none (two partial sums)
    from caviar import functional as F

    K = {"small": 3, "split over members": 5, "split over columns": 1}[size]
    monkeypatch.setattr(kernels, "SPLIT", 1 if size != "small" else 1 << 40)
    monkeypatch.setattr(kernels, "THREADS", 2)
    r = np.random.default_rng(11)
    shapes = [(40, 33), (1, 33), (33, 300), (300, 10)]  # a weight, a bias, weights wide and narrow
    sizes = [a * b for a, b in shapes]
    starts = list(np.cumsum([0] + sizes[:-1]))
    p = (r.standard_normal((K, sum(sizes))) * 10.0 ** r.uniform(-3, 1, (K, sum(sizes)))).astype(dtype)
    grads = [r.standard_normal((K, n)).astype(dtype) for n in sizes]
    cls = optim.lookup(name)
    n_state, n_columns = {"gd": (0, 1), "momentum": (1, 3), "rmsprop": (1, 4), "adam": (2, 7)}[name]
    state = [np.abs(r.standard_normal(p.shape)).astype(dtype) for _ in range(n_state)]
    columns = [kernels.column(float(c), K, dtype) for c in r.uniform(0.01, 0.9, n_columns)]
    assert cls.kernel == name
    decays = [r.uniform(0.0, 0.1, K).reshape(K, 1, 1).astype(dtype), None, np.zeros((K, 1, 1), dtype), 0.05]
    squares = kernels.update(name, p, grads, state, columns, decays, starts, [b for _, b in shapes])
    if size == "split over columns":
        assert squares is None
        return
    for i, (a, b) in enumerate(shapes):
        if decays[i] is None:
            continue
        weight = caviar.Variable(p[:, starts[i]:starts[i] + a * b].reshape(K, a, b))
        np.testing.assert_array_equal(squares[:, i].astype(np.float64), F.member_squares([weight]))
    # without a decay (a single network, a population without L2) nothing is summed
    assert kernels.update(name, p, grads, state, columns, None, starts) is None
    assert kernels.update(name, p, grads, state, columns, [None] * 4, starts, [b for _, b in shapes]) is None


def test_a_population_trains_alike_with_and_without_the_kernels(monkeypatch):
    ds = D.load("digits")
    X = D.Normalizer().fit_transform(ds.X)
    members = [dict(seed=s, lr=lr, l2=l2, keep_prob=kp) for s, lr, l2, kp in
               [(1, 1e-3, 0.0, 1.0), (2, 3e-3, 0.1, 0.8), (3, 1e-2, 1.0, 0.9), (4, 3e-4, 0.01, 1.0)]]
    weights = {}
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        pop = Population([64, 32, 10], members, optimizer="adam")
        assert kernels.usable(np.zeros(pop.size * 2410, np.float32)) == compiled  # the (K, P) block
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
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        net = caviar.Network([64, 128, 10], seed=0)
        caviar.fit(net, X, ds.y, optimizer="momentum", lr=0.05, epochs=2, seed=0, verbose=False)
        params[compiled] = {k: p.data.copy() for k, p in net.params.items()}
    assert kernels.usable(params[True]["W1"])
    for name in params[False]:
        np.testing.assert_array_equal(params[True][name], params[False][name], err_msg=name)


def spy(monkeypatch):
    """Count the calls of every kernel (by name) from now on in this test."""
    calls = {}

    def counted(name, f):
        def call(*args):
            calls[name] = calls.get(name, 0) + 1
            return f(*args)
        return call

    monkeypatch.setattr(kernels, "_kernels", {name: counted(name, f) for name, f in kernels.kernels().items()})
    return calls


# -- layers -------------------------------------------------------------------------------------


def _layers_step(dtype, K, m, h, n_in=6, seed=0):
    """Forward and backward through dense(relu) -> batch_norm -> activation(relu) -> dropout ->
    dense(relu) with a bias; every output, gradient and running statistic, and batch norm in
    evaluation."""
    from caviar import functional as F

    r = np.random.default_rng(seed)
    lead = () if K is None else (K,)
    vec = (h,) if K is None else (K, 1, h)
    X = r.standard_normal((m, n_in)).astype(dtype)
    X[0, :] = 0.0  # ties at zero for ReLU
    W1 = caviar.Variable(r.standard_normal(lead + (n_in, h)).astype(dtype))
    W2 = caviar.Variable(r.standard_normal(lead + (h, h)).astype(dtype))
    b2 = caviar.Variable(r.standard_normal(vec).astype(dtype))
    gamma = caviar.Variable(r.uniform(0.5, 2, vec).astype(dtype))
    beta = caviar.Variable(r.standard_normal(vec).astype(dtype))
    running = (r.standard_normal(vec).astype(dtype), r.uniform(0.5, 2, vec).astype(dtype))  # updated in place
    z1 = F.dense(X, W1)
    a1 = F.activation(F.batch_norm(z1, gamma, beta, running, True), "relu")
    a1 = F.dropout(a1, 0.7, np.random.default_rng(seed))
    a2 = F.dense(a1, W2, b2, "relu")
    W3 = caviar.Variable(r.standard_normal(lead + (h, h)).astype(dtype))
    b3 = caviar.Variable(r.standard_normal(vec).astype(dtype))
    z3 = F.dense(a2, W3, b3, "linear")
    (z3 * caviar.Tensor(r.standard_normal(z3.shape).astype(dtype))).sum().backward()
    with caviar.no_grad():  # evaluation, with the running estimates this step updated
        evaluated = F.batch_norm(z1.data * 1.5, gamma, beta, running, False).data
    return [a2.data, z3.data, W1.grad, W2.grad, b2.grad, gamma.grad, beta.grad, W3.grad, b3.grad, *running, evaluated]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,h", [(None, 2, 3), (None, 64, 32), (None, 7, 1), (3, 64, 32), (4, 5, 2), (2, 129, 8),
                                   (3, 16, 1)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_layer_kernels_give_the_numpy_values(monkeypatch, dtype, K, m, h, threads):
    monkeypatch.setattr(kernels, "SPLIT", 1)  # members split over two threads wherever K >= 2
    monkeypatch.setattr(kernels, "THREADS", threads)
    reference = None
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        calls = spy(monkeypatch)
        values = _layers_step(dtype, K, m, h)
        if compiled:
            assert calls.get("bias_relu") and calls.get("relu_grad") and calls.get("dropout")  # the kernels ran
            assert bool(calls.get("batch_norm")) == (h >= 2)  # over one unit NumPy sums pairwise: NumPy runs
            assert bool(calls.get("batch_norm_eval")) == (h >= 2)
            assert bool(calls.get("column_sums")) == (h >= 2)  # the linear layer's db
        else:
            reference = values
    for i, (a, b) in enumerate(zip(reference, values)):
        np.testing.assert_array_equal(b, a, err_msg=f"output {i}")


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_the_training_step_s_l2_gradient_is_backprop_s(monkeypatch, dtype, optimizer, compiled):
    # the training step leaves the L2 term off the tape and the optimizer adds its gradient as it
    # updates (inside the kernel where it runs): the same new weights as backprop through the term
    monkeypatch.setattr(kernels, "SPLIT", 1)
    monkeypatch.setattr(kernels, "ENABLED", compiled)
    ds = D.load("digits")
    X, y = D.Normalizer().fit_transform(ds.X)[:64].astype(dtype), ds.y[:64]
    members = [dict(seed=s, l2=l2, lr=0.01) for s, l2 in [(1, 0.0), (2, 0.3), (3, 7.0)]]
    weights, reg = [], []
    calls = spy(monkeypatch)
    for on_tape in (True, False):
        pop = Population([64, 16, 12, 10], members, batchnorm=True, dtype=dtype, optimizer=optimizer)
        opt = pop._make_optimizer()
        for _ in range(3):
            for p in pop.net.parameters():
                p.grad = None
            pop.step_decay = None
            total, _, _, r = pop.cost(X, y, training=True, l2_on_tape=on_tape)
            total.backward()
            assert (pop.step_decay is None) == on_tape
            opt.step(pop.net.parameters(), decay=pop.step_decay)
        weights.append({k: p.data.copy() for k, p in pop.net.params.items()})
        reg.append(r)
    assert bool(calls.get(optimizer)) == compiled
    np.testing.assert_array_equal(reg[0], reg[1])
    assert reg[0][0] == 0 and reg[0][2] > reg[0][1] > 0
    for name in weights[0]:
        np.testing.assert_array_equal(weights[1][name], weights[0][name], err_msg=name)


@pytest.mark.parametrize("compiled", ["numpy", "one thread", "two threads"])
@pytest.mark.parametrize("view", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,n,h", [(3, 4, 5), (2, 784, 256), (16, 40, 33), (1, 7, 1), (5, 1, 9), (4, 33, 17),
                                   (3, 129, 17), (2, 1000, 531), (2, 3, 1000), (2, 300, 10)])
def test_a_member_s_sum_of_squares_is_its_solo_network_s(monkeypatch, dtype, K, n, h, view, compiled):
    # the L2 term's value per member, from a population's weights (views of its (K, P) block,
    # or its own stacked arrays before the first update), by NumPy or by the compiled pass, is
    # the member's solo network's term: its own contiguous weights alone through l2_penalty
    # (squares summed over the rows, then the column sums pairwise: rows of up to 1000 terms
    # take NumPy's split of a row into blocks of 128). Three weights: an (n, h) one, a
    # (h, 3) one and an (n, h) one again, views of one block (one compiled call for the
    # three) or arrays of their own
    from caviar import functional as F

    monkeypatch.setattr(kernels, "MIN_SIZE", 1 << 40 if compiled == "numpy" else 1)
    if compiled != "numpy":
        monkeypatch.setattr(kernels, "SPLIT", 1 if compiled == "two threads" else 1 << 40)
        monkeypatch.setattr(kernels, "THREADS", 2)
    calls = spy(monkeypatch)
    r = np.random.default_rng(n * h)
    shapes = [(n, h), (h, 3), (n, h)]
    sizes = [a * b for a, b in shapes]
    block = (r.standard_normal((K, sum(sizes) + 50)) * 10.0 ** r.uniform(-3, 3, (K, sum(sizes) + 50))).astype(dtype)
    starts = np.cumsum([10] + sizes[:-1])
    weights = [block[:, s:s + a * b].reshape(K, a, b) for s, (a, b) in zip(starts, shapes)]
    weights = weights if view else [w.copy() for w in weights]
    lambd = r.uniform(0.1, 1.0, K)
    per_member, _ = F.l2_terms([caviar.Variable(w) for w in weights], lambd, 32)
    halves = 2 if compiled == "two threads" and K >= 2 else 1  # a split call runs the kernel on each half
    assert calls.get("member_squares", 0) == (0 if compiled == "numpy" else (1 if view else 3) * halves)
    for k in range(K):
        alone = [caviar.Variable(np.ascontiguousarray(w[k])) for w in weights]
        with monkeypatch.context() as solo:
            solo.setattr(kernels, "MIN_SIZE", 1 << 40)  # the NumPy reference
            reference = F.l2_penalty(alone, float(lambd[k]), 32)
        total = float(F.squares(alone[0].data)) + float(F.squares(alone[1].data)) + float(F.squares(alone[2].data))
        assert per_member[k] == lambd[k] / 64.0 * total
        assert np.float64(per_member[k]).astype(dtype) == reference.data


@pytest.mark.parametrize("compiled", [False, True])
def test_a_squares_plan_sums_the_weights_values_of_each_step(monkeypatch, compiled):
    # a population keeps the plan of its weights' squares from step to step: each call sums
    # the values its weights hold then (the optimizer writes them in place), as member_squares
    # does afresh, and a weight given a new array (a rebuilt block, members leaving) is no
    # longer the plan's
    from caviar import functional as F

    monkeypatch.setattr(kernels, "MIN_SIZE", 1 if compiled else 1 << 40)
    calls = spy(monkeypatch)
    r = np.random.default_rng(5)
    block = r.standard_normal((4, 64 * 32 + 32 * 10 + 70)).astype(np.float32)
    weights = [caviar.Variable(block[:, :2048].reshape(4, 64, 32)), caviar.Variable(block[:, 2048:2368].reshape(4, 32, 10)),
               caviar.Variable(block[:, 2368:].reshape(4, 7, 10))]
    plan = F.SquaresPlan(weights)
    for step in range(3):
        np.testing.assert_array_equal(plan(), F.member_squares(weights))
        assert not np.array_equal(plan(), F.member_squares([caviar.Variable(block * 0.5)]))  # not a stale answer
        block *= np.float32(0.5) + step
    assert calls.get("member_squares", 0) == (12 if compiled else 0)  # one a call: the three are one block's columns
    assert plan.holds(weights)
    weights[1].data = weights[1].data.copy()
    assert not plan.holds(weights) and F.SquaresPlan(weights).holds(weights)
    assert not plan.holds(weights[:2])
    transposed = [caviar.Variable(block[:, :2048].reshape(4, 64, 32).transpose(0, 2, 1))]  # rows reshape to a copy
    copied = F.SquaresPlan(transposed)
    np.testing.assert_array_equal(copied(), F.member_squares(transposed))
    assert copied.holds(transposed) is (not compiled)  # the pass's copy would be stale at the next step


def test_the_update_s_layout_is_the_same_for_the_same_decays_and_new_for_others():
    # a population's steps pass the same starts and decay arrays: the last layout comes back
    # by their identity; other decays (another member's lambda, another batch size) or other
    # starts give their own rows
    K, dtype = 3, np.dtype(np.float32)
    starts, twice = [0, 12, 20], np.asarray([0.1, 0.2, 0.3]).reshape(-1, 1, 1).astype(np.float32)
    first = kernels._layout(K, dtype, 3, starts, [twice, None, twice])
    assert kernels._layout(K, dtype, 3, starts, [twice, None, twice]) is first
    np.testing.assert_array_equal(first[2][:3], [twice.ravel(), np.zeros(3), twice.ravel()])
    other = twice * 2
    second = kernels._layout(K, dtype, 3, starts, [twice, None, other])
    np.testing.assert_array_equal(second[2][2], other.ravel())
    assert list(second[3][:3]) == [True, False, True]
    moved = kernels._layout(K, dtype, 3, [0, 12, 21], [twice, None, other])
    assert list(moved[1][:3]) == [0, 12, 21]
    assert list(kernels._layout(K, dtype, 3, starts, None)[3][:3]) == [False, False, False]


@pytest.mark.parametrize("compiled", [False, True])
def test_strided_weights_sum_their_squares_in_their_own_order(monkeypatch, compiled):
    # a weight that is not a contiguous block (transposed, a block of columns, every other
    # column) sums its squares as its contiguous copy does: the compiled pass takes the first
    # three as the copies their rows reshape to, NumPy the last (its rows are one strided view)
    from caviar import functional as F

    monkeypatch.setattr(kernels, "MIN_SIZE", 1 if compiled else 1 << 40)
    calls = spy(monkeypatch)
    r = np.random.default_rng(3)
    weights = [r.standard_normal((3, 40, 30)).astype(np.float32).transpose(0, 2, 1),
               r.standard_normal((40, 60)).astype(np.float32)[:, :30], r.standard_normal((50, 33)).T,
               r.standard_normal((40, 60)).astype(np.float32)[:, ::2]]
    for w in weights:
        expected = np.asarray(F.squares(np.ascontiguousarray(w)), dtype=np.float64).reshape(-1)
        np.testing.assert_array_equal(F.member_squares([caviar.Variable(w)]), expected)
    assert calls.get("member_squares", 0) == (3 if compiled else 0)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,h", [(None, 16, 8), (3, 16, 8), (2, 9, 1)])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_batch_norm_with_the_relu_and_dropout_above_it_is_the_three_layers(monkeypatch, compiled, dtype, K, m, h):
    """batch_norm_train(relu=True) and batch_norm_grad(out=, scale=) give, in batch norm's
    passes, the values of batch norm, ReLU and dropout's product one after the other."""
    from caviar import functional as F

    monkeypatch.setattr(kernels, "ENABLED", compiled)
    r = np.random.default_rng(m * h)
    lead, vec = ((), (h,)) if K is None else ((K,), (K, 1, h))
    z = r.standard_normal(lead + (m, h)).astype(dtype)
    gamma, beta = r.uniform(0.5, 2, vec).astype(dtype), r.standard_normal(vec).astype(dtype)
    g = r.standard_normal(z.shape).astype(dtype)
    scale = ((r.random(z.shape) < 0.7) / 0.7).astype(dtype)
    runs = [(r.standard_normal(vec).astype(dtype), r.uniform(0.5, 2, vec).astype(dtype)) for _ in range(2)]
    runs[1] = (runs[0][0].copy(), runs[0][1].copy())
    calls = spy(monkeypatch)
    out, xhat, inv_std = F.batch_norm_train(z, gamma, beta, runs[0], 0.9, 1e-5, relu=True)
    fused = F.batch_norm_grad(g, xhat, gamma, inv_std, out, scale)
    # the ReLU's gradient in the loop of the kernel's first pass (one unit: NumPy)
    assert bool(calls.get("relu_batch_norm_grad_over_plain")) == (compiled and h >= 2)
    assert ("relu_grad" in calls or "relu_grad_over" in calls) == (compiled and h < 2)  # else its own pass
    bn, xhat2, inv_std2 = F.batch_norm_train(z, gamma, beta, runs[1], 0.9, 1e-5)
    relu = F._bias_activate(bn, None, "relu", F.LEAKY_SLOPE, False)
    dz_relu = F._backprop_activation(g * scale, relu, "relu", F.LEAKY_SLOPE)[0]
    apart = F.batch_norm_grad(dz_relu, xhat2, gamma, inv_std2)
    assert (relu == 0).any() and (relu > 0).any()
    np.testing.assert_array_equal(out, relu)
    for a, b in [*zip(fused, apart), *zip(runs[0], runs[1])]:
        np.testing.assert_array_equal(a, b)
    if K is None or not compiled or h < 2:  # (batch norm over one unit runs in NumPy)
        return
    # a population's dropout written over the ReLU's output (dropout_over): its scale in the same loop
    over = out.copy()
    drop = F.dropout_over(over, [np.random.default_rng(k) for k in range(K)], [0.5, 1.0, 0.8][:K])
    g2 = g.copy()
    fused = F.batch_norm_grad(g2, xhat, gamma, inv_std, over, drop=drop, overwrite=True)
    assert calls.get("relu_batch_norm_grad_over") == 1 and fused[0] is g2
    dz_relu = F._backprop_activation(g, over, "relu", F.LEAKY_SLOPE, drop=drop)[0]
    for a, b in zip(fused, F.batch_norm_grad(dz_relu, xhat, gamma, inv_std)):
        np.testing.assert_array_equal(a, b)
    fresh = F.batch_norm_grad(g, xhat, gamma, inv_std, over, drop=drop)  # g stays as it was
    assert fresh[0] is not g and calls.get("relu_batch_norm_grad_over") == 2
    for a, b in zip(fresh, fused):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,h", [(3, 16, 8), (2, 9, 5)])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_batch_norm_its_relu_and_the_dropout_above_in_one_call_are_the_passes_apart(monkeypatch, dtype, K, m, h):
    """batch_norm_relu_dropout gives batch_norm_train(relu=True, overwrite=True) and then
    dropout_over on its output: the same output, xhat (over z), inv_std, running estimates,
    kept bools and draws; where the kernels do not run it draws and updates nothing."""
    from caviar import functional as F

    r = np.random.default_rng(K * m * h)
    z = (r.standard_normal((K, m, h)) * 3).astype(dtype)
    gamma, beta = r.uniform(0.5, 2, (K, 1, h)).astype(dtype), r.standard_normal((K, 1, h)).astype(dtype)
    runs = [(r.standard_normal((K, 1, h)).astype(dtype), r.uniform(0.5, 2, (K, 1, h)).astype(dtype))]
    runs.append(tuple(a.copy() for a in runs[0]))
    keep = [0.5, 1.0, 0.8][:K]
    rngs = [[np.random.default_rng(20 + k) for k in range(K)] for _ in range(2)]
    z1 = z.copy()
    out, xhat, inv_std = F.batch_norm_train(z1, gamma, beta, runs[0], 0.9, 1e-5, relu=True, overwrite=True)
    drop = F.dropout_over(out, rngs[0], keep)
    z2 = z.copy()
    calls = spy(monkeypatch)
    got = F.batch_norm_relu_dropout(z2, gamma, beta, runs[1], 0.9, 1e-5, rngs[1], keep)
    assert calls == {"batch_norm_relu_dropout_over": 1} and got[1] is z2
    for a, b in [*zip(got[:3], (out, xhat, inv_std)), *zip(got[3], drop), *zip(*runs)]:
        np.testing.assert_array_equal(a, b)
    assert [q.random() for q in rngs[0]] == [q.random() for q in rngs[1]]
    monkeypatch.setattr(kernels, "ENABLED", False)
    z3, before = z.copy(), tuple(a.copy() for a in runs[1])
    assert F.batch_norm_relu_dropout(z3, gamma, beta, runs[1], 0.9, 1e-5, rngs[1], keep) is None
    np.testing.assert_array_equal(z3, z)
    for a, b in zip(runs[1], before):
        np.testing.assert_array_equal(a, b)
    assert [q.random() for q in rngs[0]] == [q.random() for q in rngs[1]]


def _relu_output_with_specials(r, shape, dtype):
    """A ReLU's output (its zeros, -0.0 kept as it is) with NaN and inf in it."""
    z = r.standard_normal(shape).astype(dtype)
    z.flat[::7] = -0.0
    z.flat[3], z.flat[11], z.flat[19] = np.nan, np.inf, -np.inf
    return np.where((z >= 0) | np.isnan(z), z, dtype(0)).astype(dtype)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,h", [(4, 16, 8), (3, 9, 1), (1, 7, 3)])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_dropout_over_a_relu_gives_the_product_and_the_gradient_of_the_scale(monkeypatch, compiled, dtype, K, m, h):
    """dropout_over writes dropout_mask's product over a ReLU's output with the same draws,
    and the ReLU's gradient from its output and (1/keep, kept) is the one from the ReLU's
    output and the scale, bit for bit: g with NaN, inf and values that overflow times 1/keep."""
    from caviar import functional as F

    monkeypatch.setattr(kernels, "ENABLED", compiled)
    r = np.random.default_rng(K * m + h)
    a = _relu_output_with_specials(r, (K, m, h), dtype)
    keep = [0.5, 0.9, 1.0, 0.77][:K]  # a member of keep 1 draws nothing and keeps every unit
    g = r.standard_normal(a.shape).astype(dtype)
    g.flat[:6] = np.finfo(dtype).max, -np.finfo(dtype).max, np.nan, np.inf, -np.inf, -0.0
    g.flat[-3:] = np.finfo(dtype).max
    rngs = [[np.random.default_rng(k) for k in range(K)] for _ in range(2)]
    out, scale = F.dropout_mask(a, rngs[0], keep)
    over = a.copy()
    calls = spy(monkeypatch)
    drop = F.dropout_over(over, rngs[1], keep)
    if not compiled:  # the kernels do not run: nothing is drawn, nothing written
        assert drop is None and calls == {}
        np.testing.assert_array_equal(over, a)
        return
    assert calls.get("dropout_over") == 1
    np.testing.assert_array_equal(over, out)
    np.testing.assert_array_equal(drop[1], scale != 0)
    assert [q.random() for q in rngs[0]] == [q.random() for q in rngs[1]]  # the same draws were taken
    with np.errstate(over="ignore", invalid="ignore"):
        expected, db = F._backprop_activation(g, a, "relu", F.LEAKY_SLOPE, (K, 1, h), scale=scale)
        got, db2 = F._backprop_activation(g, over, "relu", F.LEAKY_SLOPE, (K, 1, h), drop=drop)
        assert calls.get("relu_grad") == (2 if h >= 2 else None)  # one unit: NumPy sums its db
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(db2, db)
        monkeypatch.setattr(kernels, "ENABLED", False)  # the NumPy code takes the same scale
        np.testing.assert_array_equal(F._backprop_activation(g, over, "relu", F.LEAKY_SLOPE, drop=drop)[0], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,h,bias", [(4, 16, 8, True), (3, 9, 1, True), (2, 7, 3, False)])
def test_a_layer_s_bias_relu_and_the_dropout_above_in_one_pass_are_the_two_passes(monkeypatch, dtype, K, m, h, bias):
    """bias_relu_dropout gives what bias and ReLU, then dropout_over, give one after the other
    (values with NaN, inf and -0.0; the kept bools; the same draws), and where the kernels do
    not run it draws nothing and leaves z as it is."""
    from caviar import functional as F

    r = np.random.default_rng(K * m * h)
    z = r.standard_normal((K, m, h)).astype(dtype)
    z.flat[::5] = -0.0
    z.flat[1], z.flat[2], z.flat[4] = np.nan, np.inf, -np.inf
    b = r.standard_normal((K, 1, h)).astype(dtype) if bias else None
    keep = [0.5, 1.0, 0.8, 0.3][:K]
    rngs = [[np.random.default_rng(10 + k) for k in range(K)] for _ in range(2)]
    apart = F._bias_activate(z.copy(), b, "relu", F.LEAKY_SLOPE)
    drop = F.dropout_over(apart, rngs[0], keep)
    one = z.copy()
    calls = spy(monkeypatch)
    fused = F.bias_relu_dropout(one, b, rngs[1], keep)
    assert calls == {"bias_relu_dropout": 1}
    np.testing.assert_array_equal(one, apart)
    for a, c in zip(fused, drop):
        np.testing.assert_array_equal(a, c)
    assert [q.random() for q in rngs[0]] == [q.random() for q in rngs[1]]
    monkeypatch.setattr(kernels, "ENABLED", False)
    untouched = z.copy()
    assert F.bias_relu_dropout(untouched, b, rngs[1], keep) is None
    np.testing.assert_array_equal(untouched, z)
    assert [q.random() for q in rngs[0]] == [q.random() for q in rngs[1]]  # nothing drawn


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_passes_written_over_their_input_give_its_values(monkeypatch, compiled, dtype):
    """batch norm's forward over Z, its gradient and the ReLU's over g (one array each, which
    the compiler vectorizes) give the values of the passes into new arrays."""
    from caviar import functional as F

    monkeypatch.setattr(kernels, "ENABLED", compiled)
    r = np.random.default_rng(5)
    K, m, h = 3, 16, 8
    z = r.standard_normal((K, m, h)).astype(dtype)
    gamma, beta = r.uniform(0.5, 2, (K, 1, h)).astype(dtype), r.standard_normal((K, 1, h)).astype(dtype)
    g = r.standard_normal(z.shape).astype(dtype)
    runs = [(np.zeros((K, 1, h), dtype), np.ones((K, 1, h), dtype)) for _ in range(2)]
    calls = spy(monkeypatch)
    fresh = F.batch_norm_train(z, gamma, beta, runs[0], 0.9, 1e-5, relu=True)
    z2 = z.copy()
    over = F.batch_norm_train(z2, gamma, beta, runs[1], 0.9, 1e-5, relu=True, overwrite=True)
    assert (over[1] is z2) == compiled and bool(calls.get("batch_norm_over")) == compiled
    for a, b in [*zip(fresh, over), *zip(*runs)]:
        np.testing.assert_array_equal(a, b)
    out, xhat, inv_std = fresh
    expected = F.batch_norm_grad(g, xhat, gamma, inv_std, out)
    g2 = g.copy()
    got = F.batch_norm_grad(g2, xhat, gamma, inv_std, out, overwrite=True)
    assert (got[0] is g2) == compiled and bool(calls.get("relu_batch_norm_grad_over_plain")) == compiled
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    plain = F.batch_norm_grad(g, xhat, gamma, inv_std)  # without the ReLU: over g itself
    g3 = g.copy()
    got = F.batch_norm_grad(g3, xhat, gamma, inv_std, overwrite=True)
    assert (got[0] is g3) == compiled
    for a, b in zip(plain, got):
        np.testing.assert_array_equal(a, b)
    assert bool(calls.get("batch_norm_grad_over")) == compiled


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_population_s_dropout_is_numpy_s_with_each_member_s_keep_prob(monkeypatch, dtype):
    """The compiled mask stream is NumPy's uint64 reference, member by member, and each member's
    mask and product are its solo network's."""
    from caviar import functional as F

    r = np.random.default_rng(0)
    a = r.standard_normal((4, 30, 20)).astype(dtype)
    keep = [0.5, 0.9, 0.77, 1.0]  # the last member has no dropout: it draws nothing
    results = []
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        calls = spy(monkeypatch)
        rngs = [np.random.default_rng(k) for k in range(4)]
        results.append(F.dropout_mask(a, rngs, keep))
        assert bool(calls.get("dropout")) == compiled
        assert rngs[3].bit_generator.state == np.random.default_rng(3).bit_generator.state
        for k in range(3):  # one draw each, the mask's key
            fresh = np.random.default_rng(k)
            fresh.bit_generator.random_raw()
            assert rngs[k].bit_generator.state == fresh.bit_generator.state
        solo = [F.dropout_mask(a[k], [np.random.default_rng(k)], [keep[k]]) for k in range(4)]
        for k in range(4):
            np.testing.assert_array_equal(solo[k][0], results[-1][0][k])
            np.testing.assert_array_equal(solo[k][1], results[-1][1][k])
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(results[0][0][3], a[3])
    for k in range(3):
        assert set(np.unique(results[0][1][k])) == {0, dtype(1 / keep[k])}


def _child_state(queue):
    queue.put((kernels._pool is None, {name: len(f.signatures) for name, f in kernels.kernels().items()}))


def test_a_study_s_forked_workers_start_with_the_kernels_loaded():
    import multiprocessing
    import sys

    from caviar.train.population import load_kernels

    if not sys.platform.startswith("linux"):
        pytest.skip("workers are forked on Linux only")
    load_kernels()
    kernels._halves(lambda: None, [], [])  # the parent now has a thread pool, which a child cannot use
    assert kernels._pool is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_state, args=(queue,))
    child.start()
    no_pool, signatures = queue.get(timeout=60)
    child.join(60)
    assert no_pool
    for name in ("bias_relu_dropout", "relu_grad_over", "batch_norm_relu_dropout_over", "relu_batch_norm_grad_over",
                 "adam"):  # machine code loaded before the fork
        assert signatures[name] >= 1, name


def test_load_kernels_trains_its_populations_once_per_process(monkeypatch):
    from caviar.train import population

    if not kernels.ENABLED or not kernels.kernels():
        pytest.skip("the compiled kernels do not run here")
    population.load_kernels()
    monkeypatch.setattr(population.Population, "fit", lambda *a, **k: pytest.fail("load_kernels trained again"))
    population.load_kernels()  # a second study in the process


def test_the_driver_loads_every_signature_a_default_search_population_runs():
    # in a new interpreter, as a study's driver: after load_kernels, populations of every
    # shape of the default space (1 to 3 hidden layers, with and without batch norm, dropout,
    # L2, Adam, ten classes, a dev set) need no signature their workers would load themselves
    import subprocess
    import sys

    code = """
import json
import numpy as np
from caviar import kernels
from caviar.train.population import Population, load_kernels
load_kernels()
before = {n: len(k.signatures) for n, k in kernels.kernels().items()}
kernels.THREADS = 1
r = np.random.default_rng(0)
X, y = r.standard_normal((256, 64)).astype(np.float32), r.integers(0, 10, 256)
members = [{"seed": i, "keep_prob": 0.7, "l2": 0.01, "lr": 0.001} for i in range(10)]
for layers in (1, 2, 3):
    for batchnorm in (False, True):
        for batch in (32, 128):
            Population([64] + [64] * layers + [10], members, batchnorm=batchnorm).fit(
                X, y, epochs=1, batch_size=batch, validation_data=(X[:100], y[:100]))
after = {n: len(k.signatures) for n, k in kernels.kernels().items()}
print(json.dumps({n: [before[n], after[n]] for n in after if after[n] != before[n]}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


# -- softmax cross-entropy and accuracy ---------------------------------------------------------


def _softmax_head(K, m, C, dtype, seed):
    """Per-example losses and dlogits of softmax cross-entropy with class indices, a
    population's per-member mean losses, and the accuracy, from logits with a NaN row, ties
    and a row of -inf and +inf: every value the head computes."""
    from caviar import functional as F
    from caviar.nn import heads

    r = np.random.default_rng(seed)
    z = (r.standard_normal((K, m, C)) * r.uniform(0.1, 30.0, (K, m, 1))).astype(dtype)
    z[0, 1, C // 2] = np.nan  # a NaN is the row's max, as in NumPy
    z[-1, 2, :] = 3.0  # a tie: argmax takes the first
    z[-1, 3, 0], z[-1, 3, -1] = -np.inf, np.inf
    y = r.integers(0, C, m)
    own = r.integers(0, C, (K, m))  # each member's own labels (the kernels' (K, m) form; shared ones are (1, m))
    head = heads.get("softmax")
    logits = Tensor(z if K > 1 else z[0], requires_grad=True)
    with np.errstate(invalid="ignore"):  # inf - inf, as the training loop lets it be
        losses = F.softmax_cross_entropy(logits, np.broadcast_to(y, logits.shape[:-1]), reduction="none")
        dlogits = losses._backward(np.full(losses.shape, 1 / m, dtype))[0]
        mean_losses, dz = head.member_loss_grads(z, y)  # the tape-free step's head
        own_losses, own_dz = F.class_cross_entropy_data(z, own, True)
        return [losses.data, dlogits, head.member_losses(Tensor(z), y).data, np.asarray(head.primary(logits.data, y)),
                mean_losses, dz, own_losses, own_dz]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,m,C", [(1, 70, 10), (32, 64, 10), (3, 40, 2), (4, 33, 128), (2, 17, 100), (5, 9, 7),
                                   (2, 64, 8), (3, 12, 17)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.usefixtures("kernels_at_every_size")
def test_softmax_cross_entropy_kernels_give_the_numpy_values(monkeypatch, dtype, K, m, C, threads):
    # rows shorter than NumPy's 8-term block of its pairwise sums, and longer, up to 128 terms
    monkeypatch.setattr(kernels, "SPLIT", 1)
    monkeypatch.setattr(kernels, "THREADS", threads)
    calls = spy(monkeypatch)
    compiled = _softmax_head(K, m, C, dtype, seed=K * m * C)
    assert {"softmax_shift", "row_sums", "softmax_log_p", "minus_one_at", "hits"} <= set(calls)
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = _softmax_head(K, m, C, dtype, seed=K * m * C)
    names = ("losses", "dlogits", "member losses", "accuracy", "step's losses", "step's dZ", "own labels' losses",
             "own labels' dZ")
    assert len(compiled) == len(names)
    for name, a, b in zip(names, compiled, reference):
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.isnan(compiled[0][1] if K == 1 else compiled[0][0, 1])  # the NaN row's loss stayed NaN


def test_a_population_with_the_softmax_kernels_equals_its_members_solo_runs():
    # the population's logits are large enough for the kernels, each member's alone are not:
    # the member still equals its solo run bit for bit, its accuracy per mini-batch too
    ds = D.load("digits")
    X, y = ds.X[:300].astype(np.float32) / 16, ds.y[:300]
    members = [{"seed": s, "lr": 0.003 * (s + 1), "l2": 0.01 * s} for s in range(8)]
    assert kernels.usable(np.zeros((8, 64, 10), np.float32)) and not kernels.usable(np.zeros((64, 10), np.float32))
    pop = Population([64, 16, 10], members)
    histories = pop.fit(X, y, epochs=3, batch_size=64, shuffle_seed=5)
    for number in (0, 5):
        solo = caviar.Network([64, 16, 10], l2=members[number]["l2"], seed=members[number]["seed"])
        history = caviar.fit(solo, X, y, optimizer="adam", lr=members[number]["lr"], epochs=3, batch_size=64,
                             seed=members[number]["seed"], shuffle_seed=5)
        assert history.iterations == histories[number].iterations
        assert [e["train_accuracy"] for e in history.epochs] == [e["train_accuracy"] for e in histories[number].epochs]
        for name, p in solo.params.items():
            np.testing.assert_array_equal(pop.network(number).params[name].data, p.data, err_msg=name)


@pytest.mark.usefixtures("kernels_at_every_size")
def test_softmax_rows_longer_than_a_pairwise_block_go_through_numpy(monkeypatch):
    from caviar import functional as F

    calls = spy(monkeypatch)
    z = np.random.default_rng(0).standard_normal((3, 20, kernels.ROW_BLOCK + 1)).astype(np.float32)
    F.softmax_cross_entropy(Tensor(z, requires_grad=True), np.zeros((3, 20), np.int64), reduction="none")
    assert "row_sums" not in calls and "softmax_shift" not in calls
    F.softmax_cross_entropy(Tensor(np.ascontiguousarray(z[..., :-1]), requires_grad=True), np.zeros((3, 20), np.int64), reduction="none")
    assert calls["row_sums"] == 1


def test_a_single_network_s_logits_go_through_the_softmax_kernels(monkeypatch):
    # from kernels.LOGITS_MIN_SIZE on (a batch of 64 x 10 classes), with the NumPy values
    from caviar import functional as F

    r = np.random.default_rng(3)
    z, y = r.standard_normal((64, 10)).astype(np.float32), r.integers(0, 10, 64)
    values = {}
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        calls = spy(monkeypatch)
        logits = Tensor(z, requires_grad=True)
        F.softmax_cross_entropy(logits, y).backward()
        values[compiled] = (logits.grad, HEADS["softmax"].primary(z, y))
        assert bool(calls.get("softmax_shift")) == bool(calls.get("hits")) == compiled
    np.testing.assert_array_equal(values[True][0], values[False][0])
    assert values[True][1] == values[False][1]
