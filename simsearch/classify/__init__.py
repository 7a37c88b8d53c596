"""Stage 6, classify: kNN voting, linear probes and zero-shot labels over an index's embeddings."""
from simsearch.classify.knn import KNN_K, LABEL_SEP, knn_scores
from simsearch.classify.label import METHODS, classify
from simsearch.classify.probe import train_probe

__all__ = ["METHODS", "classify", "KNN_K", "LABEL_SEP", "knn_scores", "train_probe"]
