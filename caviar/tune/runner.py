"""The tuning driver: create or resume a study, let the strategy propose, run what is pending,
repeat until a proposal leaves nothing to run."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from ..data.columns import format_roles
from ..nn import heads
from ..train import hyperparameters as H
from .ensemble import StudyEnsemble
from .executors import make_executor
from .objective import metric_for, points_dir, shape_of, study_data
from ..train.resume import point_epoch
from .space import Space, default_space, load_space
from ..train.population import chunks
from ..train.population import max_population as max_population_for
from .strategies import STRATEGIES, make_strategy, population_key, rank_key, ranked
from .study import FINISHED, Study, StudyError


def _space(space):
    if space is None:
        return default_space()
    if isinstance(space, Space):
        return space
    if isinstance(space, dict):
        return Space(space)
    return load_space(space)


def default_study_path(directory="caviar-tune"):
    return os.path.join(directory, time.strftime("study-%Y%m%d-%H%M%S.sqlite"))


# a step's cost per layer, in multiply-adds of one example through the network: with it,
# job_cost ranks the default search's four groups on digits as their times as populations of
# 10 on a 2-core VM (0.62, 0.35, 0.25 and 0.10 s; a step's calls cost about 11 us per layer)
STEP_MACS = 180_000


def job_cost(trials, ds):
    """A job's training time, up to a constant factor: members x epochs x (an example's
    multiply-adds + ``STEP_MACS`` per layer per step, over the examples of a step)."""
    p = trials[0]["params"]
    sizes, _ = shape_of(p, ds)
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    epochs = max(1, int(trials[0].get("budget") or 1))
    return len(trials) * epochs * (macs + STEP_MACS * (len(sizes) - 1) / H.value(p, "batch_size"))


def plan(trials, ds, population=True, max_population=None, workers=1):
    """Jobs for pending trials, the longest first (``job_cost``), so that the last to start are
    short and the workers end together: trials that share a shape and budget train as one
    population (split by ``max_population``, by memory, and so that every worker has work);
    others alone."""
    if not population:
        jobs = [[t] for t in trials]
    else:
        groups = {}
        for t in trials:
            groups.setdefault(population_key(t), []).append(t)
        spread = max(1, -(-len(trials) // max(1, workers)))  # ceil: enough jobs for every worker
        jobs = []
        for members in groups.values():
            p = members[0]["params"]
            sizes, _ = shape_of(p, ds)
            size = min(spread, max_population_for(sizes, H.value(p, "batch_size"), limit=max_population))
            jobs += chunks(members, size)
    jobs.sort(key=lambda job: -job_cost(job, ds))  # stable: trial order among equals
    return [[t["number"] for t in job] for job in jobs]


def parse_time(text):
    """Seconds from '90', '90s', '5m', '1.5h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = str(text).strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in units else (raw, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"a time budget is a number of seconds or like 5m or 1h, got {text!r}") from None
    if math.isnan(seconds):
        raise ValueError(f"a time budget is a number of seconds or like 5m or 1h, got {text!r}")
    return seconds


def training_deadline(started, budget):
    """When training stops (members at their next epoch boundary) so that the whole command,
    the ensemble, its test evaluation, the models and the plots included, ends within the
    budget plus 10%: 8% of the budget (at least 4.5 s) is kept for that last part. On a 2-core
    machine, after the training deadline of a 12 s study of digits, the epochs in progress took
    0.1 to 1.1 s to end, the ensemble and the models 0.1 s, the eight plots 1.2 s (matplotlib
    imported while training ran: ``caviar tune`` does) and the interpreter's exit 0.75 to 1.2 s;
    with 3.5 s kept, a run in a fresh install ended at 13.25 s."""
    return started + budget - max(4.5, 0.08 * budget)


