"""Pairs and triplets in one landmark column: the pairs' hold on noisy copies and the triplets' on pitch and tempo."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simsearch.audio import fingerprint, triplets

KIND = "pairs+triplets-v1"
TRIPLET_BIT = 1 << 31  # triplet hashes use 18 bits and pair hashes 25: the top bit tells them apart in one column
# A triplet score under this counts nothing here: beside the pairs, weak triplet agreements are mostly chance (on FSDD
# they tripled the rows that get any bonus, 0.57 % -> 1.66 % of pairs of different recordings; at 6: 0.65 %), while a
# pitch-shifted or stretched copy's triplets agree far more often.
TRIPLET_MIN_SCORE = 6.0


def describe() -> dict:
    """What index.json records: the kind and both parts' settings."""
    return {"kind": KIND, "pairs": fingerprint.describe(), "triplets": triplets.describe(),
            "triplet_min_score": TRIPLET_MIN_SCORE}


def compatible(recorded: dict) -> bool:
    """Whether both parts were made as this version makes them."""
    return (recorded.get("kind") == KIND and fingerprint.compatible(recorded.get("pairs") or {})
            and triplets.compatible(recorded.get("triplets") or {}))


def index_landmarks(x: np.ndarray, sample_rate: int) -> bytes:
    """A row's pairs, then its triplets with the top hash bit set (8 bytes each, as either kind alone)."""
    h, t, f = triplets.landmarks(x, sample_rate)
    tagged = np.stack([(h | np.uint32(TRIPLET_BIT)).view(np.int32), (t << 8) | f], axis=1).astype(np.int32)
    return fingerprint.index_landmarks(x, sample_rate) + tagged.tobytes()


def query_landmarks(x: np.ndarray, sample_rate: int) -> tuple[tuple, tuple]:
    """A query's pairs and triplets, each as its own kind makes them."""
    return fingerprint.query_landmarks(x, sample_rate), triplets.query_landmarks(x, sample_rate)


@dataclass
class BothTable(fingerprint.FromBlobs):
    """The stored pairs and triplets, split into one table of each kind."""

    pairs: fingerprint.LandmarkTable
    triplets: triplets.TripletTable
    n_rows: int

    @classmethod
    def from_arrow(cls, column, positions: np.ndarray, n_rows: int) -> "BothTable":
        """From a binary Arrow column: sorted by hash, the tagged triplets come last."""
        base = fingerprint.LandmarkTable.from_arrow(column, positions, n_rows)
        cut = int(np.searchsorted(base.hashes, np.uint32(TRIPLET_BIT)))
        pairs = fingerprint.LandmarkTable(base.hashes[:cut], base.rows[:cut], base.times[:cut], n_rows)
        packed = base.times[cut:]
        tri = triplets.TripletTable(base.hashes[cut:] & np.uint32(TRIPLET_BIT - 1), base.rows[cut:], packed >> 8,
                                    packed & 255, n_rows)
        return cls(pairs, tri, n_rows)

    def scores(self, pair_marks: tuple, triplet_marks: tuple) -> np.ndarray:
        """Each row's better score of the two kinds (both are on fingerprint's scale; triplets from
        TRIPLET_MIN_SCORE)."""
        tri = self.triplets.scores(*triplet_marks)
        return np.maximum(self.pairs.scores(*pair_marks), np.where(tri >= TRIPLET_MIN_SCORE, tri, 0.0))
