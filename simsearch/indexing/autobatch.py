"""Pick the batch size on a GPU: the largest power of two that fits, unless a bigger one stops paying off."""
from __future__ import annotations

import logging
import time

import numpy as np

from simsearch.encoders import Encoder

log = logging.getLogger(__name__)
CPU_BATCH = 32
MAX_BATCH = 1024


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def find_batch_size(enc: Encoder, device: str, window_s: float, start: int = 8, gain: float = 1.1) -> int:
    """Double the batch of full-length windows until memory runs out or clips/s grows by less than `gain`."""
    if not device.startswith("cuda"):
        return CPU_BATCH
    import torch

    x = (0.1 * np.random.default_rng(0).standard_normal(int(window_s * enc.sample_rate))).astype(np.float32)
    best, best_rate, b = start, 0.0, start
    while b <= MAX_BATCH:
        try:
            enc.embed_batch([x] * b)  # warm-up at this size (allocator, kernel choice)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc.embed_batch([x] * b)
            torch.cuda.synchronize()
            rate = b / (time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - only out-of-memory ends the search quietly
            if not _is_oom(e):
                raise
            torch.cuda.empty_cache()
            break
        if rate < best_rate * gain:
            break
        best, best_rate, b = b, rate, b * 2
    # Leave headroom: the probe ran one batch alone, the indexer keeps decoded batches in flight too.
    chosen = max(start, best // 2) if b > MAX_BATCH or best_rate == 0 else best
    log.info("auto batch size on %s: %d (%.0f clips/s at probe)", device, chosen, best_rate)
    torch.cuda.empty_cache()
    return chosen

