"""Models that ship inside pip packages: where their files are, and the cache for what we derive from them."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from simsearch.errors import ModelNotFoundError


def packaged_model_dir(module: str, package: str, needs: str, hint: str, marker: str):
    """Folder of model files a pip package ships (its get_model_path()); a clear error when absent or incomplete."""
    try:
        path = Path(importlib.import_module(module).get_model_path())
    except ImportError:
        raise ModelNotFoundError(f"{needs} from the '{package}' package, which is not installed; "
                                 f"install it with: {hint}") from None
    if not (path / marker).is_file():
        raise ModelNotFoundError(f"no {marker} in {path} (from '{package}'); reinstall it with: {hint}")
    return path

def cache_dir() -> Path:
    """Per-user cache folder for derived model files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsearch"