def tune(data="digits", target=None, task=None, na_values=None, categorical=(), numeric=(), drop=(), dev_data=None,
         test_data=None, class_weight=None, space=None, strategy="random", trials=20, rounds=3, epochs=10, eta=3,
         min_epochs=1, workers=None, executor="local", address=None, study=None, seed=0, dev=None, test=None,
         group_size=1, population=True, max_population=None, log=None, on_start=None, given=None, patience=None,
         ensemble_size=None, time_budget=None, started=None):
    """Run (or resume) a hyperparameter search; return the open ``Study``.

    A study file that exists is resumed with the settings stored in it: finished trials are
    kept, interrupted ones run again, none twice. ``log(line)`` receives progress lines.
    Every trial stops early after ``patience`` epochs without a better dev metric (None: it
    trains its whole budget) and the study keeps its network at its best epoch; the progress
    line shows the greedy ensemble of those (``ensemble_size`` steps, ``caviar.tune.ensemble``)
    beside the best trial. ``time_budget`` (seconds from ``started``, default now) stops
    proposing trials and stops training members at an epoch boundary in time for the whole
    search to end within the budget plus 10% (``training_deadline``); trials not started by
    then stay pending, and a resumed study runs them.
    ``group_size`` > 1 draws the shape hyperparameters once per group of trials (see
    ``strategies.sample``); ``population`` trains trials of one shape as one population (caviar
    training), at most ``max_population`` at a time, and never changes a trial's result.
    ``given`` names the settings a person set explicitly (the command line's): resuming a study
    with any of them different from the stored ones is refused, naming them; only more
    ``trials`` for a random search extend the study. A study has one live driver: a second
    ``tune`` on a study whose driver still runs is refused.
    """
    started = time.time() if started is None else started
    if time_budget is not None and not 0 < time_budget < math.inf:
        raise ValueError(f"a time budget must be a positive number of seconds, got {time_budget!r}")
    deadline = None if time_budget is None else training_deadline(started, time_budget)
    log = log or (lambda line: print(line, file=sys.stderr))
    path = study or default_study_path()
    asked = {"data": data, "target": target, "task": task, "na_values": na_values, "categorical": list(categorical),
             "numeric": list(numeric), "drop": list(drop), "dev_data": dev_data, "test_data": test_data,
             "class_weight": class_weight, "strategy": strategy, "trials": trials, "rounds": rounds, "epochs": epochs,
             "eta": eta, "min_epochs": min_epochs, "group_size": group_size, "seed": seed, "dev": dev, "test": test,
             "patience": patience, "ensemble_size": ensemble_size}
    if os.path.exists(path):
        st = Study.open(path)
        st.claim_driver()
        settings = _resume_settings(st, asked, space, given or (), log)
        log(f"resuming study {path}")
    else:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        sp = _space(space)
        settings = {"data": data, "target": target, "task": task, "na_values": na_values, "categorical": list(categorical),
                    "numeric": list(numeric), "drop": list(drop), "dev_data": dev_data, "test_data": test_data, "class_weight": class_weight, "split_seed": seed, "dev": dev, "test": test, "seed": seed,
                    "strategy": strategy, "trials": trials, "rounds": rounds, "epochs": epochs, "eta": eta,
                    "min_epochs": min_epochs, "group_size": group_size, "space": sp.to_dict(), "patience": patience,
                    "ensemble_size": ensemble_size}
        ds, _, _ = study_data(settings)  # fail on bad data now, not in every worker
        settings["metric"] = "dev_" + heads.get(H.output_for(ds.n_classes)).metric
        make_strategy(settings, sp)  # validates trials/rounds/eta before a file is written
        st = Study.create(path, settings)
        st.claim_driver()
        log(f"new study {path}")
    strat = make_strategy(settings, Space(settings["space"]))
    if on_start is not None:  # e.g. the dashboard, watching the study from its first trial
        on_start(st)
    points = {n: point_epoch(points_dir(st.path, n)) for n in st.running()}
    points = {n: e for n, e in points.items() if e is not None}  # where interrupted trials go on from
    interrupted = st.reset_interrupted(points)
    if interrupted:
        log(f"{len(interrupted)} interrupted trial(s) will run again: {interrupted}"
            + ("; from their resume points: " + ", ".join(f"trial {n} after epoch {e}" for n, e in points.items())
               if points else ""))
    metric, higher = metric_for(settings)
    progress = _Progress(st, metric, higher, log, StudyEnsemble(st), timed=deadline is not None)
    ds, preprocessing, _ = study_data(settings)
    if hasattr(preprocessing, "roles_"):  # a table: its columns' roles, as caviar train shows them
        log(format_roles(preprocessing.roles_))
    try:
        with make_executor(executor, workers, address) as ex:
            n_workers = getattr(ex, "workers", None) or 1
            # with a time budget, trials are added a wave at a time (enough for every worker to
            # train full populations) so that no more are proposed than the time can train
            wave = n_workers * max(1, int(settings.get("group_size") or 1)) if deadline is not None else None
            while True:
                if deadline is not None and time.time() >= deadline:
                    left = len(st.trials("pending"))
                    log("time budget spent" + (f"; {left} trial(s) not started stay pending" if left else ""))
                    break
                st.add_trials(_proposals(strat, st, wave))
                pending = st.trials("pending")
                if not pending:
                    break
                progress.refresh()
                ex.run(st, plan(pending, ds, population, max_population, n_workers), progress, deadline)
            # the last selection before the pool ends: the local executor then gives the
            # driver back its BLAS threads, which OpenBLAS restarts spinning for work (0.1 s
            # of CPU each), and the selection would share the cores with them
            progress.ensemble.update()
    finally:
        st.release_driver()
    _clean_points(st)
    return st


def _clean_points(study):
    """Remove the resume points of finished trials (a worker killed between recording a trial
    and removing its point leaves one), and their folder once empty."""
    import shutil

    folder = f"{study.path}.points"
    if not os.path.isdir(folder):
        return
    finished = {t["number"] for t in study.trials(FINISHED)}
    for name in os.listdir(folder):
        if name.startswith("trial-") and name[6:].isdigit() and int(name[6:]) in finished:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    try:
        os.rmdir(folder)
    except OSError:  # trials not started, or interrupted ones, keep theirs
        pass


def _proposals(strategy, study, wave=None):
    """What the strategy proposes now; with a ``wave``, only that many trials beyond those in
    the study."""
    if wave is None:
        return strategy.propose(study)
    known = {t["key"] for t in study.trials()}
    proposals = strategy.propose(study, horizon=len(known) + wave)
    return [p for p in proposals if p["key"] in known] + [p for p in proposals if p["key"] not in known][:wave]


def _resume_settings(st, asked, space, given, log):
    """The stored settings, after checking the ones a person gave against them."""
    settings = st.settings
    asked = json.loads(json.dumps(asked))  # lists and numbers as the study stores them
    if "space" in given:
        asked["space"] = _space(space).to_dict()
    differ = [k for k in asked if k in given and settings.get(k) != asked[k]]  # in a fixed order
    if differ == ["trials"] and settings["strategy"] == "random" and asked["trials"] > settings["trials"]:
        log(f"extending study {st.path} from {settings['trials']} to {asked['trials']} trials")
        st.set_setting("trials", asked["trials"])
        return st.settings
    if differ:
        st.release_driver()
        shown = "; ".join(f"--{k.replace('_', '-')} was {settings.get(k)!r}, now {asked[k]!r}" for k in differ)
        raise StudyError(f"study {st.path!r} was made with other settings ({shown}); a study keeps its settings: "
                         f"start a new study to change them" + (" (a random search takes more --trials)"
                                                               if "trials" in differ else ""))
    return settings


class _Progress:
    """One line per finished trial: trials done, this trial's value, the best so far. Counts
    are read from the study once per round of proposals and then kept up from the results,
    so the driver does not reread every trial for every result while workers compute."""

    def __init__(self, study, metric, higher, log, ensemble=None, timed=False):
        self.study, self.metric, self.higher, self.log, self.ensemble = study, metric, higher, log, ensemble
        self.timed, self.finished_any = timed, False
        self.selected = 0.0  # when the ensemble was last selected

    def refresh(self):
        trials = self.study.trials()
        self.total = len(trials)
        self.finished = sum(t["status"] in FINISHED for t in trials)
        best = ranked(trials, self.higher)
        self.best = (best[0]["value"], best[0]["number"]) if best else None

    def __call__(self, result):
        if self.timed and not self.finished_any:
            # the plots come after training, inside the budget: the driver, idle while its
            # workers train, imports matplotlib now (after the workers were forked, so none of
            # them inherits a half-done import)
            from .report import import_pyplot

            import_pyplot()
        self.finished_any = True
        self.finished += 1
        value = result.get("value")
        if value is not None and result.get("status") in ("complete", "diverged") and (
                self.best is None or rank_key(value, result["number"], self.higher)
                < rank_key(*self.best, self.higher)):
            self.best = (value, result["number"])
        value_text = f"{value:.4f}" if value is not None else "-"
        best_text = f"{self.best[0]:.4f} (trial {self.best[1]})" if self.best else "-"
        self.log(f"[{self.finished}/{self.total}] trial {result['number']} {result['status']}: "
                 f"{self.metric} {value_text}; best {best_text}{self._ensemble_text()}")

    def _ensemble_text(self):
        """The ensemble's dev metric, selected again when a trial finished and the last
        selection's time is small beside the time since (so it never slows the search)."""
        if self.ensemble is None:
            return ""
        now = time.time()
        if now - self.selected >= 20 * self.ensemble.seconds:
            self.ensemble.update()
            self.selected = time.time()
        e = self.ensemble.result
        if e is None:
            return ""
        return f"; ensemble {e[self.metric]:.4f} ({len(e['members'])} of {e['candidates']} trials)"


__all__ = ["StudyError", "default_study_path", "tune"]
