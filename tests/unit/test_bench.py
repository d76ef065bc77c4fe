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
                                      "Redis": {"10000": dict(row, last_p50_ms=90.0, last_p99_ms=125.0)},
                                      "NATS": {"10000": {"absent": "nothing answers"}}}}}
    text = report.markdown(results)
    assert "| fan-out N=10,000 last p50 | 100.0 ms | 1.11× | – | ≤ 1.1× Redis | **missed** |" in text
    assert "| fan-out N=10,000 last p99 | 150.0 ms | 1.20× | – | ≤ 1.25× Redis | met |" in text
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


def test_http_responses_are_read_as_they_come():
    responses = wire.HttpResponses()
    sized = b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\n\r\nqueue"
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"4\r\n{\"id\r\n3\r\n\": 1\r\n0\r\n\r\n")
    assert responses.feed(sized[:30]) == []
    assert responses.feed(sized[30:] + chunked[:70]) == [(202, False)]
    assert responses.feed(chunked[70:-3]) == []  # the last chunk is not complete yet
    assert responses.feed(chunked[-3:] + sized) == [(201, True), (202, False)]
    with pytest.raises(ValueError):
        wire.HttpResponses().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_http_requests_and_event_streams():
    post = wire.http_post("/v1/items/classified", "ad é", "tok")
    head, _, body = post.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/items/classified HTTP/1.1\r\n") and b"Authorization: Bearer tok" in head
    assert body == "ad é".encode() and b"Content-Length: 5" in head
    assert wire.sse_subscribe("/sub").startswith(b"GET /sub HTTP/1.1\r\n")
    assert wire.sse_events(b"id: 8\nevent: classified\ndata: {}\n\nid: 9\nevent: x\ndata: {\"id\": 1}\n\n") == 2
    assert wire.sse_events(b"1a\r\n: notifd events\n\n\r\n") == 0


def test_prometheus_samples():
    text = ('# HELP notifd_database_seconds x\nnotifd_database_seconds_count 12.0\n'
            'notifd_bench_database_calls_total{query="mark_read"} 3.0\n')
    assert stats.prometheus_samples(text) == {
        "notifd_database_seconds_count": 12.0, 'notifd_bench_database_calls_total{query="mark_read"}': 3.0}


def test_the_tutorial_loop_of_a_sustained_read_client():
    from bench.readers import Record, TutorialClient

    record = Record()
    record.begin(start_ns=0, minutes=1)
    client = TutorialClient(7, "reader-7", "tok", record)
    assert client.greeting == b"hello reader-7 tok\r\n"
    assert client.received(b"OK\r\n", 1, 1) == b"notif\r\n"
    # Announced with `will send notifs`: counted as sent on entering; then stop_notif.
    assert client.received(b"will send notifs\r\nnotif: classified\r\n", 2, 2) == b"stop_notif\r\n"
    assert client.received(b"notif: classified\r\n", 3, 3) == b""  # raced stop_notif: skipped
    assert client.received(b"OK\r\n", 4, 4) == b"classified?\r\n"
    assert client.received(b"bench ad 3\r\nbench", 5, 5) == b"classified?\r\n"
    assert client.received(b" ad 4\r\n", 6, 6) == b"classified?\r\n"
    assert client.received(b"\r\n", 7, 7) == b"notif\r\n"
    assert client.received(b"will send notifs\r\n", 8, 8) == b""
    assert client.received(b"notif: classified\r\n", 9, 9) == b"stop_notif\r\n"  # pushed while listening
    assert list(record.reads) == [7, 3, 5, 7, 4, 6]
    assert list(record.notifs) == [7, 2, 3, 1, 7, 9, -1, 0]  # the second: no item read after it yet
    assert record.queries == [3] and record.empty == 1
    with pytest.raises(ConnectionError, match="ERR not allowed"):
        client.received(b"ERR not allowed\r\n", 10, 10)


