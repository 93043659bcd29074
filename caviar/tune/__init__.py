"""Hyperparameter search: spaces on the right scales, strategies, resumable SQLite studies,
local and Ray executors, reports."""

from .report import best_trial, leaderboard, plot_study, retrain_best
from .runner import default_study_path, tune
from .space import (Choice, Integer, LogUniform, OneMinusLogUniform, Space, SpaceError, Uniform, choice,
                    default_space, integer, load_space, log_uniform, one_minus_log_uniform, uniform)
from .strategies import CoarseToFine, GridSearch, RandomSearch, SuccessiveHalving, make_strategy
from .study import Study, StudyError

__all__ = ["Choice", "CoarseToFine", "GridSearch", "Integer", "LogUniform", "OneMinusLogUniform", "RandomSearch",
           "Space", "SpaceError", "Study", "StudyError", "SuccessiveHalving", "Uniform", "best_trial", "choice",
           "default_space", "default_study_path", "integer", "leaderboard", "load_space",
           "log_uniform", "make_strategy", "one_minus_log_uniform", "plot_study", "retrain_best", "tune", "uniform"]
