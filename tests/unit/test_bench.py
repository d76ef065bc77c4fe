"""The benchmark's pure helpers (bench/stats.py, bench/wire.py, bench/report.py); the benchmark itself is not a test."""
from __future__ import annotations

import math
import sys

import pytest

from bench import report, stats, wire


def test_percentiles():
    assert math.isnan(stats.percentile([], 50))
    assert stats.percentile([7], 99) == 7
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile(list(range(101)), 99) == 99
    assert stats.percentile([3, 1, 2], 100) == 3


def test_ratios():
    assert stats.ratio(120, 100) == 1.2
    assert stats.ratio(None, 100) is None and stats.ratio(1, 0) is None and stats.ratio(math.nan, 1) is None
    assert stats.format_ratio(1.234) == "1.23×" and stats.format_ratio(None) == "–"


def test_proc_parsing():
    line = "1234 (redis server) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0"
    assert stats.proc_cpu_seconds(line, 100) == 3.0
    assert stats.proc_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n") == 2048
    with pytest.raises(ValueError):
        stats.proc_rss_kib("Name:\tx\n")


def test_sustained_latencies_take_the_first_notification_after_each_commit():
    commits = [100, 200, 300]
    receipts = [[150, 260], [110, 400]]  # two clients
    worst, unheard = stats.sustained_latencies(commits, receipts)
    assert worst == [50, 200, 100] and unheard == [0, 0, 1]


def test_sustained_latencies_without_numpy_agree(monkeypatch):
    commits = [100, 200, 300, 400]
    receipts = [[150, 260, 399], [110, 401], []]
    expected = stats.sustained_latencies(commits, receipts)
    monkeypatch.setitem(sys.modules, "numpy", None)  # the pure-Python loop
    assert stats.sustained_latencies(commits, receipts) == expected == ([50, 201, 101, 1], [1, 1, 1, 2])


def test_mqtt_packets():
    assert wire._remaining_length(127) == b"\x7f" and wire._remaining_length(128) == b"\x80\x01"
    publish = wire.mqtt_publish()
    assert wire.mqtt_publishes(publish * 3) == 3
    assert wire.mqtt_publishes(wire.MQTT_CONNACK + wire.mqtt_suback()) == 0
    assert wire.mqtt_connect("c1")[0] == 0x10


def test_redis_and_nats_replies():
    assert wire.redis_receivers(b":10000\r\n") == 10000
    with pytest.raises(ValueError):
        wire.redis_receivers(b"-ERR max clients\r\n")
    assert wire.redis_subscribed(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n")
    assert not wire.redis_subscribed(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbe")
    assert wire.nats_messages(b"MSG bench 1 17\r\nnotif: classified\r\nPING\r\n") == 1
    assert wire.nats_pings(b"PING\r\nPING\r\n") == 2
    assert wire.decode_command(wire.encode_command("arm", n=1)) == {"cmd": "arm", "n": 1}


def test_the_markdown_report_without_matplotlib():
    row = {"last_p50_ms": 100.0, "last_p99_ms": 150.0, "first_p50_ms": 2.0, "server_cpu_ms_per_post": 80.0,
           "client_cpu_ms_per_post": 40.0, "memory_kib_per_client": 1.5, "missing": 0}
    results = {"fanout": {"ack": "round", "subscriber_processes": 2, "load_before": [0.1], "load_after": [0.2],
                          "targets": {"notifd": {"10000": row},
                                      "Redis": {"10000": dict(row, last_p50_ms=90.0, last_p99_ms=100.0)},
                                      "NATS": {"10000": {"absent": "nothing answers"}}}}}
    text = report.markdown(results)
    assert "| fan-out N=10,000 last p50 | 100.0 ms | 1.11× | – | ≤ 1.2× Redis | met |" in text
    assert "| fan-out N=10,000 last p99 | 150.0 ms | 1.50× | – | ≤ 1.5× Redis | met |" in text
    assert "| NATS | 10,000 | absent |" in text
    assert "matplotlib" not in sys.modules  # the suite never imports it


@pytest.mark.parametrize("peer", ["Redis", "Nats", "Mosquitto"])
def test_a_peer_that_is_not_running_is_reported_absent(peer):
    import socket

    from bench import targets

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        target = getattr(targets, peer)()
        target.port = probe.getsockname()[1]
        with pytest.raises(targets.Absent):
            target.start()
