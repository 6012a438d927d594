"""Hash-tag buckets: how a store of many keys read in batches works on a Redis Cluster.

A Redis Cluster runs a script or a multi-key command (``MGET``) only when all its keys hash to
one slot, and it finds a key's slot from its hash tag (the text between the first ``{`` and
``}``) when it has one. A store read 1,000 keys at a time (the feature store, the vector and
score caches) puts each key in one of :data:`BUCKETS` buckets by the CRC-32 of its name, and
names the bucket in the key's hash tag. A batch read then costs at most one script or
``MGET`` per bucket on a cluster (:class:`Spread`, all in one pipeline), and exactly one on a
single Redis, which takes any keys together: the key layout is the same on both, only the
grouping differs.

Why buckets rather than a tag per key: 1,000 keys with their own slots would cost about 1,000
commands per batch on a cluster; one tag for the whole store would put the store on one
master. Why these tags: bucket ``b``'s tag is the first ``f<b>.<n>`` whose slot lies in the
``b``-th of :data:`BUCKETS` equal slot ranges, so the buckets spread evenly over masters that
split the slots into even ranges (``redis-cli --cluster create`` does), where tags ``f0``..
``f15`` would put 4, 8 and 4 buckets on three masters.

Examples
--------
>>> bucket_tags(4)
('{f0.2}', '{f1.0}', '{f2.2}', '{f3.0}')
>>> bucket_of("item|d1") == bucket_of("item|d1")
True
>>> spread = Spread.of([0, 2, 0, 1], grouped=True)
>>> [group.tolist() for group in spread.groups]
[[0, 2], [3], [1]]
>>> spread.merge([["a", "c"], ["d"], ["b"]])
['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import redis
from redis.cluster import REDIS_CLUSTER_HASH_SLOTS, key_slot

BUCKETS = 16
"""Buckets per store: at most this many scripts per batch read on a cluster, and no more than
this many masters share a store's load."""


@cache
def bucket_tags(count: int = BUCKETS) -> tuple[str, ...]:
    """Each bucket's hash tag, braces included (computed once per count: a few hundred CRCs)."""
    width = REDIS_CLUSTER_HASH_SLOTS // count
    tags = []
    for bucket in range(count):
        low = bucket * width
        n = 0
        while not low <= key_slot(f"f{bucket}.{n}".encode()) < low + width:
            n += 1
        tags.append(f"{{f{bucket}.{n}}}")
    return tuple(tags)


def bucket_of(name: str, count: int = BUCKETS) -> int:
    """The bucket of a key (its name without the tag): stable across processes and hosts."""
    return zlib.crc32(name.encode()) % count


def tagged(prefix: str, names: Sequence[str], count: int = BUCKETS) -> list[bytes]:
    """``names`` as Redis keys, ``prefix{tag}name``, encoded.

    The hot path of every batch read: one encoding, one CRC and one concatenation per key, in
    one pass. Bytes, because the client packs a command's arguments one by one and a ``str``
    costs it an encoding more.
    """
    heads = _heads(prefix, count)
    crc = zlib.crc32
    # the index is evaluated before the right operand, so ``raw`` is bound when it is added
    return [heads[crc(raw := name.encode()) % count] + raw for name in names]


def buckets_of(names: Sequence[str], count: int = BUCKETS) -> list[int]:
    """Each name's bucket (what :func:`bucket_of` gives, for a batch)."""
    crc = zlib.crc32
    return [crc(name.encode()) % count for name in names]


@cache
def _heads(prefix: str, count: int) -> tuple[bytes, ...]:
    return tuple((prefix + tag).encode() for tag in bucket_tags(count))


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (its multi-key calls must stay in a slot)."""
    return isinstance(client, redis.RedisCluster)


@dataclass(frozen=True)
class Spread:
    """A batch's keys split into the groups a command may take together, and back.

    ``groups`` holds, per group, the positions of its keys in the batch; ``None`` is the one
    group of a single Redis (every key in batch order), which costs no reordering.
    """

    groups: tuple[np.ndarray, ...] | None

    @classmethod
    def of(cls, buckets: Sequence[int], grouped: bool) -> Spread:
        """Group by bucket when ``grouped`` (a cluster), else one group."""
        if not grouped:
            return cls(None)
        codes = np.asarray(buckets, dtype=np.intp)
        order = np.argsort(codes, kind="stable")
        cuts = np.flatnonzero(np.diff(codes[order])) + 1
        return cls(tuple(np.split(order, cuts)))

    def parts(self, items: Sequence[Any]) -> list[list[Any]]:
        """``items`` (one per key) cut into the groups, in group order."""
        if self.groups is None:
            return [list(items)]
        return [[items[i] for i in group] for group in self.groups]

    def merge(self, replies: Sequence[Sequence[Any]]) -> list[Any]:
        """One reply item per key, from one reply per group, back in batch order."""
        if self.groups is None:
            return list(replies[0])
        out: list[Any] = [None] * sum(len(group) for group in self.groups)
        for group, reply in zip(self.groups, replies, strict=True):
            for at, value in zip(group, reply, strict=True):
                out[at] = value
        return out

    def merge_rows(self, replies: Sequence[bytes], row_bytes: int) -> bytes:
        """Fixed-size rows packed key by key, one reply per group, back in batch order."""
        if self.groups is None or row_bytes == 0:
            return replies[0] if self.groups is None else b""
        size = sum(len(group) for group in self.groups)
        out = np.empty((size, row_bytes), dtype=np.uint8)
        for group, reply in zip(self.groups, replies, strict=True):
            out[group] = np.frombuffer(reply, dtype=np.uint8).reshape(len(group), row_bytes)
        return out.tobytes()

    def merge_flat(self, replies: Sequence[Sequence[Any]], width: int) -> list[Any]:
        """``width`` values per key given key by key, one reply per group, in batch order."""
        if self.groups is None or width == 0:
            return list(replies[0]) if self.groups is None else []
        rows = self.merge([_chunks(list(reply), width) for reply in replies])
        return [value for row in rows for value in row]


def _chunks(flat: list[Any], width: int) -> list[list[Any]]:
    return [flat[n : n + width] for n in range(0, len(flat), width)]
