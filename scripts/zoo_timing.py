"""CPU embed time of one 10-s clip for real-size configs of the transformers taggers and PE-Audio, random weights.

No hub is needed: each model is built from its config (the geometry of the published checkpoint), saved to a
temporary folder, loaded through simsearch's encoder registry and timed on `embed_batch` (median of 3 after one
warm-up). Usage: python scripts/zoo_timing.py ast-audioset|wav2vec2-ks|pe-audio
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build(kind: str, out: str) -> int:
    """Save a random-weight model of `kind` (+ its processor) to `out`; returns its parameter count."""
    import transformers as T

    if kind == "ast-audioset":  # ASTConfig's defaults are MIT/ast-finetuned-audioset-10-10-0.4593's geometry
        model = T.ASTForAudioClassification(T.ASTConfig(num_labels=527, problem_type="multi_label_classification"))
        T.ASTFeatureExtractor().save_pretrained(out)
    elif kind == "wav2vec2-ks":  # wav2vec2-base with the 12-word SUPERB keyword-spotting head
        model = T.Wav2Vec2ForSequenceClassification(T.Wav2Vec2Config(num_labels=12, feat_extract_norm="group"))
        T.Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(out)
    elif kind == "pe-audio":  # PeAudioConfig's defaults: the pe-av-large geometry
        import tiny_models as tm

        tok = tm.train_tiny_roberta_tokenizer(Path(out) / "_tokenizer")  # the tokenizer does not enter audio timing
        model = T.PeAudioModel(T.PeAudioConfig(text_config={"vocab_size": 50368}))
        T.PeAudioProcessor(feature_extractor=T.PeAudioFeatureExtractor(), tokenizer=tok).save_pretrained(out)
    else:
        raise SystemExit(f"unknown model {kind!r}")
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    from simsearch.encoders import get_encoder

    kind = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        n = build(kind, d)
        enc = get_encoder("pe-audio" if kind == "pe-audio" else "hf-tagger", checkpoint=d, device="cpu")
        x = (0.1 * np.random.default_rng(0).standard_normal(10 * enc.sample_rate)).astype(np.float32)
        enc.embed_batch([x])
        times = []
        for _ in range(3):
            t = time.perf_counter()
            enc.embed_batch([x])
            times.append(time.perf_counter() - t)
    print(json.dumps({"model": kind, "params_M": round(n / 1e6, 1), "cpu_s_per_10s_clip": round(float(np.median(times)), 2),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
