"""Training: the fit loop, callbacks, history, mini-batches and model files."""

from .batches import minibatch_indices
from .callbacks import Callback, Checkpoint, EarlyStopping, LambdaCallback, LearningRateSchedule, ProgressBar
from .history import History
from .loop import Run, fit
from .modelfile import ModelFileError, load, save

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History", "LambdaCallback", "LearningRateSchedule",
           "ModelFileError", "ProgressBar", "Run", "fit", "load", "minibatch_indices", "save"]
