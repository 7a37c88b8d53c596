"""simsearch: audio embedding index and similarity search."""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import version

__version__ = version("simsearch")

# The public names, imported on first use so `import simsearch` (and the CLI's --help) stays fast.
_LAZY = {"Index": "simsearch.search.index", "IndexOptions": "simsearch.indexing.options",
         "run_index": "simsearch.indexing.job"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["Index", "IndexOptions", "run_index", "__version__"]
