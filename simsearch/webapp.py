"""The Gradio front end: find similar sounds, search by text, classify a clip, and inspect an index.

UI logic lives in small functions over an IndexPool (find_similar, text_search, classify_clip,
index_overview, result_audio, check_upload) so tests can call them without a browser; build_app only
wires them to components. Indexes and their encoders are opened once, when the pool is built.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from .audio import MIN_DURATION_S, decode
from .classify import KNN_K, classify_probe, knn_scores, split_labels, zero_shot_scores
from .errors import AudioError, SimsearchError
from .fingerprint import SAME_RECORDING
from .index import Index
from .probe import PROBE_WEIGHTS
from .textsearch import TEXT_ENCODERS, text_mode

log = logging.getLogger(__name__)

RESULT_KEYS = ("rank", "score", "path", "label", "offset_s")
MATCH_KEYS = ("cosine", "match")  # audio queries on an index with landmark fingerprints (see Index.search)
MAX_SLOTS = 20  # result rows the UI has room for; also the largest k
BROWSER_AUDIO = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus")  # played as-is; others become WAV
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_TEXT_CHARS = 500
MB = 1024 * 1024  # Gradio reads "50mb" as 50 MiB; the app uses the same unit
DEFAULT_INDEX_ROOT = "indexes"


@dataclass(frozen=True)
class Limits:
    """What the app accepts from users; set from the command line."""

    max_upload_mb: float = 50.0
    max_duration_s: float = 600.0
    max_k: int = MAX_SLOTS
    upload_dir: Path | None = None  # build_app sets Gradio's upload folder: query files must come from there


# ---------------------------------------------------------------------------------------------- indexes

def find_index_dirs(paths: list[str | Path] | None = None, default_root: str | Path = DEFAULT_INDEX_ROOT) -> list[Path]:
    """Index folders named, or every index folder one level under each folder named (default: ./indexes)."""
    found: list[Path] = []
    for p in map(Path, paths or [default_root]):
        if (p / "index.json").is_file():
            found.append(p.resolve())
        elif p.is_dir():
            kids = sorted(c.resolve() for c in p.iterdir() if (c / "index.json").is_file())
            if not kids:
                raise SimsearchError(f"{p}: neither an index folder nor a folder of them; build one with "
                                     f"`simsearch index SRC --out {p / 'NAME'}`")
            found += kids
        else:
            raise SimsearchError(f"{p}: no such index folder; build one with `simsearch index SRC --out {p}` "
                                 "or pass --index DIR")
    return list(dict.fromkeys(found))


def source_roots(info: dict) -> list[Path]:
    """Folders whose files results may play: each indexed folder, or the folder holding an indexed manifest."""
    roots = []
    for s in info.get("sources", []):
        p = Path(s).resolve()
        roots.append(p.parent if p.suffix.lower() in MANIFEST_SUFFIXES and not p.is_dir() else p)
    return list(dict.fromkeys(roots))


def inside(path: str | Path, roots: list[Path]) -> bool:
    """True when the path, links resolved, lies within one of the roots."""
    real = Path(path).resolve()
    return any(real == r or real.is_relative_to(r) for r in roots)


@dataclass
class Served:
    """One index the app serves, opened once: the Index, its playable roots, and its labelled rows for kNN."""

    name: str
    index: Index
    roots: list[Path]
    knn_bank: np.ndarray | None  # normalised embeddings of labelled rows
    knn_labels: list[list[str]]
    knn_rows: pd.DataFrame  # the labelled rows, aligned with knn_bank

    @property
    def has_probe(self) -> bool:
        return (self.index.dir.root / PROBE_WEIGHTS).is_file()


def open_served(name: str, root: Path, device: str = "auto", warm: bool = True) -> Served:
    """Open an index, cache what kNN votes need, and (warm=True) load and run its encoder once."""
    index = Index.open(root, device=device)
    labels = [split_labels(v) for v in index.rows["label"]]
    keep = np.array([bool(v) for v in labels], dtype=bool)
    bank = index.embeddings()[keep] if keep.any() else None
    served = Served(name, index, source_roots(index.info), bank, [v for v, m in zip(labels, keep) if m],
                    index.rows[keep])
    if warm:
        warm_up(index)
    return served


def warm_up(index: Index) -> None:
    """Load the encoder (and the text model for tag search) now, so the first request is not the slow one."""
    enc = index.encoder
    rng = np.random.default_rng(0)
    enc.embed_batch([(0.1 * rng.standard_normal(enc.sample_rate)).astype(np.float32)])
    index.landmark_table  # noqa: B018 - cached property: reads the fingerprints once
    mode = text_mode(index)
    if mode == "tags":
        from .encoders.yamnet import load_class_names
        from .text import class_embeddings

        index.extras  # noqa: B018 - cached property: reads tag scores once
        class_embeddings(load_class_names())
    elif mode == "clap":
        enc.embed_text(["warm up"])


class IndexPool:
    """Every index the app serves, keyed by a short display name; each opened once at start-up."""

    def __init__(self, dirs: list[str | Path], device: str = "auto", warm: bool = True):
        if not dirs:
            raise SimsearchError("no index folders to serve; build one with `simsearch index SRC --out indexes/NAME`")
        self.served: dict[str, Served] = {}
        for d in map(Path, dirs):
            name = d.name if d.name not in self.served else str(d)
            self.served[name] = open_served(name, d, device, warm)
        self.clip_dir = Path(tempfile.mkdtemp(prefix="simsearch-app-clips-"))  # windows cut out of long files
        weakref.finalize(self, shutil.rmtree, self.clip_dir, True)

    @property
    def names(self) -> list[str]:
        return list(self.served)

    def get(self, name: str | None) -> Served:
        if not name:
            return next(iter(self.served.values()))
        if name not in self.served:
            raise SimsearchError(f"unknown index {name!r}; choose one of: {', '.join(self.served)}")
        return self.served[name]

    def all_roots(self) -> list[str]:
        return sorted({str(r) for s in self.served.values() for r in s.roots})


# ---------------------------------------------------------------------------------------------- input checks

def check_upload(path: str | Path | None, limits: Limits) -> Path:
    """An uploaded clip that is present, audio, and within the size and duration caps; else AudioError.

    With limits.upload_dir set, only files inside it are accepted: an API caller cannot name a server path.
    """
    if path is None or str(path).strip() == "":
        raise AudioError("query", "no audio given: upload a file or record from the microphone")
    p = Path(path)
    name = p.name
    if limits.upload_dir is not None and not inside(p, [limits.upload_dir]):
        raise AudioError(name, "only clips uploaded to this app are accepted, not paths on the server; "
                               "upload the file instead")
    if not p.is_file():
        raise AudioError(name, "the upload is gone; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise AudioError(name, "file is empty (0 bytes)")
    if size > limits.max_upload_mb * MB:
        raise AudioError(name, f"file is {size / MB:.1f} MB; the limit is {limits.max_upload_mb:g} MB; "
                               "upload a shorter clip")
    try:
        info = sf.info(str(p))
    except Exception:  # libsndfile says little that helps a user here
        raise AudioError(name, "not an audio file this app can read; upload WAV, FLAC, OGG or MP3") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds < MIN_DURATION_S:
        raise AudioError(name, "holds no audio (empty or too short)")
    if seconds > limits.max_duration_s:
        raise AudioError(name, f"clip is {seconds:.0f} s long; the limit is {limits.max_duration_s:g} s; "
                               "trim it and try again")
    return p


def clamp_k(k: Any, limits: Limits) -> int:
    """k from a slider or an API call, as an int in [1, max_k]."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise SimsearchError(f"k must be a whole number from 1 to {limits.max_k}, got {k!r}") from None
    return max(1, min(k, limits.max_k))


