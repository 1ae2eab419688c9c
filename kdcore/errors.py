"""The one exception type for bad user input."""


class ConfigError(ValueError):
    """Bad input (config value, data folder, data content) that the user must fix.

    The command line prints its message alone, without a traceback, and exits non-zero.
    """
