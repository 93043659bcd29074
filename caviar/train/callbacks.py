"""The training loop's extension points.

A callback is any object with some of these methods; each receives the ``Run`` (the network,
its optimizer, the history, the epoch and iteration counters, and a ``stop`` flag; see
``caviar.train.loop.Run``):

    on_train_begin(run)   on_epoch_begin(run, epoch)   on_batch_end(run, iteration, cost)
    on_epoch_end(run, epoch, logs)   on_train_end(run)

Epochs count from 1 over the network's whole life, so a resumed fit continues the count.
The same callbacks serve a population: ``on_batch_end`` then receives every active member's
cost (an array), ``on_epoch_end`` a dict member number -> figures (``run.member_logs`` holds
that dict for a single network too, as member 0).
"""

from __future__ import annotations

import math
import os

import numpy


class Callback:
    def on_train_begin(self, run):
        pass

    def on_epoch_begin(self, run, epoch):
        pass

    def on_batch_end(self, run, iteration, cost):
        pass

    def on_epoch_end(self, run, epoch, logs):
        pass

    def on_train_end(self, run):
        pass


def snapshot(net):
    """Copies of every parameter and buffer, to restore later."""
    return ({k: p.data.copy() for k, p in net.params.items()}, {k: b.copy() for k, b in net.buffers.items()})


def restore(net, snap):
    params, buffers = snap
    for k, p in net.params.items():
        p.data[...] = params[k]
    for k, b in net.buffers.items():
        b[...] = buffers[k]


class EarlyStopping(Callback):
    """Stop when the monitored dev figure has not improved for ``patience`` epochs, and restore
    the weights of the best epoch (the notes: "pick the point where dev error is lowest").

    ``monitor`` is 'dev_cost' (lower is better) or 'dev_accuracy' (higher is better), or any
    figure of the history; ``min_delta`` is the least change that counts as improvement.
    In a population every member is watched on its own: it keeps its own best-epoch weights
    and leaves on its own patience, and the population shrinks.
    """

    def __init__(self, patience=5, monitor="dev_cost", min_delta=0.0, restore_best=True):
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative number of epochs, got {patience!r}")
        self.patience, self.monitor, self.min_delta, self.restore_best = patience, monitor, float(min_delta), restore_best
        self.higher_is_better = "accuracy" in monitor or monitor.endswith("r2")

    def on_train_begin(self, run):
        self.best, self.best_epoch, self.wait, self.best_weights = {}, {}, {}, {}
        carried, self._carried = getattr(self, "_carried", None), None
        if carried is not None:  # a resumed run goes on from where it was interrupted
            self.best, self.best_epoch, self.wait, self.best_weights = carried

    def state(self, member=None):
        """(figures, weights): what it has seen, as JSON and as arrays, for a resume point;
        with ``member``, that population member's alone, as member 0 (its network alone)."""
        numbers = list(self.best) if member is None else [n for n in self.best if n == member]
        label = (lambda n: n) if member is None else (lambda n: 0)
        figures = {str(label(n)): {"best": self.best[n], "best_epoch": self.best_epoch[n],
                                   "wait": self.wait.get(n, 0)} for n in numbers}
        weights = {f"{label(n)}/{kind}/{k}": v for n in numbers if n in self.best_weights
                   for kind, arrays in zip(("param", "buffer"), self.best_weights[n]) for k, v in arrays.items()}
        return figures, weights

    def carry(self, figures, weights):
        """Continue from ``state()`` in the next fit (a resumed run)."""
        best, best_epoch, wait, best_weights = {}, {}, {}, {}
        for key, f in figures.items():
            n = int(key)
            best[n], best_epoch[n], wait[n] = f["best"], f["best_epoch"], f["wait"]
        for key, v in weights.items():
            n, kind, name = key.split("/", 2)
            entry = best_weights.setdefault(int(n), ({}, {}))
            entry[0 if kind == "param" else 1][name] = v
        self._carried = (best, best_epoch, wait, best_weights)

    def _improved(self, number, value):
        best = self.best.get(number)
        if best is None:
            return True
        if self.higher_is_better:
            return value > best + self.min_delta
        return value < best - self.min_delta

    def on_epoch_end(self, run, epoch, logs):
        stopping = []
        for number, member_logs in run.member_logs.items():
            if self.monitor not in member_logs:
                raise ValueError(f"early stopping monitors {self.monitor!r}, which this run does not record "
                                 f"(it has {sorted(member_logs)}); pass validation_data to monitor dev figures")
            value = member_logs[self.monitor]
            history = run.histories[number]
            if value is not None and math.isfinite(value) and self._improved(number, value):
                self.best[number], self.best_epoch[number], self.wait[number] = value, epoch, 0
                if self.restore_best:
                    self.best_weights[number] = run.trainee.snapshot(number)
                history.best_epoch = epoch
            else:
                self.wait[number] = self.wait.get(number, 0) + 1
                if self.wait[number] > self.patience:
                    stopping.append(number)
                    history.stopped_epoch = epoch
                    history.events.append({"epoch": epoch, "event": "early_stopping",
                                           "best_epoch": self.best_epoch.get(number), self.monitor: self.best.get(number)})
        if stopping:
            run.stop_members(stopping)

    def on_train_end(self, run):
        for number, weights in self.best_weights.items():
            history = run.histories[number]
            last = history.epochs[-1]["epoch"] if history.epochs else None
            if self.best_epoch[number] != last:
                restore(run.trainee.network(number), weights)
                history.events.append({"epoch": last, "event": "restored_best_weights",
                                       "best_epoch": self.best_epoch[number]})


