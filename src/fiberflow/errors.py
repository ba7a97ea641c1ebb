"""Exceptions with messages that name the file and the problem."""


class FiberflowError(Exception):
    """Base class of every error fiberflow raises on purpose."""


class DataError(FiberflowError):
    """Bad input data: unreadable, truncated, missing HDU/keyword/column, NaNs, wrong shape.

    Parameters
    ----------
    path : str or None
        The file the problem was found in (None for in-memory data).
    problem : str
        What is wrong, in words an operator understands.
    """

    def __init__(self, path, problem):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = self.path if self.path is not None else "<in memory>"
        super().__init__(f"{where}: {problem}")


class ConfigError(FiberflowError):
    """Invalid configuration; the message names the key and the file."""


def one_line(exc):
    """An exception's message folded onto one line (parsers such as YAML's span several)."""
    return " ".join(str(exc).split())
