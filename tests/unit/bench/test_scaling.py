"""The arithmetic of bench/scaling.py: counter windows, the idle baseline taken off at the busy
window's length, per-unit figures, Kafka bytes per unit and a shard's capacity from a mix
(no worker, no broker, no Redis)."""

from __future__ import annotations

import pytest

from bench.scaling import (
    Sample,
    Window,
    kafka_per_unit,
    net_of_idle,
    parse,
    per_unit,
    rate_from,
    shard_capacity,
    topic_kind,
    window,
)


def test_window_leaves_out_the_bench_own_info_calls() -> None:
    before = Sample(0.0, {"info": 3, "get": 1}, 0, 0, 0.0, 0.0)
    after = Sample(2.0, {"info": 6, "get": 4, "hgetall": 10}, 10, 20, 0.1, 0.5)
    assert window(before, after).calls == {"get": 3, "hgetall": 10}


def test_idle_baseline_is_scaled_to_the_busy_window_length() -> None:
    # 4 idle polls a second; a 30 s busy window of 100 requests holds 120 of them
    idle = Window(10.0, {"evalsha": 40}, 4000, 1000, 0.2, 1.0)
    busy = Window(30.0, {"evalsha": 120, "hgetall": 2000}, 112_000, 53_000, 1.6, 53.0)
    net = net_of_idle(busy, idle)
    assert net.calls == {"evalsha": 0.0, "hgetall": 2000.0}
    assert net.net_in == pytest.approx(100_000)
    assert net.net_out == pytest.approx(50_000)
    assert net.worker_cpu_s == pytest.approx(50.0)
    assert net.redis_cpu_s == pytest.approx(1.0)
    figures = per_unit(net, 100)
    assert figures["redis_commands"] == 20.0
    assert figures["worker_cpu_s"] == 0.5
    assert figures["per_core_per_s"] == 2.0
    assert figures["redis_cpu_ms"] == 10.0


def test_an_empty_idle_window_subtracts_nothing() -> None:
    busy = Window(5.0, {"get": 10}, 100, 200, 0.1, 1.0)
    assert net_of_idle(busy, Window(0.0, {}, 0, 0, 0.0, 0.0)) == Window(
        5.0, {"get": 10.0}, 100.0, 200.0, 0.1, 1.0
    )


def test_per_unit_has_no_rate_for_no_cpu() -> None:
    assert per_unit(Window(1.0, {}, 0, 0, 0.0, -0.2), 10)["per_core_per_s"] is None


def test_kafka_bytes_per_unit_sum_every_topic() -> None:
    written = {
        "candidates": {"records": 4, "bytes": 4_000_000},
        "rankings": {"records": 4, "bytes": 400_000},
        "__consumer_offsets": {"records": 2, "bytes": 200},
    }
    figures = kafka_per_unit(written, 4)
    assert figures["candidates"] == {"records": 1.0, "bytes": 1_000_000.0}
    assert figures["__consumer_offsets"]["records"] == 0.5
    assert figures["total_bytes"] == 1_100_050.0


def test_topic_kind_and_rate() -> None:
    assert topic_kind("run-1.impressions", "run-1.") == "impressions"
    assert topic_kind("other.rankings", "run-1.") == "other.rankings"
    assert rate_from([0.0, 1.0, 2.0, 4.0]) == 0.75
    assert rate_from([1.0, 1.0]) is None


def test_shard_capacity_weights_each_command_by_its_count() -> None:
    capacity = shard_capacity({"hgetall": 2000.0, "evalsha": 2.0}, {"hgetall": 200_000.0})
    assert capacity["requests_per_s"] == 100.0
    assert capacity["mix_covered"] == pytest.approx(2000 / 2002, abs=1e-3)
    assert shard_capacity({"zrange": 3.0}, {})["requests_per_s"] is None


def test_parse_refuses_unknown_phases_and_sizes() -> None:
    assert parse([]).only == ["models", "request", "interactions", "throughput"]
    with pytest.raises(SystemExit):
        parse(["--only", "models,nope"])
    with pytest.raises(SystemExit):
        parse(["--saturate", "1"])
