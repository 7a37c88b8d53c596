"""Stage 5, search: the Index a query opens (by example, by text), filters and near-duplicate groups."""
