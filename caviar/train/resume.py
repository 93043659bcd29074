"""Resume points: a run that can be continued after a crash or a ``kill -9``, bit for bit.

``ResumePoints`` writes, at the end of an epoch, everything the rest of the run depends on: the
network (weights, running statistics), the optimizer's state and learning rate (with its
schedule's initial rate, so a decay goes on where it was), both random generators (dropout and
mini-batch order), the history so far, early stopping's best epoch and weights, and the run's
own settings (``meta``). A point is written into a temporary directory and renamed into place,
then ``resume.json`` is replaced to point at it, so a crash at any moment leaves the last
complete point; older points are removed.

It writes every ``every`` epochs, and at the end of every epoch where writing is cheap (the
last write took at most ``cheap`` of the epoch's time). ``load_point`` reads the last point
back; ``caviar train --resume DIR`` uses it.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy

from ..errors import CaviarError
from ..files import atomic_write, temporary_folder
from .callbacks import Callback, EarlyStopping
from .history import History
from .modelfile import load, save
from .state import state_of

POINTER = "resume.json"


class ResumeError(CaviarError, ValueError):
    """A run directory with no usable resume point."""


class _Points(Callback):
    """When a point is written: every ``every`` epochs, and after every epoch where the last
    write took at most ``cheap`` of the epoch's time; ``first`` also after the first epoch
    (which measures what a write costs) and ``at_end`` where the run (or a member) ends. A
    study's trial, recorded as soon as it ends, needs neither."""

    def __init__(self, every=10, cheap=0.05, meta=None, callbacks=(), first=True, at_end=True):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}")
        self.every, self.cheap, self.meta = every, cheap, meta or {}
        self.stoppers = [c for c in callbacks if isinstance(c, EarlyStopping)]
        self.first, self.at_end = first, at_end
        self.write_seconds = None

    def _periodic(self, epoch, seconds):
        cheap = self.write_seconds is not None and self.write_seconds <= self.cheap * seconds
        return epoch % self.every == 0 or cheap or (self.first and self.write_seconds is None)

    @staticmethod
    def _finished(run, epoch, number):
        """The run's last epoch, or the epoch a callback (early stopping) lets this member
        leave; a run stopped by hand can go on."""
        return epoch == run.epoch_target or number in run.leaving


class ResumePoints(_Points):
    def __init__(self, directory, every=10, cheap=0.05, meta=None, callbacks=(), first=True, at_end=True):
        super().__init__(every, cheap, meta, callbacks, first, at_end)
        self.directory = os.fspath(directory)

    def on_train_begin(self, run):
        if run.population:
            raise ValueError("resume points save a single network")

    def on_epoch_end(self, run, epoch, logs):
        finished = self._finished(run, epoch, 0)
        if self.at_end if finished else self._periodic(epoch, logs.get("seconds", 0.0)):
            started = time.perf_counter()
            self.write(run, epoch, finished)
            self.write_seconds = time.perf_counter() - started

    def write(self, run, epoch, finished=False):
        whole = History()
        whole.extend(state_of(run.net).history)
        whole.extend(run.history)  # the epochs of this fit so far
        write_point(self.directory, run.net, whole, epoch, finished, self.meta,
                    [stopper.state() for stopper in self.stoppers], run.optimizer.schedule)


class MemberPoints(_Points):
    """Resume points of a population's members, each as its own network's (``ResumePoints``'
    format: a member trains exactly as its network alone would, so it can go on alone):
    ``directories`` maps member numbers to where their points go."""

    def __init__(self, directories, every=10, cheap=0.05, meta=None, callbacks=(), first=True, at_end=True):
        super().__init__(every, cheap, meta, callbacks, first, at_end)
        self.directories = {n: os.fspath(d) for n, d in directories.items()}

    def on_epoch_end(self, run, epoch, logs):
        pop = run.trainee
        periodic = self._periodic(epoch, next(iter(logs.values()), {}).get("seconds", 0.0) if logs else 0.0)
        started = time.perf_counter()
        written = 0
        for number in [n for n in pop.numbers if n in self.directories]:
            finished = self._finished(run, epoch, number)
            if not (self.at_end if finished else periodic):
                continue
            net, optimizer = pop.member_alone(number, run.optimizer, epoch)
            write_point(self.directories[number], net, state_of(net).history, epoch, finished,
                        {**self.meta, "member": number}, [s.state(number) for s in self.stoppers], optimizer.schedule)
            written += 1
        if periodic and written:
            self.write_seconds = time.perf_counter() - started


