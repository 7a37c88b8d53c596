"""Zero-shot label scores from text, calibrated over the given labels: the sound (CLAP prompts or the AudioSet
tag space, whichever the index has), the words said in the clip, and its name."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from simsearch.errors import SimsearchError
from simsearch.vectors import normalize

if TYPE_CHECKING:
    from simsearch.search.index import Index


PROMPT_TEMPLATE = "This is a sound of {}."
CLAP_LOGIT_SCALE = 100.0
NAME_BONUS = 4.0  # logit added to a label the clip's file or folder name holds: e^4, about 55 times as likely
REFERENCE_ROWS = 20_000  # rows of the index that calibrate the tag-space scores (a fixed sample of larger ones)


def zero_shot_scores(index: "Index", vector: np.ndarray, extras: dict[str, np.ndarray], labels: Sequence[str],
                     speech: np.ndarray | None = None, name: str | None = None) -> np.ndarray:
    """Probabilities [L] over free-text labels for one clip, summing to 1: softmax of the evidence each source gives.

    Sound: CLAP, 100 x the prompt's cosine; tags, each label's tag score as a standard score among the index's own
    rows (so "bass" on a bass sample stands out although every tag score of a synthetic sample is small). Spoken:
    when the clip's tags say it holds speech and `speech` (its 16 kHz samples) is given, the log-probability that
    Whisper hears the label as the utterance. Name: NAME_BONUS for a label whose words are all in `name` (the
    clip's file name or path).
    """
    labels = [str(v).strip() for v in labels if str(v).strip()]
    if not labels:
        raise SimsearchError('zero-shot needs candidate labels: --labels "dog,cat,rain"')
    from scipy.special import softmax

    from simsearch.search.text import no_text_space, text_space

    space = text_space(index.info)
    if space is None:
        raise no_text_space(index, "zero-shot labelling (or --method knn/probe)")
    if space.kind == "clap":
        # the CLAP part of both sides (all of it for CLAP alone), each unit length: CLAP's own cosine
        part = slice(space.start, space.stop)
        text = normalize(index.encoder.embed_text([PROMPT_TEMPLATE.format(v) for v in labels])[:, part])
        logits = CLAP_LOGIT_SCALE * (text @ normalize(vector[part].reshape(1, -1))[0])
    else:
        logits = _tag_logits(index, extras["tag_scores"], labels)
    logits = logits + _spoken_logits(index, extras, labels, speech) + _name_logits(labels, name)
    return softmax(logits)


def _tag_logits(index: "Index", tags: np.ndarray, labels: list[str]) -> np.ndarray:
    """Each label's tag-space score for the clip as a standard score over the index's rows' scores for it."""
    from simsearch.encoders.tag_text import CALIBRATION_FLOOR, index_class_names, tag_query_weights

    names = index_class_names(index.info)
    weights = np.stack([tag_query_weights(v, names) for v in labels])  # [L, C]
    reference = index.extras["tag_scores"]
    if len(reference) > REFERENCE_ROWS:
        reference = reference[np.random.default_rng(0).choice(len(reference), REFERENCE_ROWS, replace=False)]
    rows = reference @ weights.T  # [N, L]
    return (weights @ tags - rows.mean(axis=0)) / (rows.std(axis=0) + CALIBRATION_FLOOR)


def _spoken_logits(index: "Index", extras: dict[str, np.ndarray], labels: list[str],
                   speech: np.ndarray | None) -> np.ndarray | float:
    """Whisper's log-probability of each label as what was said, for a clip whose tags say it is speech."""
    from simsearch.encoders.tag_text import SPEECH_GATE, index_class_names, speech_scores

    if speech is None or "tag_scores" not in extras:
        return 0.0
    said = speech_scores(extras["tag_scores"], index_class_names(index.info))
    if said is None or float(said) < SPEECH_GATE:
        return 0.0
    from simsearch.encoders.whisper_asr import shared_asr

    return shared_asr(index.device if str(index.device).startswith("cuda") else "cpu").label_loglik([speech], labels)[0]


def _name_logits(labels: list[str], name: str | None) -> np.ndarray | float:
    """NAME_BONUS for each label all of whose words are among the words of the clip's name and folders."""
    if not name:
        return 0.0
    from simsearch.search.words import row_words, split_words

    have = set(row_words(name))
    return np.array([NAME_BONUS if (w := split_words(v)) and set(w) <= have else 0.0 for v in labels], np.float32)
