"""Exception types for errors a user can cause, so the CLI can print one line and exit non-zero."""


class SimsearchError(Exception):
    """Base class: anything a user can fix (bad file, missing weights, wrong index)."""


class AudioError(SimsearchError):
    """A file could not be decoded or holds no usable audio."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelNotFoundError(SimsearchError):
    """Weights for an encoder are not where we looked; the message says how to provide them."""


class IndexFormatError(SimsearchError):
    """An index folder is missing, corrupt, or does not match the encoder/dimension asked for."""


class IndexLockedError(SimsearchError):
    """Another job holds the index folder's write lock."""

