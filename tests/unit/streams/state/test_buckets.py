"""Hash-tag buckets: tags spread over the slot range, keys grouped and merged back in order."""

from __future__ import annotations

import numpy as np
import pytest
from redis.cluster import REDIS_CLUSTER_HASH_SLOTS, key_slot

from streamrank.streams.state.buckets import (
    BUCKETS,
    Spread,
    bucket_of,
    bucket_tags,
    buckets_of,
    tagged,
)


def slot_of(name: str) -> int:
    return key_slot(name.encode())


@pytest.mark.parametrize("count", [1, 3, BUCKETS, 64])
def test_each_bucket_tag_lies_in_its_own_equal_slot_range(count: int) -> None:
    width = REDIS_CLUSTER_HASH_SLOTS // count
    tags = bucket_tags(count)
    assert len(set(tags)) == count
    for bucket, tag in enumerate(tags):
        assert tag.startswith("{") and tag.endswith("}") and "}" not in tag[:-1]
        assert bucket * width <= slot_of(tag) < (bucket + 1) * width


def test_three_even_masters_each_hold_a_third_of_the_buckets() -> None:
    """What ``redis-cli --cluster create`` gives three masters: contiguous thirds."""
    thirds = [slot_of(tag) * 3 // REDIS_CLUSTER_HASH_SLOTS for tag in bucket_tags()]
    assert sorted(np.bincount(thirds).tolist()) == [5, 5, 6]


def test_a_tagged_key_hashes_to_its_buckets_slot_whatever_the_key_holds() -> None:
    names = ["item|d1", "item:query_counts|d1\x1fred {shoes}", "user|}{", ""]
    keys, buckets = tagged("streamrank.features:", names), buckets_of(names)
    tags = bucket_tags()
    for name, key, bucket in zip(names, keys, buckets, strict=True):
        assert key == f"streamrank.features:{tags[bucket]}{name}".encode()
        assert bucket == bucket_of(name)
        assert key_slot(key) == slot_of(tags[bucket])


def test_buckets_are_stable_and_spread() -> None:
    assert bucket_of("item|d1") == 1  # CRC-32: the same in every process and on every host
    counts = np.bincount([bucket_of(f"item|d{n}") for n in range(16_000)], minlength=BUCKETS)
    assert counts.min() > 900 and counts.max() < 1100


def test_a_spread_groups_by_bucket_and_merges_back_in_batch_order() -> None:
    rng = np.random.default_rng(0)
    buckets = rng.integers(0, BUCKETS, 500).tolist()
    spread = Spread.of(buckets, grouped=True)
    assert spread.groups is not None and len(spread.groups) <= BUCKETS
    for group in spread.groups:
        assert len({buckets[i] for i in group}) == 1
    items = [f"v{n}" for n in range(500)]
    parts = spread.parts(items)
    assert spread.merge(parts) == items
    rows = [b"".join(n.to_bytes(8, "little") for n in map(int, group)) for group in spread.groups]
    merged = np.frombuffer(spread.merge_rows(rows, 8), dtype="<u8")
    assert merged.tolist() == list(range(500))
    flat = [[value for i in group for value in (f"a{i}", f"b{i}")] for group in spread.groups]
    assert spread.merge_flat(flat, 2) == [v for n in range(500) for v in (f"a{n}", f"b{n}")]
    assert spread.merge_flat([[] for _ in spread.groups], 0) == []
    assert spread.merge_rows([b"" for _ in spread.groups], 0) == b""


def test_a_single_redis_takes_the_batch_as_one_group() -> None:
    spread = Spread.of([3, 1, 2], grouped=False)
    assert spread.groups is None
    assert spread.parts(["a", "b", "c"]) == [["a", "b", "c"]]
    assert spread.merge([["a", "b", "c"]]) == ["a", "b", "c"]
    assert spread.merge_rows([b"xyz"], 1) == b"xyz"
