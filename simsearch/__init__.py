"""simsearch: audio embedding index and similarity search."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so `import simsearch` (and the CLI's --help) stays fast.
    if name == "Index":
        from .index import Index

        return Index
    raise AttributeError(name)
