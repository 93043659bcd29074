"""Training: the fit loop, callbacks, history, mini-batches and model files."""

from .batches import minibatch_indices
from .callbacks import Callback, Checkpoint, EarlyStopping, LambdaCallback, LearningRateSchedule, ProgressBar
from .ensemble import Ensemble, Snapshots, load_model
from .history import History
from .loop import Run, fit
from .modelfile import ModelFileError, load, save

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "Ensemble", "History", "Snapshots", "load_model", "LambdaCallback", "LearningRateSchedule",
           "ModelFileError", "ProgressBar", "Run", "fit", "load", "minibatch_indices", "save"]
