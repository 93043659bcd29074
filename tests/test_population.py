"""Caviar training: a population of models in one vectorized computation, each member the same
as the network trained alone."""

import numpy as np
import pytest

import caviar
from caviar import data as D
from caviar.train import Ensemble
from caviar.train import population as P
from caviar.train.population import Population

IRIS = D.load("iris")
X = D.Normalizer().fit_transform(IRIS.X)
Y = IRIS.y

MEMBERS = [
    dict(seed=10, lr=0.05, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0, keep_prob=1.0, init_scale=1.0, decay_rate=0.0),
    dict(seed=11, lr=0.01, beta1=0.8, beta2=0.99, epsilon=1e-7, l2=0.1, keep_prob=0.8, init_scale=0.5, decay_rate=0.1),
    dict(seed=12, lr=0.003, beta1=0.95, beta2=0.9999, epsilon=1e-6, l2=0.5, keep_prob=0.6, init_scale=2.0, decay_rate=0.5),
]


def solo(member, optimizer, batchnorm, dropout, dtype, epochs=3, sizes=(4, 6, 5, 3)):
    """The member's configuration trained alone with the population's batch order."""
    net = caviar.Network(list(sizes), batchnorm=batchnorm, keep_prob=member["keep_prob"] if dropout else 1.0,
                         l2=member["l2"], init_scale=member["init_scale"], seed=member["seed"], dtype=dtype)
    options = {"adam": dict(beta1=member["beta1"], beta2=member["beta2"], epsilon=member["epsilon"]),
               "rmsprop": dict(beta2=member["beta2"], epsilon=member["epsilon"]),
               "momentum": dict(beta=member["beta1"]), "gd": {}}[optimizer]
    schedule = caviar.schedules.InverseTime(decay_rate=member["decay_rate"]) if member["decay_rate"] else None
    history = caviar.fit(net, X, Y, optimizer=optimizer, lr=member["lr"], epochs=epochs, batch_size=16, schedule=schedule,
                      validation_data=(X, Y), seed=member["seed"], shuffle_seed=5, verbose=False, **options)
    return net, history