class TimeLimit(Callback):
    """End training at the first epoch boundary at or past ``deadline`` (a ``time.time()``):
    every member leaves there, as if early stopping had stopped it, so early stopping still
    restores each member's best epoch."""

    def __init__(self, deadline):
        self.deadline = float(deadline)

    def on_epoch_end(self, run, epoch, logs):
        import time

        if time.time() >= self.deadline:
            for number in run.members:
                run.histories[number].events.append({"epoch": epoch, "event": "time_limit"})
            run.stop_members(run.members)


class Checkpoint(Callback):
    """Save the model to ``directory/epoch-NNNN`` every ``every`` epochs (and keep them all)."""

    def __init__(self, directory, every=1):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every!r}")
        self.directory, self.every = str(directory), every
        self.saved = []

    def on_train_begin(self, run):
        if run.population:
            raise ValueError("Checkpoint saves a single network; a population's members are saved when they finish")

    def on_epoch_end(self, run, epoch, logs):
        from .modelfile import save

        if epoch % self.every == 0:
            path = os.path.join(self.directory, f"epoch-{epoch:04d}")
            save(run.net, path)
            self.saved.append(path)


class LearningRateSchedule(Callback):
    """Hand ``schedule`` (epoch -> lr) to the optimizer, which owns the learning rate and sets
    it at the start of every epoch (``fit(schedule=...)`` does the same)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_train_begin(self, run):
        run.optimizer.set_schedule(self.schedule)


class LambdaCallback(Callback):
    """A user hook from plain functions: ``LambdaCallback(on_epoch_end=lambda run, epoch, logs: ...)``."""

    def __init__(self, **hooks):
        allowed = {"on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end"}
        unknown = set(hooks) - allowed
        if unknown:
            raise ValueError(f"unknown hooks {sorted(unknown)}; expected some of {sorted(allowed)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


class ProgressBar(Callback):
    """One tqdm bar over the run's mini-batches, with the epoch, the running cost and the dev
    metric (off with verbose=False, or with the environment variable CAVIAR_NO_PROGRESS=1)."""

    def __init__(self, file=None):
        self.file = file
        self.bar = None

    def on_train_begin(self, run):
        from tqdm.auto import tqdm

        epochs = run.epoch_target - run.epoch
        self.bar = tqdm(total=epochs * run.batches_per_epoch, desc="training", unit="batch", file=self.file,
                        dynamic_ncols=True, mininterval=0.5, disable=os.environ.get("CAVIAR_NO_PROGRESS") == "1")
        self.shown = {}

    def on_batch_end(self, run, iteration, cost):
        self.bar.update(1)
        if iteration % 20 == 0:
            self.shown["cost"] = f"{float(numpy.min(cost)):.4f}"  # a population shows its lowest
            self.bar.set_postfix(self.shown, refresh=False)

    def on_epoch_end(self, run, epoch, logs):
        rows = list(run.member_logs.values())
        self.shown = {"epoch": f"{epoch}/{run.epoch_target}", "cost": f"{min(r['train_cost'] for r in rows):.4f}"}
        if run.population:
            self.shown["members"] = str(len(rows))
        for key, best in (("dev_cost", min), ("dev_accuracy", max), ("dev_mse", min)):
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                self.shown[key] = f"{best(values):.4f}"
        self.bar.set_postfix(self.shown)

    def on_train_end(self, run):
        if self.bar is not None:
            self.bar.close()
