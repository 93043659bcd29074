"""Training: the one fit loop (networks and populations), callbacks, run controls, history,
training state, mini-batches, model files, ensembles and the hyperparameter schema."""

from . import hyperparameters
from .batches import minibatch_indices
from .callbacks import Callback, Checkpoint, EarlyStopping, LambdaCallback, LearningRateSchedule, ProgressBar, TimeLimit
from .controls import Controller
from .ensemble import Ensemble, Snapshots, load_model, save_model
from .history import History
from .loop import Run, fit
from .modelfile import ModelFileError, load, save
from .state import TrainingState, state_of

__all__ = ["Callback", "Checkpoint", "Controller", "EarlyStopping", "Ensemble", "History", "Snapshots", "load_model",
           "LambdaCallback", "LearningRateSchedule", "ModelFileError", "ProgressBar", "Run", "TimeLimit", "TrainingState", "fit",
           "hyperparameters", "load", "minibatch_indices", "save", "save_model", "state_of"]
