"""Sample-rate conversion with torchaudio's band-limited sinc interpolation."""
from __future__ import annotations

import numpy as np


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (sinc interpolation)."""
    if orig_sr == new_sr or x.size == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(orig_sr), int(new_sr))
    return y.numpy()
