"""Search spaces: sampling on the right scales, space files, clear errors; strategies on a
synthetic objective (no training): grid vs random, coarse-to-fine boxes, successive halving."""

import math

import numpy as np
import pytest

from caviar.tune import (CoarseToFine, GridSearch, RandomSearch, Space, SpaceError, Study, SuccessiveHalving,
                         choice, default_space, integer, load_space, log_uniform, notes_space, one_minus_log_uniform,
                         uniform)

N = 20000


def draws(spec, n=N):
    space = Space({"lr": spec}) if spec[0] != "one_minus_log_uniform" else Space({"beta1": spec})
    rng = np.random.default_rng(0)
    name = next(iter(space.dims))
    return np.array([space.sample(rng)[name] for _ in range(n)])


def test_log_uniform_puts_as_many_samples_in_every_decade():
    x = draws(log_uniform(1e-4, 1.0))
    assert x.min() >= 1e-4 and x.max() <= 1.0
    low, high = np.mean((x >= 1e-4) & (x < 1e-3)), np.mean((x >= 0.1) & (x <= 1))
    assert low == pytest.approx(0.25, abs=0.015) and high == pytest.approx(0.25, abs=0.015)
    # a linear scale would put 90% of the samples in [0.1, 1]
    lin = draws(uniform(1e-4, 1.0))
    assert np.mean(lin >= 0.1) == pytest.approx(0.9, abs=0.01)


def test_one_minus_log_uniform_samples_betas_densely_near_one():
    b = draws(one_minus_log_uniform(0.9, 0.999))
    assert b.min() >= 0.9 and b.max() <= 0.999
    assert np.mean(b >= 0.99) == pytest.approx(0.5, abs=0.015)
    assert np.mean(b < 0.99) == pytest.approx(0.5, abs=0.015)


def test_integer_and_choice_cover_their_values_evenly():
    k = draws(integer(1, 4))
    assert set(k) == {1, 2, 3, 4}
    np.testing.assert_allclose(np.bincount(k.astype(int))[1:] / N, 0.25, atol=0.015)
    space = Space({"batch_size": choice([32, 64, 128])})
    rng = np.random.default_rng(1)
    c = [space.sample(rng)["batch_size"] for _ in range(3000)]
    assert {v: c.count(v) / 3000 for v in (32, 64, 128)} == pytest.approx({32: 1 / 3, 64: 1 / 3, 128: 1 / 3}, abs=0.03)


def test_the_notes_space_lists_the_notes_hyperparameters_in_order_of_importance():
    names = list(notes_space().dims)
    assert names[:4] == ["lr", "beta1", "batch_size", "hidden_units"]
    assert names.index("layers") < names.index("l2") < names.index("beta2")
    assert notes_space()["lr"].scale == "log" and notes_space()["beta1"].scale == "one_minus_log"


def test_the_default_space_searches_what_matters_on_tables_on_its_own_scale():
    space = default_space()
    assert list(space.dims) == ["lr", "batch_size", "hidden_units", "layers", "batchnorm", "keep_prob", "l2",
                                "decay_rate"]
    assert space["lr"].scale == space["l2"].scale == space["decay_rate"].scale == "log"
    assert list(space["batchnorm"].options) == [False, True] and list(space["hidden_units"].options) == [32, 64, 128, 256]


def test_space_files_in_yaml_and_toml(tmp_path):
    (tmp_path / "s.yaml").write_text("lr: {log_uniform: [1e-4, 1e-1]}\nbeta1: {one_minus_log_uniform: [0.9, 0.999]}\n"
                                     "batch_size: {choice: [32, 64]}\nhidden_units: {integer: [8, 64]}\noptimizer: adam\n")
    (tmp_path / "s.toml").write_text('lr = {log_uniform = [1e-4, 1e-1]}\nbatch_size = {choice = [32, 64]}\n'
                                     'keep_prob = {uniform = [0.5, 1.0]}\n')
    y = load_space(tmp_path / "s.yaml")
    assert y["lr"].low == 1e-4 and y["lr"].scale == "log"
    assert y["optimizer"].options == ("adam",)  # a fixed value
    t = load_space(tmp_path / "s.toml")
    assert list(t.dims) == ["lr", "batch_size", "keep_prob"]


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("learning_rate: {log_uniform: [1e-4, 1e-1]}\n", "unknown hyperparameter 'learning_rate'"),
        ("hidden_units: {integer: [64, 8]}\n", r"hidden_units: the range needs low < high, got \[64, 8\]"),
        ("lr: {uniform: [0.1, 0.1]}\n", "lr: the range needs low < high"),
        ("lr: {log_uniform: [0, 0.1]}\n", "lr: a log range must be positive.*touches zero"),
        ("l2: {log_uniform: [-1, 0.1]}\n", "l2: a log range must be positive"),
        ("beta1: {one_minus_log_uniform: [0.9, 1.0]}\n", r"beta1: a beta range must lie inside \(0, 1\)"),
        ("beta2: {one_minus_log_uniform: [-0.5, 0.9]}\n", "beta2: a beta range must lie inside"),
        ("lr: {gaussian: [0, 1]}\n", "lr: unknown dimension 'gaussian'"),
        ("lr: {log_uniform: [1e-4]}\n", r"lr: log_uniform needs \[low, high\]"),
        ("lr: [\n", "cannot parse"),
    ],
)
def test_bad_space_entries_name_the_entry(tmp_path, text, pattern):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=pattern):
        load_space(path)


