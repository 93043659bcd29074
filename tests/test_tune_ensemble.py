"""Population ensembles: every trial's best epoch kept in the study, greedy ensemble selection
(Caruana et al., 2004), the time budget, and what `caviar tune` reports."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import caviar
from caviar.nn import heads
from caviar.train import Ensemble, load_model
from caviar.train.ensemble import greedy_selection
from caviar.tune import Space, Study, choice, evaluate_ensemble, log_uniform, tune
from caviar.tune.ensemble import StudyEnsemble
from caviar.tune.objective import study_data

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}
QUIET = dict(log=lambda line: None)
SOFTMAX, LINEAR = heads.get("softmax"), heads.get("linear")


def caviar_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


# -- greedy selection --------------------------------------------------------------------------------


def reference_selection(P, y, cost, size):
    """Caruana's loop written plainly: try every candidate at every step, add the best."""
    chosen, losses = [], []
    for _ in range(size):
        trial = [cost(np.mean([P[i] for i in chosen + [j]], axis=0), y) for j in range(len(P))]
        j = min(range(len(P)), key=lambda i: (trial[i], i))
        chosen.append(j)
        losses.append(trial[j])
    stop = min(range(len(losses)), key=lambda k: (losses[k], k))
    return np.bincount(chosen[:stop + 1], minlength=len(P)), losses[:stop + 1]


def log_loss(p, y):
    return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)))


@pytest.mark.parametrize("seed", range(4))
def test_greedy_selection_matches_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 60)
    logits = rng.standard_normal((7, 60, 3)) + 1.5 * np.eye(3)[y] * rng.uniform(0, 1, (7, 1, 1))
    P = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    counts, losses = greedy_selection(P, y, SOFTMAX, size=15)
    ref_counts, ref_losses = reference_selection(P, y, log_loss, 15)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    assert losses[-1] <= min(log_loss(p, y) for p in P)  # never worse than the best single candidate


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_greedy_selection_averages_only_what_the_cost_reads_with_the_same_results_bit_for_bit(output):
    # the loop on whole averages (as it was written before it averaged the cost's entries only):
    # the same choices and the same losses, to the bit, with exact zeros and ones among the
    # probabilities (the clipped cases) and candidates tied
    rng = np.random.default_rng(7)
    head = heads.get(output)
    n_y = {"softmax": 10, "sigmoid": 1, "linear": 1}[output]
    y = rng.integers(0, n_y, 359) if output == "softmax" else rng.integers(0, 2, 359).astype(float)
    logits = rng.standard_normal((40, 359, n_y)) * rng.uniform(0.1, 40, (40, 1, 1))
    P = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) if output == "softmax"
         else 1 / (1 + np.exp(-logits)) if output == "sigmoid" else logits)
    P[3] = P[5]
    total, chosen, losses = np.zeros(P.shape[1:]), [], []
    for step in range(1, 51):
        costs = head.proba_costs((total + P) / step, y)
        j = int(np.argmin(np.where(np.isfinite(costs), costs, np.inf)))
        total += P[j]
        chosen.append(j)
        losses.append(float(costs[j]))
    best = int(np.argmin(losses))
    counts, kept = greedy_selection(P, y, head, size=50)
    assert counts.tolist() == np.bincount(chosen[:best + 1], minlength=40).tolist()
    assert kept == losses[:best + 1]


def test_greedy_selection_combines_complementary_models_with_replacement():
    # a and b err in opposite directions (their mean is exact); c is the best alone
    y = np.array([1.0, 1.0, -1.0, -1.0])
    e = 0.8 * np.array([1.0, -1.0, 1.0, -1.0])
    a, b, c = (y + e)[:, None], (y - e)[:, None], (0.5 * y)[:, None]
    counts, losses = greedy_selection(np.stack([a, b, c]), y, LINEAR, size=10)
    # c first (MSE 0.25 against 0.64), then a and b in turn: c + 4a + 4b after 9 steps, MSE 0.25 / 81
    assert counts.tolist() == [4, 4, 1] and losses[0] == pytest.approx(0.25)
    assert losses[-1] == min(losses) == pytest.approx(0.25 / 81)  # the best step is kept, not the last
    assert len(losses) == 9


