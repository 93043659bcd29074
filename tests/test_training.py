"""The training loop: against torch.nn, the notes' behaviours on their toy problems, callbacks,
divergence, model files, determinism."""

import os

import numpy as np
import pytest
from sklearn.datasets import make_circles, make_moons

import caviar
from caviar.train import Checkpoint, EarlyStopping, LambdaCallback, ModelFileError

torch = pytest.importorskip("torch")


def moons(m=400, noise=0.2, seed=0):
    X, y = make_moons(n_samples=m, noise=noise, random_state=seed)
    return X.astype(np.float32), y


def torch_twin(net):
    """The equivalent torch.nn model with the same initial weights (float64)."""
    modules = []
    sizes = net.config["layer_sizes"]
    for l in range(1, len(sizes)):
        hidden = l < len(sizes) - 1
        lin = torch.nn.Linear(sizes[l - 1], sizes[l], bias=f"b{l}" in net.params, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(net.params[f"W{l}"].data.T))
            if lin.bias is not None:
                lin.bias.copy_(torch.tensor(net.params[f"b{l}"].data))
        modules.append(lin)
        if hidden and net.config["batchnorm"]:
            modules.append(torch.nn.BatchNorm1d(sizes[l], momentum=0.1, eps=1e-5, dtype=torch.float64))
        if hidden:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_training_matches_torch_nn_step_for_step(batchnorm):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    y = rng.integers(0, 3, size=20)
    net = caviar.Network([4, 8, 6, 3], batchnorm=batchnorm, seed=0, dtype="float64")
    model = torch_twin(net)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):  # epochs, batches in order (no shuffle), last partial batch of 4 kept
        for i in range(0, 20, 8):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.tensor(X[i : i + 8])), torch.tensor(y[i : i + 8])).backward()
            opt.step()
    caviar.fit(net, X, y, optimizer="adam", lr=0.01, epochs=3, batch_size=8, shuffle=False, verbose=False)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for l, lin in enumerate(linears, start=1):
        np.testing.assert_allclose(net.params[f"W{l}"].data, lin.weight.detach().numpy().T, rtol=1e-9, atol=1e-11)
    if batchnorm:
        bns = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
        for l, bn in enumerate(bns, start=1):
            np.testing.assert_allclose(net.params[f"gamma{l}"].data, bn.weight.detach().numpy(), rtol=1e-9)
            np.testing.assert_allclose(net.buffers[f"running_mean{l}"], bn.running_mean.numpy(), rtol=1e-9, atol=1e-12)


# -- the notes' behaviours on their toy problems -----------------------------------------


def test_zeros_init_does_not_break_symmetry():
    X, y = moons()
    net = caviar.Network([2, 10, 10, 2], activation="tanh", init="zeros", seed=0)
    caviar.fit(net, X, y, lr=0.01, epochs=30, verbose=False)
    W1, W2 = net.params["W1"].data, net.params["W2"].data
    np.testing.assert_array_equal(W1, W1[:, :1].repeat(10, axis=1))  # every hidden unit identical
    np.testing.assert_array_equal(W2, W2[:1, :1].repeat(10, axis=0).repeat(10, axis=1))
    assert abs(net.evaluate(X, y)["accuracy"] - 0.5) < 0.05  # chance


def test_he_init_trains_well_on_moons_and_circles():
    X, y = moons()
    net = caviar.Network([2, 16, 16, 2], init="he", seed=0)
    caviar.fit(net, X, y, lr=0.01, epochs=60, verbose=False, seed=0)
    assert net.evaluate(X, y)["accuracy"] > 0.95
    Xc, yc = make_circles(n_samples=400, noise=0.05, factor=0.5, random_state=0)
    net = caviar.Network([2, 16, 16, 2], init="he", seed=0)
    caviar.fit(net, Xc, yc, lr=0.01, epochs=80, verbose=False, seed=0)
    assert net.evaluate(Xc, yc)["accuracy"] > 0.95


def _overfit(**kwargs):
    X, y = moons(m=200, noise=0.35, seed=1)
    net = caviar.Network([2, 64, 64, 2], seed=0, **kwargs)
    caviar.fit(net, X, y, lr=0.01, epochs=150, batch_size=64, verbose=False, seed=0)
    return net.evaluate(X, y)["accuracy"]


def test_large_l2_and_low_keep_prob_smooth_the_boundary():
    plain = _overfit()
    assert plain > 0.9
    assert _overfit(l2=20.0) < plain - 0.03
    assert _overfit(keep_prob=0.3) < plain - 0.01


def test_adam_beats_plain_gradient_descent_at_the_same_small_learning_rate():
    X, y = moons()
    scores = {}
    for name in ("gd", "adam"):
        net = caviar.Network([2, 16, 16, 2], seed=0)
        caviar.fit(net, X, y, optimizer=name, lr=0.001, epochs=100, batch_size=32, verbose=False, seed=0)
        scores[name] = net.evaluate(X, y)["accuracy"]
    assert scores["adam"] > scores["gd"] + 0.05, scores


