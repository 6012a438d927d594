"""``streamrank train``: train models from the logged traffic and register them as versions.

::

    streamrank train ranker [--features FILE] [--debias none|ips|position] [--window S]
                            [--holdout F] [--min-lists N] [--shadow] [--notes TEXT] [--json]

``train ranker`` reads the ``impressions`` and ``interactions`` topics from their beginning to
their end offsets at the start (no consumer group, nothing committed), joins them into graded
LambdaMART rows (:mod:`streamrank.models.learning.ranker_data`), trains on the older 80% of
the lists, reports held-out nDCG@10 of the new model and of the served order on the newest
20%, and registers the model with its feature set as a new version
(:func:`~streamrank.models.learning.ranker_versions.register_final_ranker`). Progress goes to
stderr and results to stdout; Kafka, Redis, LightGBM and the models are imported inside the
command, so mounting the group costs ``streamrank`` nothing.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from streamrank.streams.cli.helpers import (
    EXISTING_FILE,
    console,
    errors,
    fail,
    no_broker,
    open_registry,
    progress_bar,
)
from streamrank.streams.cli.operator import (
    WRONG_TOKEN,
    reading_registry,
    signing_registry,
    token_option,
)

DEBIAS_CHOICES = ("none", "ips", "position")
DEFAULT_DEBIAS = "position"
"""The treatment bench/train_ranker.py favours among those a registered model can use (see
docs/learning.md, "Training the final ranker")."""
POLL_MS = 500
STALL_S = 30.0
"""How long a topic may deliver nothing before its end offset before the read gives up."""


@click.group("train")
def train_group() -> None:
    """Train models from the logged traffic and register them as versions."""


@train_group.command("ranker")
@click.option(
    "--features",
    "features_file",
    type=EXISTING_FILE,
    default=None,
    help="feature set config, TOML or JSON [default: the built-in default feature set]",
)
@click.option(
    "--debias",
    type=click.Choice(DEBIAS_CHOICES),
    default=DEFAULT_DEBIAS,
    show_default=True,
    help="position-bias correction: none, ips (inverse propensity weights fitted by EM), "
    "position (LightGBM's unbiased lambdarank)",
)
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="seconds after serving an interaction still labels its list "
    "[default: STREAMRANK_CLICK_WINDOW_S, 300]",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.05, 0.5),
    default=0.2,
    show_default=True,
    help="newest share of the lists held out for early stopping and the figures",
)
@click.option(
    "--min-lists",
    type=click.IntRange(2),
    default=50,
    show_default=True,
    help="fewest logged lists with a click or better needed to train",
)
@click.option("--shadow", is_flag=True, help="add the new version to the shadow set")
@click.option("--notes", default="", help="free text shown by `models show`")
@token_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def ranker(
    features_file: Path | None,
    debias: str,
    window_s: float | None,
    holdout: float,
    min_lists: int,
    shadow: bool,
    notes: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Train the final ranker (LambdaMART) on logged impressions and the interactions after them.

    Labels per shown item: purchase 3, add to cart 2, click 1, else 0. Lists without a click
    are dropped, lists logged with another feature set skipped; both are counted.

    Example: streamrank train ranker --shadow
    """
    from streamrank.models.learning.ranker_data import build_training_data

    start = time.perf_counter()
    features = load_feature_set(features_file)
    settings, _, registry = open_registry()
    if shadow:  # a wrong token is refused now, not after minutes of training
        signing_registry(registry, token)
    window = window_s if window_s is not None else settings.click_window_s
    with progress_bar(errors, transient=True, disable=as_json) as bars:
        lists, outcomes, skipped = read_logs(settings, bars)
        data = build_training_data(
            lists, outcomes, features.digest, len(features.columns), window, holdout, debias
        )
    check_enough(settings, data, min_lists, skipped, digests(lists), features.digest)
    with console_status(errors, "training LambdaMART", as_json):
        model, metrics = fit(data, features)
    version = register(settings, registry, model, features, data, metrics, notes)
    if shadow:
        add_shadow(registry, version.version, token, debias)
    summary = {
        "version": version.version,
        "pipeline": version.pipeline,
        "parent": version.parent,
        "features_digest": features.digest,
        "debias": debias,
        "window_s": window,
        "metrics": metrics,
        "trees": model.num_trees,
        "shadow": shadow,
        "undecodable": skipped,
        "seconds": round(time.perf_counter() - start, 1),
    } | data.summary()
    report(summary, as_json)


# -- the steps ------------------------------------------------------------------------------


