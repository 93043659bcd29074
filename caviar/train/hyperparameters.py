"""Every hyperparameter in one table: its name, type, default, scale, and what it sets.

The command line's flags and choices, the names a search space knows, the settings a
population member may have, the key that groups trials into populations, and the translation
of a parameter set into a Network, an optimizer and a schedule are all derived from ``SCHEMA``.
A trial therefore trains exactly as ``caviar train`` does with the same settings, alone or as a
population member.

What an entry sets:

- ``shape``: the network's architecture or its mini-batches; members of one population share it.
- ``member``: a setting each population member may have of its own (L2, dropout, init scale,
  learning-rate decay).
- ``optimizer``: the optimizer's own hyperparameters; their defaults live with the optimizers
  (``caviar.optim``), so ``None`` here means "the optimizer's default" (Adam's lr 0.001,
  gradient descent's 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import functional as F
from .. import optim, schedules
from ..nn import heads
from ..nn import init as initializers


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type
    default: object
    scale: str  # 'log', 'linear', 'one_minus_log' or 'categorical': how a search samples it
    sets: str  # 'shape', 'member' or 'optimizer'
    help: str
    choices: tuple | None = None
    flag: str | None = None  # the option of `caviar train` (None: the command line has another form)
    group: str = "training"  # 'model' flags are shared with `caviar gradcheck`


# In the notes' order of importance (week 3): lr first; beta1, batch size, hidden units; layers,
# decay; then the rest.
SCHEMA = {h.name: h for h in [
    Hyperparameter("lr", float, None, "log", "optimizer", "learning rate alpha (default: the optimizer's, Adam 0.001)", flag="--lr"),
    Hyperparameter("beta1", float, None, "one_minus_log", "optimizer", "momentum beta (Adam's beta1)", flag="--beta1"),
    Hyperparameter("batch_size", int, 64, "categorical", "shape", "mini-batch size", flag="--batch-size"),
    Hyperparameter("hidden_units", int, 64, "linear", "shape", "hidden units per layer"),
    Hyperparameter("layers", int, 1, "linear", "shape", "number of hidden layers"),
    Hyperparameter("decay_rate", float, 0.0, "log", "member", "learning-rate decay rate (inverse time)"),
    Hyperparameter("l2", float, 0.0, "log", "member", "L2 regularization lambda", flag="--l2", group="model"),
    Hyperparameter("keep_prob", float, 1.0, "linear", "member", "dropout keep probability of hidden layers",
                   flag="--keep-prob", group="model"),
    Hyperparameter("beta2", float, None, "one_minus_log", "optimizer", "Adam/RMSprop beta2", flag="--beta2"),
    Hyperparameter("epsilon", float, None, "log", "optimizer", "Adam/RMSprop epsilon", flag="--epsilon"),
    Hyperparameter("activation", str, "relu", "categorical", "shape", "hidden activation",
                   choices=tuple(a for a in F.ACTIVATIONS if a != "linear"), flag="--activation", group="model"),
    Hyperparameter("optimizer", str, "adam", "categorical", "shape", "optimizer", choices=tuple(optim.OPTIMIZERS),
                   flag="--optimizer"),
    Hyperparameter("init", str, "auto", "categorical", "shape", "weight initializer",
                   choices=("auto",) + initializers.SCHEMES, flag="--init", group="model"),
    Hyperparameter("init_scale", float, None, "log", "member", "multiplies the initializer's standard deviation",
                   flag="--init-scale", group="model"),
    Hyperparameter("batchnorm", bool, False, "categorical", "shape", "batch norm on every hidden layer",
                   flag="--batchnorm", group="model"),
    Hyperparameter("l1", float, 0.0, "log", "shape", "L1 regularization lambda", flag="--l1", group="model"),
]}

SHAPE = tuple(k for k, h in SCHEMA.items() if h.sets == "shape")
# what a population member may set: its seed, a schedule object, and every per-member entry
MEMBER = ("seed", "schedule") + tuple(k for k, h in SCHEMA.items() if h.sets in ("member", "optimizer"))


def value(params, name):
    """``params[name]``, or the schema's default where it is absent or None."""
    v = params.get(name)
    return SCHEMA[name].default if v is None else SCHEMA[name].type(v)


def check_names(params, what="settings"):
    unknown = sorted(set(params) - set(SCHEMA))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)} in {what}; known: {', '.join(SCHEMA)}")


def hidden_layers(params):
    """The hidden layer sizes a parameter set describes: ``layers`` layers of ``hidden_units``."""
    return [value(params, "hidden_units")] * value(params, "layers")


def network_options(params):
    """Keyword arguments of ``Network`` for a parameter set (sizes, output and seed aside)."""
    return {"activation": value(params, "activation"), "init": value(params, "init"),
            "init_scale": value(params, "init_scale"), "batchnorm": value(params, "batchnorm"),
            "keep_prob": value(params, "keep_prob"), "l2": value(params, "l2"), "l1": value(params, "l1")}


def optimizer(params, strict=False):
    """The optimizer a parameter set describes; its own defaults where the set is silent.
    ``strict`` refuses a hyperparameter the optimizer does not take (the command line)."""
    options = {k: params.get(k) for k, h in SCHEMA.items() if h.sets == "optimizer"}
    return optim.build(value(params, "optimizer"), strict=strict, **options)


def schedule(params):
    """The learning-rate schedule of a parameter set: ``schedule`` (an object or a spec like
    'inverse-time:1.0'), else inverse-time decay at ``decay_rate``, else None."""
    if params.get("schedule") is not None:
        return schedules.get(params["schedule"])
    rate = value(params, "decay_rate")
    return schedules.InverseTime(decay_rate=rate) if rate else None


def member(params, seed):
    """A population member's settings (``Population(members=...)``) from a parameter set.
    Optimizer hyperparameters its optimizer does not take are left out, as ``optimizer``
    leaves them out for a solo run (a space shared by Adam and momentum gives both a beta2)."""
    takes = optim.lookup(value(params, "optimizer")).defaults
    return {"seed": seed, **{k: params[k] for k in MEMBER if k != "seed" and params.get(k) is not None
                             and (k not in SCHEMA or SCHEMA[k].sets != "optimizer" or k in takes)}}


def shape_key(params):
    """Parameter sets with equal keys can train as one population."""
    return tuple(repr(value(params, k)) for k in SHAPE)


def output_for(n_classes, output=None):
    """The head for a target with ``n_classes`` classes (None: a numeric target): softmax for
    classes and linear for numbers unless ``output`` says otherwise; the head refuses a target
    it cannot fit."""
    output = output or ("softmax" if n_classes is not None else "linear")
    heads.get(output).check_target(n_classes)
    return output
