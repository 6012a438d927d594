"""The feature store's state in Redis: :class:`RedisFeatureState`, the online twin of MemoryState.

It implements :class:`~streamrank.models.features.state.FeatureState`, so the agents feed it with
the same :class:`~streamrank.models.features.learn.FeatureLearner` and the ranker reads it with
the same :class:`~streamrank.models.features.vector.FeatureVector` as the offline code uses on a
:class:`~streamrank.models.features.state.MemoryState`: for the same events both give the same
matrix, missing values included.

Layout, every key under ``<deployment prefix>features:``, then a hash tag naming one of 16
buckets, then the library's key (:mod:`streamrank.models.features.keys`, ``<family>|<entity>``):
``streamrank.features:{f3.13}item|d1``. The bucket is the CRC-32 of the library key
(:mod:`streamrank.streams.state.buckets`). The layout is the same on a single Redis and on a
Redis Cluster; a batch read differs: on a cluster (which runs a script only on declared keys of
one slot) it runs one script per bucket with its keys as ``KEYS``; on a single Redis, one script
for the whole batch with the same names packed into two arguments (see :data:`NAMES`: passing
3,000 keys one argument each would cost the client more than the reads cost Redis).

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
pipeline of one script or ``MGET`` (on a cluster, one per bucket: at most 16, sent to the
masters at once). :meth:`RedisFeatureState.read_batch` reads a whole ranking request in one
pipeline: scripts read the items' fields (numbers parsed in Redis, sent as raw doubles) and sum
each counter's day buckets over the windows in Redis (only the sums cross the wire), and a
plain ``MGET`` reads the vectors.

With ``buffer_writes=True`` writes wait and go with the next read (on a cluster, the next read
of their slot) or :meth:`RedisFeatureState.flush`, so a learnt event costs a few round trips,
not one per write; a reader still sees every write made before its read.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import redis
from redis.cluster import key_slot
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
from streamrank.streams.state.buckets import (
    BUCKETS,
    Spread,
    bucket_tags,
    buckets_of,
    is_cluster,
    tagged,
)
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

NAMES = """
-- The keys: KEYS on a Redis Cluster (which routes a script by its declared keys and runs it
-- only on keys of one slot); on a single Redis, packed into ARGV[1] (the names end to end) and
-- ARGV[2] (their lengths in bytes, little-endian uint32), so a thousand keys travel as two
-- arguments, not a thousand: the client packs each argument in Python, which costs more than
-- the reads cost Redis. The names are the same either way (tags included); nothing is named
-- here. ARGV[1] and ARGV[2] are empty on a cluster.
local function names()
  if #KEYS > 0 then return KEYS end
  local joined, lengths = ARGV[1], ARGV[2]
  local out, at = {}, 1
  for i = 1, #lengths / 4 do
    local size = struct.unpack('<I4', lengths, 4 * i - 3)
    out[i] = string.sub(joined, at, at + size - 1)
    at = at + size
  end
  return out
end
"""

HGETALL_SCRIPT = (
    NAMES
    + """
-- Every key's fields and values, as one reply: one command instead of one per key.
local out = {}
for i, name in ipairs(names()) do out[i] = redis.call('HGETALL', name) end
return out
"""
)

COLUMNS_SCRIPT = (
    NAMES
    + """
