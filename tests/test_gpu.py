"""The cupy backend: networks, populations, searches and the command line on a GPU.

Run where CuPy finds a CUDA device (``python -m pytest tests/test_gpu.py``); skipped elsewhere,
CI's machine included. On a GPU, a population's forward pass is one batched matrix product
where a network trained alone does one product, and cuBLAS may sum in another order: members
then agree with their solo runs to rounding, not bit for bit as on the CPU.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    HAS_DEVICE = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # CuPy installed, no driver or no device
    HAS_DEVICE = False
pytestmark = pytest.mark.skipif(not HAS_DEVICE, reason="no CUDA device")

import caviar  # noqa: E402
from caviar import backend  # noqa: E402
from caviar import data as D  # noqa: E402
from caviar.train.population import available_memory  # noqa: E402

# the CPU equivalence tests' data, members and training, run here on the GPU
from test_population import MEMBERS, X, Y, population, solo  # noqa: E402

# float64 members agree with their solo runs to rounding of reordered sums; float32 ones to the
# same tolerance as the CPU's float32 equivalence test
TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}


@pytest.fixture
def gpu():
    before = os.environ.get("CAVIAR_BACKEND")
    backend.use("cupy")
    yield
    backend.use("numpy")
    if before is None:
        os.environ.pop("CAVIAR_BACKEND", None)
    else:
        os.environ["CAVIAR_BACKEND"] = before


def host(a):
    return backend.to_numpy(a)


def test_a_network_starts_from_the_same_weights_and_trains_to_the_same_result_as_on_the_cpu(gpu):
    def train():
        net = caviar.Network([4, 8, 3], seed=3, dtype="float64")
        caviar.fit(net, X, Y, optimizer="adam", lr=0.01, epochs=5, batch_size=16, seed=3, verbose=False)
        return net, net.evaluate(X, Y)

    on_gpu, gpu_eval = train()
    assert isinstance(on_gpu.params["W1"].data, cupy.ndarray)
    backend.use("numpy")
    on_cpu, cpu_eval = train()
    for name, p in on_cpu.params.items():
        np.testing.assert_allclose(host(on_gpu.params[name].data), p.data, **TOLERANCE["float64"], err_msg=name)
    assert gpu_eval["accuracy"] == cpu_eval["accuracy"]
    assert gpu_eval["cost"] == pytest.approx(cpu_eval["cost"], rel=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batchnorm,dropout", [(False, False), (True, True)])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
def test_every_member_equals_its_solo_run_on_the_gpu(gpu, optimizer, batchnorm, dropout, dtype):
    pop, histories = population(MEMBERS, optimizer, batchnorm, dropout, dtype)
    for i, member in enumerate(MEMBERS):
        net, history = solo(member, optimizer, batchnorm, dropout, dtype)
        status, trained, _ = pop.results[i]
        assert status == "complete"
        for name, p in net.params.items():
            np.testing.assert_allclose(host(trained.params[name].data), host(p.data), **TOLERANCE[dtype], err_msg=name)
        np.testing.assert_allclose(histories[i].iterations, history.iterations, rtol=TOLERANCE[dtype]["rtol"])


def test_a_member_that_keeps_every_unit_keeps_them_beside_members_that_drop_on_the_gpu(gpu, monkeypatch):
    from caviar import functional as F

    a = cupy.ones((3, 16, 6))

    def leftovers(shape, dtype=float):  # memory handed out with values no draw is under, as empty's may be
        out = cupy.ndarray(shape, dtype)
        out.fill(5.0)
        return out

    monkeypatch.setattr(cupy, "empty", leftovers)
    _, scale = F.dropout_mask(a, [backend.rng(s) for s in (10, 11, 12)], [1.0, 0.8, 0.6])
    monkeypatch.undo()
    assert bool((scale[0] == 1).all())
    for k, (seed, keep) in enumerate(((11, 0.8), (12, 0.6)), start=1):  # the others' masks are their solo ones
        _, alone = F.dropout_mask(cupy.ones((16, 6)), [backend.rng(seed)], [keep])
        assert bool((scale[k] == alone).all()) and 0 < int((alone == 0).sum()) < alone.size


def test_a_diverging_member_is_frozen_on_the_gpu_and_the_others_train_on(gpu):
    pop, _ = population([MEMBERS[0], dict(MEMBERS[1], lr=1e4), MEMBERS[2]], "gd", False, True, "float32", epochs=4)
    status, net, history = pop.results[1]
    assert status == "diverged" and history.events[-1]["event"] == "diverged"
    assert all(bool(cupy.isfinite(p.data).all()) for p in net.parameters())
    assert [pop.results[i][0] for i in (0, 2)] == ["complete", "complete"]


def test_augmentation_is_refused_on_the_gpu_with_a_clear_error(gpu):
    digits = D.load("digits")
    net = caviar.Network([64, 16, 10], seed=0)
    augment = D.Augmenter((8, 8), ["rotate"])
    with pytest.raises(ValueError, match="augmentation works on NumPy arrays"):
        caviar.fit(net, digits.X[:100], digits.y[:100], epochs=1, augment=augment, verbose=False)


def test_the_population_memory_limit_reads_the_gpu_s_free_memory(gpu):
    free, total = cupy.cuda.runtime.memGetInfo()
    assert 0 < available_memory() <= total


def test_a_search_gives_the_same_trials_with_and_without_populations_on_the_gpu(gpu, tmp_path):
    from caviar.tune import tune

    quiet = dict(log=lambda line: None, workers=2)
    a = tune(data="iris", trials=8, epochs=4, group_size=4, population=True, study=tmp_path / "a.sqlite", **quiet)
    b = tune(data="iris", trials=8, epochs=4, group_size=4, population=False, study=tmp_path / "b.sqlite", **quiet)
    ta, tb = a.trials(), b.trials()
    assert [t["status"] for t in ta] == ["complete"] * 8 and [t["status"] for t in tb] == ["complete"] * 8
    assert [t["params"] for t in ta] == [t["params"] for t in tb]
    n_dev = round(0.2 * len(Y))  # the notes' 60/20/20 split
    for x, y in zip(ta, tb):  # float32 sums in another order may flip one near-tie prediction, no more
        assert abs(x["value"] - y["value"]) <= 1 / n_dev + 1e-12, (x["params"], x["value"], y["value"])


def test_the_command_line_trains_and_predicts_on_the_gpu(tmp_path):
    env = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}

    def caviar_cli(*args):
        done = subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    report = json.loads(caviar_cli("train", "--backend", "cupy", "--epochs", "10", "--json", "--out", tmp_path / "run"))
    assert report["test"]["accuracy"] > 0.9
    rows = {}
    for name in ("cupy", "numpy"):  # the model file holds NumPy arrays: either backend reads it
        out = tmp_path / f"{name}.csv"
        caviar_cli("predict", "--backend", name, "--model", report["model"], "--data", "digits", "--out", out)
        rows[name] = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert len(rows["cupy"]) == len(D.load("digits").y)
    agree = sum(a == b for a, b in zip(rows["cupy"], rows["numpy"]))
    assert agree >= len(rows["cupy"]) - 2  # the same weights; rounding may flip a near-tie or two


def test_early_stopping_keeps_each_member_s_best_epoch_on_the_gpu(gpu):
    from caviar.train import EarlyStopping
    from caviar.train.population import Population

    members = [dict(m, keep_prob=1.0, decay_rate=0.0, lr=lr) for m, lr in zip(MEMBERS, (0.3, 0.05, 0.01))]
    data = dict(validation_data=(X[1::2], Y[1::2]), shuffle_seed=5)
    pop = Population([4, 6, 3], members, dtype="float64")
    histories = pop.fit(X[::2], Y[::2], epochs=30, batch_size=16, callbacks=[EarlyStopping(patience=2)], **data)
    for i, member in enumerate(members):
        net = caviar.Network([4, 6, 3], l2=member["l2"], init_scale=member["init_scale"], seed=member["seed"], dtype="float64")
        history = caviar.fit(net, X[::2], Y[::2], lr=member["lr"], epochs=30, batch_size=16, seed=member["seed"],
                             beta1=member["beta1"], beta2=member["beta2"], epsilon=member["epsilon"], verbose=False,
                             callbacks=[EarlyStopping(patience=2)], **data)
        assert histories[i].best_epoch == history.best_epoch and len(histories[i]) == len(history)
        for name, p in net.params.items():
            np.testing.assert_allclose(host(pop.results[i][1].params[name].data), host(p.data), **TOLERANCE["float64"])
