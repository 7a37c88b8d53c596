"""Several encoders as one ('yamnet+aisfx', 'yamnet*0.3+whisper-tiny-offline'): each part's clip vector
L2-normalised, scaled by the square root of its share of the weights, then concatenated.

Normalising each part first gives every model a say set by its weight alone, whatever its scale or
size: the fused vector is unit length and its cosine is the weighted mean of the parts' cosines
(weight 1 where none is given after '*'). Every part gets the same options (pooling, conditioning;
a conditioning option given as {part name: value} gives each part its own, which is how a part keeps
its declared default, see simsearch.encoders.default_conditioning), runs at its own sample rate, and
side outputs such as YAMNet's tag_scores are carried through under their own names (a name two parts
share is prefixed with the later part's name). `checkpoint` goes to the one part whose weights do
not ship here (clap in clap+yamnet).

A part written whiten(NAME) is whitened after normalising, with a map fitted to the index's collection
(simsearch.encoders.whitening); the map is loaded with `whitening=PATH` or `load_whitening`, and until then
such a fusion embeds nothing (it would not be the space its index holds).

Text: a fusion with a CLAP part answers text in CLAP's space, whatever the order of the parts and even
beside YAMNet. The CLAP part of every stored vector is `text_slice` (its offsets in the concatenation),
scaled by sqrt(its weight share); `embed_text` puts the CLAP text vector there and zeros elsewhere,
so a text query's cosine with a stored vector is that scale times its cosine with the clip's CLAP
vector: the ranking CLAP alone would give, through the same FAISS index (simsearch.search.text
divides the scale out again, so scores are CLAP's cosines). CLAP rather than the tag route because
the text tower was trained against exactly that audio vector, it answers any wording (not only the
521 AudioSet names), and it works beside parts without tags (clap+spectral). Without a CLAP part, a
fusion with YAMNet answers text through its tags ("tags").
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from simsearch.audio.resample import resample
from simsearch.encoders import whitening
from simsearch.encoders.backends import fusion_part_backend, has_backends
from simsearch.encoders.base import BASE_OPTIONS, Encoder, FrameOutput
from simsearch.errors import IndexFormatError, SimsearchError
from simsearch.vectors import normalize


class FusionEncoder(Encoder):
    """Concatenation of L2-normalised clip vectors of several encoders."""

    def __init__(self, name: str, parts: list[Encoder], weights: list[float] | None = None,
                 checkpoint: str | None = None, whitened: list[bool] | None = None):
        if len(parts) < 2:
            raise SimsearchError(f"fusion {name!r} needs at least two encoders joined by '+'")
        self.name, self.parts, self.checkpoint = name, parts, checkpoint
        self.whitened = list(whitened or [False] * len(parts))
        self.whitening: dict[str, whitening.Whitening] | None = None
        self.whitening_path: str | None = None
        weights = list(weights or [1.0] * len(parts))
        self.scales = [float(np.sqrt(w / sum(weights))) for w in weights]
        self.weights = weights
        self.sample_rate = max(p.sample_rate for p in parts)
        self.pooling = "+".join(p.pooling for p in parts)
        for key in BASE_OPTIONS:  # the parts apply them, each at its own rate; recorded once for the whole
            values = {p.name: getattr(p, key) for p in parts}
            setattr(self, key, values[parts[0].name] if len(set(values.values())) == 1 else values)
        self.frame_dim = 0
        self.backend = {p.name: p.backend for p in parts if p.backend} or None
        text = sorted((i for i, p in enumerate(parts) if p.supports_text),
                      key=lambda i: parts[i].text_space != "clap")  # a CLAP part first (module docstring)
        self.supports_text = bool(text)
        self._text_index = text[0] if text else None
        self._text_part = parts[text[0]] if text else None
        self.text_space = self._text_part.text_space if text else None
        if self.text_space == "clap" and self.whitened[text[0]]:
            raise SimsearchError(f"{name!r}: the CLAP part answers text queries and cannot be whitened (its text "
                                 "vectors would not follow the map)")

    @classmethod
    def build(cls, name: str, make_part: Callable[..., Encoder], checkpoint: str | None = None, device: str = "auto",
              takes_checkpoint: Callable[[str], bool] = lambda part: False, **options) -> "FusionEncoder":
        """Parts from a '+'-joined name, each built by make_part (the registry's get_encoder) with the same options
        (a {part name: value} conditioning option gives each part its own); checkpoint goes to the one part for
        which takes_checkpoint (from the registry: weights from a hub or a file) is true."""
        parsed = [parse_part(n, name) for n in name.split("+")]
        marks = [whitening.marked(n) for n in name.split("+")]
        names = [n for n, _ in parsed]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise SimsearchError(f"bad fused encoder name {name!r}; join distinct names with '+', e.g. yamnet+aisfx")
        target = None
        if checkpoint:
            takers = [n for n in names if takes_checkpoint(n)]
            if len(takers) != 1:
                which = f"several ({', '.join(takers)})" if takers else "none"
                raise SimsearchError(f"--checkpoint goes to the one part of a fused encoder that loads its weights "
                                     f"from a hub or a file; {name!r} has {which}")
            target = takers[0]
        canonical = "+".join((f"whiten({n})" if m else n) + ("" if w == 1.0 else f"*{w:g}")
                             for (n, w), m in zip(parsed, marks))
        fitted = options.pop("whitening", None)
        parts = [make_part(n, checkpoint if n == target else None, device, **part_options(options, n, names))
                 for n in names]
        enc = cls(canonical, parts, [w for _, w in parsed], checkpoint, marks)
        if fitted:
            enc.load_whitening(fitted)
        return enc

    @property
    def whitened_parts(self) -> list[str]:
        """The parts whitened with a map fitted to the collection."""
        return [p.name for p, m in zip(self.parts, self.whitened) if m]

    def load_whitening(self, path: str | Path) -> None:
        """Load the fitted maps of the whitened parts (simsearch.encoders.whitening)."""
        maps = whitening.load(Path(path), self.whitened_parts)
        wrong = [p.name for p in self.parts if p.name in maps and maps[p.name].mean.shape[0] != p.dim]
        if wrong:
            raise IndexFormatError(f"{path} was fitted to other {', '.join(wrong)} vectors than this encoder gives; "
                                   "index the collection again into a new folder")
        self.whitening, self.whitening_path = maps, str(path)

    @property
    def row_views(self) -> bool:
        return any(p.row_views for p in self.parts)

    def _part_dims(self) -> list[int]:
        maps = self.whitening or {}
        return [maps[p.name].dim if p.name in maps else p.dim for p in self.parts]

    @property
    def dim(self) -> int:
        return sum(self._part_dims())

    def embed_frames(self, batch: list[np.ndarray]) -> FrameOutput:
        raise NotImplementedError("a fused encoder has no common frame rate; use embed_batch")

    def part_vectors(self, batch: list[np.ndarray], only: list[str] | None = None, query: bool = False
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each part's (or only the named parts') normalised clip vectors at its own rate, before whitening and
        weights, and the extras."""
        vectors, extras = {}, {}
        for part in self.parts:
            if only is not None and part.name not in only:
                continue
            out = part.embed_batch([resample(x, self.sample_rate, part.sample_rate) for x in batch], query)
            vectors[part.name] = normalize(out.pop("embedding"))
            for key, value in out.items():
                extras[key if key not in extras else f"{part.name}_{key}"] = value
        return vectors, extras

    def embed_batch(self, batch: list[np.ndarray], query: bool = False) -> dict[str, np.ndarray]:
        """Each part embeds the clips at its own rate; vectors normalised (whitened where asked), weighted and
        concatenated, extras merged."""
        if self.whitening is None and any(self.whitened):
            raise SimsearchError(f"{self.name!r} whitens {', '.join(self.whitened_parts)} with a map fitted to a "
                                 "collection, and none is loaded: index a collection with it (the first run fits "
                                 "the map) or search an index made with it")
        vectors, extras = self.part_vectors(batch, query=query)
        out = [scale * (self.whitening[p.name].apply(vectors[p.name]) if m else vectors[p.name])
               for p, m, scale in zip(self.parts, self.whitened, self.scales)]
        return {"embedding": np.concatenate(out, axis=1).astype(np.float32), **extras}

    @property
    def text_slice(self) -> slice | None:
        """Where the CLAP part sits in the fused vector (None without one)."""
        if self.text_space != "clap":
            return None
        start = sum(self._part_dims()[: self._text_index])
        return slice(start, start + self._text_part.dim)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """CLAP: [B, dim] unit vectors in the fused space, the CLAP text vector at text_slice and zeros elsewhere
        (module docstring). Tags: the tag part's query weights [B, 521]."""
        if self._text_part is None:
            raise NotImplementedError(f"none of {self.name!r}'s parts has a text space")
        text = self._text_part.embed_text(texts)
        if self.text_space != "clap":
            return text
        out = np.zeros((len(text), self.dim), np.float32)
        out[:, self.text_slice] = normalize(text)
        return out

    def class_names(self) -> list[str]:
        """The tag names of the part that has them (YAMNet), aligned with extras['tag_scores']."""
        for part in self.parts:
            if hasattr(part, "class_names"):
                return part.class_names()
        raise NotImplementedError(f"none of {self.name!r}'s parts has tags")

    @property
    def precision(self) -> dict:
        return {p.name: p.precision for p in self.parts}

    def describe(self) -> dict:
        d = super().describe()
        d["parts"] = [p.describe() for p in self.parts]
        d["weights"] = self.weights
        if any(self.whitened):
            d["whitened"] = self.whitened_parts
        return d


def part_options(options: dict, part: str, parts: list[str]) -> dict:
    """A fusion's options as one part gets them: a {part name: value} conditioning option becomes that part's
    value; the backend as backends.fusion_part_backend gives it (none for parts with one runtime)."""
    out = {k: (v.get(part) if k in BASE_OPTIONS and isinstance(v, dict) else v) for k, v in options.items()}
    if "backend" in out:
        out["backend"] = fusion_part_backend(part, out["backend"], parts)
        if not has_backends(part):
            out.pop("backend")
    return out


def parse_part(text: str, name: str) -> tuple[str, float]:
    """'yamnet*0.3' -> ('yamnet', 0.3); 'aisfx' -> ('aisfx', 1.0); 'whiten(aisfx)*2' -> ('aisfx', 2.0)."""
    part, star, weight = whitening.bare(text).partition("*")
    if not star:
        return part.strip(), 1.0
    try:
        w = float(weight)
    except ValueError:
        w = -1.0
    if not (w > 0 and np.isfinite(w)):
        raise SimsearchError(f"bad weight {weight!r} in fused encoder {name!r}; write a positive number: yamnet*0.3")
    return part.strip(), w