-- Hashes (see names). ARGV[3]: how many number fields; ARGV[4...]: the number fields, then
-- the string fields. Returns {the numbers as little-endian doubles, key by key (NaN where
-- absent or a string), the string fields' raw values, key by key (nil where absent)}.
local numbers = tonumber(ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
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
-- Counter hashes (see names). ARGV[3]: today; ARGV[4]: how many events; then the events, then
-- the windows (days). Returns each key's sum of each event over each window ending today, as
-- little-endian doubles (key, event, window order): the sums cross the wire, not the day
-- buckets.
local today, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local windows, longest = {}, 0
for i = 5 + count, #ARGV do
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
    into[ARGV[4 + e] .. ':' .. (today - age)] = sums
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
"""A queued command: a script's name (or ``mget``) with its keys and arguments, or a client
method with its arguments."""

KEYED = frozenset({"hgetall_many", "columns", "window_sums", "mget"})
"""The batch reads: args are (Redis keys, of one slot on a cluster; further arguments)."""


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
    both give bit-identical matrices (whole counts below 2**24 are exact in both). On a
    ``RedisCluster`` client each batch read is split by bucket (see the module docstring).
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
        self.clustered = is_cluster(client)
        self._heads = tuple(prefix + tag for tag in bucket_tags(BUCKETS))
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
        ops = self._take_pending(reads) + reads
        results = self._pipeline(ops).execute(raise_on_error=False)
        missing = [n for n, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # A Redis lost our scripts (a restart, a promoted replica): load them everywhere
            # and run again only the scripts refused. A refused script wrote nothing, and the
            # commands that ran touched other keys (every op on a key goes to the one node
            # that refused), so the second run leaves the state one run would.
            for source in SCRIPTS.values():
                self.client.script_load(source)
            again = self._pipeline([ops[n] for n in missing]).execute(raise_on_error=False)
            for n, result in zip(missing, again, strict=True):
                results[n] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results[len(ops) - len(reads) :]

    def _take_pending(self, reads: list[Op]) -> list[Op]:
        """The queued writes to send with ``reads``: all of them, except on a cluster.

        A read must see every write queued before it to the keys it reads, and only those: on
        a cluster, writes to other slots stay queued (for a later read of their slot or
        :meth:`flush`), so a learnt event's read costs a round trip to the master it reads,
        not to every master a queued write waits for. On a single Redis it is one round trip
        either way.
        """
        if not self.clustered or not reads:
            pending, self._pending = self._pending, []
            return pending
        slots = {key_slot(op[1][0][0]) for op in reads}  # a read's keys share a slot
        sent: list[Op] = []
        kept: list[Op] = []
        for op in self._pending:  # every write's first argument is its one key
            (sent if key_slot(op[1][0].encode()) in slots else kept).append(op)
        self._pending = kept
        return sent

    def _pipeline(self, ops: list[Op]) -> Any:
        pipe = self.client.pipeline(transaction=False)
        for name, args, kwargs in ops:
            if name == "add":
                pipe.evalsha(_SHAS[name], 1, *args)
            elif name == "mget":  # not pipe.mget: a cluster pipeline refuses that name
                pipe.execute_command("MGET", *args[0])
            elif name in KEYED:
                keys, argv = args
                if self.clustered:
                    pipe.evalsha(_SHAS[name], len(keys), *keys, b"", b"", *argv)
                else:  # see NAMES
                    pipe.evalsha(_SHAS[name], 0, *_joined(keys), *argv)
            else:
                getattr(pipe, name)(*args, **kwargs)
        return pipe

    def redis_key(self, state_key: str) -> str:
        """The Redis key of a library key: prefix, bucket tag, key (one command's key)."""
        return self._heads[zlib.crc32(state_key.encode()) % BUCKETS] + state_key

    def _spread(self, state_keys: Sequence[str]) -> tuple[Spread, list[list[str]]]:
        """The Redis keys of a batch in the groups one command may take, and how to merge."""
        names = tagged(self.prefix, state_keys, BUCKETS)
        if not self.clustered:
            return Spread(None), [names]
        spread = Spread.of(buckets_of(state_keys, BUCKETS), grouped=True)
        return spread, spread.parts(names)

    def _keyed(
        self, name: str, state_keys: Sequence[str], argv: tuple[Any, ...] = ()
    ) -> tuple[Spread, list[Op]]:
        """A batch read of ``state_keys`` as its ops: one per group."""
        spread, parts = self._spread(state_keys)
        return spread, [(name, (part, argv), {}) for part in parts]

    # -- counters -------------------------------------------------------------------------

    def add(self, key: str, event: str, day: int, amount: float = 1.0) -> None:
        self._check_event(event)
        args = (self.redis_key(key), event, int(day), repr(float(amount)), self.days)
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
        spread, ops = self._keyed("hgetall_many", keys)
        return spread.merge(self._execute(ops))

    # -- hashes and vectors ---------------------------------------------------------------

    def get_hashes(self, keys: Sequence[str]) -> list[Mapping[str, HashValue] | None]:
        return [_fields(flat) if flat else None for flat in self._hgetall(keys)]

    def update_hash(self, key: str, values: Mapping[str, HashValue]) -> None:
        if not values:
            return  # an empty hash and a missing one read the same
        mapping = {name: _encode(value) for name, value in values.items()}
        self._write(("hset", (self.redis_key(key),), {"mapping": mapping}))
        self._expire_user(key)

    def delete_fields(self, key: str, fields: Iterable[str]) -> None:
        names = list(fields)
        if names:
            self._write(("hdel", (self.redis_key(key), *names), {}))

    def get_vectors(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        spread, ops = self._keyed("mget", keys)
        return [_vector(raw) for raw in spread.merge(self._execute(ops))]

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
        parts: list[tuple[Spread, int]] = []  # each read's merge and how many replies it has

        def queue(name: str, state_keys: Sequence[str], argv: tuple[Any, ...] = ()) -> None:
            spread, queued = self._keyed(name, state_keys, argv)
            ops.extend(queued)
            parts.append((spread, len(queued)))

        fields = (*reads.numbers, *reads.strings)
        if reads.hashes:
            queue("hgetall_many", reads.hashes)
        if reads.columns and fields:
            queue("columns", reads.columns, (len(reads.numbers), *fields))
        vector_keys = [*reads.vectors, *reads.rows]
        if vector_keys:
            # A plain MGET: through a script each vector would be copied into Lua and out.
            queue("mget", vector_keys)
        counted = [(name, read) for name, read in reads.counters.items() if read.keys]
        for _, read in counted:
            queue(
                "window_sums",
                read.keys,
                (int(reads.today), len(read.events), *read.events, *read.windows),
            )
        replies = iter(self._execute(ops) if ops else [])
        merges = iter(parts)

        def take() -> tuple[Spread, list[Any]]:
            spread, count = next(merges)
            return spread, [next(replies) for _ in range(count)]

        hashes: list[Mapping[str, HashValue] | None] = []
        if reads.hashes:
            spread, got = take()
            hashes = [_fields(flat) if flat else None for flat in spread.merge(got)]
        size = len(reads.columns)
        numbers = np.full((len(reads.numbers), size), np.nan)
        strings: list[list[HashValue | None]] = [[None] * size for _ in reads.strings]
        if reads.columns and fields:
            spread, got = take()
            if reads.numbers:
                packed = spread.merge_rows([reply[0] for reply in got], 8 * len(reads.numbers))
                numbers = np.frombuffer(packed, dtype="<f8").reshape(size, -1).T.copy()
            flat = spread.merge_flat([reply[1] for reply in got], len(reads.strings))
            strings = _string_columns(flat, len(reads.strings))
        vectors: list[np.ndarray | None] = []
        matrix, present = stack_rows([])
        if vector_keys:
            spread, got = take()
            raws = spread.merge(got)
            vectors = [_vector(raw) for raw in raws[: len(reads.vectors)]]
            matrix, present = _vector_rows(raws[len(reads.vectors) :])
        counts = {
            name: np.zeros((0, len(read.events), len(read.windows)))
            for name, read in reads.counters.items()
        }
        for name, read in counted:
            shape = (len(read.keys), len(read.events), len(read.windows))
            spread, got = take()
            packed = spread.merge_rows(got, 8 * shape[1] * shape[2])
            counts[name] = np.frombuffer(packed, dtype="<f8").reshape(shape).copy()
        return BatchResult(hashes, numbers, strings, vectors, matrix, present, counts)

    def _check_windows(self, read: CounterRead) -> None:
        if not 1 <= max(read.windows) <= self.days or min(read.windows) < 1:
            raise ValueError(f"this state keeps {self.days} day buckets; {read.windows} were asked")
        for event in read.events:
            self._check_event(event)

    def set_vector(self, key: str, vector: np.ndarray) -> None:
        raw = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._write(("set", (self.redis_key(key), raw), {}))
        self._expire_user(key)

    def _expire_user(self, key: str) -> None:
        if self.user_ttl_s is not None and owner_of(key)[0] == "user":
            self._write(("expire", (self.redis_key(key), self.user_ttl_s), {}))

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
            chunk = names[offset : offset + batch]
            # the library key follows the bucket's tag; a key of the untagged layout (before
            # hash tags) has none and is reported as it is, until it expires or is deleted
            keys = [_untagged(name[start:].decode()) for name in chunk]
            pipe = self.client.pipeline(transaction=False)
            for name, state_key in zip(chunk, keys, strict=True):
                pipe.memory_usage(name, samples=0)
                if _is_vector(state_key):
                    pipe.exists(name)
                else:
                    pipe.hlen(name)
            results = pipe.execute()
            for n, state_key in enumerate(keys):
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


def move_untagged_keys(client: redis.Redis, prefix: str, batch: int = 1000) -> int:
    """Rename the keys of the layout without hash tags (``<prefix><library key>``) to their
    tagged names, once, on a single Redis; how many moved.

    For an upgrade step (:mod:`streamrank.streams.state.layout` runs such steps before a
    worker reads anything), with the old release's workers stopped. ``RENAME`` keeps each
    key's value and TTL; a key whose tagged name exists already (written by the new release)
    is left under its old name, to expire or be deleted. Without it the features fill again
    from the streams: the untagged keys are simply no longer read.
    """
    state = RedisFeatureState(client, prefix=prefix)
    start = len(prefix.encode())
    names = list(client.scan_iter(match=_glob_escape(prefix) + "[^{]*", count=batch))
    moved = 0
    for offset in range(0, len(names), batch):
        pipe = client.pipeline(transaction=False)
        for name in names[offset : offset + batch]:
            pipe.renamenx(name, state.redis_key(name[start:].decode()))
        moved += sum(map(int, pipe.execute()))
    return moved


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


def _joined(names: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Names end to end and their lengths in bytes (little-endian uint32), for :data:`NAMES`."""
    return b"".join(names), np.fromiter(map(len, names), "<u4", len(names)).tobytes()


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


def _untagged(rest: str) -> str:
    """The library key in what follows the prefix: after the tag (which holds no ``}``)."""
    return rest.partition("}")[2] if rest.startswith("{") else rest


def _is_counter(state_key: str) -> bool:
    return state_key.partition("|")[0].endswith("counts")


def _is_vector(state_key: str) -> bool:
    family = state_key.partition("|")[0]
    return family == "item:vector" or family.startswith("user:embedding:")


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
