"""Which kind of landmarks an index keeps (pairs, triplets or both), and the module that makes and matches it."""
from __future__ import annotations

from types import ModuleType

from simsearch.audio import fingerprint, landmark_both, triplets
from simsearch.errors import SimsearchError

KINDS = {"pairs": fingerprint, "triplets": triplets, "both": landmark_both}  # the names --landmarks takes
NAMES = {"pairs": "pairs", triplets.KIND: "triplets", landmark_both.KIND: "both"}  # index.json's "kind" -> name
DEFAULT = "both"  # for new indexes: triplets alone lose noisy copies; pairs lose pitch, tempo and speed changes


def module(kind: str) -> ModuleType:
    """The module of a kind (describe, compatible, index_landmarks, query_landmarks, its table class)."""
    if kind not in KINDS:
        raise SimsearchError(f"unknown landmark kind {kind!r}; choose {' or '.join(KINDS)}")
    return KINDS[kind]


def kind_of(recorded: dict | None) -> str:
    """The kind index.json's "fingerprint" record describes: indexes from before triplets recorded no kind (pairs)."""
    name = (recorded or {}).get("kind", "pairs")
    return NAMES.get(name, name)


def describe(kind: str) -> dict:
    """What index.json records about landmarks of this kind."""
    return module(kind).describe()


def table_class(kind: str):
    """The class that holds a kind's stored landmarks for look-ups (build, from_arrow, scores)."""
    return {"pairs": fingerprint.LandmarkTable, "triplets": triplets.TripletTable, "both": landmark_both.BothTable}[kind]
