"""The feature store's state in Redis: :class:`RedisFeatureState`, the online twin of MemoryState.

It implements :class:`~streamrank.models.features.state.FeatureState`, so the agents feed it with
the same :class:`~streamrank.models.features.learn.FeatureLearner` and the ranker reads it with
the same :class:`~streamrank.models.features.vector.FeatureVector` as the offline code uses on a
:class:`~streamrank.models.features.state.MemoryState`: for the same events both give the same
matrix, missing values included.

Layout, every key under ``<deployment prefix>features:`` followed by the library's key
(:mod:`streamrank.models.features.keys`, ``<family>|<entity>``):

- a counter key is a hash of ``<event>:<day>`` fields (the count of that UTC day) and a
  ``newest`` field (its newest day). A Lua script adds to it atomically, drops an event older
  than the ring, deletes the days that leave the ring when a newer day arrives (so an active
  key holds at most ``days`` days per event) and refreshes its TTL of ``days + 1`` days (so an
  idle key vanishes);
- item and user fields (and the learner's statistics) are hashes; a number is stored as its
  ``repr`` (which reads back bit for bit), a string as ``s:<string>`` so that a category
  ``"12"`` stays a string;
- a vector is a string of raw float32 bytes.

Each batch read (``read_counts``, ``get_hashes``, ``get_vectors``) is one round trip: one
pipeline, or one ``MGET``. :meth:`RedisFeatureState.read_batch` reads a whole ranking request
in one pipeline: scripts read the items' fields (numbers parsed in Redis, sent as raw doubles)
and sum each counter's day buckets over the windows in Redis (only the sums cross the wire),
and a plain ``MGET`` reads the vectors.

With ``buffer_writes=True`` writes wait and go with the next read (or
:meth:`RedisFeatureState.flush`), so a learnt event costs a few round trips, not one per
write; a reader still sees every write made before its read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import redis
from redis.exceptions import NoScriptError

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import COUNTED_EVENTS, DAY_S
from streamrank.models.features.keys import owner_of
from streamrank.models.features.state import (
    BatchRead,
    BatchResult,
    CounterRead,
    HashValue,
    MemoryReport,
    OwnerMemory,
    stack_rows,
)
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key

NEWEST = "newest"
"""The field of a counter hash holding its newest day."""

STRING_TAG = b"s:"
"""Marks a stored string, so that a string never reads back as a number."""

ADD_SCRIPT = """
-- KEYS[1]: a counter hash. ARGV: event, day, amount, ring days, ttl seconds, counted events...
local day, days = tonumber(ARGV[2]), tonumber(ARGV[4])
local newest = tonumber(redis.call('HGET', KEYS[1], 'newest'))
if newest ~= nil and newest - day >= days then
  return 0  -- older than any window: the ring holds newer days
end
if newest == nil or day - newest >= days then
  redis.call('DEL', KEYS[1])  -- every stored day left the ring
  redis.call('HSET', KEYS[1], 'newest', day)
elseif day > newest then
  -- the days that leave the ring, every event of each
  local gone = {}
  for d = newest - days + 1, day - days do
    for i = 6, #ARGV do gone[#gone + 1] = ARGV[i] .. ':' .. d end
  end
  if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
  redis.call('HSET', KEYS[1], 'newest', day)
end
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1] .. ':' .. day, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

HGETALL_SCRIPT = """
-- Every key's fields and values, as one reply: one command instead of one per key.
local out = {}
for i, name in ipairs(KEYS) do out[i] = redis.call('HGETALL', name) end
return out
"""

NAMES = """
-- ARGV[1]: the key prefix; ARGV[2]: the keys without it, end to end; ARGV[3]: their lengths
-- in bytes, little-endian uint32. A thousand keys travel as three arguments, not a thousand
-- (packing arguments costs the client more than the reads cost Redis). The keys are named
-- inside the script, so the feature store needs one Redis, not a cluster.
local function names()
  local prefix, joined, lengths = ARGV[1], ARGV[2], ARGV[3]
  local out, at = {}, 1
  for i = 1, #lengths / 4 do
    local size = struct.unpack('<I4', lengths, 4 * i - 3)
    out[i] = prefix .. string.sub(joined, at, at + size - 1)
    at = at + size
  end
  return out
end
"""

