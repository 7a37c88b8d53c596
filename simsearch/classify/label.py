"""Label a clip from an index: kNN votes over labelled rows, a trained probe or fine-tuned head, or zero-shot.

kNN weighting: the k nearest labelled rows by cosine similarity s_i each vote with weight
exp(s_i / T), T = 0.07 (the temperature-weighted kNN of Wu et al. 2018 / DINO); a label's score is
the sum of its voters' weights divided by the sum over all k, so the scores add up to 1 and a close
neighbour counts for much more than a far one. Rows without a label never vote. A row whose label
holds ";" ("dog;bark") votes for each part.

Fine-tuned: the head trained by `simsearch finetune` (simsearch.classify.finetune) on the clip's vector, for an index
built with that fine-tuned folder as --checkpoint.

Zero-shot (simsearch.classify.zeroshot): probabilities over the given labels, from the evidence of the sound,
the words said and the clip's name. The index's text space decides the sound's part (simsearch.search.text.
text_space). CLAP, alone or as a fused part: labels become prompts "This is a sound of {}." embedded by the text
tower, 100 * cosine with the clip's CLAP part, like CLIP/CLAP. Tags (YAMNet, alone or fused without CLAP): each
label is mapped onto the AudioSet classes with simsearch.encoders.tag_text.tag_query_weights (the label text
itself, no template: class names are short nouns), scored as those weights · the clip's tag scores, and taken as
a standard score among the index's rows. A clip whose tags say speech adds Whisper's log-probability of hearing
each label; a label in the clip's file name adds NAME_BONUS. Softmax over the labels of the sum.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from simsearch.classify.knn import KNN_K, _ranked, classify_knn
from simsearch.classify.probe import classify_probe
from simsearch.classify.zeroshot import zero_shot_scores
from simsearch.errors import SimsearchError

if TYPE_CHECKING:
    from simsearch.search.index import Index


METHODS = ("knn", "probe", "zeroshot", "finetuned")


def spoken_samples(index: "Index", audio: Any) -> np.ndarray | None:
    """The clip at Whisper's 16 kHz (its first 30 s), for zero-shot's spoken evidence; None if it cannot be had."""
    from simsearch.audio.decode import decode
    from simsearch.audio.resample import resample
    from simsearch.encoders.whisper_ct2 import WHISPER_SR

    if isinstance(audio, np.ndarray):  # an array is at the index encoder's rate
        return resample(audio[: 30 * index.encoder.sample_rate], index.encoder.sample_rate, WHISPER_SR)
    return decode(audio, WHISPER_SR, max_seconds=30)


def classify(index: "Index", audio: Any, method: str = "knn", k: int = KNN_K,
             labels: Sequence[str] | None = None, top: int | None = None) -> list[dict]:
    """[{"label", "score"}, ...] best first, like the transformers audio-classification pipeline."""
    if method not in METHODS:
        raise SimsearchError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if labels and method != "zeroshot":
        raise SimsearchError("--labels is for --method zeroshot; the other methods use the index's own labels")
    if method == "finetuned":  # the index's own encoder is the fine-tuned one: its vector feeds the trained head
        from simsearch.classify.finetune import classify_finetuned

        return classify_finetuned(index, audio)[: top or None]
    vector, extras, windows = index.embed_clip_windows(audio)
    if method == "knn":
        out = classify_knn(index, vector, k)
    elif method == "probe":
        out = classify_probe(index, vector, windows)
    else:
        labels = [v.strip() for v in labels or [] if v.strip()]
        name = str(audio) if isinstance(audio, (str, Path)) else None
        out = _ranked(labels, zero_shot_scores(index, vector, extras, labels, spoken_samples(index, audio), name))
    return out[: top or None]

