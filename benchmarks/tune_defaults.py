"""``caviar tune``'s defaults on real tables: the default search space and time budget, the best
trial against the greedy ensemble of all trials, and the ensemble's size.

The six tables of ``benchmarks/tabular.py`` (``pip install 'caviar[bench]'``), each split 80/20
the same way. For each table and each space (``default``: ``caviar.tune.default_space``;
``notes``: the notes' space, ``notes_space``), one ``caviar tune --time T`` in a fresh process;
then, from the same study, the test score of the greedy ensemble at several selection sizes
(Caruana et al. keep the step with the lowest dev loss; a size is the most steps allowed) and
of the best single trial, beside HistGradientBoosting on the same split. Scores: test accuracy
for classes, test R² for numbers.

    python benchmarks/tune_defaults.py [--tables credit,...] [--time 100] [--spaces default,notes]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

SIZES = (1, 5, 10, 20, 50, 100)


def run_tune(paths, target, classes, folder, seconds, space):
    """One ``caviar tune --time`` command (``tabular.run_tune``); returns (its --json, wall seconds)."""
    import tabular

    space_file = None
    if space == "notes":
        import yaml

        from caviar.tune import notes_space

        space_file = folder + "-space.yaml"
        with open(space_file, "w") as f:
            yaml.safe_dump(notes_space().to_dict(), f)
    t0 = time.perf_counter()
    result = tabular.run_tune(paths, target, classes, folder, seconds, space_file)
    return result, time.perf_counter() - t0


def ensemble_scores(study_path, key):
    """The test score of the greedy ensemble at each size in SIZES (selected on dev)."""
    from caviar import data as D
    from caviar.tune import Study
    from caviar.tune.ensemble import StudyEnsemble
    from caviar.tune.objective import study_data

    study = Study.open(study_path)
    try:
        ds, _, sets = study_data(study.settings)
        out = {}
        for size in SIZES:
            chosen = StudyEnsemble(study, size=size)
            ensemble = chosen.build()
            figures = D.in_target_units(ensemble.evaluate(*sets["test"]), ds.target_scale)
            out[size] = (figures[key], len(chosen.result["members"]))
        return out
    finally:
        study.close()


def main(argv=None):
    import tabular

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(tabular.TABLES))
    parser.add_argument("--time", type=float, default=100)
    parser.add_argument("--spaces", default="default,notes")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables.split(","):
            paths, target, classes, shape = tabular.table(name, tmp)
            key = tabular.score_key(classes)
            hgb = tabular.run_hgb(paths, target, classes)
            print(f"{name} ({shape[0]} x {shape[1]}): test {key}; HistGradientBoosting {hgb:.4f}", flush=True)
            for space in args.spaces.split(","):
                folder = os.path.join(tmp, f"{name}-{space}")
                result, wall = run_tune(paths, target, classes, folder, args.time, space)
                scores = ensemble_scores(result["study"], key)
                best = result["best"]["test"][key]
                print(f"  {space:<8} {result['trials']:>4} trials in {wall:5.1f} s (budget {args.time:g} s): "
                      f"best trial {best:.4f}; ensemble " + ", ".join(
                          f"size {s}: {v:.4f} ({n} trials)" for s, (v, n) in scores.items()), flush=True)


if __name__ == "__main__":
    main()
