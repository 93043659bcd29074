"""Loading data: tables (``caviar.data.table``), ``.npz`` files, NumPy arrays, and bundled
datasets by name.

Every loader returns a ``Dataset``: y (m,) labels as integers 0..C-1 (class names kept in
``class_names``) or floats for regression, and X (m, n_x) numbers, or for a table its raw
feature columns (``frame``), which ``caviar.data.prepare`` turns into numbers with statistics of
the training rows only. Errors name the file, the column and the row, so a person can fix the
data.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy

from ..errors import DataError


@dataclass
class Dataset:
    X: numpy.ndarray
    y: numpy.ndarray
    feature_names: list
    class_names: list | None = None  # None for regression targets
    name: str = ""
    target: str | None = None
    image_shape: tuple | None = None  # (height, width) for image data, for augmentation
    notes: dict = field(default_factory=dict)
    frame: object = None  # a table's feature columns as read (pandas), before preprocessing
    lines: bool = False  # a text file: positions are reported as its lines (the header is line 1)
    inputs: list | None = None  # the network's input columns once prepared (one-hot levels...)
    target_scale: tuple | None = None  # a regression target's training (mean, std), once prepared
    class_weight: list | None = None  # the training cost's weight of each class, once prepared

    @property
    def n_x(self):
        """The number of network inputs (after preprocessing, for a table)."""
        return len(self.inputs) if self.inputs is not None else self.X.shape[1]

    @property
    def n_classes(self):
        return len(self.class_names) if self.class_names is not None else None

    def __len__(self):
        return len(self.X)


# a real table that ships with caviar (caviar/data/tables/README.md: where it comes from, its
# license) and the column it predicts unless a target is named
TABLES = {"penguins": ("penguins.csv", "Sex")}
BUNDLED = ("moons", "circles", "digits", "iris", "wine", "breast_cancer", "synthetic") + tuple(TABLES)


def bundled_table(spec):
    """The file of a bundled table named ``spec`` (where no file of that name exists), else
    ``spec`` itself."""
    if isinstance(spec, (str, os.PathLike)) and os.fspath(spec) in TABLES and not os.path.exists(spec):
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables", TABLES[os.fspath(spec)][0])
    return spec


def load(spec, target=None, seed=0, task=None, na_values=None):
    """A bundled dataset by name, a table (a CSV, TSV, Parquet or Feather file, or a
    ``pandas.DataFrame``; ``target`` names the label column, default the last), or an ``.npz``
    with X and y.

    Bundled: 'moons', 'circles', 'digits', 'iris', 'wine', 'breast_cancer', and
    'synthetic' or 'synthetic:M' (M examples, default 10,000; for the big-data split rule);
    and a real table, 'penguins' (text categories, empty cells; its target 'Sex' by default).
    """
    from . import table

    if not isinstance(spec, (str, os.PathLike)):
        return load_table(spec, target, task, na_values)
    spec = os.fspath(spec)
    name, _, arg = spec.partition(":")
    if name in TABLES and not os.path.exists(spec):
        return load_table(bundled_table(spec), target or TABLES[name][1], task, na_values)
    if name in BUNDLED and not os.path.exists(spec):
        return load_bundled(name, seed=seed, **({"n_samples": _count(arg, spec)} if arg else {}))
    if not os.path.exists(spec):
        raise DataError(f"no such file: {spec!r} (and it is not a bundled dataset: {', '.join(BUNDLED)})")
    if os.path.isdir(spec):
        raise DataError(f"{spec!r} is a directory; give a .csv or .npz file")
    if spec.lower().endswith(".npz"):
        return load_npz(spec)
    if not table.is_table(spec):
        raise DataError(f"{spec!r}: caviar reads .csv, .tsv, .txt (compressed .gz, .bz2, .zip, .xz too), .parquet, "
                        f".feather and .npz files")
    return load_table(spec, target, task, na_values)


def load_table(source, target=None, task=None, na_values=None):
    """A table's target and raw feature columns (``Dataset.frame``), preprocessed later with
    statistics of its training rows only (``caviar.data.prepare``)."""
    from .columns import target_of
    from .table import read_table

    frame = read_table(source, na_values)
    name = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "DataFrame"
    if len(frame) == 0:
        raise DataError(f"{name}: needs a header row and at least one example")
    target = target if target is not None else frame.columns[-1]
    frame, y, classes = target_of(frame, target, task, source=name)
    if frame.shape[1] == 0:
        raise DataError(f"{name}: no feature columns besides the target {target!r}")
    return Dataset(None, y, list(frame.columns), classes, name, target, frame=frame,
                   lines=isinstance(source, (str, os.PathLike)))


def _count(arg, spec):
    try:
        n = int(arg)
    except ValueError:
        raise DataError(f"{spec!r}: the number of examples must be an integer") from None
    if n < 10:
        raise DataError(f"{spec!r}: a synthetic dataset needs at least 10 examples")
    return n


def load_bundled(name, seed=0, n_samples=None):
    """The notes' toy problems and scikit-learn's bundled datasets (no download)."""
    from sklearn import datasets

    if name == "moons":
        X, y = datasets.make_moons(n_samples=n_samples or 1000, noise=0.2, random_state=seed)
        return Dataset(X, y, ["x1", "x2"], ["0", "1"], name)
    if name == "circles":
        X, y = datasets.make_circles(n_samples=n_samples or 1000, noise=0.1, factor=0.5, random_state=seed)
        return Dataset(X, y, ["x1", "x2"], ["0", "1"], name)
    if name == "synthetic":
        X, y = datasets.make_classification(n_samples=n_samples or 10000, n_features=20, n_informative=10,
                                            n_redundant=4, n_classes=3, random_state=seed)
        return Dataset(X, y, [f"f{i}" for i in range(20)], ["0", "1", "2"], name)
    loaders = {"digits": datasets.load_digits, "iris": datasets.load_iris, "wine": datasets.load_wine,
               "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise DataError(f"unknown bundled dataset {name!r}; expected one of {', '.join(BUNDLED)}")
    bunch = loaders[name]()
    features = [str(f) for f in getattr(bunch, "feature_names", [f"f{i}" for i in range(bunch.data.shape[1])])]
    classes = [str(c) for c in bunch.target_names]
    return Dataset(bunch.data.astype(numpy.float64), bunch.target.astype(numpy.int64), features, classes, name,
                   image_shape=(8, 8) if name == "digits" else None)


def from_arrays(X, y, feature_names=None, name="arrays"):
    """A Dataset from arrays; labels that are not integers 0..C-1 are mapped to them."""
    X = numpy.asarray(X)
    if X.ndim != 2:
        raise DataError(f"X must be a 2-D array (m, n_x), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise DataError(f"X must hold numbers, got dtype {X.dtype}")
    y = numpy.asarray(y)
    if len(y) != len(X):
        raise DataError(f"X has {len(X)} examples but y has {len(y)}")
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(X.shape[1])]
    check_finite_features(X, names)
    y, classes = encode_labels(y)
    return Dataset(X.astype(numpy.float64), y, names, classes, name)


def load_npz(path):
    """An ``.npz`` with arrays ``X`` and ``y`` (loaded without pickle)."""
    try:
        with numpy.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise DataError(f"{path}: an .npz dataset needs arrays 'X' and 'y'; it has {data.files}")
            X, y = data["X"], data["y"]
            names = [str(n) for n in data["feature_names"]] if "feature_names" in data.files else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    ds = from_arrays(X, y, names, name=os.path.basename(path))
    return ds


def encode_labels(y):
    """Class labels -> integers 0..C-1 and the class names; float targets stay as they are.

    Integer labels and strings are classes; floats are classes only when they are all whole
    numbers with few distinct values, otherwise a regression target (class names None).
    """
    y = numpy.asarray(y)
    if y.dtype.kind == "f":
        finite = numpy.isfinite(y)
        if not finite.all():
            row = int(numpy.argmin(finite))
            raise DataError(f"target value at row {row + 1} is {y[row]}")
        whole = bool((y == numpy.round(y)).all())
        if not whole or len(numpy.unique(y)) > max(20, int(math.sqrt(len(y)))):
            return y.astype(numpy.float64), None
        y = y.astype(numpy.int64)
    classes, codes = numpy.unique(y.astype(str) if y.dtype.kind not in "iub" else y, return_inverse=True)
    return codes.astype(numpy.int64), [str(c) for c in classes]


def check_finite_features(X, feature_names=None, source="X"):
    """Raise ``DataError`` naming the column and row of the first NaN or inf."""
    bad = ~numpy.isfinite(X)
    if bad.any():
        row, col = (int(i) for i in numpy.argwhere(bad)[0])
        name = feature_names[col] if feature_names is not None else f"column {col}"
        raise DataError(f"{source}: feature {name!r} is {X[row, col]} at row {row + 1}; remove or impute it")
