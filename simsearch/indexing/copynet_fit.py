"""The first run's training of a `copynet` part (simsearch.encoders.copynet): windows of a seeded sample of the
collection, read exactly as the indexer reads them, conditioned as the part conditions its input."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from simsearch.audio.augment import training_rooms
from simsearch.audio.resample import resample
from simsearch.encoders import copynet, whitening
from simsearch.errors import SimsearchError
from simsearch.indexing.options import IndexOptions
from simsearch.indexing.reader import ReadSettings, stream_chunks
from simsearch.store.folder import IndexDir

log = logging.getLogger(__name__)
FIT_FILES = 1024  # files sampled for training (seeded)
FIT_WINDOWS = 2048  # windows kept from them
EXCERPT_S = 4.0  # of each window, a seeded excerpt this long (training crops are 1 s), so memory stays bounded
SEED = 0


def ensure_copynet(d: IndexDir, enc, paths: list[str], options: IndexOptions, info: dict | None) -> None:
    """Load the index's trained copynet into `enc`, training it first for a new index (an index with rows never
    gets a new network: its rows would no longer share one space)."""
    parts = copynet.untrained(enc)
    if not parts:
        return
    path = d.root / copynet.COPYNET_FILE
    if not path.is_file() and not info:
        clips = sample_clips(enc, paths, options)
        train_into(clips, options.device, path, options.copynet_steps, options.progress)
    copynet.load_trained(enc, d.root)


def train_into(clips: list[np.ndarray], device: str, path, steps: int,
               progress: bool = True) -> None:
    """Train on 16-kHz clips (already conditioned) for `steps` and save to `path`."""
    if steps < 1:
        raise SimsearchError(f"copynet needs at least one training step, not {steps}")
    net, summary = copynet.train(clips, training_rooms(copynet.SR), copynet.TrainSettings(steps=steps),
                                 device=device, progress=progress)
    copynet.save(path, net, summary)
    log.info("%s: copynet trained on %d clips in %.0f s", path, len(clips), summary["seconds"])


def conditioned_excerpts(part: copynet.CopyNetEncoder, waves: list[np.ndarray], rate: int,
                         rng: np.random.Generator) -> list[np.ndarray]:
    """Each wave at the part's rate, conditioned as the part conditions its input, cut to a seeded EXCERPT_S."""
    out, keep = [], int(EXCERPT_S * copynet.SR)
    for w in waves:
        x = part.condition(resample(np.asarray(w, np.float32), rate, copynet.SR))
        if len(x) > keep:
            s = int(rng.integers(len(x) - keep + 1))
            x = x[s:s + keep]
        if len(x):
            out.append(np.ascontiguousarray(x, np.float32))
    return out


def sample_clips(enc, paths: list[str], options: IndexOptions) -> list[np.ndarray]:
    """Conditioned excerpts of up to FIT_WINDOWS windows of a seeded sample of FIT_FILES files."""
    part = copynet.untrained(enc)[0]
    sample = whitening.fit_sample(paths, FIT_FILES, SEED)
    settings = replace(ReadSettings.of(options, enc.sample_rate), fingerprint=False)
    rng = np.random.default_rng(SEED)
    waves: list[np.ndarray] = []
    for chunk in stream_chunks(sample, settings, options.num_workers):
        if chunk.error:
            continue  # the indexing pass reports it
        waves += [w.samples for w in chunk.windows[: FIT_WINDOWS - len(waves)]]
        if len(waves) >= FIT_WINDOWS:
            break
    clips = conditioned_excerpts(part, waves, enc.sample_rate, rng)
    if len(clips) < 2:
        raise SimsearchError(f"{enc.name!r} has a copynet part, trained on the collection, and only {len(clips)} "
                             "readable window(s) were found to train it on (at least 2); index more files")
    return clips