# -- history and callbacks -------------------------------------------------------------------


def test_history_records_every_iteration_and_epoch():
    X, y = moons(m=100)
    net = caviar.Network([2, 8, 2], seed=0)
    h = caviar.fit(net, X, y, epochs=3, batch_size=32, validation_data=(X[:20], y[:20]), verbose=False)
    assert len(h.iterations) == 3 * 4  # 32 + 32 + 32 + 4
    assert len(h) == 3 and h["epoch"] == [1, 2, 3]
    for key in ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "lr"):
        assert len(h[key]) == 3
    assert h["dev_accuracy"][-1] == net.evaluate(X[:20], y[:20])["accuracy"]
    with pytest.raises(KeyError, match="dev_mse"):
        h["dev_mse"]


def test_early_stopping_restores_the_best_weights():
    X, y = moons(m=120, noise=0.4, seed=3)
    Xd, yd = moons(m=200, noise=0.4, seed=4)
    net = caviar.Network([2, 128, 128, 2], seed=0)
    seen = {}
    record = LambdaCallback(on_epoch_end=lambda run, epoch, logs: seen.__setitem__(epoch, run.net.params["W2"].data.copy()))
    stop = EarlyStopping(patience=3, monitor="dev_cost")
    h = caviar.fit(net, X, y, lr=0.01, epochs=300, batch_size=16, validation_data=(Xd, yd), callbacks=[record, stop], verbose=False, seed=0)
    assert h.stopped_epoch is not None and h.stopped_epoch < 300
    assert h.best_epoch == int(np.argmin(h["dev_cost"])) + 1
    assert h.stopped_epoch == h.best_epoch + 4  # patience 3: the fourth worse epoch stops
    np.testing.assert_array_equal(net.params["W2"].data, seen[h.best_epoch])
    assert net.evaluate(Xd, yd)["cost"] == pytest.approx(min(h["dev_cost"]), rel=1e-6)


def test_early_stopping_on_accuracy_and_without_dev_data():
    X, y = moons(m=100)
    net = caviar.Network([2, 8, 2], seed=0)
    h = caviar.fit(net, X, y, epochs=5, validation_data=(X, y), callbacks=[EarlyStopping(2, monitor="dev_accuracy")], verbose=False)
    assert h.best_epoch == int(np.argmax(h["dev_accuracy"])) + 1
    with pytest.raises(ValueError, match="validation_data"):
        caviar.fit(net, X, y, epochs=1, callbacks=[EarlyStopping(2)], verbose=False)


def test_checkpoint_every_n_epochs(tmp_path):
    X, y = moons(m=100)
    net = caviar.Network([2, 8, 2], seed=0)
    seen = {}
    record = LambdaCallback(on_epoch_end=lambda run, epoch, logs: seen.__setitem__(epoch, run.net.params["W1"].data.copy()))
    ckpt = Checkpoint(tmp_path / "ckpt", every=2)
    caviar.fit(net, X, y, epochs=5, callbacks=[record, ckpt], verbose=False)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch-0002", "epoch-0004"]
    np.testing.assert_array_equal(caviar.load(tmp_path / "ckpt" / "epoch-0002").params["W1"].data, seen[2])


def test_schedule_sets_the_learning_rate_every_epoch():
    X, y = moons(m=64)
    net = caviar.Network([2, 8, 2], seed=0)
    h = caviar.fit(net, X, y, optimizer="gd", lr=0.2, epochs=4, schedule="inverse-time:1.0", verbose=False)
    np.testing.assert_allclose(h["lr"], [0.1, 0.2 / 3, 0.05, 0.04])
    net2 = caviar.Network([2, 8, 2], seed=0)
    h2 = caviar.fit(net2, X, y, lr=0.01, epochs=3, schedule={1: 0.01, 3: 0.001}, verbose=False)
    np.testing.assert_allclose(h2["lr"], [0.01, 0.01, 0.001])


def test_user_callback_hooks_are_called():
    X, y = moons(m=50)
    calls = []
    cb = LambdaCallback(on_train_begin=lambda run: calls.append("begin"),
                        on_epoch_begin=lambda run, e: calls.append(f"epoch{e}"),
                        on_batch_end=lambda run, it, cost: calls.append("batch"),
                        on_epoch_end=lambda run, e, logs: calls.append("end"),
                        on_train_end=lambda run: calls.append("done"))
    caviar.fit(caviar.Network([2, 4, 2]), X, y, epochs=2, batch_size=25, callbacks=[cb], verbose=False)
    assert calls == ["begin", "epoch1", "batch", "batch", "end", "epoch2", "batch", "batch", "end", "done"]
    with pytest.raises(ValueError, match="unknown hooks"):
        LambdaCallback(on_step=print)


def test_a_callback_can_stop_training():
    X, y = moons(m=50)
    stopper = LambdaCallback(on_batch_end=lambda run, it, cost: setattr(run, "stop", it >= 3))
    h = caviar.fit(caviar.Network([2, 4, 2]), X, y, epochs=10, batch_size=10, callbacks=[stopper], verbose=False)
    assert len(h.iterations) == 3


