"""The exceptions a user sees: each message names the problem and what to do.

The command line prints the message of any ``KDBenchError`` alone, without a traceback,
and exits with status 2; ``storage_message`` words the disk errors (full, over quota,
read-only, no permission) it reports the same way.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class KDBenchError(Exception):
    """Base of the errors that end a job with one clear message."""


class ConfigError(KDBenchError, ValueError):
    """Bad input (config value, data folder, data content) that the user must fix."""


def registry_entry(registry: Mapping[str, T], key: str, name: str, what: str) -> T:
    """``registry[name]`` (the value of setting ``key``), or a ConfigError listing the
    names it knows."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(
            f"{key} {name!r} is not a {what} this suite knows; choose one of {', '.join(registry)}"
        ) from None


class NonFiniteLossError(KDBenchError, FloatingPointError):
    """Training produced a non-finite loss; the message names the run, epoch and term."""


class GridError(KDBenchError, RuntimeError):
    """Some trials of a grid failed or did not finish; the message says which and why."""


class RunLockedError(KDBenchError, RuntimeError):
    """Another run holds the lock on the same work_dir (``kdcore.io.run_lock``)."""


class DamagedCacheError(KDBenchError, OSError):
    """A file of a cached folder does not match the folder's manifest.

    ``folder``: the cached folder; ``file``: the damaged file, relative to it; ``why``:
    what is wrong (missing, its size, its checksum). Callers rebuild the folder and log
    ``rebuild_message()``.
    """

    def __init__(self, folder: str | Path, file: str, why: str):
        self.folder, self.file, self.why = Path(folder), file, why
        super().__init__(
            f"{self.folder}: {file} is damaged ({why}); delete the folder to rebuild it"
        )

    def __reduce__(self):  # Ray sends errors between processes: rebuild from the parts
        return type(self), (self.folder, self.file, self.why)

    def rebuild_message(self) -> str:
        """'rebuilding <folder>: <file> is damaged (<why>)'."""
        return f"rebuilding {self.folder}: {self.file} is damaged ({self.why})"


# Exit statuses of the command-line tools (bench/run.py, bench/store.py)
BAD_INPUT = 2  # a bad config, argument or input file: the message says which
DISK_ERROR = 74  # sysexits.h EX_IOERR: a disk could not be written

# How each disk error reads, by errno: what happened (with the path) and what to do.
STORAGE_ERRORS = {
    errno.ENOSPC: ("no space left on device while writing {}", "free space"),
    errno.EDQUOT: ("disk quota exceeded while writing {}", "free space"),
    errno.EROFS: ("read-only file system: cannot write {}", "make it writable"),
    errno.EACCES: ("permission denied on {}", "fix its permissions"),
}


def storage_message(err: OSError) -> str | None:
    """One line for a disk error (ENOSPC, EDQUOT, EROFS, EACCES) naming the path, e.g.
    'no space left on device while writing <path>: free space or choose another
    results_dir/work_dir'; None for any other error."""
    if err.errno not in STORAGE_ERRORS:
        return None
    what, fix = STORAGE_ERRORS[err.errno]
    path = err.filename if err.filename is not None else "a file (path not reported)"
    return f"{what.format(path)}: {fix} or choose another results_dir/work_dir"
