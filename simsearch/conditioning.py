"""What every clip goes through before any encoder, by default (Encoder.condition); kept import-light for the CLI."""
from __future__ import annotations

# Conditioning before the encoder, the same for every encoder (Encoder.condition), chosen by the robustness table
# in docs/benchmarks.md: every clip is scaled to a gated level of -40 dBFS (a quieter or louder copy embeds the same;
# -40 rather than -20 keeps quiet room noise under YAMNet's log floor) and lead-in / tail more than 40 dB under that
# level is cut (a copy that starts late embeds the same). `--loudness off --trim off` turns them off.
DEFAULT_LOUDNESS_DB: float | None = -40.0
DEFAULT_TRIM_DB: float | None = 40.0
DEFAULT_BANDWIDTH_HZ: float | None = None
# A pink-noise twin (`--noise-twin 15`) makes search much more robust to noise but doubles the encoder's work and
# lowered Sonic Pi kNN-10 a little (docs/benchmarks.md), so it is offered, not the default.
DEFAULT_NOISE_TWIN_DB: float | None = None
# option -> default for new indexes (see Encoder.condition)
CONDITIONING = {"loudness": DEFAULT_LOUDNESS_DB, "trim": DEFAULT_TRIM_DB, "bandwidth": DEFAULT_BANDWIDTH_HZ,
                "noise_twin": DEFAULT_NOISE_TWIN_DB}
