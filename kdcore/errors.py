"""The exceptions a user sees: each message names the problem and what to do.

The command line prints the message of any ``KDBenchError`` alone, without a traceback,
and exits with status 2.
"""


class KDBenchError(Exception):
    """Base of the errors that end a job with one clear message."""


class ConfigError(KDBenchError, ValueError):
    """Bad input (config value, data folder, data content) that the user must fix."""


class NonFiniteLossError(KDBenchError, FloatingPointError):
    """Training produced a non-finite loss; the message names the run, epoch and term."""


class GridError(KDBenchError, RuntimeError):
    """Some trials of a grid failed or did not finish; the message says which and why."""
