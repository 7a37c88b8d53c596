"""Stage 7, evaluation: the representation ladder side by side, robustness to everyday changes, reports."""
