"""Where features keep their state: a small storage protocol and its in-memory implementation.

Extractors read and write only through :class:`FeatureState`: day-bucketed counters, hashes
of fields and vectors, each batch call taking many keys so that a Redis implementation can
answer 1,000 candidates with one pipelined round trip. :class:`MemoryState` keeps everything
in process memory; it builds training data offline and backs the tests.

A counter key holds at most ``days`` buckets (a ring: a new day overwrites the bucket that
fell out of the longest window) and a key whose newest bucket is older than that is dropped,
so the memory of a counter stays bounded however long the stream runs.

Examples
--------
>>> state = MemoryState(days=7)
>>> state.add("item:counts|d1", "click", day=10)
>>> state.add("item:counts|d1", "click", day=12, amount=2)
>>> state.read_counts(["item:counts|d1", "item:counts|d2"], ["click"], today=12, days=3)
array([[[1., 0., 2.]],
<BLANKLINE>
       [[0., 0., 0.]]])
>>> state.read_counts(["item:counts|d1"], ["click"], today=17, days=7).sum()  # day 10 is gone
np.float64(2.0)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrank.models.features.events import COUNTED_EVENTS
from streamrank.models.features.keys import owner_of

HashValue = float | str


class FeatureState(Protocol):
    """The storage the extractors use; see :class:`MemoryState`.

    A state may also answer a whole request's reads at once (:class:`BatchReader`);
    :func:`read_batch` uses that where it exists and these calls where it does not.
    """

    def add(self, key: str, event: str, day: int, amount: float = 1.0) -> None:
        """Add ``amount`` to the ``event`` count of ``key`` in day bucket ``day``."""
        ...

    def read_counts(
        self, keys: Sequence[str], events: Sequence[str], today: int, days: int
    ) -> np.ndarray:
        """Counts shaped (keys, events, days); column ``j`` is day ``today - days + 1 + j``."""
        ...

    def get_hashes(self, keys: Sequence[str]) -> list[Mapping[str, HashValue] | None]:
        """Each key's fields (read-only), None where the key holds none."""
        ...

    def update_hash(self, key: str, values: Mapping[str, HashValue]) -> None:
        """Set some fields of ``key``, keeping the others."""
        ...

    def delete_fields(self, key: str, fields: Iterable[str]) -> None:
        """Remove fields of ``key``."""
        ...

    def get_vectors(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """Each key's float32 vector, None where the key holds none."""
        ...

    def set_vector(self, key: str, vector: np.ndarray) -> None:
        """Store ``vector`` (as float32) under ``key``."""
        ...


@dataclass(frozen=True)
class CounterRead:
    """Window sums of ``events`` over each of ``windows`` days ending today, for many keys."""

    keys: Sequence[str]
    events: Sequence[str]
    windows: Sequence[int]


@dataclass(frozen=True)
class BatchRead:
    """Everything one request reads, known before any of it is read.

    Attributes
    ----------
    today
        The day the counter windows end on (included).
    hashes
        Keys whose every field is read (the user's fields, overlaps).
    columns
        Keys (the candidates' item hashes) of which only ``numbers`` and ``strings`` are read.
    numbers
        Fields of ``columns`` read as float64: NaN where absent or not a number.
    strings
        Fields of ``columns`` read as they are stored: None where absent.
    vectors
        Vector keys, each read alone (None where absent).
    rows
        Vector keys read as one float32 matrix (zero rows where absent) and a presence mask.
    counters
        Window sums to read, by a name of the caller's choosing (a scope).
    """

    today: int = 0
    hashes: Sequence[str] = ()
    columns: Sequence[str] = ()
    numbers: Sequence[str] = ()
    strings: Sequence[str] = ()
    vectors: Sequence[str] = ()
    rows: Sequence[str] = ()
    counters: Mapping[str, CounterRead] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    """What a :class:`BatchRead` read, in the order it asked.

    ``numbers`` is shaped (numbers, columns), ``strings`` holds one list per string field,
    ``matrix`` and ``present`` are the ``rows`` vectors, and each ``counts`` entry is shaped
    (keys, events, windows).
    """

    hashes: list[Mapping[str, HashValue] | None]
    numbers: np.ndarray
    strings: list[list[HashValue | None]]
    vectors: list[np.ndarray | None]
    matrix: np.ndarray
    present: np.ndarray
    counts: dict[str, np.ndarray]


class BatchReader(Protocol):
    """A state that answers a :class:`BatchRead` itself (Redis: one round trip)."""

    def read_batch(self, reads: BatchRead) -> BatchResult:
        """The same result as :func:`read_by_parts` gives, value for value."""
        ...


def read_batch(state: FeatureState, reads: BatchRead) -> BatchResult:
    """``reads`` from ``state``: its own :meth:`~BatchReader.read_batch` where it has one.

    Examples
    --------
    >>> state = MemoryState(days=7)
    >>> state.update_hash("item|d1", {"price": 9.5, "category": "shoes"})
    >>> state.add("item:counts|d1", "click", day=3)
    >>> got = read_batch(state, BatchRead(
    ...     today=3, columns=["item|d1", "item|d2"], numbers=["price"], strings=["category"],
    ...     counters={"item": CounterRead(["item:counts|d1"], ["click"], [1, 7])}))
    >>> got.numbers, got.strings, got.counts["item"]
    (array([[9.5, nan]]), [['shoes', None]], array([[[1., 1.]]]))
    """
    reader = getattr(state, "read_batch", None)
    if reader is not None:
        return reader(reads)  # type: ignore[no-any-return]
    return read_by_parts(state, reads)


def read_by_parts(state: FeatureState, reads: BatchRead) -> BatchResult:
    """``reads`` through the plain :class:`FeatureState` calls, one batch call per part."""
    columns = state.get_hashes(reads.columns) if reads.columns else []
    stored = [_NO_FIELDS if fields is None else fields for fields in columns]
    numbers = np.empty((len(reads.numbers), len(stored)), dtype=np.float64)
    for row, name in enumerate(reads.numbers):
        values = [fields.get(name, _NAN) for fields in stored]
        if str in set(map(type, values)):  # a string in a number field: missing, as in Redis
            values = [_number(value) for value in values]
        numbers[row] = values
    strings = [[fields.get(name) for fields in stored] for name in reads.strings]
    matrix, present = stack_rows(state.get_vectors(reads.rows) if reads.rows else [])
    counts = {
        name: window_sums(
            state.read_counts(read.keys, read.events, reads.today, max(read.windows))
            if read.keys
            else np.zeros((0, len(read.events), max(read.windows))),
            read.windows,
        )
        for name, read in reads.counters.items()
    }
    return BatchResult(
        hashes=state.get_hashes(reads.hashes) if reads.hashes else [],
        numbers=numbers,
        strings=strings,
        vectors=state.get_vectors(reads.vectors) if reads.vectors else [],
        matrix=matrix,
        present=present,
        counts=counts,
    )


def window_sums(counts: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Sums of the trailing ``window`` days of counts shaped (keys, events, days).

    Examples
    --------
    >>> window_sums(np.array([[[1.0, 0.0, 2.0]]]), [1, 3])
    array([[[2., 3.]]])
    """
    days = counts.shape[2]
    return np.stack([counts[:, :, days - window :].sum(axis=2) for window in windows], 2)


def stack_rows(vectors: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors as one float32 matrix (zero rows where absent) and which rows are present.

    Examples
    --------
    >>> stack_rows([np.ones(2, np.float32), None])
    (array([[1., 1.],
           [0., 0.]], dtype=float32), array([ True, False]))
    """
    present = np.array([vector is not None for vector in vectors], dtype=bool)
    if not present.any():
        return np.zeros((len(vectors), 0), dtype=np.float32), present
    if present.all():
        return np.stack(vectors), present  # type: ignore[arg-type]
    dim = next(vector for vector in vectors if vector is not None).shape[0]
    matrix = np.zeros((len(vectors), dim), dtype=np.float32)
    matrix[present] = np.stack([vector for vector in vectors if vector is not None])
    return matrix, present


_NO_FIELDS: Mapping[str, HashValue] = {}
_NAN = float("nan")


def _number(value: HashValue) -> float:
    """A stored value as a number field reads it: NaN where a string."""
    return _NAN if isinstance(value, str) else float(value)


@dataclass(frozen=True)
class OwnerMemory:
    """What the state holds for the items (or users...) it knows, per owner."""

    owners: int
    entries_mean: float
    entries_max: int
    bytes_mean: float
    bytes_max: int
    bytes_total: int

    @classmethod
    def of(cls, rows: list[tuple[int, int]]) -> OwnerMemory:
        """The summary of ``(entries, bytes)`` per owner, one row each."""
        counts = np.array([n for n, _ in rows])
        sizes = np.array([nbytes for _, nbytes in rows])
        return cls(
            owners=len(rows),
            entries_mean=round(float(counts.mean()), 2),
            entries_max=int(counts.max()),
            bytes_mean=round(float(sizes.mean()), 1),
            bytes_max=int(sizes.max()),
            bytes_total=int(sizes.sum()),
        )


@dataclass(frozen=True)
class MemoryReport:
    """Memory by owner kind (``item``, ``user``, ``category``, ``global``), approximate.

    An entry is a counter bucket holding a count, a hash field or a vector; bytes count the
    counter rows, vectors and the Python objects of hash fields, not the dicts holding them.
    """

    by_owner: dict[str, OwnerMemory] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {kind: vars(memory) for kind, memory in self.by_owner.items()}


class MemoryState:
    """A :class:`FeatureState` in process memory; counters keep ``days`` day buckets per key.

    Parameters
    ----------
    days
        Buckets per counter key: the longest window read
        (:attr:`~streamrank.models.features.config.FeatureSet.max_window_days`).
    events
        The event types counted; each counter key stores one row of buckets per type.
    """

    def __init__(self, days: int = 30, events: Sequence[str] = COUNTED_EVENTS) -> None:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        self.days = days
        self.events = tuple(events)
        self._event_rows = {event: row for row, event in enumerate(self.events)}
        # All counter keys share one pool of buckets, a key owning one slot (events x days, a
        # day at position day % days), so that reading 1,000 keys is one gather.
        self._slots: dict[str, int] = {}
        self._pool = np.zeros((16, len(self.events), days), dtype=np.float32)
        self._newest = np.zeros(16, dtype=np.int64)
        self._free = list(range(15, -1, -1))
        self._newest_day: int | None = None
        self._hashes: dict[str, dict[str, HashValue]] = {}
        self._vectors: dict[str, np.ndarray] = {}

    # -- counters -------------------------------------------------------------------------

    def add(self, key: str, event: str, day: int, amount: float = 1.0) -> None:
        row = self._row(event)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._allocate(key, day)
        newest = int(self._newest[slot])
        buckets = self._pool[slot]
        if day > newest:
            # The buckets of the days in between now stand for new days: empty them.
            if day - newest >= self.days:
                buckets[:] = 0.0
            else:
                buckets[:, np.arange(newest + 1, day + 1) % self.days] = 0.0
            self._newest[slot] = day
        elif newest - day >= self.days:
            return  # older than any window: its bucket already holds a newer day
        buckets[row, day % self.days] += amount
        self._advance(day)

    def read_counts(
        self, keys: Sequence[str], events: Sequence[str], today: int, days: int
    ) -> np.ndarray:
        if not 1 <= days <= self.days:
            raise ValueError(f"this state keeps {self.days} day buckets; {days} were asked")
        rows = np.array([self._row(event) for event in events], dtype=np.intp)
        get = self._slots.get
        slots = np.array([get(key, -1) for key in keys], dtype=np.intp)
        present = slots >= 0
        if not present.all():
            out = np.zeros((len(keys), len(rows), days))
            if present.any():
                out[present] = self._gather(slots[present], rows, today, days)
            return out
        return self._gather(slots, rows, today, days)

    def _gather(self, slots: np.ndarray, rows: np.ndarray, today: int, days: int) -> np.ndarray:
        newest = self._newest[slots]
        wanted = today - days + 1 + np.arange(days)
        # A bucket holds the wanted day if that day is no newer than the key's newest day
        # and no further back than the ring reaches.
        holds = (wanted <= newest[:, None]) & (newest[:, None] - wanted < self.days)
        # take() copies whole rows: several times faster than one three-array fancy index.
        gathered = self._pool.take(slots, axis=0)[:, rows]
        # The wanted days sit at consecutive ring positions: one slice, or two if they wrap.
        first = int(wanted[0] % self.days)
        if first + days <= self.days:
            gathered = gathered[:, :, first : first + days]
        else:
            wrapped = first + days - self.days
            gathered = np.concatenate((gathered[:, :, first:], gathered[:, :, :wrapped]), axis=2)
        return np.multiply(gathered, holds[:, None, :], dtype=np.float64)

    def _row(self, event: str) -> int:
        try:
            return self._event_rows[event]
        except KeyError:
            raise ValueError(
                f"event {event!r} is not counted here; events: {self.events}"
            ) from None

    def _allocate(self, key: str, day: int) -> int:
        if not self._free:  # double the pool: amortised, and reads stay one gather
            size = len(self._newest)
            self._pool = np.concatenate([self._pool, np.zeros_like(self._pool)])
            self._newest = np.concatenate([self._newest, np.zeros_like(self._newest)])
            self._free = list(range(2 * size - 1, size - 1, -1))
        slot = self._free.pop()
        self._pool[slot] = 0.0
        self._newest[slot] = day
        self._slots[key] = slot
        return slot

    def _advance(self, day: int) -> None:
        """On a new day, free the counter keys whose every bucket fell out of the window."""
        if self._newest_day is not None and day <= self._newest_day:
            return
        self._newest_day = day
        newest = self._newest
        stale = [key for key, slot in self._slots.items() if day - newest[slot] >= self.days]
        for key in stale:
            self._free.append(self._slots.pop(key))

    # -- hashes and vectors ---------------------------------------------------------------

    def get_hashes(self, keys: Sequence[str]) -> list[Mapping[str, HashValue] | None]:
        get = self._hashes.get
        return [get(key) for key in keys]

    def update_hash(self, key: str, values: Mapping[str, HashValue]) -> None:
        self._hashes.setdefault(key, {}).update(values)

    def delete_fields(self, key: str, fields: Iterable[str]) -> None:
        stored = self._hashes.get(key, {})
        for name in fields:
            stored.pop(name, None)

    def get_vectors(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        get = self._vectors.get
        return [get(key) for key in keys]

    def set_vector(self, key: str, vector: np.ndarray) -> None:
        self._vectors[key] = np.array(vector, dtype=np.float32)

    def read_batch(self, reads: BatchRead) -> BatchResult:
        """A request's reads at once (:class:`BatchReader`), as Redis answers them."""
        return read_by_parts(self, reads)

    # -- memory ---------------------------------------------------------------------------

    def memory_report(self) -> MemoryReport:
        """Entries and bytes per item, per user, per category and for the global counters."""
        entries: dict[tuple[str, str], int] = {}
        sizes: dict[tuple[str, str], int] = {}

        def count(key: str, n: int, nbytes: int) -> None:
            owner = owner_of(key)
            entries[owner] = entries.get(owner, 0) + n
            sizes[owner] = sizes.get(owner, 0) + nbytes

        for key, slot in self._slots.items():
            buckets = self._pool[slot]
            count(key, int(np.count_nonzero(buckets)), buckets.nbytes)
        for key, fields in self._hashes.items():
            nbytes = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in fields.items())
            count(key, len(fields), nbytes)
        for key, vector in self._vectors.items():
            count(key, 1, vector.nbytes)
        by_kind: dict[str, list[tuple[int, int]]] = {}
        for owner, n in entries.items():
            by_kind.setdefault(owner[0], []).append((n, sizes[owner]))
        return MemoryReport({kind: OwnerMemory.of(rows) for kind, rows in sorted(by_kind.items())})