def load_feature_set(path: Path | None) -> Any:
    """The feature set in ``path`` (TOML or JSON), or the default one; a clear error if bad."""
    from streamrank.models.features.config import FeatureConfigError, FeatureSet
    from streamrank.models.features.defaults import default_features

    if path is None:
        return default_features()
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
        return FeatureSet.from_dict(data)
    except (ValueError, FeatureConfigError) as error:  # JSON, TOML and config errors alike
        fail(f"{path}: {error}", "fix the feature config (see docs/features.md)")


def read_logs(settings: Any, bars: Any) -> tuple[list[Any], list[Any], dict[str, int]]:
    """Every logged list and outcome on the topics now, and how many messages did not decode."""
    import numpy as np

    from streamrank.models.learning.ranker_data import LoggedList, Outcome
    from streamrank.streams.events import ContractError, Impression, decode, decode_interaction

    limits = settings.limits()
    skipped = {"impressions": 0, "interactions": 0}

    def logged(raw: bytes) -> LoggedList:
        try:
            event = Impression.model_validate_json(raw)
        except ValueError:  # the fast path refused it: decode() says why, or accepts it
            event = decode("impressions", raw, limits)
        vectors: Any = [item.features for item in event.items]
        # One float32 matrix, not a Python float per value: 100,000 lists fit in memory. Rows
        # of different lengths stay as they are, and the join counts the list malformed.
        with contextlib.suppress(ValueError):
            vectors = np.array(vectors, dtype=np.float32)  # None -> NaN
        items = tuple(
            (item.doc_id, item.position, vector)
            for item, vector in zip(event.items, vectors, strict=True)
        )
        return LoggedList(event.request_id, event.served_at, event.features_digest, items)

    def outcome(raw: bytes) -> Outcome:
        event = decode_interaction(raw, limits)
        return Outcome(event.request_id, event.doc_id, event.type, event.timestamp)

    found: dict[str, list[Any]] = {}
    for kind, parse in (("impressions", logged), ("interactions", outcome)):
        found[kind] = []
        for raw in read_topic(settings, kind, bars):
            try:
                found[kind].append(parse(raw))
            except (ContractError, ValueError):
                skipped[kind] += 1
    return found["impressions"], found["interactions"], skipped


def read_topic(settings: Any, kind: str, bars: Any) -> Iterator[bytes]:
    """The values of every message on the topic, from its start to its end offsets now."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from streamrank.streams.kafka.topics import UNREACHABLE

    topic = settings.topic(kind)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=settings.max_message_bytes,
            request_timeout_ms=30_000,
            # kafka-python checks CRC32C in pure Python without the optional crc32c package:
            # 40 of 47 s reading 20,000 impressions. A damaged record still fails its contract.
            check_crcs=False,
            **settings.kafka_client_options(),
        )
    except UNREACHABLE:
        no_broker(settings)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            fail(f"no topic {topic}", "create the topics: `streamrank topics create`")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        first, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        task = bars.add_task(f"reading {topic}", total=sum(end[tp] - first[tp] for tp in tps))
        yield from _until_end(consumer, end, lambda n: bars.advance(task, n))
    except KafkaError as error:
        fail(f"reading {topic} failed: {error}", "check that Kafka is up, then run it again")
    finally:
        consumer.close()


def _until_end(
    consumer: Any, end: dict[Any, int], advance: Callable[[int], None]
) -> Iterator[bytes]:
    """Poll until every partition's position reaches its end offset; values in order."""
    remaining = {tp for tp, offset in end.items() if consumer.position(tp) < offset}
    last = time.monotonic()
    while remaining:
        batches = consumer.poll(timeout_ms=POLL_MS, max_records=10_000)
        for tp, records in batches.items():
            kept = [r for r in records if r.offset < end[tp]]
            advance(len(kept))
            yield from (r.value for r in kept if r.value is not None)
            last = time.monotonic()
        remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
        if remaining and time.monotonic() - last > STALL_S:
            fail(
                f"no messages for {STALL_S:.0f} s before the end of {sorted(map(str, remaining))}",
                "check that Kafka is healthy, then run it again",
            )


def digests(lists: list[Any]) -> Counter[str]:
    """How many logged lists name each feature set."""
    return Counter(item.features_digest for item in lists)


