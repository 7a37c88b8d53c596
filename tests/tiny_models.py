"""Tiny random-weight transformers audio models saved to a folder, so tests exercise the real loading path.

No model hub is reachable here, so every test builds its model from a small config (2 layers, hidden
32), saves model + feature extractor (+ tokenizer for CLAP) with `save_pretrained`, and the encoder
under test loads that folder with `from_pretrained` exactly as it would load a downloaded checkpoint.

Import from a test file with `sys.path.insert(0, str(Path(__file__).parent))` then `import tiny_models`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HF_ARCHS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "ast", "whisper")

# Small but structurally faithful: the conv front ends keep the real kernels/strides (320x downsampling)
# so frame-length arithmetic is the real one; only widths and depths shrink.
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_CONV = dict(conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2))


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def _w2v_extractor(return_attention_mask: bool, do_normalize: bool = True):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                    do_normalize=do_normalize, return_attention_mask=return_attention_mask)


def build_wav2vec2(out: Path, feat_extract_norm: str = "group", seed: int = 0) -> Path:
    """wav2vec2-base style ("group": trained without attention mask) or large-lv60 style ("layer")."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    _seed(seed)
    cfg = Wav2Vec2Config(**_SMALL, **_CONV, feat_extract_norm=feat_extract_norm,
                         do_stable_layer_norm=feat_extract_norm == "layer",
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8)
    return _save(Wav2Vec2Model(cfg), _w2v_extractor(feat_extract_norm == "layer"), out)


def build_hubert(out: Path, seed: int = 1) -> Path:
    """hubert-base style: group-norm conv front end, extractor without attention mask."""
    from transformers import HubertConfig, HubertModel

    _seed(seed)
    cfg = HubertConfig(**_SMALL, **_CONV, feat_extract_norm="group", num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=4)
    return _save(HubertModel(cfg), _w2v_extractor(False), out)


def build_wavlm(out: Path, seed: int = 2) -> Path:
    """wavlm-base-plus style: group-norm conv front end but an extractor that returns an attention mask."""
    from transformers import WavLMConfig, WavLMModel

    _seed(seed)
    cfg = WavLMConfig(**_SMALL, **_CONV, feat_extract_norm="group", num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=4, num_buckets=32, max_bucket_distance=64)
    return _save(WavLMModel(cfg), _w2v_extractor(True), out)


def build_data2vec_audio(out: Path, seed: int = 3) -> Path:
    """data2vec-audio style: layer-norm conv front end, extractor with attention mask."""
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    _seed(seed)
    cfg = Data2VecAudioConfig(**_SMALL, **_CONV, num_conv_pos_embeddings=3, conv_pos_kernel_size=5,
                              num_conv_pos_embedding_groups=4)
    return _save(Data2VecAudioModel(cfg), _w2v_extractor(True), out)


def build_ast(out: Path, max_length: int = 128, seed: int = 4) -> Path:
    """AST with a short input (max_length fbank frames = 1.28 s) to keep the test fast."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    _seed(seed)
    cfg = ASTConfig(**_SMALL, max_length=max_length, num_mel_bins=128)
    fe = ASTFeatureExtractor(max_length=max_length, num_mel_bins=128)
    return _save(ASTModel(cfg), fe, out)


def build_whisper(out: Path, seed: int = 5) -> Path:
    """Whisper with the real 80-bin, 30-s (1500 encoder frames) geometry and a 2-layer d_model=32 stack."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    _seed(seed)
    cfg = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=32, vocab_size=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return _save(WhisperModel(cfg), WhisperFeatureExtractor(feature_size=80), out)


def build_bert(out: Path, seed: int = 6) -> Path:
    """A text model folder (config + weights), for 'wrong architecture' tests."""
    from transformers import BertConfig, BertModel

    _seed(seed)
    cfg = BertConfig(vocab_size=64, **_SMALL, max_position_embeddings=32)
    out.mkdir(parents=True, exist_ok=True)
    BertModel(cfg).save_pretrained(out)
    return out


BUILDERS = {
    "wav2vec2": build_wav2vec2,
    "hubert": build_hubert,
    "wavlm": build_wavlm,
    "data2vec-audio": build_data2vec_audio,
    "ast": build_ast,
    "whisper": build_whisper,
}


def build(name: str, out: Path, **kw) -> Path:
    """Build the tiny model for a registry name into `out` and return `out`."""
    if name == "clap":
        return build_clap(out, **kw)
    return BUILDERS[name](out, **kw)


