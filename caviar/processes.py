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


def started_at():
    """When this process started (a ``time.time()``), so a time budget counts the
    interpreter's start and the imports too; on systems without ``/proc``, now."""
    import time

    now = time.time()
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        return min(now, now - (uptime - int(fields[19]) / ticks))  # field 22: start time after boot, in ticks
    except (OSError, ValueError, IndexError):
        return now
