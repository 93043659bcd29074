"""Babysitting a run (the notes' "panda"): a live record of a training run and the controls that
act on it between mini-batches, as a training-loop callback. The dashboard and ``caviar
control`` queue commands (``caviar.watch.control.send``); this module applies them:
a command is a JSON file in ``RUN/control/pending``; the training loop applies pending commands
in order before its next mini-batch, records each one in the run's history, and moves it to
``RUN/control/done`` with its result.

A run directory holds:

    live.json            the history so far (cost and learning rate per iteration, per-epoch
                         figures, events), rewritten atomically as training goes
    state.json           status (running, paused, finished, stopped), pid, iteration, epoch, lr
    checkpoints/iter-N/  model files saved on request (rollback restores them)
    control/             pending/ and done/ command files
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy

from ..errors import CaviarError
from ..files import atomic_write
from ..processes import alive
from .callbacks import Callback, restore, snapshot

ACTIONS = ("set-lr", "multiply-lr", "pause", "resume", "checkpoint", "rollback", "stop")


class ControlError(CaviarError, ValueError):
    """A control request that cannot be carried out; the message says why."""


def write_json(path, data):
    """Write JSON atomically (a reader never sees half a file)."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, default=lambda v: v.item() if hasattr(v, "item") else str(v))

    atomic_write(path, write)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return default


def owner_alive(state):
    """Whether the process that wrote a run's state.json still runs (this machine's pids)."""
    return alive(state.get("pid"))


def is_run(path):
    return os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(os.path.join(path, "live.json"))


def checkpoints(run_dir):
    """Iterations of the checkpoints a run holds, in order."""
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(name[5:]) for name in os.listdir(folder) if name.startswith("iter-") and name[5:].isdigit())