def load_query(served: Served, path: str | Path | None, limits: Limits) -> np.ndarray:
    """The checked upload, decoded at the encoder's rate."""
    p = check_upload(path, limits)
    try:
        return decode(p, served.index.encoder.sample_rate)
    except AudioError as e:
        raise AudioError(p.name, e.reason) from None


# ---------------------------------------------------------------------------------------------- results

def public(results: list[dict]) -> list[dict]:
    """Results in the API's documented shape."""
    return [{k: r[k] for k in RESULT_KEYS + MATCH_KEYS if k in r} for r in results]


def result_audio(served: Served, result: dict, clip_dir: Path) -> str | None:
    """A playable file for a hit: the file itself, or its window cut out as WAV; None outside the indexed roots."""
    path = Path(result["path"])
    if not inside(path, served.roots) or not path.is_file():
        return None
    real = path.resolve()
    info = sf.info(str(real))
    total = info.frames / info.samplerate
    offset, dur = float(result["offset_s"]), float(result.get("duration_s") or total)
    if not is_window(result, total) and real.suffix.lower() in BROWSER_AUDIO:
        return str(real)
    key = hashlib.sha1(f"{real}|{real.stat().st_mtime_ns}|{offset:.3f}|{dur:.3f}".encode()).hexdigest()[:12]
    out = clip_dir / f"{real.stem}_{offset:.1f}s_{key}.wav"
    if not out.exists():
        start = round(offset * info.samplerate)
        data, sr = sf.read(str(real), start=start, frames=round(dur * info.samplerate), dtype="float32",
                           always_2d=True)
        fd, tmp = tempfile.mkstemp(dir=clip_dir, suffix=".wav")  # two requests may cut the same window
        os.close(fd)
        sf.write(tmp, data, sr, subtype="PCM_16")
        os.replace(tmp, out)
    return str(out)


def is_window(result: dict, file_seconds: float) -> bool:
    """True when a hit is a window of a longer file rather than the whole file."""
    dur = float(result.get("duration_s") or file_seconds)
    return float(result["offset_s"]) > 0 or dur < file_seconds - 1e-3


def result_caption(result: dict, playable: bool, window: bool = False) -> str:
    """One result row's text: rank, score, label, path and where in the file."""
    label = result["label"] if result["label"] is not None else "—"
    where = ""
    if window or result["offset_s"]:
        end = result["offset_s"] + result.get("duration_s", 0.0)
        where = f" · {result['offset_s']:.1f}–{end:.1f} s"
    note = "" if playable else "  \n_audio not served: the file is outside the indexed folders or gone_"
    if result.get("match", 0) >= SAME_RECORDING:
        where += " · **same recording** (landmarks match)"
    return (f"**#{result['rank']}** · score **{result['score']:.3f}** · label **{label}**{where}  \n"
            f"`{result['path']}`{note}")


# ---------------------------------------------------------------------------------------------- features

def spectrogram_image(x: np.ndarray, sr: int, title: str = "query") -> np.ndarray:
    """Log-mel spectrogram of a clip as an RGB image (matplotlib Agg)."""
    import torch
    import torchaudio.transforms as T
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mel = T.MelSpectrogram(sample_rate=sr, n_fft=1024, hop_length=max(1, sr // 100), n_mels=64, f_max=sr / 2)
    db = T.AmplitudeToDB(top_db=80)(mel(torch.from_numpy(np.ascontiguousarray(x, np.float32)))).numpy()
    fig = Figure(figsize=(7, 2.6), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, len(x) / sr, 0, db.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, format="%+.0f dB", pad=0.01)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def find_similar(pool: IndexPool, name: str | None, audio_path: str | Path | None, k: Any,
                 limits: Limits) -> tuple[list[dict], np.ndarray]:
    """Nearest clips to an uploaded or recorded clip; also returns the decoded query (encoder's rate)."""
    served = pool.get(name)
    k = clamp_k(k, limits)
    x = load_query(served, audio_path, limits)
    return served.index.search(audio=x, k=k), x


def text_support(served: Served) -> str:
    """A sentence telling the user which text search this index supports, if any."""
    mode = text_mode(served.index)
    enc = served.index.info["encoder"]["name"]
    if mode == "clap":
        return f"Text search uses the **CLAP text tower** of this index's encoder (`{enc}`)."
    if mode == "tags":
        return ("Text search maps your words onto the **521 AudioSet tags** YAMNet scored for every clip "
                "(offline; works best with sound words such as *dog*, *drum*, *speech*, *rain*).")
    return (f"**Text search is not available for this index**: it was built with `{enc}`, which has no text "
            f"space. Build an index with one of: {', '.join(f'`{e}`' for e in TEXT_ENCODERS)}.")


def text_search(pool: IndexPool, name: str | None, text: str | None, k: Any, limits: Limits) -> list[dict]:
    """Clips that best match a text query, in whatever text space the index has."""
    served = pool.get(name)
    k = clamp_k(k, limits)
    text = (text or "").strip()
    if not text:
        raise SimsearchError("type what to search for, e.g. 'dog barking' or 'snare drum'")
    if len(text) > MAX_TEXT_CHARS:
        raise SimsearchError(f"the query is {len(text)} characters; keep it under {MAX_TEXT_CHARS}")
    if text_mode(served.index) is None:
        raise SimsearchError(text_support(served).replace("**", "").replace("`", "'"))
    return served.index.search(text=text, k=k)


def query_tags(served: Served, text: str, top: int = 3) -> str:
    """For tag-space indexes: which AudioSet tags a text query was mapped to (explains the ranking)."""
    if text_mode(served.index) != "tags" or not (text or "").strip():
        return ""
    from .encoders.yamnet import load_class_names
    from .text import top_tags

    tags = top_tags(text.strip(), load_class_names(), top=top)
    return "Matched AudioSet tags: " + ", ".join(f"**{name}** ({w:.0%})" for name, w in tags)


def parse_labels(labels: str | list[str] | None) -> list[str]:
    """'dog, cat; rain' or a list -> ['dog', 'cat', 'rain'] without blanks or repeats."""
    if labels is None:
        return []
    parts = labels if isinstance(labels, list) else str(labels).replace(";", ",").replace("\n", ",").split(",")
    return list(dict.fromkeys(p.strip() for p in parts if str(p).strip()))


def classify_clip(pool: IndexPool, name: str | None, audio_path: str | Path | None, k: Any,
                  zero_shot_labels: str | list[str] | None, limits: Limits) -> dict:
    """kNN label scores with the neighbours that voted, the probe's prediction, and zero-shot scores.

    Returns {"knn": [{"label","score"}], "neighbours": [result rows], "probe": [...] | None,
    "zero_shot": [...] | None, "notes": [str]}; scores are best first.
    """
    served = pool.get(name)
    k = clamp_k(k or KNN_K, limits)
    labels = parse_labels(zero_shot_labels)
    x = load_query(served, audio_path, limits)
    vector, extras = served.index.embed_clip(x)
    out: dict[str, Any] = {"knn": [], "neighbours": [], "probe": None, "zero_shot": None, "notes": []}
    if served.knn_bank is None:
        out["notes"].append("this index has no labels, so there is nothing to vote with; index with sub-folders "
                            "or --label-regex")
    else:
        classes, scores = knn_scores(vector, served.knn_bank, served.knn_labels, k)
        order = np.argsort(-scores[0], kind="stable")
        out["knn"] = [{"label": classes[i], "score": round(float(scores[0][i]), 6)} for i in order if scores[0][i] > 0]
        sims = served.knn_bank @ vector
        top = np.argsort(-sims, kind="stable")[:min(k, len(sims))]
        rows = served.knn_rows.iloc[top]
        out["neighbours"] = served.index.records(rows["id"].to_numpy(), sims[top])
    if served.has_probe:
        out["probe"] = classify_probe(served.index, vector)
    else:
        out["notes"].append(f"no probe trained for this index (train one with `simsearch probe {served.index.dir.root}`)")
    if labels:
        scores = zero_shot_scores(served.index, vector, extras, labels)
        order = np.argsort(-scores, kind="stable")
        out["zero_shot"] = [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]
    return out


def index_overview(served: Served) -> tuple[str, pd.DataFrame]:
    """Markdown facts about an index (encoder, checkpoint, dim, counts) and its label histogram."""
    info = served.index.info
    enc = info["encoder"]
    counts = info.get("counts", {})
    rows = served.index.rows
    hist = (rows["label"].fillna("(none)").astype(str).value_counts().rename_axis("label").reset_index(name="rows"))
    facts = [
        ("folder", f"`{served.index.dir.root}`"),
        ("encoder", f"`{enc['name']}`"),
        ("checkpoint", f"`{enc.get('checkpoint') or '(bundled)'}`"),
        ("pooling / options", f"{enc.get('pooling') or '-'} {enc.get('options') or ''}"),
        ("dim", f"{info['dim']} ({info.get('metric', 'cosine')})"),
        ("files / rows", f"{counts.get('files', '?')} files, {counts.get('rows', len(rows))} rows"),
        ("labels", f"{int(rows['label'].notna().sum())} labelled rows, {len(hist) - int('(none)' in set(hist['label']))} labels"),
        ("windows", f"{info.get('window_s')} s, hop {info.get('hop_s') or info.get('window_s')} s"),
        ("text search", text_mode(served.index) or "none"),
        ("probe", "yes" if served.has_probe else "no"),
        ("sources", ", ".join(f"`{s}`" for s in info.get("sources", [])) or "-"),
        ("updated", str(info.get("updated_at", "-"))),
    ]
    md = "| index | |\n|---|---|\n" + "\n".join(f"| **{k}** | {v} |" for k, v in facts)
    return md, hist


# ---------------------------------------------------------------------------------------------- Gradio wiring

def friendly(fn: Callable) -> Callable:
    """Turn user errors into a readable gr.Error, and anything else into a short one (never a stack trace)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SimsearchError as e:
            raise gr.Error(str(e), title="Cannot do that", print_exception=False) from None
        except Exception as e:  # a bug: log it for the operator, keep the page tidy for the user
            log.exception("request failed")
            raise gr.Error(f"something went wrong ({type(e).__name__}); the server log has the details",
                           print_exception=False) from None

    return wrapper


class ResultSlots:
    """A fixed list of hidden result rows (audio player + caption) that a search fills in."""

    def __init__(self, n: int = MAX_SLOTS):
        import gradio as gr

        self.rows, self.audios, self.captions = [], [], []
        for i in range(n):
            with gr.Row(visible=False, equal_height=True) as row:
                audio = gr.Audio(label=f"#{i + 1}", interactive=False, type="filepath", scale=2, min_width=260,
                                 buttons=["download"], elem_classes=["result-audio"])
                caption = gr.Markdown(elem_classes=["result-caption"])
            self.rows.append(row)
            self.audios.append(audio)
            self.captions.append(caption)

    @property
    def outputs(self) -> list:
        return [*self.rows, *self.audios, *self.captions]

    def fill(self, pool: IndexPool, served: Served, results: list[dict]) -> list:
        """Updates for self.outputs: one visible row per result, the rest hidden."""
        import gradio as gr

        rows, audios, captions = [], [], []
        missing = 0
        for i in range(len(self.rows)):
            if i < len(results):
                r = results[i]
                clip = result_audio(served, r, pool.clip_dir)
                missing += clip is None
                window = clip is not None and is_window(r, sf.info(r["path"]).duration)
                rows.append(gr.update(visible=True))
                audios.append(gr.update(value=clip, label=f"#{r['rank']}  {r['label'] or ''}".strip()))
                captions.append(result_caption(r, clip is not None, window))
            else:
                rows.append(gr.update(visible=False))
                audios.append(gr.update(value=None))
                captions.append("")
        if missing:
            gr.Warning(f"{missing} result(s) cannot be played: their files are outside the indexed folders or gone")
        return [*rows, *audios, *captions]


def scores_dict(scored: list[dict] | None) -> dict[str, float] | None:
    return None if not scored else {d["label"]: float(d["score"]) for d in scored}


def build_app(index_dirs: list[str | Path] | None = None, limits: Limits = Limits(), device: str = "auto",
              warm: bool = True, pool: IndexPool | None = None):
    """The Gradio Blocks app over one or more index folders (see find_index_dirs); pool holds them open."""
    import gradio as gr

    pool = pool or IndexPool(find_index_dirs(index_dirs), device=device, warm=warm)
    if limits.upload_dir is None:
        from gradio.utils import get_upload_folder

        limits = replace(limits, upload_dir=Path(get_upload_folder()).resolve())
    names = pool.names
    first = pool.get(names[0])
    max_k = min(limits.max_k, MAX_SLOTS)

    with gr.Blocks(title="simsearch", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# simsearch\nFind similar sounds, search by text, and label clips in an audio index.")
        with gr.Row():
            index_dd = gr.Dropdown(names, value=names[0], label="Index", scale=1, interactive=len(names) > 1,
                                   elem_id="index-select")
            status = gr.Markdown(status_line(first))

        with gr.Tabs():
            with gr.Tab("Find similar", id="similar"):
                with gr.Row():
                    with gr.Column(scale=2):
                        q_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Query clip (upload or record)", elem_id="query-audio")
                        with gr.Row():
                            q_k = gr.Slider(1, max_k, value=min(5, max_k), step=1, label="k (results)")
                            q_btn = gr.Button("Find similar", variant="primary", elem_id="find-similar")
                    q_spec = gr.Image(label="Query spectrogram", type="numpy", interactive=False, scale=3,
                                      elem_id="query-spectrogram")
                q_slots = ResultSlots(max_k)

            with gr.Tab("Search by text", id="text"):
                t_note = gr.Markdown(text_support(first))
                with gr.Row():
                    t_text = gr.Textbox(label="Text query", placeholder="dog barking, snare drum, speech ...",
                                        scale=4, elem_id="text-query")
                    t_k = gr.Slider(1, max_k, value=min(5, max_k), step=1, label="k", scale=1)
                    t_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-text")
                t_tags = gr.Markdown()
                t_slots = ResultSlots(max_k)

            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=2):
                        c_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                           label="Clip to label", elem_id="classify-audio")
                        c_k = gr.Slider(1, max_k, value=min(KNN_K, max_k), step=1, label="k (neighbours that vote)")
                        c_labels = gr.Textbox(label="Zero-shot labels (comma separated, optional)",
                                              placeholder="dog, rain, speech")
                        c_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                        c_notes = gr.Markdown()
                    with gr.Column(scale=3):
                        c_knn = gr.Label(label="kNN vote (similarity-weighted)", num_top_classes=10)
                        c_probe = gr.Label(label="Probe prediction", num_top_classes=5)
                        c_zero = gr.Label(label="Zero-shot over your labels", num_top_classes=10)
                c_neigh = gr.Dataframe(label="Neighbours that voted", interactive=False, wrap=True)

            with gr.Tab("Index", id="index"):
                i_md = gr.Markdown(index_overview(first)[0])
                i_hist = gr.BarPlot(index_overview(first)[1], x="label", y="rows", title="Rows per label",
                                    sort="-y", x_label_angle=-45, height=320, y_lim=[0, None], y_axis_format="d")

        # ---- UI events (not part of the API: the API has its own JSON endpoints below)
        @friendly
        def on_similar(name, path, k):
            served = pool.get(name)
            results, x = find_similar(pool, name, path, k, limits)
            sr = served.index.encoder.sample_rate
            spec = spectrogram_image(x, sr, f"query: {Path(path).name}  ({len(x) / sr:.1f} s)")
            return [spec, *q_slots.fill(pool, served, results)]

        @friendly
        def on_text(name, text, k):
            results = text_search(pool, name, text, k, limits)
            if not results:
                gr.Warning("no results: the index is empty")
            served = pool.get(name)
            return [query_tags(served, text), *t_slots.fill(pool, served, results)]

        @friendly
        def on_classify(name, path, k, labels):
            out = classify_clip(pool, name, path, k, labels, limits)
            neigh = pd.DataFrame(public(out["neighbours"]), columns=list(RESULT_KEYS)).round({"score": 3})
            notes = "\n".join(f"- {n}" for n in out["notes"])
            return (scores_dict(out["knn"]), gr.update(value=scores_dict(out["probe"]), visible=out["probe"] is not None),
                    gr.update(value=scores_dict(out["zero_shot"]), visible=out["zero_shot"] is not None), neigh, notes)

        @friendly
        def on_index(name):
            served = pool.get(name)
            md, hist = index_overview(served)
            return status_line(served), text_support(served), md, hist

        # progress (and, on failure, Gradio's red badge) on one component per tab, not on every result row
        q_btn.click(on_similar, [index_dd, q_audio, q_k], [q_spec, *q_slots.outputs], api_visibility="private",
                    show_progress_on=q_spec)
        for trigger in (t_btn.click, t_text.submit):
            trigger(on_text, [index_dd, t_text, t_k], [t_tags, *t_slots.outputs], api_visibility="private",
                    show_progress_on=t_tags)
        c_btn.click(on_classify, [index_dd, c_audio, c_k, c_labels], [c_knn, c_probe, c_zero, c_neigh, c_notes],
                    api_visibility="private", show_progress_on=c_knn)
        index_dd.change(on_index, index_dd, [status, t_note, i_md, i_hist], api_visibility="private")

        # ---- API: stable names, JSON out
        with gr.Column(visible=False):
            a_file = gr.File(label="audio", type="filepath")
            a_text = gr.Textbox(label="text")
            a_k = gr.Number(label="k", value=min(10, max_k), precision=0)
            a_labels = gr.Textbox(label="labels")
            a_index = gr.Dropdown(names, value=names[0], label="index")
            a_out = gr.JSON(label="results")
            a_btn = gr.Button()

        def search_audio(audio: str, k: int, index: str) -> list[dict]:
            """Nearest clips to an audio file: [{rank, score, path, label, offset_s}], best first."""
            return public(find_similar(pool, index, audio, k, limits)[0])

        def search_text(text: str, k: int, index: str) -> list[dict]:
            """Clips matching a text query: [{rank, score, path, label, offset_s}], best first."""
            return public(text_search(pool, index, text, k, limits))

        def classify(audio: str, k: int, labels: str, index: str) -> dict:
            """{"knn", "neighbours", "probe", "zero_shot", "notes"} for an audio file."""
            return api_classify(pool, index, audio, k, labels, limits)

        def index_info(index: str) -> dict:
            """index.json of an index, with its display name."""
            return api_index_info(pool, index)

        for fn, inputs in ((search_audio, [a_file, a_k, a_index]), (search_text, [a_text, a_k, a_index]),
                           (classify, [a_file, a_k, a_labels, a_index]), (index_info, [a_index])):
            a_btn.click(friendly(fn), inputs, a_out, api_name=fn.__name__, api_description=fn.__doc__)

    demo.simsearch_pool = pool  # type: ignore[attr-defined]
    demo.simsearch_limits = limits  # type: ignore[attr-defined]
    return demo


def status_line(served: Served) -> str:
    info = served.index.info
    return (f"**{served.name}** · `{info['encoder']['name']}` · {len(served.index)} rows · "
            f"text search: {text_mode(served.index) or 'none'} · probe: {'yes' if served.has_probe else 'no'}")


def api_classify(pool: IndexPool, name: str | None, path: str | None, k: Any, labels: str | None,
                 limits: Limits) -> dict:
    """classify_clip in the API's JSON shape."""
    out = classify_clip(pool, name, path, k, labels, limits)
    return {"knn": out["knn"], "neighbours": public(out["neighbours"]), "probe": out["probe"],
            "zero_shot": out["zero_shot"], "notes": out["notes"]}


def api_index_info(pool: IndexPool, name: str | None) -> dict:
    served = pool.get(name)
    return {"name": served.name, **served.index.info}


def launch(demo, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False):
    """Serve the app; files are served only from the indexed roots, uploads are capped."""
    import gradio as gr

    pool: IndexPool = demo.simsearch_pool
    limits: Limits = demo.simsearch_limits
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font downloads
    demo.queue(default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                       allowed_paths=pool.all_roots(), max_file_size=f"{limits.max_upload_mb:g}mb",
                       show_error=True, ssr_mode=False, footer_links=["api"], theme=theme, css=CSS)


CSS = """
.result-caption { font-size: 0.92em; }
.result-caption code { word-break: break-all; }
"""
