"""Reading tables the way people have them, with pandas (and pyarrow for Parquet and Feather).

- CSV and TSV (``.csv``, ``.tsv``, ``.txt``), the delimiter sniffed among ``, ; tab |``, a UTF-8
  byte-order mark stripped, UTF-8 with a fallback to latin-1 (with a warning), compressed by
  extension (``.gz``, ``.bz2``, ``.zip``, ``.xz``);
- Parquet (``.parquet``, ``.pq``) and Feather (``.feather``);
- in Python, a ``pandas.DataFrame``.

Missing cells: empty, ``NA``, ``N/A``, ``NaN``, ``null``, ``None``, ``?`` (and pandas' other
spellings of them), plus any ``na_values`` given. Duplicate column names are refused, named:
pandas would rename them silently and a model would train on the wrong columns.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
import warnings
import zipfile

from ..errors import DataError

NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "#N/A", "<NA>", "-NaN", "-nan"]
TEXT = (".csv", ".tsv", ".txt", ".tab")
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zip": None}
COLUMNAR = (".parquet", ".pq", ".feather")
DELIMITERS = ",;\t|"


def is_table(path):
    """True for a file this module reads (by its extension)."""
    lower = os.fspath(path).lower()
    for ext in COMPRESSED:
        if lower.endswith(ext):
            lower = lower[: -len(ext)]
    return lower.endswith(TEXT + COLUMNAR)


def _open_text_sample(path, size=1 << 16):
    """The first bytes of the (decompressed) file."""
    lower = path.lower()
    if lower.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise DataError(f"{path}: a .zip table must hold exactly one file, it holds {len(names)}")
            with z.open(names[0]) as f:
                return f.read(size)
    opener = next((fn for ext, fn in COMPRESSED.items() if lower.endswith(ext) and fn), open)
    with opener(path, "rb") as f:
        return f.read(size)


def _decode(sample, path):
    """(encoding, text): UTF-8 (a BOM stripped), or latin-1 with a warning."""
    try:
        return "utf-8-sig", sample.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 4:  # a character cut at the end of the sample
            return "utf-8-sig", sample[: exc.start].decode("utf-8-sig")
        warnings.warn(f"{path}: not UTF-8 (byte {sample[exc.start]:#x} at offset {exc.start}); reading it as latin-1",
                      stacklevel=3)
        return "latin-1", sample.decode("latin-1")


def _dialect(text, path):
    """The delimiter, sniffed from the first lines; TSV files default to tab."""
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    if len(lines) > 1 and lines[-1] == text.splitlines()[-1] and not text.endswith("\n"):
        lines = lines[:-1] or lines  # the sample may end in the middle of a line
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _header(text, delimiter):
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def check_columns(names, source):
    """Refuse duplicate or empty column names, naming them."""
    seen, repeated = set(), []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise DataError(f"{source}: duplicate column names {', '.join(repr(n) for n in repeated)}; rename them so "
                        f"each column has its own name")


def read_table(source, na_values=None):
    """A ``pandas.DataFrame`` from a file (see the module's list) or a DataFrame (copied)."""
    import pandas

    na = NA_VALUES + [str(v) for v in (na_values or [])]
    if isinstance(source, pandas.DataFrame):
        check_columns([str(c) for c in source.columns], "the DataFrame")
        frame = source.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame.replace({v: None for v in (na_values or [])}) if na_values else frame
    path = os.fspath(source)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise DataError(f"{path!r} is a directory; give a table file")
    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            frame = pandas.read_parquet(path)
        elif lower.endswith(".feather"):
            frame = pandas.read_feather(path)
        else:
            return _read_text(path, na)
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(f"{path}: reading it needs {exc.name}: pip install pyarrow") from None
    except Exception as exc:  # the reader's own reason: a corrupt file, a wrong format
        raise DataError(f"{path}: cannot read it: {exc}") from None
    check_columns([str(c) for c in frame.columns], path)
    frame.columns = [str(c) for c in frame.columns]
    if na_values:
        frame = frame.replace({v: None for v in na_values})
    return frame


def _read_text(path, na):
    import pandas

    try:
        sample = _open_text_sample(path)
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if b"\x00" in sample[:4096]:
        raise DataError(f"{path}: not a text table (it holds binary data); CSV, TSV, Parquet and Feather are read")
    encoding, text = _decode(sample, path)
    delimiter = _dialect(text, path)
    header = [h.strip() for h in _header(text, delimiter)]
    check_columns(header, path)
    # spaces after the delimiter ("1, 2, yes") are skipped; the parser's option for that costs a
    # third more time (1.04 s against 0.78 s for a 1,000,000-row file), so it is asked for only
    # where the file's first lines have such spaces
    spaced = delimiter + " " in text
    try:
        return _read_text_as(path, delimiter, encoding, na, spaced)
    except pandas.errors.ParserError as exc:
        raise DataError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:  # past the sample the encoding checked
        if encoding == "latin-1":
            raise DataError(f"{path}: cannot read it ({exc})") from None
        warnings.warn(f"{path}: not UTF-8 (byte {exc.object[exc.start]:#x} past the first lines); reading it as latin-1",
                      stacklevel=3)
        return _read_text_as(path, delimiter, "latin-1", na, spaced)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None


def _read_text_as(path, delimiter, encoding, na, spaced=True):
    import pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pandas.errors.DtypeWarning)  # a mixed column is read as text
        frame = pandas.read_csv(path, sep=delimiter, encoding=encoding, na_values=na, keep_default_na=False,
                                skipinitialspace=spaced, compression="infer")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame
