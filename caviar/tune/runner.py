"""The tuning driver: create or resume a study, let the strategy propose, run what is pending,
repeat until a proposal leaves nothing to run."""

from __future__ import annotations

import os
import sys
import time

from .executors import make_executor
from .objective import metric_for, study_data
from .space import Space, default_space, load_space
from .strategies import STRATEGIES, make_strategy, ranked
from .study import Study, StudyError


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


def tune(data="digits", target=None, space=None, strategy="random", trials=20, rounds=3, epochs=10, eta=3,
         min_epochs=1, workers=None, executor="local", address=None, study=None, seed=0, dev=None, test=None,
         log=None):
    """Run (or resume) a hyperparameter search; return the open ``Study``.

    A study file that exists is resumed with the settings stored in it: finished trials are
    kept, interrupted ones run again, none twice. ``log(line)`` receives progress lines.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    path = study or default_study_path()
    if os.path.exists(path):
        st = Study.open(path)
        settings = st.settings
        log(f"resuming study {path}")
    else:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        sp = _space(space)
        settings = {"data": data, "target": target, "split_seed": seed, "dev": dev, "test": test, "seed": seed,
                    "strategy": strategy, "trials": trials, "rounds": rounds, "epochs": epochs, "eta": eta,
                    "min_epochs": min_epochs, "space": sp.to_dict()}
        ds, _, _ = study_data(settings)  # fail on bad data now, not in every worker
        settings["metric"] = "dev_accuracy" if ds.class_names is not None else "dev_mse"
        make_strategy(settings, sp)  # validates trials/rounds/eta before a file is written
        st = Study.create(path, settings)
    strat = make_strategy(settings, Space(settings["space"]))
    interrupted = st.reset_interrupted()
    if interrupted:
        log(f"{len(interrupted)} interrupted trial(s) will run again: {interrupted}")
    metric, higher = metric_for(settings)
    progress = _Progress(st, metric, higher, log)
    with make_executor(executor, workers, address) as ex:
        while True:
            st.add_trials(strat.propose(st))
            pending = [t["number"] for t in st.trials("pending")]
            if not pending:
                break
            ex.run(st, pending, progress)
    return st


class _Progress:
    def __init__(self, study, metric, higher, log):
        self.study, self.metric, self.higher, self.log = study, metric, higher, log

    def __call__(self, result):
        trials = self.study.trials()
        finished = sum(t["status"] in ("complete", "diverged", "failed") for t in trials)
        best = ranked(trials, self.higher)
        value = f"{result['value']:.4f}" if result.get("value") is not None else "-"
        best_text = f"{best[0]['value']:.4f} (trial {best[0]['number']})" if best else "-"
        self.log(f"[{finished}/{len(trials)}] trial {result['number']} {result['status']}: "
                 f"{self.metric} {value}; best {best_text}")


__all__ = ["StudyError", "default_study_path", "tune"]
