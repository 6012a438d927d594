"""Rebuilding Redis's durable records from the state journal (``streamrank state restore``).

The journal (:mod:`streamrank.streams.state.journal`) holds the registry's records (the
version counter, versions, artifacts, the signed pointer record, audit entries) and the
learner's checkpoint lists. A restore writes back the ones Redis lacks and leaves every record
Redis has alone: the registry writes the journal before Redis, so a record present in both is
the same record, or Redis's is the one a later write is about to journal; replacing it could
only go backwards. The one exception is the version counter, which takes the larger of the
two, so that a name the journal saw issued is never issued again.

Filling only what is missing makes a restore idempotent and safe to run at every start: on a
Redis that kept its data it changes nothing. Every registry record is checked as it is
restored (:meth:`~streamrank.models.registry.ModelRegistry.restore` verifies signatures and
hashes); one that does not verify stays out of Redis and is counted as failed.
:func:`backfill_journal` goes the other way, for records written while the journal was off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from streamrank.models.registry import Journal, ModelRegistry, PointerError, RegistryError
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import registry_for
from streamrank.streams.state.journal import (
    CHECKPOINTS,
    KafkaJournal,
    checkpoint_record_name,
    read_journal,
)
from streamrank.streams.state.layout import upgrade_key_layout
from streamrank.streams.state.user_sessions import Checkpoints, SessionStore

log = logging.getLogger(__name__)

COUNTER = "counter"

# Writes a restored list only where none exists, in one step: a worker that saved a new
# checkpoint meanwhile keeps its list.
RESTORE_LIST_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV))
return 1
"""


@dataclass
class KindCounts:
    """For one kind of record: how many the journal holds, Redis already had, were restored
    and failed (did not verify, or could not be written)."""

    journal: int = 0
    present: int = 0
    restored: int = 0
    failed: int = 0


@dataclass
class RestoreSummary:
    """What a restore found and did, per kind of record, and each problem in words."""

    kinds: dict[str, KindCounts] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def restored(self) -> int:
        return sum(counts.restored for counts in self.kinds.values())

    @property
    def failed(self) -> int:
        return sum(counts.failed for counts in self.kinds.values())

    def describe(self) -> str:
        """One line for a log: the records restored per kind, and how many failed."""
        parts = [f"{c.restored} {kind}" for kind, c in self.kinds.items() if c.restored]
        restored = ", ".join(parts) or "nothing"
        return f"restored {restored} from the state journal; {self.failed} failed to verify"


def kind_of(name: str) -> str:
    """A record's kind: its name up to the first ``/`` (``version/v3`` -> ``version``)."""
    return name.split("/", 1)[0]


def counter_value(raw: bytes | None) -> int:
    """The version counter's value (0 when absent or not a number, which restores it)."""
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def missing_records(journal: Mapping[str, bytes], present: Mapping[str, bytes]) -> dict[str, bytes]:
    """The journal's records that a restore writes: those Redis does not hold, plus the
    counter when the journal's is higher than Redis's.

    Examples
    --------
    >>> journal = {"counter": b"3", "version/v1": b"a", "version/v3": b"c", "pointers": b"p"}
    >>> sorted(missing_records(journal, {"counter": b"1", "version/v1": b"a", "pointers": b"q"}))
    ['counter', 'version/v3']
    """
    chosen = {name: value for name, value in journal.items() if name not in present}
    journal_ahead = counter_value(journal.get(COUNTER)) > counter_value(present.get(COUNTER))
    if COUNTER in journal and journal_ahead:
        chosen[COUNTER] = journal[COUNTER]
    return chosen


def count_by_kind(names: Iterable[str], into: dict[str, KindCounts], what: str) -> None:
    """Add one to ``into[kind].<what>`` for every name."""
    for name in names:
        counts = into.setdefault(kind_of(name), KindCounts())
        setattr(counts, what, getattr(counts, what) + 1)


