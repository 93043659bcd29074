"""What a study found: the leaderboard, the best parameters, the best model retrained and
evaluated once on the test set, and plots of the dev metric against each hyperparameter on its
own scale with the coarse-to-fine boxes drawn."""

from __future__ import annotations

import math
import os

from .. import data as D
from ..train import fit, save
from .objective import metric_for, network_and_options, study_data
from .space import Choice, Space
from .strategies import ranked


def configurations(study):
    """One row per configuration: for successive halving, the trial of the highest rung it
    reached (so every row says at which rung that configuration stopped)."""
    trials = study.trials()
    latest = {}
    for t in trials:
        root = t["key"].split("-", 1)[-1] if t["key"].startswith("h") else t["key"]
        if root not in latest or t["rung"] >= latest[root]["rung"]:
            latest[root] = t
    return sorted(latest.values(), key=lambda t: t["number"])


def leaderboard(study, top=10):
    metric, higher = metric_for(study.settings)
    rows = configurations(study)
    good = ranked(rows, higher)
    rest = [t for t in rows if t not in good]
    return (good + rest)[:top] if top else good + rest


def best_trial(study):
    metric, higher = metric_for(study.settings)
    best = ranked(study.trials(), higher)
    return best[0] if best else None


def evaluate_best(study, out=None):
    """The best trial's network at its best epoch, evaluated on dev and, once, on test, and
    saved to ``out``/best-model. It is the network the study kept; a study that kept none
    (written before studies kept networks) has it retrained with the trial's seed to its best
    epoch (training is deterministic, so this is the same network)."""
    settings = study.settings
    best = best_trial(study)
    if best is None:
        return None
    ds, normalizer, sets = study_data(settings)
    if best["number"] in study.kept_trials():
        net = study.network(best["number"])
    else:
        net, options = network_and_options(best["params"], ds, best["seed"])
        # the trial's own run: its seed and the study's batch order (every trial shares it)
        fit(net, *sets["train"], epochs=best["best_epoch"] or best["budget"], verbose=False, seed=best["seed"],
            shuffle_seed=settings["seed"], **options)
    result = {"trial": best["number"], "params": best["params"],
              "dev": D.in_target_units(net.evaluate(*sets["dev"]), ds.target_scale)}
    if "test" in sets:
        result["test"] = D.in_target_units(net.evaluate(*sets["test"]), ds.target_scale)
    if out is not None:
        net.extras = D.model_extras(ds, normalizer, settings["data"])
        result["model"] = save(net, os.path.join(out, "best-model"))
    return result


def evaluate_ensemble(study, out=None):
    """The greedy ensemble of the study's kept trials (``caviar.tune.ensemble``), evaluated on
    dev and, once, on test, and saved to ``out``/ensemble-model; None while no trial is kept."""
    from .ensemble import StudyEnsemble

    chosen = StudyEnsemble(study)
    ensemble = chosen.build()
    if ensemble is None:
        return None
    settings = study.settings
    ds, normalizer, sets = study_data(settings)
    selection = chosen.result
    result = {"members": selection["members"], "counts": selection["counts"], "weights": selection["weights"],
              "candidates": selection["candidates"]}
    for name in ("dev", "test"):
        if name in sets:
            figures = ensemble.evaluate(*sets[name])
            figures.pop("members")
            result[name] = D.in_target_units(figures, ds.target_scale)
    if out is not None:
        result["model"] = ensemble.save(os.path.join(out, "ensemble-model"), D.model_extras(ds, normalizer,
                                                                                            settings["data"]))
    return result


def import_pyplot():
    """matplotlib's pyplot on its file backend (its import takes about 0.7 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_study(study, out):
    """``dev_<metric>_vs_<name>.png`` for every hyperparameter; returns the paths written."""
    plt = import_pyplot()
    from ..diagnose.plots import MARGINS

    settings = study.settings
    metric, higher = metric_for(settings)
    space = Space(settings["space"])
    trials = [t for t in study.trials() if t["value"] is not None and math.isfinite(t["value"])]
    boxes = {r: Space(b) for r, b in study.boxes().items()}
    ensemble = settings.get("ensemble")  # the greedy ensemble's dev metric, beside the best trial's
    best = best_trial(study)
    os.makedirs(out, exist_ok=True)
    paths = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for dim in space:
        if isinstance(dim, Choice) and len(dim.options) == 1:
            continue  # a fixed value: nothing to plot
        fig, ax = plt.subplots(figsize=(6, 4))
        fig.subplots_adjust(**MARGINS)  # no tight_layout: a timed study plots after training
        xs = [_axis_value(dim, t["params"][dim.name]) for t in trials if dim.name in t["params"]]
        ys = [t["value"] for t in trials if dim.name in t["params"]]
        rounds = [t["round"] for t in trials if dim.name in t["params"]]
        for r in sorted(set(rounds)):  # one colour per coarse-to-fine round, named in the legend
            mine = [i for i, rr in enumerate(rounds) if rr == r]
            ax.scatter([xs[i] for i in mine], [ys[i] for i in mine], color=colors[r % len(colors)], s=18, alpha=0.8,
                       label=f"round {r} trials" if len(set(rounds)) > 1 else None)
        if dim.scale in ("log", "one_minus_log"):
            ax.set_xscale("log")
        if isinstance(dim, Choice):
            ax.set_xticks(range(len(dim.options)), [str(o) for o in dim.options])
        for r, box in boxes.items():
            if r == 0 or dim.name not in box.dims or isinstance(box[dim.name], Choice):
                continue
            b = box[dim.name]
            lo, hi = sorted((_axis_value(dim, b.low), _axis_value(dim, b.high)))
            ax.axvspan(lo, hi, color=colors[r % len(colors)], alpha=0.12, label=f"round {r} box")
        if best is not None:
            ax.axhline(best["value"], color="0.4", linestyle=":", linewidth=1, label=f"best trial ({best['number']})")
        if ensemble:
            ax.axhline(ensemble[metric], color="black", linestyle="--", linewidth=1,
                       label=f"ensemble of {len(ensemble['members'])} trials")
        label = {"one_minus_log": f"1 - {dim.name} (log scale)", "log": f"{dim.name} (log scale)"}.get(dim.scale, dim.name)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against {dim.name}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        path = os.path.join(out, f"{metric}_vs_{dim.name}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _axis_value(dim, value):
    if dim.scale == "one_minus_log":
        return 1 - value
    if isinstance(dim, Choice):
        return dim.options.index(value) if value in dim.options else -1
    return value
