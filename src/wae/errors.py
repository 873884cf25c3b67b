"""The library's own error type: user-facing failures with a one-line message."""


class WAEError(Exception):
    """A user error (bad name, bad value, missing or corrupt file, ...).

    The CLI prints ``str(err)`` on one line and exits with code 2; library users can catch it.
    """


class ConfigError(WAEError):
    """An unknown key, a wrong type or an invalid value in a configuration."""


class DataError(WAEError):
    """A data set that is missing, corrupt or of the wrong shape."""


class TrainingError(WAEError):
    """Training cannot go on (non-finite loss, unwritable output, ...)."""


class TrainingStopped(TrainingError):
    """Training was stopped from outside (SIGTERM, Ctrl+C); the message says which checkpoint ``--resume`` uses.

    ``exit_code`` follows the shell's convention for a process ended by a signal (128 + signal number).
    """

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code
