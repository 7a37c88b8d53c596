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


def packaged_model_dir(module: str, package: str, needs: str, hint: str, marker: str):
    """Folder of model files a pip package ships (its get_model_path()); a clear error when absent or incomplete."""
    import importlib
    from pathlib import Path

    try:
        path = Path(importlib.import_module(module).get_model_path())
    except ImportError:
        raise ModelNotFoundError(f"{needs} from the '{package}' package, which is not installed; "
                                 f"install it with: {hint}") from None
    if not (path / marker).is_file():
        raise ModelNotFoundError(f"no {marker} in {path} (from '{package}'); reinstall it with: {hint}")
    return path