def test_a_weighted_ensemble_averages_with_its_weights_and_saves_them(tmp_path):
    nets = [caviar.Network([4, 5, 3], seed=s) for s in range(3)]
    X = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    ens = Ensemble(nets, weights=[3, 1, 0])
    expected = 0.75 * nets[0].predict_proba(X) + 0.25 * nets[1].predict_proba(X)
    np.testing.assert_allclose(ens.predict_proba(X), expected, rtol=1e-6)
    again = load_model(ens.save(tmp_path / "e"))
    np.testing.assert_array_equal(again.predict_proba(X), ens.predict_proba(X))
    with pytest.raises(ValueError, match="one non-negative weight per member"):
        Ensemble(nets, weights=[1, -1, 1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_ensemble_predicts_in_one_stacked_forward_pass_per_architecture(dtype, monkeypatch):
    """Members of one architecture are computed together (their weights stacked, as a
    population's): one forward pass per architecture, each member's values those it gives alone."""
    from caviar.nn import Network

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6))
    y = rng.integers(0, 3, 300)
    nets = [Network([6, 8, 3], seed=0, dtype=dtype), Network([6, 8, 3], seed=1, dtype=dtype, keep_prob=0.7),
            Network([6, 5, 4, 3], seed=2, dtype=dtype, batchnorm=True), Network([6, 8, 3], seed=3, dtype=dtype),
            Network([6, 5, 4, 3], seed=4, dtype=dtype, batchnorm=True)]
    for net in nets:  # trained a little, so batch norm's running statistics are not their start
        caviar.fit(net, X, y, epochs=2, batch_size=32, verbose=False)
    alone = [net.predict_proba(X) for net in nets]  # before the spy: member by member
    calls = []
    forward = Network.forward

    def spy(self, X, training=False):
        out = forward(self, X, training)
        calls.append(out.data.shape)
        return out

    monkeypatch.setattr(Network, "forward", spy)
    ens = Ensemble(nets, weights=[1, 2, 3, 0, 4])
    P = ens.member_proba(X)
    assert sorted(calls) == [(2, 300, 3), (3, 300, 3)]  # two architectures: two passes, not five
    for p, expected in zip(P, alone):
        np.testing.assert_array_equal(p, expected)
    expected = sum(w * a.astype(np.float64) for w, a in zip(ens.weights, alone))
    np.testing.assert_allclose(ens.predict_proba(X), expected, rtol=1e-12, atol=1e-15)


# -- every trial's best epoch is kept ----------------------------------------------------------------


@pytest.fixture(scope="module")
def study_of_populations(tmp_path_factory):
    """Twelve digits trials in four populations, stopping on patience 2."""
    path = tmp_path_factory.mktemp("pop") / "s.sqlite"
    space = Space({"lr": log_uniform(1e-3, 3e-2), "hidden_units": choice([16, 32]), "keep_prob": choice([0.8, 1.0])})
    study = tune(data="digits", space=space, trials=12, epochs=25, patience=2, group_size=3, workers=1, study=path,
                 **QUIET)
    yield study
    study.close()


def test_each_trial_s_best_epoch_network_and_dev_predictions_are_kept(study_of_populations):
    study = study_of_populations
    _, _, sets = study_data(study.settings)
    complete = [t for t in study.trials() if t["status"] == "complete"]
    assert [t["number"] for t in complete] == study.kept_trials() and len(complete) == 12
    predictions = study.dev_predictions()
    for t in complete:
        net = study.network(t["number"])
        np.testing.assert_array_equal(net.predict_proba(sets["dev"][0]), predictions[t["number"]])
        assert net.evaluate(*sets["dev"])["accuracy"] == t["value"]  # the value's epoch, restored
    stopped = [t for t in complete if len(study.epochs(t["number"])) < 25]
    assert stopped  # members left on their own patience (2 epochs without a better dev metric)
    for t in stopped:
        epochs = study.epochs(t["number"])
        assert epochs[-1]["epoch"] == t["best_epoch"] + 3


def test_a_trial_keeps_the_same_network_alone_or_in_a_population(study_of_populations, tmp_path):
    settings = study_of_populations.settings
    alone = tune(data="digits", space=Space(settings["space"]), trials=12, epochs=25, patience=2, group_size=3,
                 workers=1, population=False, study=tmp_path / "alone.sqlite", **QUIET)
    together = study_of_populations.dev_predictions()
    for n, p in alone.dev_predictions().items():
        np.testing.assert_allclose(p, together[n], rtol=1e-5, atol=1e-6)
    assert [t["value"] for t in alone.trials()] == [t["value"] for t in study_of_populations.trials()]


def test_the_ensemble_is_rebuilt_from_the_study_file_alone(study_of_populations):
    """Nothing of the ensemble lives only in the driver: the file gives the same selection and
    the same predictions after the driver is gone (as after an interruption)."""
    live = study_of_populations.settings["ensemble"]  # what the driver published while it ran
    again = Study.open(study_of_populations.path)
    try:
        chosen = StudyEnsemble(again)
        ensemble = chosen.build()
        assert chosen.result["members"] == live["members"] and chosen.result["counts"] == live["counts"]
        _, _, sets = study_data(again.settings)
        p = ensemble.predict_proba(sets["dev"][0])
        stored = again.dev_predictions()
        expected = sum(w * stored[n].astype(np.float64) for n, w in zip(live["members"], live["weights"]))
        np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    finally:
        again.close()