def _save(model, extractor, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------- CLAP

_SENTENCES = [
    "a dog barking in the distance", "rain falling on a tin roof", "a car engine starting",
    "birds singing in the morning", "the sound of a cat", "people talking in a busy cafe",
    "a church bell ringing", "footsteps on gravel", "an old telephone ringing", "waves crashing on a beach",
]


def train_tiny_roberta_tokenizer(out: Path, vocab_size: int = 300):
    """Train a byte-level BPE on a few sentences and wrap it as a RobertaTokenizerFast (what CLAP uses)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_SENTENCES * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out))
    return RobertaTokenizerFast(vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"),
                                model_max_length=64)


def build_clap(out: Path, fused: bool = False, seed: int = 7) -> Path:
    """Tiny CLAP: 2-stage HTSAT (real 64-mel, 10-s, 48 kHz front end) + 2-layer text tower, projection 24.

    `fused=True` mimics laion/clap-htsat-fused (`enable_fusion`, extractor truncation "fusion"); otherwise
    laion/clap-htsat-unfused (truncation "rand_trunc", padding "repeatpad").
    """
    import tempfile

    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, ClapTextConfig

    _seed(seed)
    with tempfile.TemporaryDirectory() as bpe_dir:
        tok = train_tiny_roberta_tokenizer(Path(bpe_dir))
    text_cfg = ClapTextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=72, projection_dim=24,
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id)
    audio_cfg = ClapAudioConfig(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16,
                                hidden_size=32, projection_dim=24, enable_fusion=fused,
                                fusion_type="aff_2d" if fused else None)
    cfg = ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=24)
    model = ClapModel(cfg)
    fe = ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc", padding="repeatpad",
                              frequency_min=50, frequency_max=14000)  # as in the laion/clap-htsat-* configs
    proc = ClapProcessor(feature_extractor=fe, tokenizer=tok)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def tone(freq: float, seconds: float, sr: int = 16000, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    """A sine with a little noise (mirrors conftest.tone, kept here so this module stands alone)."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def chirp(seconds: float, sr: int = 16000, f0: float = 100.0, f1: float = 4000.0, seed: int = 0) -> np.ndarray:
    """A linear sweep plus noise: energy in many bands, so spectral front ends see structure everywhere."""
    t = np.arange(int(seconds * sr)) / sr
    k = (f1 - f0) / max(seconds, 1e-3)
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t**2)) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


# Same switches as the official iter3 / iter3+AS2M cfg (deep norm, gated relative position bias, 16x16 patches,
# embed_dim != encoder_embed_dim so post_extract_proj exists), shrunk so the tests run in seconds.
BEATS_TINY_CFG = {
    "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2,
    "activation_fn": "gelu", "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05, "dropout_input": 0.0, "layer_norm_first": False, "conv_bias": False,
    "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 32,
    "max_distance": 64, "gru_rel_pos": True, "deep_norm": True, "input_patch_size": 16,
    "layer_wise_gradient_decay_ratio": 0.6, "embed_dim": 32, "finetuned_model": False,
}


def beats_tiny_model(finetuned: bool = False, n_layers: int = 2, seed: int = 0):
    import torch

    from simsearch.encoders.beats_model import BEATs, BEATsConfig

    torch.manual_seed(seed)
    cfg = {**BEATS_TINY_CFG, "encoder_layers": n_layers, "finetuned_model": finetuned,
           **({"predictor_class": 527, "predictor_dropout": 0.0} if finetuned else {})}
    model = BEATs(BEATsConfig.from_dict(cfg))
    with torch.no_grad():  # make norms, biases and gates non-trivial so a wiring mistake shows
        for name, prm in model.named_parameters():
            if name.endswith("grep_a"):
                prm.uniform_(0.5, 1.5)
            elif prm.dim() == 1:
                prm.add_(0.1 * torch.randn_like(prm))
    return model, cfg


def build_beats(tmp_path, name="tiny.pt", finetuned=False, n_layers=2):
    """A tiny BEATs checkpoint in the official .pt layout ({"cfg", "model"[, "label_dict"]})."""
    import torch

    model, cfg = beats_tiny_model(finetuned, n_layers)
    ckpt = {"cfg": cfg, "model": model.state_dict()}
    if finetuned:
        ckpt["label_dict"] = {i: f"/m/tag{i}" for i in range(527)}
    path = tmp_path / name
    torch.save(ckpt, path)
    return path