def test_progress_bar_shows_cost_and_dev_metric_and_is_silent_when_not_verbose(capsys):
    X, y = moons(m=64)
    caviar.fit(caviar.Network([2, 4, 2]), X, y, epochs=2, validation_data=(X, y), verbose=True)
    err = capsys.readouterr().err
    assert "epoch=2/2" in err and "dev_accuracy" in err
    caviar.fit(caviar.Network([2, 4, 2]), X, y, epochs=2, verbose=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# -- divergence ------------------------------------------------------------------------------


def test_divergence_raises_a_clear_error_and_keeps_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32) * 10
    y = X @ np.array([1.0, -2.0, 3.0], dtype=np.float32)
    net = caviar.Network([3, 16, 1], output="linear", seed=0)
    with pytest.raises(caviar.DivergedError, match=r"diverged at iteration \d+.*smaller learning rate") as info:
        caviar.fit(net, X, y, optimizer="gd", lr=10.0, epochs=50, verbose=False)
    assert info.value.iteration >= 1
    assert all(np.isfinite(p.data).all() for p in net.parameters())
    assert info.value.history.events[-1]["event"] == "diverged"


# -- model files, resuming, determinism ------------------------------------------------------


def test_save_and_load_round_trip_predictions(tmp_path):
    X, y = moons(m=80)
    net = caviar.Network([2, 8, 8, 2], batchnorm=True, seed=0)
    caviar.fit(net, X, y, epochs=3, verbose=False)
    caviar.save(net, tmp_path / "model")
    assert sorted(os.listdir(tmp_path / "model")) == ["arrays.npz", "model.json"]
    loaded = caviar.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    assert loaded.config == net.config and loaded.train_state.epochs_trained == 3
    assert len(loaded.train_state.history) == 3


def test_a_loaded_model_continues_training_exactly(tmp_path):
    X, y = moons(m=90)
    kwargs = dict(batchnorm=True, keep_prob=0.8, seed=0)
    straight = caviar.Network([2, 12, 8, 2], **kwargs)
    h_straight = caviar.fit(straight, X, y, optimizer="adam", lr=0.01, epochs=4, batch_size=16, verbose=False, seed=1)

    first = caviar.Network([2, 12, 8, 2], **kwargs)
    caviar.fit(first, X, y, optimizer="adam", lr=0.01, epochs=2, batch_size=16, verbose=False, seed=1)
    caviar.save(first, tmp_path / "half")
    resumed = caviar.load(tmp_path / "half")
    h_resumed = caviar.fit(resumed, X, y, epochs=2, batch_size=16, verbose=False)

    half = len(h_straight.iterations) // 2
    assert h_resumed.iterations == h_straight.iterations[half:]  # the same next costs, exactly
    for k, p in straight.params.items():
        np.testing.assert_array_equal(resumed.params[k].data, p.data)
    assert resumed.train_state.history["epoch"] == [1, 2, 3, 4]


def test_a_model_file_without_a_generator_state_loads_and_trains(tmp_path):
    """A model trained on a GPU stores no dropout-generator state (it lives on the device)."""
    import json

    X, y = moons(m=60)
    net = caviar.Network([2, 8, 2], keep_prob=0.8, seed=0)
    caviar.fit(net, X, y, epochs=2, batch_size=16, verbose=False)
    caviar.save(net, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["rng_state"] is not None  # the CPU's generator state is stored
    meta["rng_state"] = None
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    loaded = caviar.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    assert len(caviar.fit(loaded, X, y, epochs=1, batch_size=16, verbose=False).iterations) == 4


def test_the_same_seed_gives_bit_identical_training():
    X, y = moons(m=100)
    runs = []
    for _ in range(2):
        net = caviar.Network([2, 16, 8, 2], keep_prob=0.7, batchnorm=True, seed=5)
        h = caviar.fit(net, X, y, epochs=3, batch_size=16, verbose=False, seed=9)
        runs.append((net, h))
    (a, ha), (b, hb) = runs
    assert ha.iterations == hb.iterations
    for k in a.params:
        np.testing.assert_array_equal(a.params[k].data, b.params[k].data)
    other = caviar.Network([2, 16, 8, 2], keep_prob=0.7, batchnorm=True, seed=5)
    assert caviar.fit(other, X, y, epochs=3, batch_size=16, verbose=False, seed=10).iterations != ha.iterations


def test_model_files_are_loaded_without_pickle(tmp_path):
    net = caviar.Network([2, 3, 2], seed=0)
    caviar.save(net, tmp_path / "m")
    np.savez(tmp_path / "m" / "arrays.npz", **{"param:W1": np.array([object()], dtype=object)})
    with pytest.raises(ModelFileError, match="cannot be read safely"):
        caviar.load(tmp_path / "m")
    with pytest.raises(ModelFileError, match="no model directory"):
        caviar.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="has no model.json"):
        caviar.load(tmp_path / "empty")