COLUMNS_SCRIPT = (
    NAMES
    + """
-- Hashes (see names). ARGV[4]: how many number fields; ARGV[5...]: the number fields, then
-- the string fields. Returns {the numbers as little-endian doubles, key by key (NaN where
-- absent or a string), the string fields' raw values, key by key (nil where absent)}.
local numbers = tonumber(ARGV[4])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local nan = 0 / 0
local format = '<' .. string.rep('d', numbers)
local packed, strings = {}, {}
for k, name in ipairs(names()) do
  local values = redis.call('HMGET', name, unpack(fields))
  if numbers > 0 then
    local row = {}
    for j = 1, numbers do row[j] = tonumber(values[j]) or nan end
    packed[k] = struct.pack(format, unpack(row))
  end
  for j = numbers + 1, #fields do strings[#strings + 1] = values[j] end
end
return {table.concat(packed), strings}
"""
)

WINDOW_SUMS_SCRIPT = (
    NAMES
    + """
-- Counter hashes (see names). ARGV[4]: today; ARGV[5]: how many events; then the events,
-- then the windows (days). Returns each key's sum of each event over each window ending
-- today, as little-endian doubles (key, event, window order): the sums cross the wire, not
-- the day buckets.
local today, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local windows, longest = {}, 0
for i = 6 + count, #ARGV do
  windows[#windows + 1] = tonumber(ARGV[i])
  longest = math.max(longest, windows[#windows])
end
local width = #windows
local size = count * width
-- Each wanted field (an event and a day: '<event>:<day>' as the add script names it) and
-- the sums it adds to, found by one table look-up per stored field.
local into = {}
for e = 1, count do
  for age = 0, longest - 1 do
    local sums = {}
    for w = 1, width do
      if age < windows[w] then sums[#sums + 1] = (e - 1) * width + w end
    end
    into[ARGV[5 + e] .. ':' .. (today - age)] = sums
  end
end
local format = '<' .. string.rep('d', size)
local zeros = {}
for i = 1, size do zeros[i] = 0 end
local empty = struct.pack(format, unpack(zeros))
local out = {}
for k, name in ipairs(names()) do
  local flat = redis.call('HGETALL', name)
  local sums = nil
  for n = 1, #flat, 2 do
    local targets = into[flat[n]]
    if targets then
      if sums == nil then sums = {unpack(zeros)} end
      local value = tonumber(flat[n + 1])
      for t = 1, #targets do sums[targets[t]] = sums[targets[t]] + value end
    end
  end
  out[k] = sums and struct.pack(format, unpack(sums)) or empty
end
return table.concat(out)
"""
)

SCRIPTS = {
    "add": ADD_SCRIPT,
    "hgetall_many": HGETALL_SCRIPT,
    "columns": COLUMNS_SCRIPT,
    "window_sums": WINDOW_SUMS_SCRIPT,
}
"""The scripts, by the name a queued operation gives; run by their SHA-1, loaded when missing."""

_SHAS = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}

Op = tuple[str, tuple[Any, ...], dict[str, Any]]