def check_enough(
    settings: Any,
    data: Any,
    min_lists: int,
    skipped: dict[str, int],
    logged_with: Counter[str],
    digest: str,
) -> None:
    """Refuse to train without impressions, or on too few lists with a click."""
    counts = data.counts
    if counts.lists == 0:
        fail(
            f"no impressions on {settings.topic('impressions')}"
            + (f" ({skipped['impressions']} undecodable)" if skipped["impressions"] else ""),
            "run the workers with the feature store and its log on (STREAMRANK_FEATURE_STORE, "
            "STREAMRANK_FEATURE_LOG) and let them serve traffic first",
        )
    usable = data.train.n_lists + data.valid.n_lists
    if usable >= min_lists:
        return
    message = (
        f"only {usable} logged list(s) have a click or better (need {min_lists}): of "
        f"{counts.lists} impressions, {counts.no_positive} had no click, "
        f"{counts.foreign_digest} were logged with another feature set, "
        f"{counts.malformed} were malformed; {counts.late} interaction(s) came too late"
    )
    fix = (
        "let the workers serve longer (or widen --window, or lower --min-lists)"
        if counts.foreign_digest < counts.lists / 2
        else "pass the feature set the impressions were logged with (--features FILE)"
    )
    if counts.foreign_digest:
        named = ", ".join(f"{d} ({n})" for d, n in logged_with.most_common(3) if d != digest)
        message += f"; the impressions name feature set(s) {named}, training uses {digest}"
    fail(message, fix)


def fit(data: Any, features: Any) -> tuple[Any, dict[str, float]]:
    """The trained ranker and its held-out figures."""
    from streamrank.models.learning.ranker_data import heldout_ndcg, train_ranker

    model = train_ranker(data, feature_names=features.columns)
    metrics = heldout_ndcg(model, data.valid, data.propensities)
    metrics["valid_lists"] = float(data.valid.n_lists)
    return model, metrics


def register(
    settings: Any,
    registry: Any,
    model: Any,
    features: Any,
    data: Any,
    metrics: dict[str, float],
    notes: str,
) -> Any:
    """Register the model: the active version's pipeline (else the configured one), parent
    the active version."""
    from streamrank.models.learning.ranker_versions import register_final_ranker
    from streamrank.models.registry import PointerError, RegistryError

    try:
        active = reading_registry(settings, registry).active()
        pipeline = registry.get(active).pipeline if active else settings.pipeline
        return register_final_ranker(
            registry,
            model,
            features,
            pipeline=pipeline,
            parent=active,
            training_events=data.counts.joined,
            metrics=metrics,
            notes=notes or f"LambdaMART on {data.counts.joined} logged lists, debias {data.debias}",
        )
    except PointerError as error:
        fail(str(error), "set STREAMRANK_OPERATOR_TOKEN to the token the workers hold")
    except RegistryError as error:
        fail(f"version not registered: {error}", "check that Kafka and Redis are up, then retry")


def add_shadow(registry: Any, version: str, token: str | None, debias: str) -> None:
    from streamrank.models.registry import PointerError, RegistryError

    try:
        signing_registry(registry, token).add_shadow(
            version, reason=f"trained by `streamrank train ranker --debias {debias}`"
        )
    except PointerError:
        fail(
            f"{version} is registered but not a shadow: {WRONG_TOKEN}",
            f"`streamrank shadow add {version}` with the deployment's operator token",
        )
    except RegistryError as error:
        fail(
            f"{version} is registered but not a shadow: {error}",
            f"`streamrank shadow add {version}`",
        )


def console_status(target: Any, message: str, quiet: bool) -> Any:
    """A spinner on stderr while a step runs (nothing with ``--json``)."""
    from contextlib import nullcontext

    return nullcontext() if quiet else target.status(message)


def report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    counts, metrics = summary["counts"], summary["metrics"]
    console.print(
        f"read {counts['lists']} impressions and {counts['outcomes']} interactions; "
        f"{counts['joined']} lists with a click or better ({counts['no_positive']} without, "
        f"{counts['foreign_digest']} of another feature set, {counts['malformed']} malformed "
        f"skipped; {counts['late']} late interactions ignored)"
    )
    console.print(
        f"trained on {summary['train_lists']} lists ({summary['train_rows']} rows), "
        f"debias {summary['debias']}, {summary['trees']} trees, "
        f"in {summary['seconds']} s"
    )
    if "ndcg@10_model" in metrics:
        console.print(
            f"held-out nDCG@10 on the newest {summary['valid_lists']} lists: model "
            f"{metrics['ndcg@10_model']:.4f}, served order {metrics['ndcg@10_served']:.4f} "
            f"(inverse-propensity weighted: model {metrics['ips_ndcg@10_model']:.4f}, served "
            f"{metrics['ips_ndcg@10_served']:.4f})"
        )
    role = " (shadow)" if summary["shadow"] else ""
    console.print(f"registered {summary['version']}{role}, parent {summary['parent'] or '-'}")
