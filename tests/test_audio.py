"""The audio reader: formats, mono mix, resampling, windows and typed errors on bad input."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write

from simsearch.audio.decode import decode, iter_windows
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
