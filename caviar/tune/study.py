"""A study in one SQLite file (WAL mode): the space, the strategy's settings, every trial's
parameters, status, seed, per-epoch metrics and timing, and the box of every coarse-to-fine
round. Several processes may write to it at once (workers report their own trials).

Trial statuses: pending -> running -> complete | diverged | failed. A trial is claimed with a
random token when it starts; a result is accepted only with the current token, so a worker
orphaned by a killed driver can never overwrite the trial's re-run.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import time
import uuid

from ..errors import CaviarError
from ..processes import alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,          -- the strategy's name for it, so proposing is idempotent
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    round INTEGER NOT NULL DEFAULT 0,
    rung INTEGER NOT NULL DEFAULT 0,
    budget INTEGER NOT NULL,           -- epochs
    parent INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',
    claim TEXT,
    value REAL,                        -- the best dev metric over its epochs
    last_value REAL,
    best_epoch INTEGER,
    error TEXT,
    started REAL,
    finished REAL,
    duration REAL,
    runs INTEGER NOT NULL DEFAULT 0    -- how many times it was started (a resumed trial: 2)
);
CREATE TABLE IF NOT EXISTS epochs (
    trial INTEGER NOT NULL, epoch INTEGER NOT NULL, train_cost REAL, dev_cost REAL, dev_metric REAL,
    PRIMARY KEY (trial, epoch)
);
CREATE TABLE IF NOT EXISTS boxes (round INTEGER PRIMARY KEY, box TEXT NOT NULL);
"""
# every complete trial's network at its best epoch and its dev predictions there, so the
# ensemble is built from what the search trained (nothing retrained), and nothing of it is lost
# when a study is interrupted; written in the same transaction as the trial's outcome
MODELS = """
CREATE TABLE IF NOT EXISTS models (
    trial INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, config TEXT NOT NULL, weights BLOB NOT NULL,
    dev BLOB NOT NULL                   -- .npy bytes: float32 (m_dev, n_y) probabilities or predictions
);
"""

FINISHED = ("complete", "diverged", "failed")


class StudyError(CaviarError, ValueError):
    """A study file that cannot be opened or does not fit the request."""


def connect(path):
    conn = sqlite3.connect(os.fspath(path), timeout=60, isolation_level=None)  # autocommit; explicit BEGIN
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.row_factory = sqlite3.Row
    return conn