def population(members, optimizer, batchnorm, dropout, dtype, epochs=3, sizes=(4, 6, 5, 3), on_epoch=None):
    members = [dict(m, keep_prob=m["keep_prob"] if dropout else 1.0) for m in members]
    pop = Population(list(sizes), members, optimizer=optimizer, batchnorm=batchnorm, dtype=dtype)
    histories = pop.fit(X, Y, epochs=epochs, batch_size=16, validation_data=(X, Y), shuffle_seed=5, on_epoch=on_epoch)
    return pop, histories


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batchnorm,dropout", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
def test_every_member_equals_its_solo_run(optimizer, batchnorm, dropout, dtype):
    pop, histories = population(MEMBERS, optimizer, batchnorm, dropout, dtype)
    for i, member in enumerate(MEMBERS):
        net, history = solo(member, optimizer, batchnorm, dropout, dtype)
        status, trained, _ = pop.results[i]
        assert status == "complete"
        assert trained.config == net.config  # built without initial draws, it still names the init
        for name, p in net.params.items():
            if dtype == "float64":  # exact where the operations allow: here they all do
                np.testing.assert_array_equal(trained.params[name].data, p.data, err_msg=name)
            else:
                np.testing.assert_allclose(trained.params[name].data, p.data, rtol=1e-5, atol=1e-6, err_msg=name)
        for name, b in net.buffers.items():
            np.testing.assert_allclose(trained.buffers[name], b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(histories[i].iterations, history.iterations, rtol=1e-5)
        assert [e["dev_accuracy"] for e in histories[i].epochs] == history["dev_accuracy"]
        assert [e["lr"] for e in histories[i].epochs] == pytest.approx(history["lr"])


def test_one_diverging_member_leaves_the_others_bit_identical():
    diverging = dict(MEMBERS[1], lr=1e4)
    with_it, _ = population([MEMBERS[0], diverging, MEMBERS[2]], "gd", False, True, "float32", epochs=4)
    without, _ = population([MEMBERS[0], MEMBERS[2]], "gd", False, True, "float32", epochs=4)
    status, net, history = with_it.results[1]
    assert status == "diverged" and history.events[-1]["event"] == "diverged"
    assert all(np.isfinite(p.data).all() for p in net.parameters())  # frozen before the bad update
    for a, b in ((0, 0), (2, 1)):
        for name, p in without.results[b][1].params.items():
            np.testing.assert_array_equal(with_it.results[a][1].params[name].data, p.data, err_msg=name)
        assert with_it.results[a][2].iterations == without.results[b][2].iterations


def test_members_stopped_early_leave_and_the_population_shrinks():
    sizes = []

    def stop_first_after_two(epoch, rows):
        sizes.append(len(rows))
        return [0] if epoch == 2 else []

    pop, histories = population(MEMBERS, "adam", False, False, "float64", epochs=4, on_epoch=stop_first_after_two)
    assert sizes == [3, 3, 2, 2] and pop.size == 0
    assert len(histories[0].epochs) == 2 and len(histories[1].epochs) == 4
    early, _ = solo(MEMBERS[0], "adam", False, False, "float64", epochs=2)
    late, _ = solo(MEMBERS[1], "adam", False, False, "float64", epochs=4)
    np.testing.assert_array_equal(pop.results[0][1].params["W1"].data, early.params["W1"].data)
    np.testing.assert_array_equal(pop.results[1][1].params["W3"].data, late.params["W3"].data)


def test_population_cost_passes_a_gradient_check():
    no_dropout = [dict(m, keep_prob=1.0) for m in MEMBERS]
    pop = Population([4, 5, 3], no_dropout, batchnorm=True, dtype="float64")
    result = caviar.gradient_check(lambda: pop.cost(X[:12], Y[:12], training=True)[0], pop.net.params)
    assert result.difference < 1e-7, str(result)
    with_dropout = Population([4, 5, 3], MEMBERS, dtype="float64")
    with pytest.raises(caviar.GradientCheckError, match="keep_prob=0.6"):
        caviar.gradient_check(lambda: with_dropout.cost(X[:12], Y[:12], training=True)[0], with_dropout.net.params)


def test_bad_members_are_refused_with_the_member_named():
    with pytest.raises(ValueError, match="unknown settings"):
        Population([4, 3, 3], [dict(seed=0, momentum=0.9)])
    with pytest.raises(ValueError, match=r"keep_prob must be in \(0, 1\], got 1.5"):
        Population([4, 3, 3], [dict(seed=0), dict(seed=1, keep_prob=1.5)])
    with pytest.raises(ValueError, match="at least one member"):
        Population([4, 3, 3], [])


def test_memory_bound_splits_a_large_population(monkeypatch):
    per = P.bytes_per_member([64, 128, 10], 64)
    monkeypatch.setattr(P, "available_memory", lambda: per * 20)
    assert P.max_population([64, 128, 10], 64) == 10  # half of the free memory
    assert P.max_population([64, 128, 10], 64, limit=4) == 4
    assert [len(c) for c in P.chunks(list(range(25)), 10)] == [10, 10, 5]


def test_tune_plans_populations_within_the_limits():
    from caviar.tune.runner import plan

    ds = D.load("iris")
    trials = [{"number": i, "budget": 5, "params": {"hidden_units": 8 if i < 6 else 16, "lr": 0.01 * (i + 1)}}
              for i in range(9)]
    jobs = plan(trials, ds, population=True, max_population=4, workers=1)
    assert sorted(len(j) for j in jobs) == [2, 3, 4]  # 6 of one shape (4 + 2), 3 of another
    assert plan(trials, ds, population=False) == [[6], [7], [8], [0], [1], [2], [3], [4], [5]]  # the wider first
    assert max(len(j) for j in plan(trials, ds, population=True, workers=3)) == 3  # work for every worker


def test_tune_starts_the_longest_jobs_first():
    """Jobs go out longest first (job_cost: members x epochs x work per example and per step),
    so a worker does not start a long population while the others run out of work."""
    from caviar.tune.runner import job_cost, plan

    ds = D.load("digits")
    shapes = [(64, 2, 64), (256, 2, 128), (64, 3, 32), (128, 3, 64)]  # the default search's four groups,
    trials = [{"number": i, "budget": 10, "params": {"hidden_units": h, "layers": n, "batch_size": b}}  # smallest
              for i, (h, n, b) in enumerate(s for s in shapes for _ in range(10))]  # first
    jobs = plan(trials, ds, population=True, workers=2)
    assert [j[0] // 10 for j in jobs] == [1, 3, 2, 0]  # as their times on a 2-core VM: 0.62, 0.35, 0.25, 0.10 s
    costs = [job_cost([trials[n] for n in j], ds) for j in jobs]
    assert costs == sorted(costs, reverse=True)
    half = [{**t, "budget": 5} for t in trials[10:20]]
    assert job_cost(half, ds) == job_cost(trials[10:20], ds) / 2


def test_tune_gives_the_same_results_with_and_without_populations(tmp_path):
    from caviar.tune import tune

    quiet = dict(log=lambda line: None, workers=1)
    a = tune(data="iris", trials=8, epochs=4, group_size=4, population=True, study=tmp_path / "a.sqlite", **quiet)
    b = tune(data="iris", trials=8, epochs=4, group_size=4, population=False, study=tmp_path / "b.sqlite", **quiet)
    ta, tb = a.trials(), b.trials()
    assert [t["params"] for t in ta] == [t["params"] for t in tb]
    assert len({repr(t["params"]["hidden_units"]) for t in ta}) <= 2  # two groups of four share a shape
    assert [t["value"] for t in ta] == [t["value"] for t in tb]
    assert [a.epochs(t["number"]) == b.epochs(t["number"]) for t in ta] == [True] * 8


def test_an_ensemble_trains_its_members_as_one_population():
    ens, histories = Ensemble.train_population([4, 8, 3], X, Y, k=4, epochs=3, batch_size=16, shuffle_seed=5,
                                               member={"lr": 0.01}, dtype="float64")
    assert len(ens.members) == 4 and len(histories) == 4
    for seed, member in enumerate(ens.members):
        net = caviar.Network([4, 8, 3], seed=seed, dtype="float64")
        caviar.fit(net, X, Y, lr=0.01, epochs=3, batch_size=16, seed=seed, shuffle_seed=5, verbose=False)
        np.testing.assert_array_equal(member.params["W1"].data, net.params["W1"].data)


def _early_stopping_members():
    # lrs far apart so that members stop at different epochs and the population shrinks
    return [dict(m, lr=lr) for m, lr in zip(MEMBERS, (0.3, 0.05, 0.01))]


def test_early_stopping_keeps_every_member_s_own_best_epoch_as_its_solo_run_does():
    members = _early_stopping_members()
    X_train, y_train, X_dev, y_dev = X[::2], Y[::2], X[1::2], Y[1::2]
    sizes = []
    pop = Population([4, 6, 5, 3], members, optimizer="adam", dtype="float64")
    histories = pop.fit(X_train, y_train, epochs=30, batch_size=16, validation_data=(X_dev, y_dev), shuffle_seed=5,
                        callbacks=[caviar.train.EarlyStopping(patience=2),
                                   caviar.train.LambdaCallback(on_epoch_end=lambda run, e, logs: sizes.append(len(logs)))])
    assert sizes[0] == 3 and sizes[-1] < 3  # members left on their own patience
    stopped = []

    def solo_run(member, epochs, callbacks=()):
        net = caviar.Network([4, 6, 5, 3], keep_prob=member["keep_prob"], l2=member["l2"], init_scale=member["init_scale"],
                             seed=member["seed"], dtype="float64")
        history = caviar.fit(net, X_train, y_train, optimizer="adam", lr=member["lr"], epochs=epochs, batch_size=16,
                             validation_data=(X_dev, y_dev), seed=member["seed"], shuffle_seed=5, verbose=False,
                             schedule=caviar.schedules.InverseTime(decay_rate=member["decay_rate"]) if member["decay_rate"] else None,
                             beta1=member["beta1"], beta2=member["beta2"], epsilon=member["epsilon"], callbacks=callbacks)
        return net, history

    for i, member in enumerate(members):
        net, history = solo_run(member, 30, [caviar.train.EarlyStopping(patience=2)])
        status, trained, _ = pop.results[i]
        assert status == "complete"
        assert histories[i]["dev_cost"] == history["dev_cost"]
        assert histories[i].best_epoch == history.best_epoch and histories[i].stopped_epoch == history.stopped_epoch
        assert [e["event"] for e in histories[i].events] == [e["event"] for e in history.events]
        best, _ = solo_run(member, history.best_epoch)  # the weights the best epoch ended with
        for name, p in net.params.items():
            np.testing.assert_array_equal(trained.params[name].data, p.data, err_msg=name)
            np.testing.assert_array_equal(trained.params[name].data, best.params[name].data, err_msg=name)
        stopped.append(len(history))
    assert len(set(stopped)) > 1, "the members should stop at different epochs"


def test_augmentation_gives_every_member_its_solo_run_s_augmented_batches():
    def noise(Xb, rng):  # augmentation draws from the member's own generator, as dropout does
        return Xb + 0.1 * rng.standard_normal(Xb.shape)

    pop = Population([4, 6, 3], MEMBERS, optimizer="adam", dtype="float64")
    histories = pop.fit(X, Y, epochs=3, batch_size=16, shuffle_seed=5, augment=noise)
    for i, member in enumerate(MEMBERS):
        net = caviar.Network([4, 6, 3], keep_prob=member["keep_prob"], l2=member["l2"], init_scale=member["init_scale"],
                             seed=member["seed"], dtype="float64")
        history = caviar.fit(net, X, Y, optimizer="adam", lr=member["lr"], epochs=3, batch_size=16, seed=member["seed"],
                             shuffle_seed=5, verbose=False, augment=noise, beta1=member["beta1"], beta2=member["beta2"],
                             epsilon=member["epsilon"],
                             schedule=caviar.schedules.InverseTime(decay_rate=member["decay_rate"]) if member["decay_rate"] else None)
        assert histories[i].iterations == history.iterations
        for name, p in net.params.items():
            np.testing.assert_array_equal(pop.results[i][1].params[name].data, p.data, err_msg=name)


def test_an_ensemble_with_early_stopping_and_augmentation_trains_as_one_population(tmp_path):
    from caviar.workflow import TrainConfig, train_job

    logs = []
    report = train_job(TrainConfig(data="digits", hidden=[16], epochs=12, ensemble=3, early_stopping=1, augment=["shift"],
                                   out=str(tmp_path / "run")), verbose=False, log=logs.append)
    assert "training an ensemble of 3 as one population" in logs
    assert report["ensemble"]["trained"] == 3 and report["dev"]["accuracy"] > 0.5


def test_caviar_train_ensemble_keeps_the_greedy_selection_of_its_members_in_a_study_s_format(tmp_path, monkeypatch):
    """``caviar train --ensemble K`` selects among its K trained members as a study does
    (greedy, on dev, with replacement) and saves the same ensemble model."""
    from caviar.nn import heads
    from caviar.train import load_model
    from caviar.train.ensemble import greedy_selection
    from caviar.workflow import TrainConfig, prepare_data, train_job

    seen = []
    select = Ensemble.select.__func__

    def spy(cls, candidates, X_dev, y_dev, size):
        seen.append((list(candidates), size))
        return select(cls, candidates, X_dev, y_dev, size)

    monkeypatch.setattr(Ensemble, "select", classmethod(spy))
    cfg = TrainConfig(data="iris", hidden=[8], epochs=30, ensemble=6, seed=3, lr=0.01, keep_prob=0.6,
                      out=str(tmp_path / "run"))
    report = train_job(cfg, verbose=False, log=lambda *a: None)
    (candidates, size), = seen
    assert len(candidates) == 6 and size == 50
    assert [c.config["seed"] for c in candidates] == list(range(3, 9))
    _, _, _, sets = prepare_data(cfg)
    P = np.stack([c.predict_proba(sets["dev"][0]) for c in candidates])
    counts, _ = greedy_selection(P, sets["dev"][1], heads.get("softmax"))
    e = report["ensemble"]
    assert e["trained"] == 6 and 1 <= len(e["members"]) < 6  # some members were left out
    assert e["members"] == [3 + int(i) for i in np.flatnonzero(counts)] and e["counts"] == counts[counts > 0].tolist()
    model = load_model(report["model"])  # the format of a study's ensemble-model
    assert isinstance(model, Ensemble) and len(model.members) == len(e["members"])
    np.testing.assert_allclose(model.weights, counts[counts > 0] / counts.sum(), rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(sets["dev"][0]),
                               np.tensordot(counts / counts.sum(), P.astype(np.float64), axes=1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("with_lr", [True, False])
def test_a_search_gives_the_same_trials_with_and_without_populations(tmp_path, optimizer, with_lr):
    from caviar.tune import Space, log_uniform, one_minus_log_uniform, tune, uniform

    dims = {"optimizer": optimizer, "beta1": one_minus_log_uniform(0.8, 0.95), "beta2": one_minus_log_uniform(0.99, 0.999),
            "l2": log_uniform(1e-3, 1e-1), "keep_prob": uniform(0.7, 1.0), "hidden_units": 8}
    if with_lr:
        dims["lr"] = log_uniform(1e-3, 1e-1)
    runs = [tune(data="iris", space=Space(dims), trials=4, epochs=3, group_size=4, population=population, workers=1,
                 study=tmp_path / f"{population}.sqlite", log=lambda line: None) for population in (True, False)]
    a, b = (r.trials() for r in runs)
    assert [t["params"] for t in a] == [t["params"] for t in b]
    assert [t["value"] for t in a] == [t["value"] for t in b] and all(t["status"] == "complete" for t in a)
    assert [runs[0].epochs(t["number"]) for t in a] == [runs[1].epochs(t["number"]) for t in a]


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
def test_a_trial_a_population_member_and_caviar_train_translate_settings_alike(optimizer):
    """Without lr, every path trains at the optimizer's own default (gd and momentum 0.01)."""
    from caviar import optim
    from caviar.train import hyperparameters as H
    from caviar.tune.objective import network_and_options
    from caviar.workflow import TrainConfig, hyperparameters

    defaults = optim.lookup(optimizer).defaults
    for params in ({"optimizer": optimizer}, {"optimizer": optimizer, "lr": 0.02, "beta1": 0.85, "beta2": 0.99}):
        _, options = network_and_options(params, IRIS, seed=0)
        trial = options["optimizer"].hyperparameters()
        pop = Population([4, 5, 3], [H.member(params, 0)], optimizer=optimizer)
        columns = {k: float(v.item()) if hasattr(v, "item") else v for k, v in vars(pop._make_optimizer()).items()
                   if k in ("lr", "beta", "beta1", "beta2", "epsilon")}
        cli = TrainConfig(optimizer=optimizer, **{k: v for k, v in params.items() if k in defaults and k != "optimizer"})
        assert H.optimizer(hyperparameters(cli), strict=True).hyperparameters() == trial
        assert columns == {k: v for k, v in trial.items() if k in columns}
        assert trial["lr"] == params.get("lr", defaults["lr"])


def test_class_weights_train_every_member_as_its_solo_run():
    weights = [0.5, 1.0, 2.0]
    pop = Population([4, 6, 3], MEMBERS, optimizer="adam", dtype="float64", class_weight=weights)
    pop.fit(X, Y, epochs=2, batch_size=16, shuffle_seed=5)
    for i, member in enumerate(MEMBERS):
        net = caviar.Network([4, 6, 3], keep_prob=member["keep_prob"], l2=member["l2"], init_scale=member["init_scale"],
                             seed=member["seed"], dtype="float64", class_weight=weights)
        caviar.fit(net, X, Y, lr=member["lr"], epochs=2, batch_size=16, seed=member["seed"], shuffle_seed=5,
                   beta1=member["beta1"], beta2=member["beta2"], epsilon=member["epsilon"], verbose=False,
                   schedule=caviar.schedules.InverseTime(decay_rate=member["decay_rate"]) if member["decay_rate"] else None)
        for name, p in net.params.items():
            np.testing.assert_array_equal(pop.results[i][1].params[name].data, p.data, err_msg=name)
