"""Command-line flags shared by `index` and `robustness`: the conditioning every encoder takes, and the backend."""
from __future__ import annotations

import argparse

CONDITIONING_FLAGS = {  # dest -> (flag, help)
    "loudness": ("--loudness", "scale each clip to this gated level in dBFS before the encoder"),
    "trim": ("--trim", "cut lead-in and tail more than this many dB under the clip's level"),
    "bandwidth": ("--bandwidth", "low-pass every clip to this many Hz"),
    "noise_twin": ("--noise-twin", "embed a pink-noise copy at this SNR in dB beside each clip (more robust to "
                                   "noise, twice the work)"),
    "room_twin": ("--room-twin", "embed a copy played in a simulated room with this reverb time in seconds beside "
                                 "each clip (more robust to reverb, one more pass)"),
}


def parse_db(value: str) -> float | str:
    """'-20' -> -20.0; 'off' / 'none' -> 'off'."""
    if value.strip().lower() in ("off", "none"):
        return "off"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as -40, or 'off'; got {value!r}") from None


def add_conditioning_flags(parser: argparse.ArgumentParser) -> None:
    """--loudness / --trim / --bandwidth / --noise-twin / --room-twin, each a number or 'off'; left out: the encoder's own default
    (simsearch.encoders.default_conditioning), or on resume the index's."""
    from simsearch.audio.condition import CONDITIONING
    from simsearch.encoders import SPECS

    measured = ", ".join(n for n, s in SPECS.items() if s.conditioning == "measured")
    for dest, (flag, text) in CONDITIONING_FLAGS.items():
        value = CONDITIONING[dest]
        default = ("off for every encoder" if value is None else
                   f"{value:g} for {measured} and their fusions, off for the others: their reference input")
        parser.add_argument(flag, dest=dest, type=parse_db,
                            help=f"{text}, or 'off' (default {default}; on resume: the index's)")


def add_fingerprint_flag(parser: argparse.ArgumentParser) -> None:
    """--no-fingerprint: no landmark fingerprints (smaller index; noisy or cut copies of a clip then rank lower)."""
    parser.add_argument("--no-fingerprint", dest="fingerprint", action="store_const", const=False, default=None,
                        help="keep no landmark fingerprints: a smaller index, but a noisy, cut or re-encoded copy "
                             "of an indexed clip no longer reliably finds that clip first (default: keep them; on "
                             "resume: the index's choice)")


def add_copynet_flag(parser: argparse.ArgumentParser) -> None:
    """--copynet-steps N: how long a copynet part trains on the collection."""
    from simsearch.encoders.copynet import TrainSettings

    parser.add_argument("--copynet-steps", type=int, default=TrainSettings.steps, metavar="N",
                        help="training steps of a copynet part (profile copies) on a new collection, 96 one-second "
                             f"segments each (default {TrainSettings.steps}: 4-6 minutes on 2 CPU cores)")


def add_landmarks_flag(parser: argparse.ArgumentParser) -> None:
    """--landmarks pairs|triplets|both: which landmarks to keep (triplets also survive pitch and tempo changes)."""
    from simsearch.audio.landmark_kinds import DEFAULT, KINDS

    parser.add_argument("--landmarks", choices=list(KINDS), default=None,
                        help=f"landmark kind: pairs (Shazam-style peak pairs) or triplets (peak triplets hashed by "
                             f"log-frequency differences and gap ratio: they also match pitch-shifted and tempo- or "
                             f"speed-changed copies, but fewer noisy ones), or both (the better match of the two; "
                             f"the largest index) (default {DEFAULT} for a new index; on resume: the index's)")


def conditioning(args: argparse.Namespace) -> dict:
    """The parsed conditioning flags as IndexOptions keywords."""
    return {dest: getattr(args, dest) for dest in CONDITIONING_FLAGS}



def backend_arg(text: str) -> str | dict:
    """--backend: one name for every part that has several runtimes, or 'part=name,part=name'."""
    if "=" not in text:
        return text.strip()
    out = {}
    for item in text.split(","):
        part, eq, name = item.partition("=")
        if not eq or not part.strip() or not name.strip():
            raise argparse.ArgumentTypeError(f"write --backend NAME or PART=NAME,PART=NAME, not {text!r}")
        out[part.strip()] = name.strip()
    return out


def add_backend_flag(s: argparse.ArgumentParser) -> None:
    """--backend for the commands that build an encoder for new rows."""
    s.add_argument("--backend", type=backend_arg,
                   help="runtime of the models that have several: auto (fastest for the device; default), or "
                        "yamnet: onnx|torch|onnx-s8, whisper-tiny-offline: ct2|torch; one name for all, or "
                        "'yamnet=torch,whisper-tiny-offline=ct2'")