def restore_state(
    settings: Settings,
    client: redis.Redis,
    dry_run: bool = False,
    journal: Mapping[str, bytes] | None = None,
    operator_key: bytes | None = None,
) -> RestoreSummary:
    """Write the journal's records that Redis lacks back into Redis; what was done, per kind.

    ``journal`` is the journal's state when the caller has read it already
    (:func:`~streamrank.streams.state.journal.read_journal`), else it is read here. With
    ``dry_run`` nothing is written: the summary counts what would be restored.
    ``operator_key`` verifies the pointer record and the audit entries (None: the workers'
    key, see :func:`~streamrank.streams.state.connections.registry_for`).
    """
    records = read_journal(settings) if journal is None else journal
    registry = registry_for(
        settings.model_copy(update={"journal_enabled": False}), client, operator_key
    )
    lists = {n: v for n, v in records.items() if kind_of(n) == CHECKPOINTS}
    present = dict(registry.records()) | existing_lists(client, lists)
    wanted = missing_records(records, present)
    summary = RestoreSummary(dry_run=dry_run)
    count_by_kind(records, summary.kinds, "journal")
    kept = (name for name in records if name in present and name not in wanted)
    count_by_kind(kept, summary.kinds, "present")
    if dry_run:
        count_by_kind(wanted, summary.kinds, "restored")
        return summary
    restore_registry(registry, {n: v for n, v in wanted.items() if n not in lists}, summary)
    wanted_lists = {n: v for n, v in wanted.items() if n in lists}
    restore_checkpoint_lists(settings, client, registry, wanted_lists, summary)
    return summary


def restore_registry(
    registry: ModelRegistry, wanted: Mapping[str, bytes], summary: RestoreSummary
) -> None:
    """Hand the registry's missing records to the registry, which verifies each; a record
    that is not in Redis afterwards did not verify."""
    if not wanted:
        return
    registry.restore(wanted.items())
    after = dict(registry.records())
    for name, value in wanted.items():
        counts = summary.kinds.setdefault(kind_of(name), KindCounts())
        if name == COUNTER:
            restored = counter_value(after.get(COUNTER)) >= counter_value(value)
        else:
            restored = name in after
        if restored:
            counts.restored += 1
        else:
            counts.failed += 1
            summary.problems.append(f"{name}: does not verify; left out of Redis")


def existing_lists(client: redis.Redis, lists: Mapping[str, bytes]) -> dict[str, bytes]:
    """The journal's checkpoint lists that Redis holds now (their values are not compared)."""
    return {name: b"" for name in lists if client.exists(name.removeprefix(f"{CHECKPOINTS}/"))}


def restore_checkpoint_lists(
    settings: Settings,
    client: redis.Redis,
    registry: ModelRegistry,
    wanted: Mapping[str, bytes],
    summary: RestoreSummary,
) -> None:
    """Write each missing checkpoint list back, and check that its checkpoints verify.

    A list is only written under the deployment's key prefix: the journal names the Redis key,
    and a record naming any other key did not come from this deployment. A list whose
    checkpoints do not all verify is restored anyway (loading skips those, as it always does)
    and counted as failed, with each bad checkpoint named.
    """
    script = client.register_script(RESTORE_LIST_SCRIPT)
    for name, value in wanted.items():
        counts = summary.kinds.setdefault(CHECKPOINTS, KindCounts())
        list_key = name.removeprefix(f"{CHECKPOINTS}/")
        try:
            entries = checkpoint_entries(value)
            if not list_key.startswith(settings.topic_prefix):
                raise ValueError(f"key outside this deployment's prefix {settings.topic_prefix!r}")
        except ValueError as error:
            counts.failed += 1
            summary.problems.append(f"{name}: {error}; not restored")
            continue
        if entries:
            script(keys=[list_key], args=[json.dumps(entry) for entry in entries])
        bad = unverified_checkpoints(registry, entries)
        summary.problems.extend(f"{name}: checkpoint {digest} does not verify" for digest in bad)
        if bad:
            counts.failed += 1
        else:
            counts.restored += 1


def checkpoint_entries(value: bytes) -> list[dict]:
    """A journaled checkpoint list: JSON, a list of pointer records each with a ``digest``."""
    try:
        entries = json.loads(value)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"not a JSON checkpoint list ({error})") from None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("digest"), str) for entry in entries
    ):
        raise ValueError("not a list of checkpoint records with digests")
    return entries


def unverified_checkpoints(registry: ModelRegistry, entries: list[dict]) -> list[str]:
    """The digests among ``entries`` whose artifact is missing or does not verify."""
    bad = []
    for entry in entries:
        try:
            registry.get_artifact(entry["digest"])
        except RegistryError:
            bad.append(entry["digest"])
    return bad


def restore_if_lost(
    settings: Settings, client: redis.Redis, operator_key: bytes | None = None
) -> RestoreSummary | None:
    """Restore what Redis lacks when its registry looks lost; None when it does not, or when
    the journal is empty.

    Workers call this at start and the registry commands before they act, so a Redis that
    came back empty is rebuilt before anything reads it, and ``models register`` continues
    the journal's numbering instead of starting again at ``v1``. The registry looks lost
    when nothing is under its prefix, or when it has no pointer record: every deployment
    that registered a version has one, and a restore by someone who cannot verify it (the
    CLI of an operator who presented no token) leaves it out, to be filled in by the next
    worker that starts, which holds the key. Any other partial loss is left to
    ``streamrank state restore``, so a start costs no journal read when Redis kept its data.
    Nothing is restored without a registry key or with the journal off.

    First of all, a single Redis still holding keys of the layout without hash tags has them
    renamed (:func:`~streamrank.streams.state.layout.upgrade_key_layout`, once per
    deployment): what they hold would otherwise look lost to this release.

    Raises
    ------
    JournalError
        When the registry looks lost and the journal cannot be read.
    """
    upgrade_key_layout(settings, client)
    if not settings.registry_key or not settings.journal_enabled:
        return None
    registry = registry_for(
        settings.model_copy(update={"journal_enabled": False}), client, operator_key
    )
    if not looks_lost(registry):
        return None
    records = read_journal(settings)
    if not records:
        return None
    return restore_state(settings, client, journal=records, operator_key=operator_key)


def looks_lost(registry: ModelRegistry) -> bool:
    """Whether the registry in Redis is empty or has no pointer record."""
    if registry.is_empty():
        return True
    try:
        return registry.pointers() is None
    except PointerError:
        return False  # there is one; whether it verifies is the workers' matter


def backfill_journal(
    settings: Settings, client: redis.Redis, journal: Journal | None = None
) -> dict[str, int]:
    """Write every record Redis holds and the journal lacks to the journal; counts per kind.

    Records written while the journal was off (``journal_enabled=False``, or a release
    without it) exist in Redis alone; this copies them, as they are (a restore verifies
    them), so that a later restore has them too. The version counter is copied when Redis's
    is higher. ``journal`` defaults to the deployment's Kafka journal.
    """
    records = read_journal(settings)
    writer = journal or KafkaJournal(settings)
    registry = registry_for(settings.model_copy(update={"journal_enabled": False}), client)
    in_redis = dict(registry.records())
    checkpoints = Checkpoints(SessionStore(client, settings), registry)
    if client.exists(checkpoints.list_key):
        name = checkpoint_record_name(checkpoints.list_key)
        in_redis[name] = json.dumps(checkpoints.records()).encode()
    written: dict[str, int] = {}
    for name, value in missing_records(in_redis, records).items():
        writer.write(name, value)
        written[kind_of(name)] = written.get(kind_of(name), 0) + 1
    return written


def journal_and_redis_counts(settings: Settings, client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per kind: (records in the journal, records of the journal's kinds in Redis)."""
    records = read_journal(settings)
    registry = registry_for(settings.model_copy(update={"journal_enabled": False}), client)
    in_redis: dict[str, KindCounts] = {}
    count_by_kind(dict(registry.records()), in_redis, "present")
    lists = {n: v for n, v in records.items() if kind_of(n) == CHECKPOINTS}
    count_by_kind(existing_lists(client, lists), in_redis, "present")
    in_journal: dict[str, KindCounts] = {}
    count_by_kind(records, in_journal, "journal")
    kinds = sorted(set(in_journal) | set(in_redis))
    return {
        kind: (
            in_journal.get(kind, KindCounts()).journal,
            in_redis.get(kind, KindCounts()).present,
        )
        for kind in kinds
    }
