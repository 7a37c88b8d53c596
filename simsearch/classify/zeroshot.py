"""Zero-shot label scores from text: CLAP prompts or YAMNet's AudioSet tag space, whichever the index has."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from simsearch.errors import SimsearchError
from simsearch.vectors import normalize

if TYPE_CHECKING:
    from simsearch.search.index import Index


PROMPT_TEMPLATE = "This is a sound of {}."
CLAP_LOGIT_SCALE = 100.0


def zero_shot_scores(index: "Index", vector: np.ndarray, extras: dict[str, np.ndarray],
                     labels: Sequence[str]) -> np.ndarray:
    """Scores [L] of free-text labels for one clip (see the module docstring for the two spaces)."""
    labels = [str(v).strip() for v in labels if str(v).strip()]
    if not labels:
        raise SimsearchError('zero-shot needs candidate labels: --labels "dog,cat,rain"')
    enc = index.encoder
    if getattr(enc, "text_space", None) == "clap":
        from scipy.special import softmax

        text = normalize(enc.embed_text([PROMPT_TEMPLATE.format(v) for v in labels]))
        return softmax(CLAP_LOGIT_SCALE * (text @ vector))
    if "tag_scores" in extras:
        from simsearch.encoders.tag_text import tag_query_weights
        from simsearch.encoders.yamnet import load_class_names

        names = load_class_names()
        weights = np.stack([tag_query_weights(v, names) for v in labels])
        return weights @ extras["tag_scores"]
    raise SimsearchError(f"encoder {index.info['encoder']['name']!r} has no text space for zero-shot labels; "
                         "use an index built with clap or yamnet, or --method knn/probe")

