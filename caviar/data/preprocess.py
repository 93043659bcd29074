"""The preprocessing of a table, fitted on the training rows only and saved with the model.

The notes normalize inputs with the training set's mean and standard deviation; a real table
needs a little more first, all of it learned from the training rows and nothing else:

- numeric columns: a missing cell gets the training median and a 0/1 "was missing" column
  (for columns with missing training cells), then every value is standardized;
- date columns: three numbers (days since 1970-01-01, month, weekday), then as numeric;
- categorical columns: one-hot. A missing cell is a level of its own; levels seen fewer than
  ``min_count`` times in training, beyond the ``max_levels`` most frequent, or never seen, go to
  one "other" column, so a 3,000-level column cannot explode the input. Values a column never
  had in training are counted in a warning (where training grouped rare levels into "other",
  a new value cannot be told from a rare one, and goes there silently).

What a fitted preprocessing remembers is a handful of lists and numbers: ``to_dict`` is JSON and
``from_dict`` rebuilds it without executing anything. ``transform`` matches columns by name in
any order, ignores extra columns, and refuses missing ones by name.
"""

from __future__ import annotations

import os
import warnings

import numpy

from .columns import KEPT, Rows, infer_roles
from ..errors import DataError

MISSING, OTHER = "(missing)", "(other)"
FLOAT32_MAX = float(numpy.finfo(numpy.float32).max)


def _first(series, mask):
    """The position of the first marked cell in the order the table was read (rows may have
    been shuffled by the split)."""
    marked = numpy.flatnonzero(mask)
    labels = series.index[marked]
    try:
        return int(marked[numpy.argmin(numpy.asarray(labels))])
    except (TypeError, ValueError):
        return int(marked[0])


def _at(series, i, position):
    """Where cell ``i`` of a column is, as a person finds it: the file's line (the header is
    line 1) or the table's row, counted from 1 in the order it was read."""
    label = series.index[i]
    where = int(label) + (2 if position == "line" else 1) if isinstance(label, (int, numpy.integer)) else label
    return f"{position} {where}"


def numbers(series, name, source, position="row"):
    """A column as float64, refusing text and values that overflow float32 (named)."""
    import pandas

    if pandas.api.types.is_numeric_dtype(series) and not pandas.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=numpy.float64, na_value=numpy.nan)
        bad_text = numpy.zeros(0, dtype=bool)
    else:
        values = pandas.to_numeric(series, errors="coerce").to_numpy(dtype=numpy.float64, na_value=numpy.nan)
        bad_text = numpy.isnan(values) & series.notna().to_numpy()
    if bad_text.any():
        i = _first(series, bad_text)
        raise DataError(f"{source}: numeric column {name!r} has the text {series.iloc[i]!r} at {_at(series, i, position)}")
    # the common case in two passes without temporaries: fmax/fmin skip NaN (missing cells)
    if len(values) and not (numpy.fmax.reduce(values) > FLOAT32_MAX or numpy.fmin.reduce(values) < -FLOAT32_MAX):
        return values
    too_big = numpy.abs(values) > FLOAT32_MAX  # inf too; NaN compares False
    if too_big.any():
        i = _first(series, too_big)
        raise DataError(f"{source}: column {name!r} holds {values[i]:g} at {_at(series, i, position)}, beyond what a "
                        f"float32 holds (about 3.4e38); rescale or remove it")
    return values


def _median(work):
    """``numpy.median(work)``, reordering ``work``: one selection and a max, which is several
    times faster than NumPy's selection of the two middle values at once."""
    k = len(work) // 2
    work.partition(k)
    return float(work[k]) if len(work) % 2 else float((work[k] + work[:k].max()) / 2)


