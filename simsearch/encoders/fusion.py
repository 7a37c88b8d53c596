"""Several encoders as one ('yamnet+aisfx', 'yamnet*0.3+whisper-tiny-offline'): each part's clip vector
L2-normalised, scaled by the square root of its share of the weights, then concatenated.

Normalising each part first gives every model a say set by its weight alone, whatever its scale or
size: the fused vector is unit length and its cosine is the weighted mean of the parts' cosines
(weight 1 where none is given after '*'). Every part gets the same options (pooling, conditioning),
runs at its own sample rate, and side outputs such as YAMNet's tag_scores are carried through under
their own names, so text search by tags still works on a fused index (a name two parts share is
prefixed with the later part's name).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from simsearch.audio.resample import resample
from simsearch.encoders.base import BASE_OPTIONS, Encoder, FrameOutput
from simsearch.errors import SimsearchError
from simsearch.vectors import normalize


class FusionEncoder(Encoder):
    """Concatenation of L2-normalised clip vectors of several encoders."""

    def __init__(self, name: str, parts: list[Encoder], weights: list[float] | None = None):
        if len(parts) < 2:
            raise SimsearchError(f"fusion {name!r} needs at least two encoders joined by '+'")
        self.name, self.parts, self.checkpoint = name, parts, None
        weights = list(weights or [1.0] * len(parts))
        self.scales = [float(np.sqrt(w / sum(weights))) for w in weights]
        self.weights = weights
        self.sample_rate = max(p.sample_rate for p in parts)
        self.pooling = "+".join(p.pooling for p in parts)
        for key in BASE_OPTIONS:  # the parts apply them, each at its own rate; recorded once for the whole
            setattr(self, key, getattr(parts[0], key))
        self.frame_dim = 0
        text = [p for p in parts if p.supports_text]
        self.supports_text = bool(text)
        self.text_space = text[0].text_space if text else None
        self._text_part = text[0] if text else None

    @classmethod
    def build(cls, name: str, make_part: Callable[..., Encoder], checkpoint: str | None = None, device: str = "auto",
              **options) -> "FusionEncoder":
        """Parts from a '+'-joined name, each built by make_part (the registry's get_encoder) with the same options."""
        parsed = [parse_part(n, name) for n in name.split("+")]
        names = [n for n, _ in parsed]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise SimsearchError(f"bad fused encoder name {name!r}; join distinct names with '+', e.g. yamnet+aisfx")
        if checkpoint:
            raise SimsearchError("--checkpoint applies to one encoder; a fused encoder uses each part's default")
        canonical = "+".join(n if w == 1.0 else f"{n}*{w:g}" for n, w in parsed)
        return cls(canonical, [make_part(n, None, device, **options) for n in names], [w for _, w in parsed])

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        raise NotImplementedError("a fused encoder has no common frame rate; use embed_batch")

    def embed_batch(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Each part embeds the clips at its own rate; vectors normalised and concatenated, extras merged."""
        vectors, extras = [], {}
        for part, scale in zip(self.parts, self.scales):
            out = part.embed_batch([resample(x, self.sample_rate, part.sample_rate) for x in batch])
            vectors.append(scale * normalize(out.pop("embedding")))
            for key, value in out.items():
                extras[key if key not in extras else f"{part.name}_{key}"] = value
        return {"embedding": np.concatenate(vectors, axis=1).astype(np.float32), **extras}

    def embed_text(self, texts: list[str]) -> np.ndarray:
        if self._text_part is None:
            raise NotImplementedError(f"none of {self.name!r}'s parts has a text space")
        return self._text_part.embed_text(texts)

    def class_names(self) -> list[str]:
        """The tag names of the part that has them (YAMNet), aligned with extras['tag_scores']."""
        names = getattr(self._text_part, "class_names", None)
        if names is None:
            raise NotImplementedError(f"none of {self.name!r}'s parts has tags")
        return names()

    def describe(self) -> dict:
        d = super().describe()
        d["parts"] = [p.describe() for p in self.parts]
        d["weights"] = self.weights
        return d


def parse_part(text: str, name: str) -> tuple[str, float]:
    """'yamnet*0.3' -> ('yamnet', 0.3); 'aisfx' -> ('aisfx', 1.0)."""
    part, star, weight = text.strip().partition("*")
    if not star:
        return part.strip(), 1.0
    try:
        w = float(weight)
    except ValueError:
        w = -1.0
    if not (w > 0 and np.isfinite(w)):
        raise SimsearchError(f"bad weight {weight!r} in fused encoder {name!r}; write a positive number: yamnet*0.3")
    return part.strip(), w
