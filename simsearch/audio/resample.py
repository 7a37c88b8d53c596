"""Sample-rate conversion with torchaudio's sinc interpolation, in memory bounded whatever the two rates are.

torchaudio builds one filter per output phase: a kernel of new/g x (orig/g + 2 * width) values, g = gcd(orig, new).
Rates that share few factors (22051 -> 16000: g = 1) make it gigabytes. When the exact kernel would be larger than
KERNEL_CAP we resample by the nearest ratio p/q whose kernel fits (relative error below RATIO_TOLERANCE, far below
anything audible), then pad or trim to the exact output length. Long inputs go through in blocks with enough
context on both sides that the result equals one-shot resampling.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

MIN_RATE, MAX_RATE = 1_000, 768_000  # Hz; outside this no real recording exists and kernels get absurd
KERNEL_CAP = 2**20  # values in torchaudio's polyphase kernel (4 MB as float32); every common rate pair fits
BLOCK_WORK = 2**21  # values one conv call may touch (input, its im2col columns, output): ~8 MB per temporary
RATIO_TOLERANCE = 1e-3  # an approximate ratio is this close (relative; 1.7 cents of pitch) or we refuse
LOWPASS_WIDTH, ROLLOFF = 6, 0.99  # torchaudio's defaults, so results match AF.resample


def check_rate(rate: int, what: str = "sample rate") -> None:
    """Refuse rates no recording uses, before they size a kernel or a buffer."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"{what} {rate} Hz is outside the supported range {MIN_RATE}-{MAX_RATE} Hz")


def _width(orig: int, new: int) -> int:
    """torchaudio's filter half-width in input samples, for already gcd-reduced rates."""
    return math.ceil(LOWPASS_WIDTH * orig / (ROLLOFF * min(orig, new)))


def kernel_size(orig: int, new: int) -> int:
    """Values in the kernel torchaudio.functional.resample(x, orig, new) would build."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    return n * (2 * _width(o, n) + o)


def plan(orig: int, new: int) -> tuple[int, int]:
    """(q, p): the reduced rate pair to hand torchaudio; exact when its kernel fits KERNEL_CAP, else the nearest fitting ratio."""
    check_rate(orig, "source sample rate")
    check_rate(new, "target sample rate")
    g = math.gcd(orig, new)
    q, p = orig // g, new // g
    if kernel_size(q, p) <= KERNEL_CAP:
        return q, p
    ratio = Fraction(new, orig)

    def fits(limit: int) -> Fraction | None:
        f = ratio.limit_denominator(limit)  # the closest ratio whose denominator is at most `limit`
        return f if f.numerator >= 1 and kernel_size(f.denominator, f.numerator) <= KERNEL_CAP else None

    # Kernel ~ p * q grows with the square of the denominator: step the limit down until the best ratio under it
    # fits, then bisect back up to the largest limit that still fits (a larger limit is never a worse ratio).
    hi, lo = q, q
    while lo > 1 and fits(lo) is None:
        hi, lo = lo, max(1, int(lo * 0.9))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) is not None else (lo, mid)
    f = fits(lo)
    if f is not None and abs(float(f / ratio) - 1) <= RATIO_TOLERANCE:
        return f.denominator, f.numerator
    raise ValueError(f"no resampling ratio near {orig} -> {new} Hz fits in {KERNEL_CAP} kernel values")


def ratio_error(orig: int, new: int) -> float:
    """Relative pitch/tempo error of resampling orig -> new as planned (0 when exact)."""
    q, p = plan(orig, new)
    return abs(p * orig / (q * new) - 1)


@lru_cache(maxsize=8)
def _resampler(q: int, p: int) -> "torch.nn.Module":
    """A torchaudio Resample with its kernel built once (float32, as AF.resample builds it for float32 input)."""
    import torch
    import torchaudio.transforms as T

    return T.Resample(q, p, lowpass_filter_width=LOWPASS_WIDTH, rolloff=ROLLOFF, dtype=torch.float32)


def _run(rs: "torch.nn.Module", seg: np.ndarray) -> np.ndarray:
    """One-shot torchaudio resampling of a bounded segment."""
    import torch

    with torch.inference_mode():
        return rs(torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32))).numpy()


def stream_resample(blocks: Iterable[np.ndarray], orig: int, new: int) -> Iterator[np.ndarray]:
    """Resample a stream of mono blocks; the concatenated output equals resample() of the concatenated input.

    Output [a, b) of the input (a, b whole strides of q input samples) needs input [a - ctx, b + ctx) only, so
    we keep just that much: memory is bounded by BLOCK_WORK, not by the input's length.
    """
    if orig == new:
        for b in blocks:
            yield np.asarray(b, dtype=np.float32)
        return
    q, p = plan(int(orig), int(new))
    if q == p:  # the nearest fitting ratio is 1 (e.g. 16001 -> 16000): blocks pass, cut or padded to length
        total = emitted = 0
        for block in blocks:
            total += len(block)
            out = _fit(np.asarray(block, dtype=np.float32).reshape(-1), math.ceil(new * total / orig) - emitted)
            emitted += len(out)
            yield out
        return
    rs = _resampler(q, p)
    ctx = math.ceil((rs.width + q) / q) * q  # input samples either side that reach into a stride's outputs
    per_input = max(1.0, (2 * rs.width + q) / q, p / q)  # im2col columns and outputs per input sample
    step = max(q, int((BLOCK_WORK / per_input - 2 * ctx) // q) * q)
    buf, start, pos, total, emitted = np.zeros(0, np.float32), 0, 0, 0, 0

    def piece(a: int, b: int, last: bool) -> np.ndarray:
        s = max(0, a - ctx)
        e = total if last else b + ctx
        y = _run(rs, buf[s - start:e - start])
        lo = (a - s) * p // q
        return y[lo:] if last else y[lo:(b - s) * p // q]

    pending: list[np.ndarray] = []  # blocks not yet joined to buf: join once per piece, not once per block
    for block in blocks:
        pending.append(np.asarray(block, dtype=np.float32).reshape(-1))
        total += len(pending[-1])
        if total - pos < step + ctx:
            continue
        buf, pending = np.concatenate([buf, *pending]), []
        while total - pos >= step + ctx:
            out = _fit(piece(pos, pos + step, last=False), math.ceil(new * (pos + step) / orig) - emitted)
            emitted += len(out)
            yield out
            pos += step
            drop = pos - ctx - start
            if drop > 0:
                buf, start = buf[drop:], start + drop
    if total == 0:
        return
    buf = np.concatenate([buf, *pending])
    while pos < total:
        b = min(pos + step, total)
        out = _fit(piece(pos, b, last=b == total), math.ceil(new * b / orig) - emitted)
        pos = b
        emitted += len(out)
        yield out


def _fit(out: np.ndarray, want: int) -> np.ndarray:
    """Cut or zero-pad a piece to the samples the exact rates owe so far: a no-op for an exact ratio, a sample here
    and there per block for an approximate one, so lengths (and window offsets) never drift."""
    want = max(0, want)
    return out[:want] if len(out) >= want else np.pad(out, (0, want - len(out)))


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (sinc interpolation), in blocks so memory stays bounded."""
    if orig_sr == new_sr or x.size == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    block = max(1, BLOCK_WORK // 4)
    parts = list(stream_resample((x[i:i + block] for i in range(0, len(x), block)), int(orig_sr), int(new_sr)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
