"""Stage 3, indexing: walk a source, decode in workers, embed in batches, write shards (local or Ray)."""