def _date_parts(series):
    import pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        when = pandas.to_datetime(series, errors="coerce", format="mixed")
    days = (when - pandas.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
    return {"days": days.to_numpy(dtype=numpy.float64, na_value=numpy.nan),
            "month": when.dt.month.to_numpy(dtype=numpy.float64, na_value=numpy.nan),
            "weekday": when.dt.day_of_week.to_numpy(dtype=numpy.float64, na_value=numpy.nan)}


def _label(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 3 and 3.0 (an integer column with a missing cell) are one level
    return str(value)


def _categories(series):
    """(codes, labels): each cell's index into ``labels``, the column's distinct values as text,
    with missing cells as their own label. Hashing (pandas.factorize) keeps it fast on big
    columns: only the distinct values pass through Python."""
    import pandas

    codes, uniques = pandas.factorize(series, use_na_sentinel=True)
    labels = [_label(v) for v in uniques] + [MISSING]
    codes = numpy.where(codes < 0, len(labels) - 1, codes)
    return codes, labels


def _rows_of(columns, block=16384):
    """The transpose of ``columns`` (n, m), C-contiguous, copied in blocks of rows that stay in
    cache (one strided pass over a wide array is up to ten times slower), the blocks shared out
    between the cores."""
    out = numpy.empty(columns.shape[::-1], dtype=columns.dtype)

    def fill(i):
        out[i:i + block] = columns[:, i:i + block].T

    _each(fill, list(range(0, len(out), block)))
    return out


def _each(fn, items):
    """``[fn(item) for item in items]``, on every core: NumPy and pandas release the GIL for
    the column-wide work, so columns are processed side by side."""
    if len(items) < 2:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


class Preprocessor:
    """Column roles and what each kept column needs (see the module); ``fit`` on training rows."""

    def __init__(self, categorical=(), numeric=(), drop=(), min_count=5, max_levels=32):
        if min_count < 1 or max_levels < 1:
            raise ValueError(f"min_count and max_levels must be at least 1, got {min_count} and {max_levels}")
        self.overrides = {"categorical": list(categorical), "numeric": list(numeric), "drop": list(drop)}
        self.min_count, self.max_levels = int(min_count), int(max_levels)
        self.columns_ = None

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, frame, rows=None, source="the training data", position="row"):
        """Learn from the training rows (``rows``: their positions in ``frame``; all by default),
        taken column by column so the table is never copied whole."""
        self._fit(frame, rows, source, position)
        return self

    def fit_transform(self, frame, rows, sets, source="the training data", position="row"):
        """``fit`` on ``rows``, then the model's inputs for each index array in ``sets`` (the
        split's train, dev and test rows of the same ``frame``): each column is converted once,
        for both."""
        whole = self._fit(frame, rows, source, position)
        every_row = _rows_of(self._columns(Rows(frame, None), source, position, whole))
        return _each(lambda index: every_row.take(index, axis=0), list(sets))  # gathers release the GIL

    def _fit(self, frame, rows, source, position):
        """Fits; returns what it converted of each whole column (numbers, date parts, category
        codes) for ``_columns`` to reuse."""
        # roles are read from the whole table's columns (their kind, whether they vary); every
        # number the model uses (medians, means, levels) is learned from the training rows only
        self.roles_ = infer_roles(frame, **self.overrides)
        # what is learned does not depend on the rows' order: in the table's order, taking them
        # from a column reads it front to back (a shuffled take is several times slower)
        frame = Rows(frame, None if rows is None else numpy.sort(rows))
        for col in self.roles_:
            if col.role == "id":
                warnings.warn(f"{source}: dropped column {col.name!r}: a different value in every row (an ID?)",
                              stacklevel=3)
        kept = [col for col in self.roles_ if col.role in KEPT]
        if not kept:
            raise DataError(f"{source}: no usable feature column is left (roles: "
                            f"{', '.join(f'{c.name} {c.role}' for c in self.roles_) or 'no columns'})")

        def learn(col):
            series = frame.frame[col.name]  # the whole column, converted once; training rows taken as arrays
            if col.role == "categorical":
                whole = _categories(series)
                return [self._fit_categorical(col.name, frame.take(whole[0]), whole[1])], {col.name: whole}
            parts = _date_parts(series) if col.role == "date" else {"": numbers(series, col.name, source, position)}
            return ([self._fit_numeric(col.name, col.role, part, frame.take(v), own=frame.rows is not None)
                     for part, v in parts.items()], {col.name: parts})

        learned = _each(learn, kept)
        self.columns_ = [c for columns, _ in learned for c in columns]  # what transform needs
        return {name: values for _, whole in learned for name, values in whole.items()}

    @staticmethod
    def _fit_numeric(name, role, part, values, own=False):
        """Median, then mean and std of the imputed column, on one working array (``values``
        itself when the caller gives it away, ``own``), reordered by the median's partition,
        which the mean and std do not mind."""
        missing = numpy.isnan(values)
        n_missing = int(missing.sum())
        work = values[~missing] if n_missing else (values if own else values.copy())
        median = _median(work) if len(work) else 0.0
        n = len(values)
        mean = (float(work.sum()) + n_missing * median) / n if n else 0.0
        work -= mean
        square = float(numpy.dot(work, work)) + n_missing * (median - mean) ** 2
        std = (square / n) ** 0.5 if n else 0.0
        return {"name": name, "role": role, "part": part, "median": median, "mean": mean,
                "std": std if std > 0 else 1.0, "indicator": bool(n_missing)}

    def _fit_categorical(self, name, codes, labels):
        """The levels kept: the most frequent (first seen in the table first among equals) of
        those seen at least ``min_count`` times in ``codes`` (the training rows' indices into
        ``labels``), at most ``max_levels``; a missing cell is a level however rare."""
        counts = {}
        for label, n in zip(labels, numpy.bincount(codes, minlength=len(labels))):
            if n:
                counts[label] = counts.get(label, 0) + int(n)  # 3 and 3.0 are one label
        order = sorted(counts, key=lambda k: -counts[k])  # stable: first seen first among equals
        kept = [k for k in order if counts[k] >= self.min_count or k == MISSING][: self.max_levels]
        return {"name": name, "role": "categorical", "levels": kept, "other": bool(len(kept) < len(counts))}

    # -- applying ---------------------------------------------------------------------------------
    @staticmethod
    def _width(c):
        return len(c["levels"]) + 1 if c["role"] == "categorical" else 1 + c["indicator"]

    @property
    def input_names(self):
        """The table columns a model needs, in order."""
        return list(dict.fromkeys(c["name"] for c in self.columns_))

    @property
    def output_names(self):
        """The names of the model's input columns (one-hot levels, indicators, date parts)."""
        names = []
        for c in self.columns_:
            if c["role"] == "categorical":
                names += [f"{c['name']}={level}" for level in c["levels"] + [OTHER]]
            else:
                base = c["name"] + (f".{c['part']}" if c["part"] else "")
                names.append(base)
                if c["indicator"]:
                    names.append(f"{base} missing")
        return names

    def transform(self, frame, rows=None, source="the data", position="row"):
        """The model's inputs (m, n_x) as float32 for ``frame``'s ``rows`` (all by default).
        Categories never seen in training go to 'other', with a warning that counts them."""
        absent = [n for n in self.input_names if n not in frame.columns]
        if absent:
            shown = ", ".join(repr(n) for n in absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
            raise DataError(f"{source}: lacks {len(absent)} of the model's {len(self.input_names)} columns: {shown}")
        return _rows_of(self._columns(Rows(frame, rows), source, position))

    def _columns(self, frame, source, position, whole=None):
        """The model's inputs for ``frame`` (``Rows``) as columns: (n_x, m) float32, filled column
        by column, each a contiguous row of the array. ``whole`` holds columns ``_fit`` already
        converted."""
        whole = dict(whole or {})
        X = numpy.empty((len(self.output_names), len(frame)), dtype=numpy.float32)
        starts = numpy.cumsum([0] + [self._width(c) for c in self.columns_])
        for name in {c["name"] for c in self.columns_ if c["role"] == "date"} - set(whole):
            whole[name] = _date_parts(frame.frame[name])

        def fill(job):
            c, at = job
            name = c["name"]
            if c["role"] == "categorical":
                codes, labels = whole[name] if name in whole else _categories(frame.frame[name])
                index = {level: i for i, level in enumerate(c["levels"])}
                level_of = numpy.array([index.get(label, len(index)) for label in labels], dtype=numpy.int64)
                codes = level_of[frame.take(codes)]
                X[at:at + len(index) + 1] = 0.0
                X[at + codes, numpy.arange(len(codes))] = 1.0
                new = 0 if c["other"] else int((codes == len(index)).sum())
                return (name, new) if new else None
            values = whole[name][c["part"]] if name in whole else numbers(frame.frame[name], name, source, position)
            values = frame.take(values)
            in_place = abs(c["mean"]) <= 1000 * c["std"]
            if in_place:  # float32, in X's own row: a third of float64's memory traffic, and the
                work = X[at]  # standardized values keep float32's precision while the mean is
                work[...] = values  # within 1000 stds of zero
            else:  # far from zero: the mean subtracted in float64 first (values may view the frame)
                work = values if frame.rows is not None else values.copy()
            missing = numpy.isnan(work)
            numpy.copyto(work, c["median"], where=missing)
            work -= work.dtype.type(c["mean"])
            work /= work.dtype.type(c["std"])
            if not in_place:
                X[at] = work
            if c["indicator"]:
                X[at + 1] = missing
            return None

        unseen = dict(u for u in _each(fill, list(zip(self.columns_, starts))) if u)
        if unseen:
            warnings.warn(f"{source}: categories never seen in training went to 'other': "
                          + ", ".join(f"{n} ({k} row{'s' if k != 1 else ''})" for n, k in unseen.items()), stacklevel=3)
        return X

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self):
        return {"kind": "table", "min_count": self.min_count, "max_levels": self.max_levels,
                "overrides": self.overrides, "columns": self.columns_,
                "roles": [c.to_dict() for c in getattr(self, "roles_", [])]}

    @classmethod
    def from_dict(cls, d):
        pre = cls(d["overrides"]["categorical"], d["overrides"]["numeric"], d["overrides"]["drop"], d["min_count"],
                  d["max_levels"])
        pre.columns_ = [dict(c) for c in d["columns"]]
        return pre
