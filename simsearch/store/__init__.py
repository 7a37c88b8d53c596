"""Stage 4, store: the index folder (Parquet shards, index.json), FAISS operations, index planning and sync."""
