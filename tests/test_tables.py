"""Real tables: reading them as people have them, column roles, the preprocessing fitted on the
training rows, targets, predictions from raw files, and every refusal named."""

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
import warnings
import zipfile
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from caviar import data as D

ENV = {**os.environ, "CAVIAR_NO_PROGRESS": "1"}
RNG = np.random.default_rng(0)


def caviar(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "caviar", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def messy(m=240, seed=0):
    """A table as people have it: text categories, empty cells, an ID, a constant, a date."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(m)
    city = rng.choice(["Paris", "Lyon", "Nice", "Brest"], size=m)
    frame = pd.DataFrame({
        "id": [f"c{i:05d}" for i in range(m)],
        "income": np.round(50 + 10 * x, 2),
        "city": city,
        "plan": rng.choice(["basic", "pro", None], size=m, p=[0.5, 0.4, 0.1]),
        "age": rng.integers(18, 80, size=m).astype(float),
        "country": "FR",
        "joined": pd.date_range("2020-01-01", periods=m, freq="D").strftime("%Y-%m-%d"),
    })
    frame.loc[rng.choice(m, 20, replace=False), "age"] = np.nan
    frame["churn"] = np.where(x + (city == "Nice") > 0.3, "yes", "no")
    return frame


def write(frame, path, **kwargs):
    frame.to_csv(path, index=False, **kwargs)
    return path


# -- reading ---------------------------------------------------------------------------------------


def test_a_bom_is_stripped_from_the_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfx1,x2,label\n" + b"".join(f"{i},{i % 3},{i % 2}\n".encode() for i in range(20)))
    ds = D.load(path, target="x1", task="regression")
    assert ds.target == "x1" and ds.feature_names == ["x2", "label"]
    assert D.load(path).feature_names == ["x1", "x2"]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path, sep):
    path = write(messy(), tmp_path / ("t.tsv" if sep == "\t" else "t.csv"), sep=sep)
    ds = D.load(path, target="churn")
    assert ds.feature_names == list(messy().columns[:-1]) and ds.class_names == ["no", "yes"]


@pytest.mark.parametrize("ext", [".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".parquet", ".feather"])
def test_compressed_and_columnar_files_read_as_the_plain_csv(tmp_path, ext):
    frame = messy()
    plain = D.load(write(frame, tmp_path / "t.csv"), target="churn")
    path = tmp_path / f"t{ext}"
    text = frame.to_csv(index=False).encode()
    if ext == ".parquet":
        frame.to_parquet(path)
    elif ext == ".feather":
        frame.to_feather(path)
    elif ext == ".csv.zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("t.csv", text)
    else:
        path.write_bytes({".csv.gz": gzip.compress, ".csv.bz2": bz2.compress, ".csv.xz": lzma.compress}[ext](text))
    ds = D.load(path, target="churn")
    np.testing.assert_array_equal(ds.y, plain.y)
    pd.testing.assert_frame_equal(ds.frame.reset_index(drop=True).astype(str), plain.frame.reset_index(drop=True).astype(str))


def test_latin_1_files_are_read_with_a_warning(tmp_path):
    path = tmp_path / "l1.csv"
    path.write_bytes("ville,n,y\n".encode() + "".join(f"Besançon,{i},{i % 2}\n" for i in range(10)).encode("latin-1"))
    with pytest.warns(UserWarning, match="not UTF-8.*latin-1"):
        ds = D.load(path)
    assert ds.frame["ville"].iloc[0] == "Besançon"


def test_missing_cells_in_every_spelling_and_na_values(tmp_path):
    path = tmp_path / "na.csv"
    path.write_text("a,b,y\n" + "\n".join(f"{v},x,{i % 2}" for i, v in enumerate(["", "NA", "N/A", "NaN", "null", "None", "?",
                                                                                   "1", "-999", "2"])) + "\n")
    assert D.load(path).frame["a"].isna().sum() == 7
    assert D.load(path, na_values=["-999"]).frame["a"].isna().sum() == 8


def test_spaces_after_the_delimiter_are_skipped(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text("a, kind, y\n" + "".join(f"{i}, {'NA' if i % 4 == 0 else 'red'}, {i % 2}\n" for i in range(40)))
    frame = D.load(path, target="y").frame
    assert list(frame.columns) == ["a", "kind"] and frame["a"].dtype.kind in "if"
    assert set(frame["kind"].dropna()) == {"red"} and frame["kind"].isna().sum() == 10
    plain = tmp_path / "plain.csv"  # no spaces: read without the parser's slower option, the same frame
    plain.write_text(path.read_text().replace(", ", ","))
    pd.testing.assert_frame_equal(D.load(plain, target="y").frame, frame)


def test_a_dataframe_is_data_too():
    frame = messy()
    with pytest.warns(UserWarning, match="DataFrame: dropped column 'id'"):
        ds, parts, prep, sets = D.prepare(frame, target="churn", test=0)
    assert sets["train"][0].dtype == np.float32 and len(sets["train"][0]) + len(sets["dev"][0]) == len(frame)
    assert list(frame.columns) == list(messy().columns)  # the caller's frame is left as it was


# -- targets ---------------------------------------------------------------------------------------


def test_rows_with_a_missing_target_are_dropped_with_a_count(tmp_path):
    frame = messy()
    frame.loc[[3, 7, 9], "churn"] = None
    with pytest.warns(UserWarning, match=r"dropped 3 row\(s\) whose target 'churn' is missing"):
        ds = D.load(write(frame, tmp_path / "t.csv"), target="churn")
    assert ds.class_names == ["no", "yes"] and len(ds.y) == len(frame) - 3


def test_a_numeric_target_with_missing_cells_stays_numeric(tmp_path):
    frame = messy()
    frame.loc[[1, 2], "income"] = None
    with pytest.warns(UserWarning, match="dropped 2 row"):
        ds = D.load(write(frame, tmp_path / "t.csv"), target="income")
    assert ds.class_names is None and ds.y.dtype == np.float64


def test_the_task_overrides_the_guess(tmp_path):
    path = write(messy(), tmp_path / "t.csv")
    with pytest.warns(UserWarning, match="dropped 20 row"):
        assert D.load(path, target="age").class_names is None  # many distinct numbers: regression
    with pytest.warns(UserWarning, match="dropped 20 row"):
        assert D.load(path, target="age", task="classification").class_names is not None
    with pytest.raises(D.DataError, match="a regression target needs numbers; 'city' holds"):
        D.load(path, target="city", task="regression")


# -- roles and preprocessing ---------------------------------------------------------------------------


def test_roles_are_inferred_and_can_be_overridden():
    frame = messy().drop(columns="churn")
    roles = {c.name: c.role for c in D.infer_roles(frame)}
    assert roles == {"id": "id", "income": "numeric", "city": "categorical", "plan": "categorical", "age": "numeric",
                     "country": "constant", "joined": "date"}
    roles = {c.name: c.role for c in D.infer_roles(frame, categorical=["age"], drop=["city"])}
    assert roles["age"] == "categorical" and roles["city"] == "drop"
    with pytest.raises(D.DataError, match="--numeric names no column 'nope'"):
        D.infer_roles(frame, numeric=["nope"])
    table = D.format_roles(D.infer_roles(frame))
    assert "id" in table and "(dropped: a different value in every row)" in table and "8.3%" in table


def test_the_preprocessing_is_fitted_on_training_rows_only_and_saved_as_json():
    frame = messy().drop(columns="churn")
    train, other = frame.iloc[:200], frame.iloc[200:].copy()
    with pytest.warns(UserWarning, match="dropped column 'id'"):
        prep = D.Preprocessor().fit(train)
    age = [c for c in prep.columns_ if c["name"] == "age"][0]
    assert age["median"] == np.nanmedian(train["age"]) and age["indicator"]
    other.loc[other.index[0], "age"] = 1e6  # a dev value changes nothing learned
    X = prep.transform(other)
    again = D.Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(again.transform(other), X)
    names = prep.output_names
    assert X.shape == (40, len(names)) and "age missing" in names and "plan=(missing)" in names
    assert {"joined.days", "joined.month", "joined.weekday"} <= set(names) and "country" not in " ".join(names)
    standardized = prep.transform(train)[:, names.index("income")]
    assert abs(standardized.mean()) < 1e-5 and abs(standardized.std() - 1) < 1e-4  # the notes' normalization


def test_fit_transform_on_rows_equals_fit_then_transform():
    frame = messy().drop(columns=["churn", "id"])
    rows = np.random.default_rng(1).permutation(len(frame))
    train, dev = rows[:170], rows[170:]
    fused = D.Preprocessor()
    X_train, X_dev = fused.fit_transform(frame, train, [train, dev])
    apart = D.Preprocessor().fit(frame, train)
    assert fused.columns_ == apart.columns_
    np.testing.assert_array_equal(X_train, apart.transform(frame, train))
    np.testing.assert_array_equal(X_dev, apart.transform(frame.iloc[dev]))


@pytest.mark.parametrize("m", [7, 8, 1002, 1000])  # 5, 6, 801 and 800 filled cells
def test_medians_means_and_stds_are_numpys(m):
    values = np.random.default_rng(m).standard_normal(m) * 50 + 3
    values[::5] = np.nan
    c = D.Preprocessor().fit(pd.DataFrame({"x": values})).columns_[0]
    assert c["median"] == np.nanmedian(values)  # an even count of filled cells averages the middle two
    imputed = np.where(np.isnan(values), c["median"], values)
    assert c["mean"] == pytest.approx(imputed.mean(), rel=1e-13) and c["std"] == pytest.approx(imputed.std(), rel=1e-13)


def test_rare_levels_are_grouped_and_the_width_is_capped():
    frame = pd.DataFrame({"code": [f"k{i % 3000}" for i in range(6000)] + ["common"] * 400, "x": 1.0})
    prep = D.Preprocessor(max_levels=32).fit(frame[["code"]])
    names = prep.output_names
    assert len(names) == 2 and names == ["code=common", "code=(other)"]  # k* seen twice, under min_count 5
    capped = D.Preprocessor(min_count=1, max_levels=32).fit(frame[["code"]])
    assert len(capped.output_names) == 33


def test_unseen_categories_go_to_other_with_a_count():
    frame = pd.DataFrame({"city": ["Paris", "Lyon"] * 20, "x": np.arange(40.0)})
    prep = D.Preprocessor().fit(frame)
    with pytest.warns(UserWarning, match=r"never seen in training went to 'other': city \(2 rows\)"):
        X = prep.transform(pd.DataFrame({"x": [1.0, 2.0, 3.0], "city": ["Rome", "Paris", "Oslo"], "extra": 0}))
    assert X[:, prep.output_names.index("city=(other)")].tolist() == [1.0, 0.0, 1.0]


def test_columns_are_matched_by_name_and_missing_ones_named():
    frame = messy().drop(columns=["churn", "id"])
    prep = D.Preprocessor().fit(frame)
    shuffled = frame[list(reversed(frame.columns))].assign(unrelated=1)
    np.testing.assert_array_equal(prep.transform(shuffled), prep.transform(frame))
    with pytest.raises(D.DataError, match="lacks 2 of the model's 5 columns: 'income', 'age'"):
        prep.transform(frame.drop(columns=["income", "age"]))


# -- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,pattern", [
    ("a,b,a,label\n1,2,3,x\n4,5,6,y\n", "duplicate column names 'a'"),
    ("a,label\n1,\n2,\n", "the target column 'label' is empty"),
    ("id,label\n" + "".join(f"u{i},{i % 2}\n" for i in range(40)), "no usable feature column is left"),
    ("a,b,label\n" + "1,1e308,x\n2,3,y\n" * 10, r"column 'b' holds 1e\+308 at line 2, beyond what a float32 holds"),
])
def test_refusals_name_what_is_wrong(tmp_path, text, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no page of NumPy warnings before the error
        warnings.filterwarnings("ignore", ".*dropped column", UserWarning)
        with pytest.raises(D.DataError, match=pattern):
            D.prepare(path, test=0)


def test_unreadable_files_say_why(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02garbage" * 50)
    with pytest.raises(D.DataError, match="not a text table"):
        D.load(tmp_path / "bin.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(D.DataError, match="bad.parquet: cannot read it"):
        D.load(tmp_path / "bad.parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(D.DataError, match="caviar reads .csv, .tsv"):
        D.load(tmp_path / "x.json")


def test_the_cli_refuses_bad_tables_in_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,label\n1,2,3,x\n")
    r = caviar("train", "--data", path, "--out", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip() == f"caviar: error: {path}: duplicate column names 'a'; rename them " \
                                                      f"so each column has its own name"
    assert not (tmp_path / "run" / "model").exists()


# -- end to end ----------------------------------------------------------------------------------------


def test_train_and_predict_a_messy_csv_round_trip(tmp_path):
    frame = messy(400)
    path = write(frame, tmp_path / "customers.csv")
    r = caviar("train", "--data", path, "--target", "churn", "--epochs", "30", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    assert "role" in r.stderr and "training classes: no" in r.stderr
    assert "caviar: warning: customers.csv: dropped column 'id': a different value in every row" in r.stderr
    report = json.loads(r.stdout)
    assert report["test"]["accuracy"] > 0.8
    new = frame.drop(columns="churn").iloc[:50].sample(frac=1, random_state=0)
    new = new[list(reversed(new.columns))]  # columns in another order, without the target
    write(new, tmp_path / "new.csv", sep=";")
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", tmp_path / "new.csv")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0] == "prediction,p_no,p_yes" and len(rows) == 51
    truth = frame.loc[new.index, "churn"].tolist()
    assert np.mean([row.split(",")[0] == t for row, t in zip(rows[1:], truth)]) > 0.8
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", write(new.drop(columns="city"), tmp_path / "x.csv"))
    assert r.returncode == 2 and "lacks 1 of the model's" in r.stderr and "'city'" in r.stderr


def test_regression_predictions_come_back_in_the_target_s_units(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 600)
    frame = pd.DataFrame({"size": x, "kind": rng.choice(["a", "b"], 600)})
    frame["price"] = 200000 + 100000 * x + np.where(frame["kind"] == "a", 30000, 0) + rng.normal(0, 1000, 600)
    path = write(frame, tmp_path / "houses.csv")
    r = caviar("train", "--data", path, "--target", "price", "--epochs", "40", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["test"]["r2"] > 0.95 and 1000 < report["test"]["rmse"] < 20000  # in dollars, not standardized
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", path)
    predicted = np.array([float(v) for v in r.stdout.splitlines()[1:]])
    assert np.sqrt(np.mean((predicted - frame["price"]) ** 2)) < 20000


def test_a_real_table_with_dates_ids_and_missing_cells_trains_and_predicts(tmp_path):
    """palmerpenguins' raw table (offline in the package): dates, IDs, free-text comments,
    constant columns and missing cells."""
    pytest.importorskip("palmerpenguins")
    path = resources.files("palmerpenguins").joinpath("data/penguins-raw.csv")
    r = caviar("train", "--data", path, "--target", "Species", "--epochs", "30", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    assert "Date Egg             date" in r.stderr and "Region               constant" in r.stderr
    assert json.loads(r.stdout)["test"]["accuracy"] > 0.95
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 345  # a header and every penguin


def test_the_bundled_penguins_table_is_palmerpenguins_raw_table_and_predicts_by_name(tmp_path):
    """``--data penguins`` is the file the palmerpenguins package ships (CC0), read from
    inside caviar; a model trained on it predicts from the same name."""
    pytest.importorskip("palmerpenguins")
    from caviar.data.loading import bundled_table

    shipped = resources.files("palmerpenguins").joinpath("data/penguins-raw.csv").read_bytes()
    assert open(bundled_table("penguins"), "rb").read() == shipped
    r = caviar("train", "--data", "penguins", "--epochs", "15", "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    assert "dropped 11 row(s) whose target 'Sex' is missing" in r.stderr
    assert json.loads(r.stdout)["test"]["accuracy"] > 0.75
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", "penguins")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "prediction,p_FEMALE,p_MALE" and len(lines) == 345


def test_tune_takes_the_same_tables_and_options(tmp_path):
    path = write(messy(300), tmp_path / "customers.csv")
    r = caviar("tune", "--data", path, "--target", "churn", "--drop", "joined", "--class-weight", "balanced", "--trials", "4", "--epochs", "3",
               "--out", tmp_path / "tune", "--json")
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout)["best"]
    assert best["dev_accuracy"] > 0.6
    r = caviar("predict", "--model", tmp_path / "tune" / "best-model", "--data", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("prediction,p_no,p_yes")


def test_balanced_class_weights_raise_the_balanced_accuracy_of_a_rare_class(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 2))
    rare = (x[:, 0] + 0.7 * rng.standard_normal(3000)) > 1.6  # about 8% of rows
    path = write(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "flag": np.where(rare, "rare", "common")}), tmp_path / "t.csv")
    runs = {}
    for weighted in (False, True):
        args = ["--class-weight", "balanced"] if weighted else []
        r = caviar("train", "--data", path, "--epochs", "15", "--out", tmp_path / f"run{weighted}", "--json", *args)
        assert r.returncode == 0, r.stderr
        runs[weighted] = json.loads(r.stdout)["test"]
        assert ("(weight " in r.stderr) == weighted
    assert set(runs[True]) >= {"accuracy", "roc_auc", "f1", "balanced_accuracy"}
    assert runs[True]["balanced_accuracy"] > runs[False]["balanced_accuracy"] + 0.05


def test_a_model_trained_on_arrays_predicts_from_a_table_by_column_name(tmp_path):
    X = RNG.standard_normal((200, 3))
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y, feature_names=np.array(["a", "b", "c"]))
    r = caviar("train", "--data", tmp_path / "d.npz", "--epochs", "20", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    write(pd.DataFrame(X[:20], columns=["a", "b", "c"])[["c", "a", "b"]].assign(note="x"), tmp_path / "new.csv")
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", tmp_path / "new.csv")
    assert r.returncode == 0, r.stderr
    assert np.mean([int(v.split(",")[0]) == t for v, t in zip(r.stdout.splitlines()[1:], y[:20])]) > 0.8
    write(pd.DataFrame({"a": [1.0, None], "b": 1.0, "c": 1.0}), tmp_path / "gap.csv")
    r = caviar("predict", "--model", tmp_path / "run" / "model", "--data", tmp_path / "gap.csv")
    assert r.returncode == 2 and "column 'a' is missing or not finite at row 2" in r.stderr
