"""Hyperparameter search: spaces on the right scales, strategies, resumable SQLite studies,
local and Ray executors, reports."""

from .report import best_trial, evaluate_best, evaluate_ensemble, leaderboard, plot_study
from .runner import default_study_path, tune
from .space import (Choice, Integer, LogUniform, OneMinusLogUniform, Space, SpaceError, Uniform, choice,
                    default_space, integer, load_space, log_uniform, notes_space, one_minus_log_uniform, uniform)
from .strategies import CoarseToFine, GridSearch, RandomSearch, SuccessiveHalving, make_strategy
from .study import Study, StudyError

__all__ = ["Choice", "CoarseToFine", "GridSearch", "Integer", "LogUniform", "OneMinusLogUniform", "RandomSearch",
           "Space", "SpaceError", "Study", "StudyError", "SuccessiveHalving", "Uniform", "best_trial", "choice",
           "default_space", "default_study_path", "notes_space", "integer", "leaderboard", "load_space",
           "log_uniform", "make_strategy", "one_minus_log_uniform", "plot_study", "evaluate_best", "evaluate_ensemble", "tune", "uniform"]