def check_request(action, value):
    if action not in ACTIONS:
        raise ControlError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action in ("set-lr", "multiply-lr"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ControlError(f"{action} needs a number, got {value!r}") from None
        if not value >= 0 or value != value or value == float("inf"):
            raise ControlError(f"{action} needs a non-negative finite number, got {value!r}")
    if action == "rollback":
        if not isinstance(value, dict):
            value = {"iteration": value}
        try:
            value = {"iteration": int(value["iteration"]),
                     **({"lr": float(value["lr"])} if value.get("lr") is not None else {})}
        except (TypeError, ValueError, KeyError):
            raise ControlError(f"rollback needs a checkpoint's iteration, got {value!r}") from None
    return value


class Controller(Callback):
    """Applies the run directory's pending commands before every mini-batch and keeps the live
    record (``live.json``, ``state.json``) up to date. Every applied command becomes an event
    in the history, at the iteration where it took effect, so a nudged run can be read and
    reproduced afterwards."""

    def __init__(self, run_dir, every=20):
        self.run_dir = os.fspath(run_dir)
        self.every = every
        self.paused = False
        self.stop_requested = False
        self.best = None  # (dev cost, epoch, weights) of the best epoch so far

    # -- files ---------------------------------------------------------------------------
    def _paths(self):
        return (os.path.join(self.run_dir, "control", "pending"), os.path.join(self.run_dir, "control", "done"))

    @staticmethod
    def _lr(run):
        """The learning rate now (a population's first member's), or None for a per-step schedule."""
        opt = run.optimizer
        lr = None if callable(opt.lr) else numpy.asarray(opt.current_lr())
        return None if lr is None or lr.size == 0 else float(lr.flat[0])

    def _write_state(self, run, status):
        write_json(os.path.join(self.run_dir, "state.json"),
                   {"status": status, "pid": os.getpid(), "started": self.started, "iteration": run.iteration,
                    "epoch": run.epoch,
                    "lr": self._lr(run), "updated": time.time(), "members": len(run.members) if run.population else None})

    def _write_live(self, run):
        h = run.history
        previous = run.net.train_state.history if run.net.train_state is not None else None
        earlier = previous.to_dict() if previous is not None and previous is not h else None
        data = h.to_dict()
        data["lrs"] = self.lrs
        if earlier and earlier["epochs"]:  # a resumed fit: show the whole life of the network
            data["iterations"] = earlier["iterations"] + data["iterations"]
            data["epochs"] = earlier["epochs"] + data["epochs"]
            data["events"] = earlier["events"] + data["events"]
        data["checkpoints"] = checkpoints(self.run_dir)
        write_json(os.path.join(self.run_dir, "live.json"), data)

    # -- the loop's hooks ----------------------------------------------------------------
    def on_train_begin(self, run):
        for folder in self._paths():
            os.makedirs(folder, exist_ok=True)
        stale = [n for n in os.listdir(self._paths()[0]) if n.endswith(".json") and not n.startswith(".")]
        for name in stale:  # commands sent to an earlier run of this directory are not this run's
            os.remove(os.path.join(self._paths()[0], name))
        if stale:
            warnings.warn(f"{self.run_dir}: dropped {len(stale)} control command(s) left by an earlier run", stacklevel=2)
        for folder in (self.run_dir, *self._paths()):  # files a killed run was writing (never renamed into place)
            for name in os.listdir(folder):
                if name.startswith(".tmp-") and os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))
        self.lrs = []
        self.started = time.time()  # with the pid: which process owns the run directory
        self._write_state(run, "running")
        self._write_live(run)

    def _between_batches(self, run):
        """Apply what is pending; while paused, wait here (no mini-batch runs) for more."""
        self._apply_pending(run)
        while self.paused and not self.stop_requested:
            time.sleep(0.05)
            self._apply_pending(run)
        if self.stop_requested:
            run.stop = True

    def on_epoch_begin(self, run, epoch):
        self._between_batches(run)

    def on_batch_end(self, run, iteration, cost):
        self.lrs.append(self._lr(run))
        self._between_batches(run)
        if iteration % self.every == 0:
            self._write_live(run)
            self._write_state(run, "running")

    def on_epoch_end(self, run, epoch, logs):
        dev = None if run.population else logs.get("dev_cost")
        if dev is not None and (self.best is None or dev < self.best[0]):  # for "stop, keep the best"
            self.best = (dev, epoch, snapshot(run.net))
        self._write_live(run)
        self._write_state(run, "paused" if self.paused else "running")

    def on_train_end(self, run):
        self._apply_pending(run)
        if self.stop_requested and self.best is not None and self.best[1] != run.epoch:
            restore(run.net, self.best[2])
            run.history.events.append({"iteration": run.iteration, "epoch": run.epoch, "event": "restored_best_weights",
                                       "best_epoch": self.best[1]})
        self._write_live(run)
        self._write_state(run, "stopped" if self.stop_requested else "finished")

    # -- commands ------------------------------------------------------------------------
    def _apply_pending(self, run):
        pending, done = self._paths()
        try:
            names = sorted(os.listdir(pending))
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".json") or name.startswith("."):  # a command still being written
                continue
            command = read_json(os.path.join(pending, name))
            if command is None:
                continue
            try:
                message = self._apply(run, command["action"], command.get("value"))
                result = {"ok": True, "message": message}
            except (CaviarError, ValueError, OSError) as exc:  # refused or failed: the run goes on unharmed
                result = {"ok": False, "message": str(exc)}
            result.update({"id": command.get("id"), "action": command.get("action"), "value": command.get("value"),
                           "iteration": run.iteration, "applied": time.time()})
            if result["ok"]:
                run.history.events.append({"iteration": run.iteration, "epoch": run.epoch, "event": command["action"],
                                           "value": command.get("value"), "message": result["message"]})
            write_json(os.path.join(done, name), result)
            try:
                os.remove(os.path.join(pending, name))
            except FileNotFoundError:  # removed by someone else meanwhile: nothing left to do
                pass
            self._write_live(run)
            self._write_state(run, "paused" if self.paused else "running")

    def _apply(self, run, action, value):
        opt = run.optimizer
        value = check_request(action, value)
        if action in ("set-lr", "multiply-lr"):
            if callable(opt.lr):
                raise ControlError("the learning rate follows a per-step schedule; it cannot be set by hand")
            opt.set_lr(float(value) if action == "set-lr" else opt.lr * float(value))  # replaces the schedule
            return f"learning rate {self._lr(run):g} from iteration {run.iteration + 1}" + (
                " (every member's multiplied)" if run.population and action == "multiply-lr" else "")
        if action == "pause":
            self.paused = True
            return f"paused after iteration {run.iteration}"
        if action == "resume":
            self.paused = False
            return f"resumed after iteration {run.iteration}"
        if action in ("checkpoint", "rollback") and run.population:
            raise ControlError(f"{action} works on a single network's run; this run trains a population")
        if action == "checkpoint":
            from .modelfile import save

            path = os.path.join(self.run_dir, "checkpoints", f"iter-{run.iteration:06d}")
            save(run.net, path)
            return f"checkpoint at iteration {run.iteration}: {path}"
        if action == "rollback":
            return self._rollback(run, value["iteration"], value.get("lr"))
        if action == "stop":
            self.stop_requested = True
            self.paused = False
            return f"stopping after iteration {run.iteration}"
        raise ControlError(f"unknown action {action!r}")  # pragma: no cover - checked above

    def _rollback(self, run, iteration, lr=None):
        from .modelfile import load, state_of

        path = os.path.join(self.run_dir, "checkpoints", f"iter-{iteration:06d}")
        if not os.path.isdir(path):
            raise ControlError(f"no checkpoint at iteration {iteration}; the run has {checkpoints(self.run_dir) or 'none'}")
        saved = load(path)  # a broken checkpoint raises here, before anything of the run is touched
        net, opt = run.net, run.optimizer
        if saved.config["layer_sizes"] != net.config["layer_sizes"]:
            raise ControlError(f"the checkpoint of iteration {iteration} holds another network "
                               f"({saved.config['layer_sizes']} against {net.config['layer_sizes']})")
        for name, p in net.params.items():
            p.data[...] = saved.params[name].data
        for name, b in net.buffers.items():
            b[...] = saved.buffers[name]
        saved_opt = state_of(saved).optimizer
        if saved_opt is not None and type(saved_opt) is type(opt):
            arrays = saved_opt.state_arrays(saved.params)
            opt.state = {}
            opt.load_state_arrays(net.params, arrays)
            opt.iterations = saved_opt.iterations
        net.rng.bit_generator.state = saved.rng.bit_generator.state
        if lr is not None:
            opt.set_lr(float(lr))
        return f"rolled back to the checkpoint of iteration {iteration}" + (f" with learning rate {lr:g}" if lr is not None else "")
