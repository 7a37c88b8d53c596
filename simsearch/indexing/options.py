"""What an indexing run is asked to do (IndexOptions), what it did (IndexSummary), and whether an index can resume."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simsearch.audio.condition import CONDITIONING
from simsearch.encoders import DEFAULT_ENCODER, Encoder, default_conditioning
from simsearch.encoders.backends import mismatched_backend, query_backends
from simsearch.errors import IndexFormatError, SimsearchError

DEFAULT_WINDOW_S = 10.0
OFF = "off"  # an option given as "off" is recorded as None (not applied)


@dataclass
class IndexOptions:
    """Everything `simsearch index` takes besides the source and the output folder."""

    encoder: str = DEFAULT_ENCODER
    # a collection profile instead of an encoder (simsearch.encoders.profiles): general|music|oneshots|auto; with
    # a profile leave `encoder` at its default
    profile: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    batch_size: int | None = None  # None: 32 on CPU, the largest that pays off on a GPU (autobatch)
    window_s: float | None = None  # None: the index's recorded value, else DEFAULT_WINDOW_S
    hop_s: float | None = None
    label_regex: str | None = None
    pooling: str | None = None
    layer: int | None = None
    # runtime of the models that have several (simsearch.encoders.backends): "auto" (fastest for the device), a
    # name, or {part: name}; None: "auto", or on resume what the index's rows need
    backend: str | dict | None = None
    num_workers: int | None = None
    shard_rows: int = 2048
    strict: bool = False
    max_duration_s: float | None = None
    progress: bool = True
    # Conditioning. "off": none; a number: that, for every part of a fusion; None: the index's recorded value, else
    # the encoder's own default (simsearch.encoders.default_conditioning: measured for the offline encoders, none
    # for the hub models and BEATs, per part in a fusion of both kinds).
    loudness: float | str | dict | None = None  # dBFS target
    trim: float | str | dict | None = None  # dB under the gated level
    bandwidth: float | str | dict | None = None  # low-pass Hz
    noise_twin: float | str | dict | None = None  # twin SNR dB
    room_twin: float | str | dict | None = None  # twin room's reverb time, seconds
    fingerprint: bool | None = None  # keep landmark fingerprints per row; None: the index's choice, else True
    landmarks: str | None = None  # their kind, pairs|triplets (audio.landmark_kinds); None: the index's, else DEFAULT
    engine: str = "local"  # "ray": decode and embed as a Ray Data job (simsearch/ray_engine.py)
    ray_address: str | None = None  # None: start a local Ray
    index_type: str | None = None  # auto|flat|hnsw|ivfpq; None: the index's recorded choice, else auto
    copynet_steps: int = 300  # training steps of a copynet part on a new collection (encoders.copynet)
    max_memory: str | int | None = None  # FAISS memory budget for auto ("8G"); None: the recorded one, else none
    # spoken words (simsearch.indexing.transcribe): auto|on|off; None: the index's recorded mode, else auto for
    # encoders with AudioSet tag scores (the speech gate) and off for the rest
    transcribe: str | None = None

    def encoder_options(self) -> dict:
        """What the encoder is built with, recorded in index.json so queries rebuild the same one."""
        opts = {k: v for k, v in {"pooling": self.pooling, "layer": self.layer, "backend": self.backend}.items()
                if v is not None}
        defaults = default_conditioning(self.encoder)
        for key in CONDITIONING:
            opts[key] = _conditioning_value(getattr(self, key), defaults[key])
        return opts


def _conditioning_value(value: float | str | dict | None, default: float | dict | None) -> float | dict | None:
    """One conditioning option as recorded: the encoder's default when not given, None for "off", a number, or
    {part: value} (a fusion's per-part values, read back from index.json on resume)."""
    if value is None:
        return default
    if isinstance(value, dict):
        return {part: _conditioning_value(v, None) for part, v in value.items()}
    return None if value == OFF else float(value)


@dataclass
class IndexSummary:
    """What one run did, for the closing line and for tests."""

    indexed: int = 0
    skipped: int = 0
    removed: int = 0
    errors: int = 0
    rows: int = 0
    transcribed: int = 0  # windows whose spoken words were transcribed in this run
    seconds: float = 0.0
    error_list: list[dict] = field(default_factory=list)

    def line(self) -> str:
        spoken = f", {self.transcribed} windows transcribed" if self.transcribed else ""
        return (f"indexed {self.indexed} files, skipped {self.skipped} unchanged, removed {self.removed}, "
                f"errors {self.errors}{spoken}; {self.rows} rows in the index ({self.seconds:.1f} s)")


def encoder_record(enc: Encoder, options: IndexOptions) -> dict:
    """The encoder as index.json records it: enough to rebuild the same one at query time (the backend as resolved
    for this run's device)."""
    opts = options.encoder_options()
    if enc.backend:
        opts["backend"] = enc.backend
    return {**enc.describe(), "options": opts}


def check_compatible(info: dict, enc: Encoder, options: IndexOptions, root: Path) -> None:
    """An index holds one encoder's space; refuse to mix another one into it."""
    old = info["encoder"]
    new = encoder_record(enc, options)
    for key in ("name", "checkpoint", "dim", "pooling", *CONDITIONING):
        if old.get(key) != new.get(key):
            made = f" (made with --profile {info['profile']['name']}: repeat it)" if info.get("profile") else ""
            raise IndexFormatError(
                f"{root} was built with encoder {old.get('name')} ({key}={old.get(key)!r}), not {new.get(key)!r}; "
                f"use another --out folder{made}")
    part = mismatched_backend(new["name"], old.get("backend"), new.get("backend"))
    if part:
        raise IndexFormatError(f"{root} holds {part} vectors of a backend ({old.get('backend') or 'none recorded'}) "
                               "that only it reproduces; leave out --backend (a resumed index keeps what its rows "
                               "need) or use another --out folder")
    if (info.get("window_s"), info.get("hop_s")) != (options.window_s, options.hop_s):
        raise IndexFormatError(f"{root} uses window {info.get('window_s')} s / hop {info.get('hop_s')} s; "
                               "use the same values or another --out folder")


def _with_recorded_defaults(options: IndexOptions, info: dict | None) -> IndexOptions:
    """On resume, settings the user did not repeat come from index.json, so a re-run means 'the same again'."""
    from dataclasses import replace

    info = info or {}
    window = options.window_s if options.window_s is not None else info.get("window_s", DEFAULT_WINDOW_S)
    hop = options.hop_s if options.hop_s is not None else info.get("hop_s", window)
    regex = options.label_regex if options.label_regex is not None else info.get("label_regex")
    conditioning = {}
    for key in CONDITIONING:  # indexes from before these options recorded none: keep them off
        value = getattr(options, key)
        if value is None and info:
            recorded = info.get("encoder", {}).get("options", {}).get(key)
            value = OFF if recorded is None else recorded
        conditioning[key] = value
    backend = options.backend
    if backend is None and info:  # rows whose backend only reproduces itself keep it (backends.query_backends)
        backend = query_backends(info["encoder"]["name"], info["encoder"].get("options", {}).get("backend"))
    fingerprint = options.fingerprint
    if fingerprint is None:  # indexes from before fingerprints keep none, so all their rows stay alike
        fingerprint = "fingerprint" in info if info else True
    kind = _landmark_kind(options.landmarks, info)
    return replace(options, window_s=window, hop_s=hop, label_regex=regex, fingerprint=fingerprint, backend=backend,
                   landmarks=kind, **conditioning)


def _landmark_kind(asked: str | None, info: dict) -> str:
    """The landmark kind of this run: an index keeps the kind it has (one table matches one kind)."""
    from simsearch.audio import landmark_kinds

    recorded = landmark_kinds.kind_of(info["fingerprint"]) if info.get("fingerprint") else None
    if asked is not None:
        landmark_kinds.module(asked)  # refuses unknown names
        if recorded and asked != recorded:
            raise IndexFormatError(f"this index keeps {recorded} landmarks, not {asked}; leave out --landmarks or "
                                   "use another --out folder")
    return asked or recorded or landmark_kinds.DEFAULT


def with_profile(options: IndexOptions, info: dict | None, paths: list[str]) -> tuple[IndexOptions, dict | None]:
    """A profile's encoder in place of `encoder`, and the profile as index.json records it: an index that recorded
    one keeps that record, and `auto` on it keeps its encoder rather than listening to the collection again."""
    from dataclasses import replace

    from simsearch.encoders import profiles

    if options.profile is None:
        return options, None
    if options.encoder != DEFAULT_ENCODER:
        raise SimsearchError(f"give a profile or an encoder, not both: profile {options.profile!r} picks the encoder "
                             f"itself, and encoder {options.encoder!r} was given")
    recorded = (info or {}).get("profile")
    if options.profile == profiles.AUTO and info:
        return replace(options, encoder=info["encoder"]["name"]), recorded
    record = profiles.resolve(options.profile, paths)
    return replace(options, encoder=record["encoder"]), recorded or record