class RedisFeatureState:
    """A :class:`~streamrank.models.features.state.FeatureState` in Redis.

    Parameters
    ----------
    client
        A synchronous redis-py client (bytes responses, the default).
    prefix
        Put before every key; :meth:`for_settings` uses the deployment's.
    days
        Day buckets per counter key: the longest window read, as for ``MemoryState``.
    events
        The event types counted.
    user_ttl_s
        When set, every write to a key owned by a user (fields, overlaps, embedding) refreshes
        an expiry of this many seconds, so users who stop coming stop costing memory. None:
        user keys live until deleted, as in ``MemoryState``.
    buffer_writes
        Queue writes until the next read or :meth:`flush` instead of sending each at once.

    Counts read back are rounded to float32, as ``MemoryState`` stores its buckets, so that
    both give bit-identical matrices (whole counts below 2**24 are exact in both).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "",
        days: int = 30,
        events: Sequence[str] = COUNTED_EVENTS,
        user_ttl_s: int | None = None,
        buffer_writes: bool = False,
    ) -> None:
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        self.client = client
        self.prefix = prefix
        self.days = days
        self.events = tuple(events)
        self.counter_ttl_s = int((days + 1) * DAY_S)
        self.user_ttl_s = user_ttl_s
        self.buffer_writes = buffer_writes
        self._pending: list[Op] = []

    @classmethod
    def for_settings(
        cls, settings: Settings, client: redis.Redis, features: FeatureSet, **options: Any
    ) -> RedisFeatureState:
        """The deployment's feature state, keeping ``features``' longest window."""
        prefix = key(settings, "features:")
        return cls(client, prefix=prefix, days=features.max_window_days, **options)

    # -- round trips ----------------------------------------------------------------------

    def flush(self) -> None:
        """Send the queued writes (one round trip); nothing when none wait."""
        if self._pending:
            self._execute([])

    def _write(self, op: Op) -> None:
        self._pending.append(op)
        if not self.buffer_writes:
            self.flush()

    def _execute(self, reads: list[Op]) -> list[Any]:
        """The queued writes then ``reads``, as one pipeline; the reads' results."""
        ops, self._pending = self._pending + reads, []
        try:
            results = self._pipeline(ops).execute()
        except NoScriptError:
            # Redis lost its scripts (a restart): load ours, run the batch again. The script
            # failed before writing, and every other write here sets a value, so a second
            # run leaves the same state.
            for source in SCRIPTS.values():
                self.client.script_load(source)
            results = self._pipeline(ops).execute()
        return results[len(ops) - len(reads) :]

    def _pipeline(self, ops: list[Op]) -> Any:
        pipe = self.client.pipeline(transaction=False)
        for name, args, kwargs in ops:
            if name == "add":
                pipe.evalsha(_SHAS[name], 1, *args)
            elif name == "hgetall_many":
                pipe.evalsha(_SHAS[name], len(args), *args)
            elif name in _SHAS:  # args: the keys (named in the script), then the rest
                joined, lengths = _joined(args[0])
                pipe.evalsha(_SHAS[name], 0, self.prefix, joined, lengths, *args[1])
            else:
                getattr(pipe, name)(*args, **kwargs)
        return pipe

    def _name(self, state_key: str) -> str:
        return self.prefix + state_key

    # -- counters -------------------------------------------------------------------------

    def add(self, key: str, event: str, day: int, amount: float = 1.0) -> None:
        self._check_event(event)
        args = (self._name(key), event, int(day), repr(float(amount)), self.days)
        self._write(("add", (*args, self.counter_ttl_s, *self.events), {}))

    def read_counts(
        self, keys: Sequence[str], events: Sequence[str], today: int, days: int
    ) -> np.ndarray:
        if not 1 <= days <= self.days:
            raise ValueError(f"this state keeps {self.days} day buckets; {days} were asked")
        for event in events:
            self._check_event(event)
        first = today - days + 1
        where = {
            f"{event}:{first + j}".encode(): (i, j)
            for i, event in enumerate(events)
            for j in range(days)
        }
        rows, columns, values = [], [], []
        for row, flat in enumerate(self._hgetall(keys)):
            for n in range(0, len(flat), 2):
                at = where.get(flat[n])
                if at is not None:
                    rows.append(row)
                    columns.append(at)
                    values.append(float(flat[n + 1]))
        out = np.zeros((len(keys), len(events), days), dtype=np.float32)
        if rows:
            events_at, days_at = zip(*columns, strict=True)
            out[rows, events_at, days_at] = values
        return out.astype(np.float64)

    def _check_event(self, event: str) -> None:
        if event not in self.events:
            raise ValueError(f"event {event!r} is not counted here; events: {self.events}")

    def _hgetall(self, keys: Sequence[str]) -> list[list[bytes]]:
        """Each key's fields and values, flat (name, value, name...): one script call."""
        if not keys:
            return []
        (stored,) = self._execute([("hgetall_many", tuple(self._name(k) for k in keys), {})])
        return stored

    # -- hashes and vectors ---------------------------------------------------------------

    def get_hashes(self, keys: Sequence[str]) -> list[Mapping[str, HashValue] | None]:
        return [_fields(flat) if flat else None for flat in self._hgetall(keys)]

    def update_hash(self, key: str, values: Mapping[str, HashValue]) -> None:
        if not values:
            return  # an empty hash and a missing one read the same
        mapping = {name: _encode(value) for name, value in values.items()}
        self._write(("hset", (self._name(key),), {"mapping": mapping}))
        self._expire_user(key)

    def delete_fields(self, key: str, fields: Iterable[str]) -> None:
        names = list(fields)
        if names:
            self._write(("hdel", (self._name(key), *names), {}))

    def get_vectors(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        (stored,) = self._execute([("mget", ([self._name(k) for k in keys],), {})])
        return [None if raw is None else np.frombuffer(raw, dtype=np.float32) for raw in stored]

    # -- one request's reads --------------------------------------------------------------

    def read_batch(self, reads: BatchRead) -> BatchResult:
        """A request's reads as one pipeline: one round trip, scripts summing windows in Redis.

        Gives what :func:`~streamrank.models.features.state.read_by_parts` gives on a
        ``MemoryState`` fed the same events (counts are summed as doubles here, so sums of
        whole counts, the only ones the learner makes, are exact in both).
        """
        for read in reads.counters.values():
            self._check_windows(read)
        ops: list[Op] = []
        if reads.hashes:
            ops.append(("hgetall_many", tuple(self._name(k) for k in reads.hashes), {}))
        fields = (*reads.numbers, *reads.strings)
        if reads.columns and fields:
            ops.append(("columns", (reads.columns, (len(reads.numbers), *fields)), {}))
        vector_keys = [*reads.vectors, *reads.rows]
        if vector_keys:
            # A plain MGET: through a script each vector would be copied into Lua and out.
            names = [self._name(k).encode() for k in vector_keys]
            ops.append(("mget", (names,), {}))
        counted = [(name, read) for name, read in reads.counters.items() if read.keys]
        for _, read in counted:
            argv = (int(reads.today), len(read.events), *read.events, *read.windows)
            ops.append(("window_sums", (read.keys, argv), {}))
        replies = iter(self._execute(ops) if ops else [])
        hashes = [_fields(flat) if flat else None for flat in next(replies)] if reads.hashes else []
        size = len(reads.columns)
        numbers = np.full((len(reads.numbers), size), np.nan)
        strings: list[list[HashValue | None]] = [[None] * size for _ in reads.strings]
        if reads.columns and fields:
            packed, flat = next(replies)
            if reads.numbers:
                numbers = np.frombuffer(packed, dtype="<f8").reshape(size, -1).T.copy()
            strings = _string_columns(flat, len(reads.strings))
        vectors: list[np.ndarray | None] = []
        matrix, present = stack_rows([])
        if vector_keys:
            raws = next(replies)
            vectors = [_vector(raw) for raw in raws[: len(reads.vectors)]]
            matrix, present = _vector_rows(raws[len(reads.vectors) :])
        counts = {
            name: np.zeros((0, len(read.events), len(read.windows)))
            for name, read in reads.counters.items()
        }
        for name, read in counted:
            shape = (len(read.keys), len(read.events), len(read.windows))
            counts[name] = np.frombuffer(next(replies), dtype="<f8").reshape(shape).copy()
        return BatchResult(hashes, numbers, strings, vectors, matrix, present, counts)

    def _check_windows(self, read: CounterRead) -> None:
        if not 1 <= max(read.windows) <= self.days or min(read.windows) < 1:
            raise ValueError(f"this state keeps {self.days} day buckets; {read.windows} were asked")
        for event in read.events:
            self._check_event(event)

    def set_vector(self, key: str, vector: np.ndarray) -> None:
        raw = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._write(("set", (self._name(key), raw), {}))
        self._expire_user(key)

    def _expire_user(self, key: str) -> None:
        if self.user_ttl_s is not None and owner_of(key)[0] == "user":
            self._write(("expire", (self._name(key), self.user_ttl_s), {}))

    # -- memory ---------------------------------------------------------------------------

    def memory_report(self, max_keys: int | None = None, batch: int = 1000) -> MemoryReport:
        """Entries and bytes (``MEMORY USAGE``) per item, per user, per category and global.

        An entry is a day of one event of a counter, a hash field or a vector, as in
        ``MemoryState.memory_report``; bytes are what Redis reports for the keys, overheads
        included. It scans every key under the prefix (an operator's tool, not for the request
        path); ``max_keys`` stops after that many, a sample.
        """
        self.flush()
        names: list[bytes] = []
        for name in self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=batch):
            names.append(name)
            if max_keys is not None and len(names) >= max_keys:
                break
        entries: dict[tuple[str, str], int] = {}
        sizes: dict[tuple[str, str], int] = {}
        start = len(self.prefix.encode())
        for offset in range(0, len(names), batch):
            chunk = [name[start:].decode() for name in names[offset : offset + batch]]
            pipe = self.client.pipeline(transaction=False)
            for state_key in chunk:
                name = self._name(state_key)
                pipe.memory_usage(name, samples=0)
                if _is_vector(state_key):
                    pipe.exists(name)
                else:
                    pipe.hlen(name)
            results = pipe.execute()
            for n, state_key in enumerate(chunk):
                nbytes, count = results[2 * n], results[2 * n + 1]
                if nbytes is None:
                    continue  # expired between the scan and the read
                if _is_counter(state_key):
                    count = max(count - 1, 0)  # the newest-day field is no entry
                owner = owner_of(state_key)
                entries[owner] = entries.get(owner, 0) + int(count)
                sizes[owner] = sizes.get(owner, 0) + int(nbytes)
        by_kind: dict[str, list[tuple[int, int]]] = {}
        for owner, n in entries.items():
            by_kind.setdefault(owner[0], []).append((n, sizes[owner]))
        return MemoryReport({kind: OwnerMemory.of(rows) for kind, rows in sorted(by_kind.items())})


