"""The audio reader: formats, mono mix, resampling, windows and typed errors on bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write

from simsearch.audio.decode import decode, iter_windows
from simsearch.audio.resample import KERNEL_CAP, kernel_size, plan, ratio_error, resample, stream_resample
from simsearch.audio.windows import split_windows, window_starts
from simsearch.errors import AudioError
from simsearch.files import file_sha256


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("ext,kw", [(".wav", {}), (".flac", {}), (".ogg", {"format": "OGG", "subtype": "VORBIS"}),
                                    (".mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"})])
def test_formats_decode_and_resample_keep_pitch(tmp_path, ext, kw):
    p = write(tmp_path / f"a{ext}", tone(1000, 1.0, 44100, noise=0.0), 44100, **kw)
    x = decode(p, 16000)
    assert abs(len(x) - 16000) < 1200  # codecs may pad a frame
    assert abs(peak_hz(x, 16000) - 1000) < 5


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = tone(500, 1.0, noise=0.0), np.zeros(16000, np.float32)
    p = write(tmp_path / "st.wav", np.stack([left, right], axis=1))
    x = decode(p, 16000)
    assert x.ndim == 1 and np.allclose(x, left / 2, atol=1e-4)


def test_input_forms_agree(tmp_path):
    p = write(tmp_path / "a.wav", tone(440, 0.5, 22050), 22050)
    from_path = decode(p, 16000)
    from_bytes = decode(p.read_bytes(), 16000)
    data, sr = sf.read(p, dtype="float32")
    from_dict = decode({"array": data, "sampling_rate": sr}, 16000)
    assert np.allclose(from_path, from_bytes, atol=1e-6) and np.allclose(from_path, from_dict, atol=1e-5)


def test_windows_of_a_long_file(tmp_path):
    p = write(tmp_path / "long.wav", tone(300, 25.0, 8000), 8000)
    ws = list(iter_windows(p, 16000, window_s=10.0))
    assert [w.offset_s for w in ws] == [0.0, 10.0, 20.0]
    assert [round(w.duration_s, 3) for w in ws] == [10.0, 10.0, 5.0]
    assert len(ws[0].samples) == 160000 and ws[0].source_rate == 8000
    # Overlapping hop; a trailing piece under 1 s is dropped.
    assert window_starts(10_500, 1000, 4.0, 2.0) == [(0, 4000), (2000, 4000), (4000, 4000), (6000, 4000), (8000, 2500)]
    assert len(split_windows(np.zeros(16000 * 3, np.float32), 16000, 10.0)) == 1


def test_sha256_changes_with_content(tmp_path):
    a = write(tmp_path / "a.wav", tone(440))
    h1 = file_sha256(a)
    write(a, tone(880))
    assert file_sha256(a) != h1 and len(h1) == 64


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "not a readable audio file"),
    (lambda p: write(p, np.zeros(16000, np.float32)), "silent"),
    (lambda p: write(p, np.full(1600, np.nan, np.float32), subtype="FLOAT"), "NaN"),
    (lambda p: write(p, tone(440, 0.001)), "too short"),
    (lambda p: p.mkdir(), "directory"),
])
def test_bad_input_raises_typed_error_naming_the_file(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError) as e:
        decode(p, 16000)
    assert reason in str(e.value) and "bad.wav" in str(e.value)


def test_bad_arrays_and_bytes():
    with pytest.raises(AudioError, match="NaN"):
        decode(np.array([0.1, np.inf] * 1000, np.float32), 16000)
    with pytest.raises(AudioError, match="no bytes"):
        decode(b"", 16000)
    with pytest.raises(AudioError, match="sampling_rate"):
        decode({"array": np.zeros(10)}, 16000)


@pytest.mark.parametrize("orig,new,n", [(44100, 16000, 3_000_001), (8000, 48000, 700_000), (11025, 16000, 1_200_000)])
def test_resampling_in_blocks_equals_one_shot(orig, new, n):
    """Long inputs go through in bounded blocks with context either side: the result is torchaudio's one-shot result."""
    import torch
    import torchaudio.functional as AF

    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    ref = AF.resample(torch.from_numpy(x), orig, new).numpy()
    y = resample(x, orig, new)
    assert len(y) == len(ref) and np.abs(y - ref).max() < 1e-4
    blocks = (x[i:i + 12_345] for i in range(0, n, 12_345))  # awkward block sizes, as a file reader gives them
    ys = np.concatenate(list(stream_resample(blocks, orig, new)))
    assert len(ys) == len(ref) and np.abs(ys - ref).max() < 1e-4


@pytest.mark.parametrize("orig,new", [(22051, 16000), (655350, 16000), (767999, 48000), (1001, 16000), (16001, 16000),
                                      (47981, 16000)])
def test_rates_sharing_few_factors_get_a_small_kernel(orig, new):
    """torchaudio's kernel for these is 10^7-10^8 values (6 GB for 22051 -> 16000); the planned ratio's fits the cap."""
    assert kernel_size(orig, new) > KERNEL_CAP
    q, p = plan(orig, new)
    assert kernel_size(q, p) <= KERNEL_CAP and ratio_error(orig, new) < 1e-3
    x = tone(300, 0.5, orig, noise=0.0)
    y = resample(x, orig, new)
    assert len(y) == math.ceil(len(x) * new / orig)  # the exact length, whatever ratio was used
    assert abs(peak_hz(y, new) - 300) < 3


def test_common_rate_pairs_stay_exact():
    for orig in (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 384000):
        for new in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
            if orig != new:
                g = math.gcd(orig, new)
                assert plan(orig, new) == (orig // g, new // g) and ratio_error(orig, new) == 0


def test_rates_outside_the_range_are_refused():
    for rate in (999, 999_983, 10**9):
        with pytest.raises(ValueError, match="outside the supported range 1000-768000 Hz"):
            resample(np.ones(100, np.float32), rate, 16000)
        with pytest.raises(AudioError, match="outside the supported range"):
            decode({"array": np.ones(4000, np.float32), "sampling_rate": rate}, 16000)


def test_long_query_is_embedded_in_batches_that_pool_to_the_same_vector(tmp_path):
    """A long query runs QUERY_BATCH windows at a time; the pooled vector is unchanged, the windows are all there."""
    from simsearch.cli.core import main
    from simsearch.search.index import QUERY_BATCH, Index
    from simsearch.vectors import pooled

    write(tmp_path / "src" / "a.wav", tone(440, 2.0))
    assert main(["index", str(tmp_path / "src"), "--out", str(tmp_path / "ix"), "--encoder", "spectral", "-q",
                 "--workers", "0", "--no-fingerprint"]) == 0
    index = Index.open(tmp_path / "ix")
    x = tone(220, 10.0 * (QUERY_BATCH + 2), seed=5)
    vec, _, per_window = index.embed_clip_windows(x)
    windows = split_windows(x, 16000, index.info.get("window_s") or 10.0, index.info.get("hop_s"))
    assert len(windows) > QUERY_BATCH and len(per_window) == len(windows)
    one_batch = pooled(index.encoder.embed_batch([w.samples for w in windows])["embedding"])[0]
    assert np.allclose(vec, one_batch, atol=1e-5)
