"""Whether a process of this machine still runs: a run directory and a study each have one
live owner, recorded by its pid."""

from __future__ import annotations

import os


def alive(pid):
    """True while process ``pid`` exists (another user's counts too)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
