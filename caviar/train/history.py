"""What a training run records: the cost after every iteration, metrics after every epoch."""

from __future__ import annotations


class History:
    """``iterations``: the cost J (regularization included) after every mini-batch step.
    ``epochs``: one dict per epoch with 'epoch', 'lr', 'train_cost', 'train_accuracy' (or
    'train_mse'), and with validation data 'dev_cost', 'dev_accuracy' (or 'dev_mse').

    Train figures are averaged over the epoch's mini-batches in training mode (as Keras
    reports them); dev figures are measured after the epoch in evaluation mode.
    """

    def __init__(self):
        self.iterations = []
        self.epochs = []
        self.events = []  # notable moments: early stopping, divergence, restored weights
        self.grad_norms = []  # per-parameter gradient norms, when a GradientNorms callback runs
        self.best_epoch = None
        self.stopped_epoch = None

    def __getitem__(self, key):
        """The per-epoch series of one figure, e.g. ``history['dev_accuracy']``."""
        if not self.epochs or key not in self.epochs[-1]:
            known = sorted(self.epochs[-1]) if self.epochs else []
            raise KeyError(f"no figure {key!r} in this history; it has {known}")
        return [e.get(key) for e in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def to_dict(self):
        return {"iterations": self.iterations, "epochs": self.epochs, "events": self.events,
                "grad_norms": self.grad_norms, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    @classmethod
    def from_dict(cls, d):
        h = cls()
        h.iterations = list(d.get("iterations", []))
        h.epochs = list(d.get("epochs", []))
        h.events = list(d.get("events", []))
        h.grad_norms = list(d.get("grad_norms", []))
        h.best_epoch, h.stopped_epoch = d.get("best_epoch"), d.get("stopped_epoch")
        return h

    def extend(self, other):
        """Append a later run (a resumed fit) to this one."""
        self.iterations += other.iterations
        self.epochs += other.epochs
        self.events += other.events
        self.grad_norms += other.grad_norms
        self.best_epoch = other.best_epoch if other.best_epoch is not None else self.best_epoch
        self.stopped_epoch = other.stopped_epoch if other.stopped_epoch is not None else self.stopped_epoch

    def to_csv(self, path):
        """One row per epoch with every figure recorded (the file ``caviar train`` writes)."""
        import csv

        keys = []
        for e in self.epochs:
            keys += [k for k in e if k not in keys]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.epochs)
        return path

    def __repr__(self):
        last = self.epochs[-1] if self.epochs else {}
        figures = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"History({len(self.epochs)} epochs, {len(self.iterations)} iterations{'; ' + figures if figures else ''})"
