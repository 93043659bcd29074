"""Plots as PNG files (matplotlib, no display needed): the notes' learning curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# fixed margins for a (6, 4) inch figure with one axes: tight_layout measures every tick label
# first and took 40% of a plot's time (0.7 s of caviar train's three plots on a 2-core machine)
MARGINS = dict(left=0.16, right=0.97, bottom=0.13, top=0.92)


def _save(fig, path):
    fig.subplots_adjust(**MARGINS)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cost(history, path):
    """The cost J after every iteration: it should go down (noisily with mini-batches)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(history.iterations) + 1), history.iterations, lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost J")
    ax.set_title("cost per iteration")
    if history.iterations and min(history.iterations) > 0:
        ax.set_yscale("log")
    return _save(fig, path)


def plot_learning_curves(history, path):
    """Train and dev cost per epoch, with the early-stopping point marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = history["epoch"] if history.epochs else []
    ax.plot(epochs, history["train_cost"] if epochs else [], label="train cost")
    if epochs and "dev_cost" in history.epochs[-1]:
        ax.plot(epochs, history["dev_cost"], label="dev cost")
        # the early-stopping point when early stopping ran, else the epoch of lowest dev cost
        dev = history["dev_cost"]
        best_epoch = history.best_epoch if history.best_epoch is not None else epochs[dev.index(min(dev))]
        label = "early stopping: best" if history.stopped_epoch is not None else "lowest dev cost"
        ax.axvline(best_epoch, color="gray", ls="--", lw=0.8)
        ax.plot([best_epoch], [dev[epochs.index(best_epoch)]], "o", color="black", label=f"{label} (epoch {best_epoch})")
    _mark_controls(ax, history)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    ax.set_title("train and dev cost")
    ax.legend(fontsize="small")
    return _save(fig, path)


CONTROLS = ("set-lr", "multiply-lr", "pause", "resume", "checkpoint", "rollback", "stop")


def _mark_controls(ax, history):
    """The babysitting controls a person applied (``caviar control``, the dashboard), each a
    dotted line at its epoch, labelled once per kind, so a nudged run reads as it happened."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seen = {}
    for event in history.events:
        kind = event.get("event")
        if kind not in CONTROLS or event.get("epoch") is None:
            continue
        color = colors[(CONTROLS.index(kind) + 2) % len(colors)]
        value = f" {event['value']}" if event.get("value") is not None else ""
        ax.axvline(event["epoch"], color=color, ls=":", lw=1.2, label=None if kind in seen else f"{kind}{value}")
        seen[kind] = True


def plot_gradient_norms(grad_norms, path):
    """Per-parameter gradient norms against iterations (log scale): vanishing or exploding."""
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [k for k in (grad_norms[0] if grad_norms else {}) if k != "iteration" and k.startswith("W")]
    its = [r["iteration"] for r in grad_norms]
    for name in names:
        values = [max(r.get(name, 0.0), 1e-30) for r in grad_norms]
        ax.plot(its, values, label=f"dJ/d{name}", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm")
    ax.set_title("per-layer gradient norms")
    if names:
        ax.legend(fontsize="small")
    return _save(fig, path)
