"""Panda mode: babysit a training run from the browser or the command line, and watch studies."""

from .control import ACTIONS, ControlError, Controller, checkpoints, send
from .server import Dashboard, WatchError

__all__ = ["ACTIONS", "ControlError", "Controller", "Dashboard", "WatchError", "checkpoints", "send"]
