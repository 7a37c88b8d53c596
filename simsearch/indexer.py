"""Compatibility alias: code written against simsearch 0.1 imports the indexing job from here."""
from simsearch.indexing.job import rebuild, run_index
from simsearch.indexing.options import IndexOptions, IndexSummary

__all__ = ["IndexOptions", "IndexSummary", "run_index", "rebuild"]
