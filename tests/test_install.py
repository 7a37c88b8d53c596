"""The environment: the lock agrees with pyproject, is what is installed, and torchaudio's compiled code loads."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    """name -> exact version from requirements.lock (its comment lines name the pip and --no-deps pins)."""
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def declared() -> list[Requirement]:
    """Every dependency pyproject declares, with the test and ray extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("test", "ray"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_locked_inside_its_range():
    lock = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is declared in pyproject.toml but not locked; run scripts/lock.sh"
        assert req.specifier.contains(lock[name], prereleases=True), \
            f"{req.name}=={lock[name]} in requirements.lock is outside pyproject's {req.specifier}; run scripts/lock.sh"


def test_torch_pair_is_pinned_exactly_and_together():
    pins = {canonicalize_name(r.name): str(r.specifier) for r in declared()}
    lock = locked()
    assert pins["torch"].startswith("==") and pins["torchaudio"].startswith("==")
    assert lock["torch"] == pins["torch"][2:] and lock["torchaudio"] == pins["torchaudio"][2:]
    # torchaudio X.Y.Z is built against torch X.Y.Z: a split pair fails to load its compiled library.
    assert lock["torch"] == lock["torchaudio"]


def test_installed_packages_are_the_locked_versions():
    wrong = []
    for name, want in locked().items():
        if name == "pip":
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name}: not installed (lock says {want})")
            continue
        if have.split("+")[0] != want.split("+")[0]:
            wrong.append(f"{name}: {have} installed, lock says {want}")
    assert not wrong, "install from the lock with scripts/install.sh:\n" + "\n".join(wrong)


def test_torchaudio_compiled_ops_run():
    """Kaldi fbank and the sinc resampler go through torchaudio's own compiled library and torch's kernels."""
    torch = pytest.importorskip("torch")
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    t = torch.arange(16000) / 16000
    x = torch.sin(2 * torch.pi * 440 * t).unsqueeze(0)
    feats = kaldi.fbank(x, num_mel_bins=64, sample_frequency=16000)
    assert feats.shape == (98, 64) and torch.isfinite(feats).all()
    peak_bin = int(feats.mean(0).argmax())
    assert 5 <= peak_bin <= 20  # 440 Hz lies in the low mel bands
    y = AF.resample(x, 16000, 8000)
    assert y.shape[-1] == 8000
    # torchaudio's C++ extension (the part a split torch/torchaudio pair breaks) loads and runs a compiled kernel.
    from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE

    assert _IS_TORCHAUDIO_EXT_AVAILABLE
    logits = torch.randn(1, 20, 5).log_softmax(-1)
    out = AF.forced_align(logits, torch.tensor([[1, 2, 3]], dtype=torch.int32), blank=0)
    assert out[0].shape == (1, 20)
