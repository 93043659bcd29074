"""Model files: a directory with ``model.json`` (configuration, optimizer, counters, history,
random-generator state) and ``arrays.npz`` (weights, running statistics, optimizer state).

Loading never executes code: JSON, and ``numpy.load(..., allow_pickle=False)``. Files are
written under temporary names and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy

from .. import backend, optim
from ..errors import CaviarError
from ..files import atomic_write
from .history import History
from .state import TrainingState, state_of

FORMAT = "caviar-model"
VERSION = 1


class ModelFileError(CaviarError, ValueError):
    """A model directory that is missing, incomplete or not caviar's."""


def save(net, path, extras=None):
    """Write ``net`` to the directory ``path`` (created if needed); return the path.

    ``extras`` is a JSON-able dict stored beside the model (e.g. a normalizer, class names).
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    arrays = _weights(net)
    state = state_of(net)
    opt = state.optimizer
    opt_info = None
    if opt is not None:
        opt_info = {"name": optim.name_of(opt), "hyperparameters": opt.hyperparameters(), "iterations": opt.iterations}
        for k, v in opt.state_arrays(net.params).items():
            arrays[f"opt:{k}"] = backend.to_numpy(v) if hasattr(v, "shape") else numpy.asarray(v)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": net.config,
        "epochs_trained": state.epochs_trained,
        "optimizer": opt_info,
        # a GPU generator's state lives on the device and is not stored: a model trained there
        # continues with fresh dropout draws (its weights, optimizer and batch order are exact)
        "rng_state": net.rng.bit_generator.state if isinstance(net.rng, numpy.random.Generator) else None,
        "shuffle_rng_state": state.shuffle_rng.bit_generator.state,
        "history": state.history.to_dict(),
        "extras": extras if extras is not None else getattr(net, "extras", {}),
    }

    def write_arrays(tmp):
        with open(tmp, "wb") as f:
            numpy.savez(f, **arrays)

    def write_meta(tmp):
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1, default=_json_default)

    atomic_write(os.path.join(path, "arrays.npz"), write_arrays)
    atomic_write(os.path.join(path, "model.json"), write_meta)
    return path


def _json_default(value):
    if isinstance(value, numpy.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a model file")


def load(path):
    """Read a model directory written by ``save``; it can predict and continue training."""
    from ..nn.network import Network

    path = os.fspath(path)
    meta_path, arrays_path = os.path.join(path, "model.json"), os.path.join(path, "arrays.npz")
    if not os.path.isdir(path):
        raise ModelFileError(f"no model directory at {path!r}")
    for p in (meta_path, arrays_path):
        if not os.path.isfile(p):
            raise ModelFileError(f"model directory {path!r} has no {os.path.basename(p)}")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{meta_path} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path} is not a caviar model file")
    if meta.get("version", 0) > VERSION:
        raise ModelFileError(f"{meta_path} has format version {meta['version']}; this caviar reads up to {VERSION}")
    net = Network(**meta["config"])
    try:
        with numpy.load(arrays_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:  # object arrays need pickle: never allowed
        raise ModelFileError(f"{arrays_path} cannot be read safely: {exc}") from None
    _set_weights(net, arrays, path)
    state = net.train_state = TrainingState(net.config["seed"])
    info = meta.get("optimizer")
    if info is not None:
        opt = optim.get(info["name"], **info["hyperparameters"])
        opt.iterations = info["iterations"]
        prefix = "opt:"
        opt.load_state_arrays(net.params, {k[len(prefix):]: backend.xp.asarray(v) for k, v in arrays.items() if k.startswith(prefix)})
        state.optimizer = opt
    state.epochs_trained = meta.get("epochs_trained", 0)
    if meta.get("rng_state") is not None and isinstance(net.rng, numpy.random.Generator):
        net.rng.bit_generator.state = meta["rng_state"]
    if "shuffle_rng_state" in meta:
        state.shuffle_rng.bit_generator.state = meta["shuffle_rng_state"]
    state.history = History.from_dict(meta.get("history", {}))
    net.extras = meta.get("extras", {})
    return net


def _weights(net):
    arrays = {f"param:{k}": backend.to_numpy(p.data) for k, p in net.params.items()}
    arrays.update({f"buffer:{k}": backend.to_numpy(b) for k, b in net.buffers.items()})
    return arrays


def _set_weights(net, arrays, path):
    for k, p in net.params.items():
        p.data = backend.xp.asarray(_required(arrays, f"param:{k}", path))
    for k, b in net.buffers.items():
        b[...] = backend.xp.asarray(_required(arrays, f"buffer:{k}", path))


def _required(arrays, key, path):
    if key not in arrays:
        raise ModelFileError(f"model directory {path!r} lacks the array {key!r}")
    return arrays[key]


def weights_bytes(net):
    """A network's weights and running statistics as the bytes of an ``.npz`` (for a study,
    which keeps every trial's best-epoch network; ``network_from_bytes`` reads them back)."""
    import io

    buffer = io.BytesIO()
    numpy.savez(buffer, **_weights(net))
    return buffer.getvalue()


def network_from_bytes(config, data, source="the study"):
    """The Network of ``config`` (``net.config``) with the weights of ``weights_bytes``; it
    predicts (it has no optimizer state to continue training with)."""
    import io

    from ..nn.network import Network

    net = Network(**config)
    try:
        with numpy.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{source}: stored weights cannot be read safely: {exc}") from None
    _set_weights(net, arrays, source)
    return net