def test_sustained_read_latencies_by_minute():
    from array import array

    from bench.sustained_read import minute_of, notification_latencies, read_latencies

    start = 1_000_000_000_000
    commits = [start, start + 61_000_000_000]  # seq 0 in the first minute, seq 1 in the second
    minutes_of = [minute_of(commit, start, 2) for commit in commits]
    assert minutes_of == [0, 1] and minute_of(start + 500_000_000_000, start, 2) == 1
    reads = array("q", [0, 0, start + 5_000_000,  # client 0 reads seq 0 after 5 ms
                        0, 0, start + 9_000_000,  # the same again: a duplicate
                        1, 1, commits[1] + 40_000_000,
                        1, 7, start])  # a seq never posted
    found = read_latencies(commits, minutes_of, 2, reads)
    assert found == {"by_minute": [[5.0], [40.0]], "duplicates": 1, "stray": 1}
    notifs = array("q", [0, start + 2_000_000, 0, 0, 1, commits[1], 1, 1, 1, start, -1, 0])
    assert notification_latencies(commits, minutes_of, 2, notifs) == {
        "by_minute": [[2.0], []], "on_entering": 1, "without_item": 1}


def test_syncs_are_counted_by_file():
    from bench.ingest import sync_counts

    trace = ("123 fdatasync(4</tmp/x/bench.db-wal>) = 0\n123 fdatasync(6</tmp/x>) = 0\n"
             "123 fsync(3</tmp/x/bench.db>) = 0\n123 +++ exited with 0 +++\n")
    assert sync_counts(trace) == {"wal": 1, "directory": 1, "database": 1}
    assert sync_counts("") == {}


def test_the_markdown_report_of_sustained_read_and_http():
    minute = {"minute": 1, "posts": 1200, "reads": 360_000, "unread": 0, "p50_ms": 30.0, "p99_ms": 250.0,
              "max_ms": 400.0, "notifications": 300, "notif_p50_ms": 12.0, "notif_p99_ms": 40.0, "queries": 720_000,
              "db_calls": 7200, "db_next_unread": 100, "db_mark_read": 5000, "db_catch_ups": 2000, "seconds": 60.0,
              "node_cpu_percent": [40.0]}
    setup = {"nodes": 1, "clients": 300, "posts": 1200, "rate": 20.0, "seconds": 60.0, "minutes": [minute],
             "queries": 720_000, "db_calls": 7200, "db_next_unread": 100, "db_mark_read": 5000, "db_catch_ups": 2000,
             "db_calls_per_read": 0.01, "db_calls_per_read_without_marks": 0.003, "db_answered_share": 100 / 720_000,
             "notif_p50_ms": 12.0, "notif_p99_ms": 40.0, "notifications_pushed": 300, "notifications_on_entering": 2,
             "unread": 0, "duplicates": 0, "node_cpu_percent": [40.0], "reader_processes": 2,
             "reader_cpu_percent": 30.0, "load_after": [0.5],
             "targets": {"read_p50": True, "read_p99": False, "db_share": True, "notif_p50": True}}
    row = {"last_p50_ms": 120.0, "last_p99_ms": 150.0, "first_p50_ms": 2.0, "server_cpu_ms_per_post": 80.0,
           "client_cpu_ms_per_post": 40.0, "missing": 0}
    posting = {"publishers": 50, "per_second": 4000.0, "latency_p50_ms": 10.0, "latency_p99_ms": 30.0,
               "statuses": {"201": 40_000}, "server_cpu_percent": 90.0, "client_cpu_percent": 30.0,
               "posts_per_transaction": 25.0, "database_call_ms": 2.0, "fdatasync_p50_ms": 0.4}
    results = {"sustained-read": {"clients": 300, "rate": 20.0, "setups": {"SQLite, 1 node": setup}},
               "http": {"subscriber_processes": 2, "versions": {},
                        "targets": {"notifd": {"5000": row}, "nchan": {"5000": dict(row, last_p50_ms=100.0)}},
                        "posting": {"notifd": posting, "nchan": dict(posting, per_second=9000.0)}}}
    text = report.markdown(results)
    assert "post→read p99, worst minute | 250.0 ms | – | – | ≤ 200 ms every minute | **missed** |" in text
    assert "client reads answered by the database | 0.01 % | – | – | ≤ 1 % | met |" in text
    assert "| 1 | 1,200 | 30.0 | 250.0 | 400.0 | 12.0 | 40.0 | 720,000 | 7,200 | 0.010 | 100 | 5,000 | 2,000 | 40 |" in text
    assert "| 120.0 ms, 1.20× nchan's 100.0 ms | – | – | ≤ 1.5× nchan | met |" in text
    assert "| 4,000/s, nchan (in memory) 9,000/s | – | – | ≥ 5,000/s | **missed** |" in text