class Study:
    """An open study file. ``Study.create(path, settings)`` or ``Study.open(path)``."""

    def __init__(self, path, conn):
        self.path = os.fspath(path)
        self.conn = conn

    @classmethod
    def create(cls, path, settings):
        path = os.fspath(path)
        if os.path.exists(path):
            raise StudyError(f"a study already exists at {path!r}; resume it with --study, or choose another path")
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            conn = connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StudyError(f"cannot create a study at {path!r}: {exc}") from None
        conn.executescript(SCHEMA + MODELS)
        study = cls(path, conn)
        with study.transaction():
            for key, value in {**settings, "format": "caviar-study", "version": 1, "created": time.time()}.items():
                conn.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        return study

    @classmethod
    def open(cls, path):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise StudyError(f"no study at {path!r}")
        try:
            conn = connect(path)
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{path!r} is not a caviar study ({exc})") from None
        meta = {r["key"]: json.loads(r["value"]) for r in rows}
        if meta.get("format") != "caviar-study":
            raise StudyError(f"{path!r} is not a caviar study")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'models'").fetchone() is None:
            conn.executescript(MODELS)  # a study written before trials kept their networks
        return cls(path, conn)

    def close(self):
        try:
            self.conn.close()
        except sqlite3.ProgrammingError:
            pass

    def transaction(self):
        return _Transaction(self.conn)

    # -- settings ----------------------------------------------------------------------------
    @property
    def settings(self):
        rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def set_setting(self, key, value):
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # -- the one live driver ---------------------------------------------------------------------
    def claim_driver(self):
        """Make this process the study's driver; refuse while another live process is."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        with self.transaction():
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'driver'").fetchone()
            other = json.loads(row["value"]) if row is not None else None
            if other and other.get("pid") != me["pid"] and other.get("host") == me["host"] and alive(other.get("pid")):
                raise StudyError(f"study {self.path!r} is being run by process {other['pid']}; wait for it, or stop it, "
                                 f"before running the study again")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('driver', ?)", (json.dumps(me),))

    def release_driver(self):
        with self.transaction():
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'driver'").fetchone()
            if row is not None and (json.loads(row["value"]) or {}).get("pid") == os.getpid():
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('driver', 'null')")

    # -- trials ------------------------------------------------------------------------------
    def add_trials(self, specs):
        """Insert trials that are not there yet (by key); return how many were new."""
        added = 0
        with self.transaction():
            for spec in specs:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO trials (key, params, seed, round, rung, budget, parent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (spec["key"], json.dumps(spec["params"]), spec["seed"], spec.get("round", 0), spec.get("rung", 0),
                     spec["budget"], spec.get("parent")))
                added += cur.rowcount
        return added

    def trials(self, status=None):
        query = "SELECT * FROM trials"
        args = ()
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = statuses
        return [_trial(r) for r in self.conn.execute(query + " ORDER BY number", args).fetchall()]

    def trial(self, number):
        row = self.conn.execute("SELECT * FROM trials WHERE number = ?", (number,)).fetchone()
        if row is None:
            raise StudyError(f"study {self.path!r} has no trial {number}")
        return _trial(row)

    def running(self):
        """Numbers of the trials marked running."""
        return [r[0] for r in self.conn.execute("SELECT number FROM trials WHERE status = 'running' ORDER BY number")]

    def reset_interrupted(self, kept=None):
        """Trials left 'running' by a killed driver go back to 'pending', so they run again;
        finished trials are kept. ``kept`` maps a trial to the epoch of its resume point: its
        epochs up to there are kept (it goes on from there), the rest are dropped."""
        kept = kept or {}
        with self.transaction():
            numbers = [r[0] for r in self.conn.execute("SELECT number FROM trials WHERE status = 'running'")]
            for n in numbers:
                self.conn.execute("DELETE FROM epochs WHERE trial = ? AND epoch > ?", (n, kept.get(n, 0)))
            self.conn.execute("UPDATE trials SET status = 'pending', claim = NULL, started = NULL WHERE status = 'running'")
        return numbers

    def claim(self, number):
        """Mark a pending trial running with a fresh token; None if it is not pending."""
        token = uuid.uuid4().hex
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE trials SET status = 'running', claim = ?, started = ?, runs = runs + 1 WHERE number = ? AND status = 'pending'",
                (token, time.time(), number))
        return token if cur.rowcount == 1 else None

    def fail_running(self, numbers, error):
        """Mark those of ``numbers`` still running failed (their worker died); return them."""
        with self.transaction():
            failed = [n for n in numbers if self.conn.execute(
                "UPDATE trials SET status = 'failed', error = ?, finished = ? WHERE number = ? AND status = 'running'",
                (error, time.time(), n)).rowcount == 1]
        return failed

    def report_epoch(self, number, token, epoch, train_cost, dev_cost, dev_metric):
        with self.transaction():
            if self._holds(number, token):
                self.conn.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?)",
                                  (number, epoch, train_cost, dev_cost, dev_metric))

    def report_epochs(self, rows):
        """Several trials' epoch rows, ``(number, token, row)``, in one transaction."""
        with self.transaction():
            for number, token, row in rows:
                if self._holds(number, token):
                    self.conn.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?)",
                                      (number, row["epoch"], row["train_cost"], row["dev_cost"], row["dev_metric"]))

    def finish(self, number, token, status, value=None, last_value=None, best_epoch=None, error=None, duration=None,
               model=None):
        """Record a trial's outcome; False (and nothing written) if the token is stale.

        ``duration`` is the training time in seconds (default: since the claim). ``model``
        (``{"epoch", "config", "weights", "dev"}``: the network's config, ``weights_bytes``, the
        dev predictions as an array) is the trial's network at its best epoch."""
        if status not in FINISHED:
            raise ValueError(f"unknown final status {status!r}")
        now = time.time()
        with self.transaction():
            if not self._holds(number, token):
                return False
            self.conn.execute(
                "UPDATE trials SET status = ?, value = ?, last_value = ?, best_epoch = ?, error = ?, finished = ?, "
                "duration = COALESCE(?, ? - started), claim = NULL WHERE number = ?",
                (status, value, last_value, best_epoch, error, now, duration, now, number))
            if model is not None:
                self.conn.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
                                  (number, model["epoch"], json.dumps(model["config"]), model["weights"],
                                   _npy(model["dev"])))
        return True

    def dev_predictions(self, known=()):
        """{trial number: dev predictions (m_dev, n_y)} of the kept networks, leaving out the
        trials in ``known`` (the driver reads only what is new)."""
        import numpy

        new = [n for n in self.kept_trials() if n not in known]
        out = {}
        for n in new:
            row = self.conn.execute("SELECT dev FROM models WHERE trial = ?", (n,)).fetchone()
            out[n] = numpy.load(io.BytesIO(row["dev"]), allow_pickle=False)
        return out

    def kept_trials(self):
        """Numbers of the trials whose best-epoch network the study keeps."""
        return [r[0] for r in self.conn.execute("SELECT trial FROM models ORDER BY trial")]

    def network(self, number):
        """Trial ``number``'s network at its best epoch (see ``finish``)."""
        from ..train.modelfile import network_from_bytes

        row = self.conn.execute("SELECT config, weights FROM models WHERE trial = ?", (number,)).fetchone()
        if row is None:
            raise StudyError(f"study {self.path!r} keeps no network of trial {number}")
        return network_from_bytes(json.loads(row["config"]), row["weights"], f"{self.path} trial {number}")

    def _holds(self, number, token):
        row = self.conn.execute("SELECT claim, status FROM trials WHERE number = ?", (number,)).fetchone()
        return row is not None and row["status"] == "running" and row["claim"] == token

    def epochs(self, number):
        rows = self.conn.execute("SELECT * FROM epochs WHERE trial = ? ORDER BY epoch", (number,)).fetchall()
        return [dict(r) for r in rows]

    # -- coarse-to-fine boxes ----------------------------------------------------------------
    def set_box(self, round_, box):
        with self.transaction():
            self.conn.execute("INSERT OR IGNORE INTO boxes VALUES (?, ?)", (round_, json.dumps(box)))

    def boxes(self):
        return {r["round"]: json.loads(r["box"]) for r in self.conn.execute("SELECT * FROM boxes ORDER BY round")}


def _npy(array):
    import numpy

    buffer = io.BytesIO()
    numpy.save(buffer, numpy.asarray(array, dtype=numpy.float32), allow_pickle=False)
    return buffer.getvalue()


def _trial(row):
    t = dict(row)
    t["params"] = json.loads(t["params"])
    return t


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: one writer at a time, others wait (busy_timeout)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