def _encode(value: HashValue) -> bytes:
    if isinstance(value, str):
        return STRING_TAG + value.encode()
    return repr(float(value)).encode()  # repr round-trips a float exactly


def _fields(flat: list[bytes]) -> dict[str, HashValue]:
    """A hash from HGETALL's flat reply (name, value, name, value...)."""
    return {flat[n].decode(): _decode(flat[n + 1]) for n in range(0, len(flat), 2)}


def _decode(raw: bytes) -> HashValue:
    if raw.startswith(STRING_TAG):
        return raw[len(STRING_TAG) :].decode()
    return float(raw)


def _joined(keys: Sequence[str]) -> tuple[bytes, bytes]:
    """Keys end to end and their lengths in bytes (little-endian uint32), for :data:`NAMES`."""
    encoded = [k.encode() for k in keys]
    return b"".join(encoded), np.fromiter(map(len, encoded), "<u4", len(encoded)).tobytes()


def _string_columns(flat: list[bytes | None], width: int) -> list[list[HashValue | None]]:
    """Columns of raw values given key by key, decoded (each distinct value once)."""
    decoded: dict[bytes, HashValue] = {}
    columns = []
    for column in range(width):
        values: list[HashValue | None] = []
        for raw in flat[column::width]:
            if raw is None:
                values.append(None)
                continue
            value = decoded.get(raw)
            if value is None:
                value = decoded[raw] = _decode(raw)
            values.append(value)
        columns.append(values)
    return columns


def _vector(raw: bytes | None) -> np.ndarray | None:
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


def _vector_rows(raws: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Raw vectors as one matrix; when all are there and alike, one copy of the bytes."""
    if raws and all(raw is not None for raw in raws) and len({len(r) for r in raws}) == 1:  # type: ignore[arg-type]
        matrix = np.frombuffer(b"".join(raws), dtype=np.float32).reshape(len(raws), -1)  # type: ignore[arg-type]
        return matrix, np.ones(len(raws), dtype=bool)
    return stack_rows([_vector(raw) for raw in raws])


def _is_counter(state_key: str) -> bool:
    return state_key.partition("|")[0].endswith("counts")


def _is_vector(state_key: str) -> bool:
    family = state_key.partition("|")[0]
    return family == "item:vector" or family.startswith("user:embedding:")


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
