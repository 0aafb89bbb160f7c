"""Vocabularies fitted on the training rows, as FuxiCTR builds them.

Id 0 is padding (never a token), ids 1..n are the tokens seen at least `min_count` times in
the training split, most frequent first (ties by token), and id n + 1 is the one OOV id of
the field, shared by rare, unseen and missing tokens (null or empty: FuxiCTR leaves its fill
value out of the vocabulary). `max_features` caps the field at its most
frequent tokens (FuxiCTR's option of that name): the rest share the OOV id.

A hashed field (`HashedIds`, DLRM's `max_ind_range`) needs no vocabulary and no counts:
id = 1 + hash(token) mod (max_vocab - 1), so memory does not grow with its distinct tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.hashing import hash_tokens


class TokenCounter:
    """Counts of one field's tokens over a stream of chunks, in memory O(distinct tokens).

    Per-chunk counts wait in a list and are merged (a hash aggregation in Arrow) once they
    outnumber the merged table, so each token is re-aggregated O(log) times, not per chunk.
    """

    def __init__(self) -> None:
        self._merged: pa.Table | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, tokens: pa.Array | pa.ChunkedArray) -> None:
        tokens = pc.drop_null(tokens)  # missing: never a token (OOV)
        if pa.types.is_string(tokens.type) or pa.types.is_large_string(tokens.type):
            tokens = tokens.filter(pc.not_equal(tokens, ""))
        if len(tokens) == 0:
            return
        counts = pc.value_counts(tokens)
        table = pa.table({"token": counts.field("values"), "count": counts.field("counts")})
        self._pending.append(table)
        self._pending_rows += table.num_rows
        merged_rows = 0 if self._merged is None else self._merged.num_rows
        if self._pending_rows > max(merged_rows, 1 << 20):
            self._merge()

    def _merge(self) -> None:
        parts = self._pending if self._merged is None else [self._merged, *self._pending]
        self._pending, self._pending_rows = [], 0
        if not parts:
            return
        table = pa.concat_tables(parts).group_by("token").aggregate([("count", "sum")])
        self._merged = table.rename_columns(["token", "count"]).combine_chunks()

    def counts(self) -> pa.Table:
        """(token, count) for every token seen, in no particular order."""
        self._merge()
        if self._merged is None:
            return pa.table({"token": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        return self._merged


@dataclass
class Vocabulary:
    """Token -> id for one field: padding 0, kept tokens 1..n, OOV n + 1."""

    tokens: pa.Array  # the kept tokens, in id order (id = position + 1)
    counts: np.ndarray  # their training counts
    seen: int  # distinct tokens in the training split
    train_occurrences: int  # token occurrences in the training split
    oov_occurrences: int  # of those, how many map to the OOV id

    @classmethod
    def fit(cls, counts: pa.Table, min_count: int, max_features: int | None = None) -> Vocabulary:
        total = int(pc.sum(counts["count"]).as_py() or 0)
        kept = counts.filter(pc.greater_equal(counts["count"], min_count))
        order = pc.sort_indices(kept, sort_keys=[("count", "descending"), ("token", "ascending")])
        kept = kept.take(order)
        if max_features is not None:
            kept = kept.slice(0, max(max_features - 2, 0))  # room for padding and OOV
        kept_total = int(pc.sum(kept["count"]).as_py() or 0)
        return cls(
            tokens=kept["token"].combine_chunks(),
            counts=kept["count"].to_numpy(),
            seen=counts.num_rows,
            train_occurrences=total,
            oov_occurrences=total - kept_total,
        )

    def extend(
        self, counts: pa.Table, min_count: int, max_features: int | None = None
    ) -> Vocabulary:
        """This vocabulary and, after its tokens, those of `counts` (a sequence that shares
        it) seen at least `min_count` times that it lacks, most frequent first (ties by token),
        up to `max_features` ids in all: FuxiCTR's merge_vocab for share_embedding."""
        new = counts.filter(pc.greater_equal(counts["count"], min_count))
        tokens = new["token"].cast(self.tokens.type) if len(new) else pa.array([], self.tokens.type)
        new = pa.table({"token": tokens, "count": new["count"]})
        new = new.filter(pc.invert(pc.is_in(new["token"], value_set=self.tokens)))
        new = new.take(
            pc.sort_indices(new, sort_keys=[("count", "descending"), ("token", "ascending")])
        )
        if max_features is not None:
            new = new.slice(0, max(max_features - self.size, 0))
        return Vocabulary(
            tokens=pa.concat_arrays([self.tokens, new["token"].combine_chunks()]),
            counts=np.concatenate([self.counts, new["count"].to_numpy()]),
            seen=self.seen,
            train_occurrences=self.train_occurrences,
            oov_occurrences=self.oov_occurrences,
        )

    @property
    def oov_id(self) -> int:
        return len(self.tokens) + 1

    @property
    def size(self) -> int:
        """Rows of the embedding table: padding, the kept tokens, OOV."""
        return len(self.tokens) + 2

    def encode(self, tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """(N,) int64 ids of `tokens`; missing (null or empty) and unknown tokens get OOV."""
        tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        if tokens.type != self.tokens.type:
            tokens = tokens.cast(self.tokens.type)
        index = pc.index_in(tokens, value_set=self.tokens, skip_nulls=True)
        return pc.fill_null(pc.add(index, 1), self.oov_id).to_numpy().astype(np.int64)

    def card(self) -> dict:
        """Facts for the dataset card."""
        return {
            "vocab_size": self.size,
            "kept_tokens": len(self.tokens),
            "distinct_train_tokens": self.seen,
            "oov_share_train": round(self.oov_occurrences / max(self.train_occurrences, 1), 6),
        }

    def to_table(self) -> pa.Table:
        """token, id, count: the mapping, for encoding new data the same way."""
        return pa.table(
            {
                "token": self.tokens.cast(pa.string()),
                "id": pa.array(np.arange(1, len(self.tokens) + 1, dtype=np.int64)),
                "count": pa.array(self.counts, pa.int64()),
            }
        )


@dataclass
class HashedIds:
    """Token -> 1 + hash(token) mod (size - 1) for a field capped by `max_vocab`; 0 is padding."""

    size: int  # rows of the embedding table, padding included

    def encode(self, tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """(N,) int64 ids; a missing token hashes like "" (or 0 for integers)."""
        tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        return (hash_tokens(tokens) % np.uint64(self.size - 1)).astype(np.int64) + 1

    def card(self) -> dict:
        return {"vocab_size": self.size, "hashed": True}

    def to_table(self) -> None:
        return None  # no mapping to store: the hash is the mapping