def write_point(directory, net, history, epoch, finished, meta, stoppers, schedule):
    """Write a resume point of ``net`` (its training state: optimizer, generators, epochs)
    at ``epoch`` under ``directory``, atomically, and remove older ones. ``history`` is the
    whole run's; ``stoppers`` are early stopping states (``EarlyStopping.state``)."""
    os.makedirs(directory, exist_ok=True)
    tmp = temporary_folder(directory)
    state = state_of(net)
    kept, state.history = state.history, history
    try:
        save(net, os.path.join(tmp, "model"))
    finally:
        state.history = kept
    for i, (figures, weights) in enumerate(stoppers):
        numpy.savez(os.path.join(tmp, f"early-stopping-{i}.npz"), **weights)
    point = {"format": "caviar-resume", "epoch": epoch, "finished": finished, "meta": meta,
             "early_stopping": [figures for figures, _ in stoppers],
             "schedule": None if schedule is None else {"lr0": getattr(schedule, "lr0", None)},
             "written": time.time()}
    with open(os.path.join(tmp, "point.json"), "w") as f:
        json.dump(point, f, indent=1)
    name = f"epoch-{epoch:06d}"
    final = os.path.join(directory, name)
    if os.path.exists(final):  # a point of this epoch from an earlier, interrupted write
        shutil.rmtree(final)
    os.replace(tmp, final)

    def write_pointer(tmp_path):
        with open(tmp_path, "w") as f:
            json.dump({"point": name, "epoch": epoch}, f)

    atomic_write(os.path.join(directory, POINTER), write_pointer)
    for old in os.listdir(directory):  # older points, and what a killed write left behind
        if old != name and old.startswith(("epoch-", ".tmp-")):
            path = os.path.join(directory, old)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


class _Ended:
    """What early stopping's end (``on_train_end``) needs of a run that had ended before it was
    interrupted: its history and network, so the best epoch's weights are restored as then."""

    def __init__(self, net, history):
        self.trainee = self
        self.histories = {0: history}
        self.net = net

    def network(self, number):
        return self.net


def resume_fit(net, point, X, y, epochs, schedule=None, callbacks=(), **options):
    """Continue ``net`` and ``point`` (``load_point``) to ``epochs`` epochs in all, as the run
    would have gone on: early stopping's state carried into the ``EarlyStopping`` among
    ``callbacks``; ``schedule`` (the run's own) from its starting rate, or none where a rate
    set by hand had replaced it; a run that had ended only gets its best epoch's weights back.
    ``options`` go to ``fit`` (mini-batch size, dev data, augmentation, ...)."""
    from .loop import fit

    stoppers = [c for c in callbacks if isinstance(c, EarlyStopping)]
    for stopper, state in zip(stoppers, point["early_stopping"]):
        stopper.carry(*state)
    left = int(epochs) - state_of(net).epochs_trained
    if point["finished"] or left <= 0:
        ended = _Ended(net, state_of(net).history)
        for stopper in stoppers:
            stopper.on_train_begin(ended)
            stopper.on_train_end(ended)
        return
    if point["schedule"] is None:
        schedule = None
    elif schedule is not None:
        schedule = schedule.with_lr0(point["schedule"]["lr0"])
    fit(net, X, y, epochs=left, schedule=schedule, callbacks=callbacks, **options)


def point_epoch(directory):
    """The epoch of the last resume point in ``directory``, or None (none, or unreadable)."""
    try:
        return int(_pointer(directory)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pointer(directory):
    with open(os.path.join(directory, POINTER)) as f:
        return json.load(f)


def load_point(directory):
    """(network, point): the last resume point under ``directory`` (see ``ResumePoints``);
    ``point`` holds its epoch, whether the run had finished, its ``meta``, early stopping's
    state (``carry`` it into the run's EarlyStopping) and its schedule's initial rate."""
    directory = os.fspath(directory)
    pointer = os.path.join(directory, POINTER)
    if not os.path.isfile(pointer):
        raise ResumeError(f"{directory!r} holds no resume point ({POINTER} is missing)")
    try:
        where = os.path.join(directory, _pointer(directory)["point"])
        with open(os.path.join(where, "point.json")) as f:
            point = json.load(f)
    except (OSError, ValueError, KeyError) as exc:
        raise ResumeError(f"{directory!r}: the resume point cannot be read ({exc})") from None
    if point.get("format") != "caviar-resume":
        raise ResumeError(f"{where!r} is not a caviar resume point")
    net = load(os.path.join(where, "model"))
    states = []
    for i, figures in enumerate(point["early_stopping"]):
        with numpy.load(os.path.join(where, f"early-stopping-{i}.npz"), allow_pickle=False) as arrays:
            states.append((figures, {k: arrays[k] for k in arrays.files}))
    point["early_stopping"] = states
    return net, point
