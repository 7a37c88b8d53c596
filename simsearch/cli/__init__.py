"""The `simsearch` command line: a thin shell over the stages, one module per command group."""
from simsearch.cli.core import main

__all__ = ["main"]
