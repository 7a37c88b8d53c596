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
    """Scores [L] of free-text labels for one clip (see simsearch.classify.label for the two spaces)."""
    labels = [str(v).strip() for v in labels if str(v).strip()]
    if not labels:
        raise SimsearchError('zero-shot needs candidate labels: --labels "dog,cat,rain"')
    from simsearch.search.text import no_text_space, text_space

    space = text_space(index.info)
    if space is None:
        raise no_text_space(index, "zero-shot labelling (or --method knn/probe)")
    if space.kind == "clap":
        from scipy.special import softmax

        # the CLAP part of both sides (all of it for CLAP alone), each unit length: CLAP's own cosine
        part = slice(space.start, space.stop)
        text = normalize(index.encoder.embed_text([PROMPT_TEMPLATE.format(v) for v in labels])[:, part])
        return softmax(CLAP_LOGIT_SCALE * (text @ normalize(vector[part].reshape(1, -1))[0]))
    from simsearch.encoders.tag_text import tag_query_weights
    from simsearch.encoders.yamnet import load_class_names

    names = load_class_names()
    weights = np.stack([tag_query_weights(v, names) for v in labels])
    return weights @ extras["tag_scores"]
