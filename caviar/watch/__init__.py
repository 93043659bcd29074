"""Panda mode: babysit a training run from the browser or the command line, and watch studies."""

from ..train.controls import Controller
from .control import ACTIONS, ControlError, checkpoints, send
from .server import Dashboard, WatchError

__all__ = ["ACTIONS", "ControlError", "Controller", "Dashboard", "WatchError", "checkpoints", "send"]