def test_the_ensemble_is_no_worse_on_dev_than_the_best_trial(study_of_populations, tmp_path):
    result = evaluate_ensemble(study_of_populations, tmp_path)
    best = min(SOFTMAX.proba_cost(p, study_data(study_of_populations.settings)[2]["dev"][1])
               for p in study_of_populations.dev_predictions().values())
    assert result["dev"]["cost"] <= best + 1e-9  # selected on dev log loss, it starts from the best trial
    assert set(result) >= {"members", "counts", "weights", "dev", "test", "model"}
    assert abs(sum(result["weights"]) - 1) < 1e-12 and len(result["members"]) == len(result["weights"])
    assert isinstance(load_model(result["model"]), Ensemble)
    loaded = caviar.load(result["model"])  # the top-level load and save take ensembles too
    _, _, sets = study_data(study_of_populations.settings)
    again = caviar.load(caviar.save(loaded, tmp_path / "again"))
    assert isinstance(again, Ensemble) and again.weights == loaded.weights
    np.testing.assert_array_equal(again.predict_proba(sets["test"][0]), loaded.predict_proba(sets["test"][0]))
    assert again.evaluate(*sets["test"])["accuracy"] == result["test"]["accuracy"]


# -- the time budget -----------------------------------------------------------------------------------


@pytest.mark.exclusive  # wall time against a budget: nothing else on the cores
def test_a_time_budget_ends_the_command_within_it_plus_ten_percent(tmp_path):
    budget = 12
    t0 = time.time()
    r = caviar_cli("tune", "--data", "digits", "--time", budget, "--json", cwd=tmp_path)
    wall = time.time() - t0
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert wall <= 1.1 * budget, (wall, out["seconds"], r.stderr[-1500:])  # the command's own clock, its log
    assert "time budget spent" in r.stderr
    study = Study.open(out["study"])
    try:
        trials = study.trials()
        assert any(t["status"] == "complete" for t in trials)
        assert all(t["status"] in ("complete", "pending") for t in trials)  # none left running or failed
        for t in trials:  # members stopped at an epoch boundary kept their best epoch
            if t["status"] == "complete":
                assert t["number"] in study.kept_trials()
    finally:
        study.close()
    assert out["ensemble"]["members"] and out["ensemble"]["test_accuracy"] > 0.8


@pytest.mark.parametrize("value,message", [("0", "a time budget must be positive"),
                                           ("soon", "expected a time like 90, 90s, 5m or 1h")])
def test_a_bad_time_budget_is_one_line_and_exit_code_2(tmp_path, value, message):
    r = caviar_cli("tune", "--time", value, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_parse_time_reads_seconds_minutes_and_hours():
    from caviar.tune.runner import parse_time

    assert [parse_time(t) for t in ("90", "90s", "5m", "1.5h")] == [90, 90, 300, 5400]


# -- what tune reports ---------------------------------------------------------------------------------


def test_tune_json_and_leaderboard_show_the_ensemble_beside_the_best_trial(tmp_path):
    r = caviar_cli("tune", "--data", "iris", "--trials", "6", "--epochs", "8", "--group-size", "3", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    e = out["ensemble"]
    assert set(e) >= {"members", "weights", "dev_accuracy", "test_accuracy", "model"} and set(out["best"]) >= {
        "dev_accuracy", "test_accuracy"}
    assert "ensemble" in r.stderr.splitlines()[-1]  # the progress line shows it beside the best trial
    predicted = caviar_cli("predict", "--model", e["model"], "--data", "iris", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    report = caviar_cli("report", out["study"], "--out", tmp_path / "rep")
    assert report.returncode == 0, report.stderr
    line = [x for x in report.stdout.splitlines() if x.split()[:2] == ["ens.", "ensemble"]]
    assert line and f"{e['dev_accuracy']:.4f}" in line[0]


def test_regression_json_has_mse_and_r2(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    rows = ["a,b,c,y"] + [f"{a:.4f},{b:.4f},{c:.4f},{2 * a - b + 0.1 * c:.4f}" for a, b, c in X]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    r = caviar_cli("tune", "--data", tmp_path / "r.csv", "--target", "y", "--trials", "4", "--epochs", "10",
                   "--group-size", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["ensemble"]
    assert set(e) >= {"dev_mse", "test_mse", "test_r2"} and e["test_r2"] > 0.8