# -- strategies on a synthetic objective ----------------------------------------------------


def fake_run(study, objective):
    """Run pending trials by evaluating ``objective(params)`` instead of training."""
    for t in study.trials("pending"):
        token = study.claim(t["number"])
        study.finish(t["number"], token, "complete", value=objective(t["params"], t["budget"]), best_epoch=t["budget"])


def drive(study, strategy, objective):
    while True:
        study.add_trials(strategy.propose(study))
        if not study.trials("pending"):
            return study
        fake_run(study, objective)


def new_study(tmp_path, name="s.sqlite"):
    return Study.create(tmp_path / name, {"metric": "dev_accuracy", "strategy": "test"})


def test_grid_tries_few_distinct_values_of_each_hyperparameter_where_random_tries_many(tmp_path):
    space = Space({"lr": log_uniform(1e-4, 1e-1), "keep_prob": uniform(0.5, 1.0)})
    grid = GridSearch(space, trials=25, epochs=1, seed=0).points()
    rand = drive(new_study(tmp_path), RandomSearch(space, trials=25, epochs=1, seed=0), lambda p, b: 0.0).trials()
    assert len(grid) == 25 and len({p["lr"] for p in grid}) == 5
    assert len({t["params"]["lr"] for t in rand}) == 25


def test_coarse_to_fine_boxes_shrink_around_the_best_trials(tmp_path):
    space = Space({"lr": log_uniform(1e-5, 1.0), "keep_prob": uniform(0.5, 1.0)})
    optimum = -2.5  # the best lr is 10^-2.5

    def objective(p, budget):
        return -abs(math.log10(p["lr"]) - optimum)

    study = drive(new_study(tmp_path), CoarseToFine(space, trials=60, epochs=1, seed=0, rounds=3), objective)
    boxes = study.boxes()
    assert sorted(boxes) == [0, 1, 2]
    widths = [math.log10(b["lr"]["log_uniform"][1]) - math.log10(b["lr"]["log_uniform"][0]) for b in boxes.values()]
    assert widths[0] == pytest.approx(5.0) and widths[2] < widths[1] < widths[0]
    for r in (1, 2):
        lo, hi = boxes[r]["lr"]["log_uniform"]
        plo, phi = boxes[r - 1]["lr"]["log_uniform"]
        assert plo <= lo < 10**optimum < hi <= phi  # nested, around the best
        in_round = [t for t in study.trials() if t["round"] == r]
        assert len(in_round) == 20 and all(lo <= t["params"]["lr"] <= hi for t in in_round)
    best_per_round = [max(t["value"] for t in study.trials() if t["round"] == r) for r in range(3)]
    assert best_per_round[2] >= best_per_round[0]


def test_successive_halving_promotes_the_right_trials(tmp_path):
    space = Space({"lr": log_uniform(1e-4, 1.0)})
    strat = SuccessiveHalving(space, trials=27, epochs=9, seed=0, eta=3, min_epochs=1)
    assert strat.budgets == [1, 3, 9]
    study = drive(new_study(tmp_path), strat, lambda p, budget: p["lr"] * budget)  # bigger lr is better
    trials = study.trials()
    by_rung = {r: [t for t in trials if t["rung"] == r] for r in range(3)}
    assert [len(by_rung[r]) for r in range(3)] == [27, 9, 3]
    assert {t["budget"] for t in by_rung[1]} == {3} and {t["budget"] for t in by_rung[2]} == {9}
    top9 = sorted(by_rung[0], key=lambda t: -t["value"])[:9]
    assert {t["number"] for t in top9} == {t["parent"] for t in by_rung[1]}
    top3 = sorted(by_rung[1], key=lambda t: -t["value"])[:3]
    assert {t["number"] for t in top3} == {t["parent"] for t in by_rung[2]}
    for t in by_rung[2]:  # promoted trials keep their configuration and seed
        parent = study.trial(t["parent"])
        assert parent["params"] == t["params"] and parent["seed"] == t["seed"]


def test_proposing_again_adds_nothing_twice(tmp_path):
    space = Space({"lr": log_uniform(1e-4, 1.0)})
    study = new_study(tmp_path)
    strat = RandomSearch(space, trials=5, epochs=1, seed=0)
    assert study.add_trials(strat.propose(study)) == 5
    assert study.add_trials(strat.propose(study)) == 0
    assert len(study.trials()) == 5
