"""Writing files so that a crash never leaves half of one, with the user's usual permissions.

A file is written under a temporary name in its directory and renamed into place. Temporary
files and folders are created private (mode 0600/0700, ``tempfile``'s); before the rename they
get the mode every other file of the user gets (0666 or 0777 less the umask), so models, live
records and plots can be shared alike. Secrets (the dashboard's token) are not written here.
"""

from __future__ import annotations

import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(path):
    """Give ``path`` (a file or a folder) the mode a new one gets under the user's umask."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


def atomic_write(path, write):
    """``write(temporary_path)``, then the temporary file renamed to ``path``."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def temporary_folder(directory):
    """A new folder in ``directory`` to fill and rename into place (``os.replace``), with the
    usual mode."""
    tmp = tempfile.mkdtemp(dir=directory, prefix=".tmp-")
    usual_mode(tmp)
    return tmp
