"""speed-aggregator end to end: the hub, Redis and the aggregator as real processes.

- The windows equal an independent Python computation over the same real feeds (a USGS summary
  feed, sent as events or replayed through the ingestor, and a day of the earthquakes-feed
  revision log with revisions and merges); the rolling hour too.
- The Lambda invariant: every hour's sum of 5-minute windows equals the batch layer's hourly row
  (batch-worker over the hub's own Capture files of the same input), and the test's own hourly
  reference.
- Live messages arrive on the documented channels and validate against proto/live.schema.json.
- Crash: kill -9 at random points during a replay of 50,000 events, restart each time: the final
  Redis state equals a clean run's exactly. Two replicas: one is killed, the other takes over.
- Poison events go to the dead-letter list and never stop the partition.
- A Redis outage mid-stream: the aggregator waits and resumes exactly; alerts reach a webhook
  through a failure (retried).
- Region moves (docs/changes.md): two replicas own the old and the new region of moved events;
  whichever of the `moved` message and the revision is applied first, the windows equal the
  reference exactly and the raw events and alerts follow the newest version.
"""
import json
import os
import random
import socket
import subprocess
import threading
import time
import zlib

import pytest

from conftest import ROOT
from speed_support import (FIELDS, HUB, capture_hub, committed_events, dump_state, hgetall, hub_totals,
                           make_event, micro, moves_in, redis_windows, reference_windows,
                           region_of, revision_events, send, synthetic_events, usgs_events,
                           with_moves)


def start_speed(start_service, hub, redis, **extra):
    env = {"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "REDIS_URL": redis.url,
           "PARTITION_IDLE": "1h", "LEASE_TTL": "2s", "BATCH_INTERVAL": "20ms",
           # The reference feeds are older than the default retention (30 d) of this clock.
           "RETENTION_WINDOWS": "366d", "RETENTION_EVENTS": "366d"}
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
    detail = ""
    if svc is not None:
        try:
            metrics = svc.get("/metrics")[2].decode()
            detail = "\n".join(x for x in metrics.splitlines()
                               if x.startswith("quakestream_speed") and "_bucket" not in x)
        except Exception as e:  # noqa: BLE001 (diagnostics only)
            detail = f"(no metrics: {e})"
        detail += "\n" + "\n".join(svc.lines[-30:])
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


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
    # The rolling hour (ROLLING_CLOCK=event): (newest event time - 1 h, newest event time].
    _, latest = reference_windows(events)
    end = max(e["time"] for e in latest.values())
    hour = [e for e in latest.values() if end - 3_600_000 < e["time"] <= end]
    mags = [micro(e["magnitude"]) for e in hour if e["magnitude"] is not None]
    want = {"window_end": end, "event_count": len(hour),
            "avg_magnitude": sum(mags) / len(mags) / 1e6 if mags else None,
            "max_magnitude": max(mags) / 1e6 if mags else None}

    def rolling():
        raw = redis_server.cli("GET", "qs:rt:rolling").strip()
        return json.loads(raw) if raw else {}
    wait_until(lambda: {k: rolling().get(k) for k in want} == want, 30, f"rolling {want}", svc)
    # Raw events: the latest revision of every event, indexed by time.
    assert int(redis_server.cli("HLEN", "qs:ev")) == len({e["event_id"] for e in events})
    assert int(redis_server.cli("ZCARD", "qs:ev:idx")) == len({e["event_id"] for e in events})


def test_revisions_and_merges_of_a_real_revision_log_retract_exactly(start_service, hub_server,
                                                                     redis_server):
    events = revision_events()
    if events is None:
        pytest.skip("../shared/data absent")
    assert moves_in(events) >= 1, "the real log moves an event between regions"
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
               make_event("lv2", 2.0, t0 + 5, t0 + 9, 61.0, -150.0, 10.0, change="deleted"),
               make_event("lv3", 6.5, t0 + 7, t0 + 8, 61.0, -150.0, 10.0),
               make_event("lv3", 6.5, t0 + 7, t0 + 10, 61.0, -150.0, 10.0, change="superseded",
                          superseded_by="lv1")]
        send(evs, hub_server.connection_string)
        seen, msgs = set(), []
        deadline = time.monotonic() + 30

        def retracted():  # lv3's spike, raised and then retracted by the supersede
            return [m for m in msgs if m["type"] == "alert" and m["data"]["retracted"]]
        while seen != {"window", "alert", "event", "event_removed", "rolling"} or not retracted():
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
        assert [m["data"]["id"] for m in retracted()] == ["MAGNITUDE_SPIKE|lv3"]
        removed = {m["data"]["event_id"]: m["data"]["reason"] for m in msgs
                   if m["type"] == "event_removed"}
        assert removed == {"lv2": "deleted", "lv3": "superseded"}
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


def test_ready_only_with_redis_and_hub(start_service, hub_server, redis_server):
    svc = start_speed(start_service, hub_server, redis_server)
    wait_until(lambda: svc.get("/readyz")[0] == 200, 30, "ready", svc)
    redis_server.stop()
    wait_until(lambda: svc.get("/readyz")[0] == 503, 30, "not ready without redis", svc)
    status, _, body = svc.get("/readyz")
    assert "redis" in body.decode()


def lease_owners(redis):
    out = {}
    for p in range(4):
        out[p] = redis.cli("GET", f"qs:lease:{HUB}:$Default:{p}").strip()
    return out


# A small cache: state is evicted and re-read from Redis during the run (exercises reloads).
CRASH_ENV = {"BATCH_EVENTS": "100", "PREFETCH": "100", "QUEUE_MAX": "500", "LEASE_TTL": "1s",
             "CACHE_MAX": "2000"}


def state_diff(clean, other):
    """Differences as (key, field, clean value, other value), JSON rows compared field by field."""
    out = []
    for k in sorted(set(clean) | set(other)):
        a, b = clean.get(k), other.get(k)
        if a == b:
            continue
        try:
            ja, jb = json.loads(a), json.loads(b)
            fields = {f for f in set(ja) | set(jb) if ja.get(f) != jb.get(f)}
            out.append((k, {f: (ja.get(f), jb.get(f)) for f in fields}))
        except (TypeError, ValueError):
            out.append((k, a, b))
    return out


def clean_run(start_service, hub, redis):
    svc = start_speed(start_service, hub, redis, **CRASH_ENV)
    wait_all_committed(hub, redis, svc, timeout=300)
    state = dump_state(redis)
    svc.signal(__import__("signal").SIGTERM)
    assert svc.wait(timeout=20) == 0
    return state


def test_kill_9_during_replay_resumes_to_the_clean_state(start_service, hub_server, redis_server,
                                                         tmp_path):
    from conftest import RedisServer
    events = synthetic_events(50_000, seed=11)
    send(events, hub_server.connection_string)
    total = hub_totals(hub_server.connection_string)
    assert total == 50_000
    (tmp_path / "clean").mkdir()
    clean_redis = RedisServer(tmp_path / "clean")
    try:
        clean = clean_run(start_service, hub_server, clean_redis)
    finally:
        clean_redis.stop()
    rng = random.Random(5)
    kills_mid_stream = 0
    for frac in (0.1, 0.3, 0.5, 0.7, 0.85):
        svc = start_speed(start_service, hub_server, redis_server, **CRASH_ENV)
        target = int(total * (frac + rng.uniform(-0.05, 0.05)))
        wait_until(lambda: committed_events(redis_server) >= target, 300, f"{target} committed",
                   svc)
        svc.proc.kill()  # SIGKILL: no final commit, no lease release
        svc.proc.wait()
        if committed_events(redis_server) < total:
            kills_mid_stream += 1
    assert kills_mid_stream >= 3
    svc = start_speed(start_service, hub_server, redis_server, **CRASH_ENV)
    wait_all_committed(hub_server, redis_server, svc, timeout=300)
    crashed = dump_state(redis_server)
    diff = state_diff(clean, crashed)
    assert not diff, (len(diff), diff[:8])
    # And both equal the independent computation.
    assert_windows_equal_reference(redis_server, events)


def test_second_replica_takes_over_a_killed_replicas_partitions(start_service, hub_server,
                                                                redis_server, tmp_path):
    from conftest import RedisServer
    events = synthetic_events(20_000, seed=23)
    send(events, hub_server.connection_string)
    total = hub_totals(hub_server.connection_string)
    (tmp_path / "clean").mkdir()
    clean_redis = RedisServer(tmp_path / "clean")
    try:
        clean = clean_run(start_service, hub_server, clean_redis)
    finally:
        clean_redis.stop()
    a = start_speed(start_service, hub_server, redis_server, REPLICA_ID="replica-a", **CRASH_ENV)
    b = start_speed(start_service, hub_server, redis_server, REPLICA_ID="replica-b", **CRASH_ENV)
    wait_until(lambda: set(lease_owners(redis_server).values()) == {"replica-a", "replica-b"}, 60,
               "both replicas hold leases", b)
    wait_until(lambda: committed_events(redis_server) >= total * 0.3, 300, "30 % committed", b)
    a.proc.kill()
    a.proc.wait()
    wait_until(lambda: set(lease_owners(redis_server).values()) == {"replica-b"}, 60,
               "replica-b took over every partition", b)
    wait_all_committed(hub_server, redis_server, b, timeout=300)
    crashed = dump_state(redis_server)
    diff = state_diff(clean, crashed)
    assert not diff, (len(diff), diff[:8])


class DurableRedis:
    """A redis-server with an always-fsynced AOF, restartable on the same port (the fixture's
    server is neither)."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "durable-redis"
        self.dir.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for raw in self.proc.stdout:
            if b"Ready to accept connections" in raw:
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise AssertionError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), "--raw", *args],
                              capture_output=True, timeout=20, check=True).stdout.decode()


def test_redis_outage_mid_stream_resumes_exactly(start_service, hub_server, tmp_path):
    events = synthetic_events(20_000, seed=31)
    send(events, hub_server.connection_string)
    total = hub_totals(hub_server.connection_string)
    redis = DurableRedis(tmp_path)
    try:
        svc = start_speed(start_service, hub_server, redis, **CRASH_ENV)
        wait_until(lambda: committed_events(redis) >= total * 0.3, 300, "30 % committed", svc)
        at_kill = committed_events(redis)
        redis.kill()
        assert at_kill < total  # the outage hits mid-stream
        wait_until(lambda: svc.get("/readyz")[0] == 503, 30, "not ready without redis", svc)
        redis.start()
        wait_all_committed(hub_server, redis, svc, timeout=300)
        assert svc.proc.poll() is None
        assert_windows_equal_reference(redis, events)
        assert int(redis.cli("HLEN", "qs:ev")) == len(
            [1 for e in reference_windows(events)[1].values()
             if e["change"] not in ("deleted", "superseded")])
    finally:
        redis.kill()


def test_usgs_feed_replayed_through_the_ingestor_gives_the_reference_windows(
        start_service, hub_server, redis_server):
    """The whole speed path: ingestor replay (feed -> events -> hub) -> aggregator -> Redis."""
    from conftest import run_binary
    from speed_support import SHARED
    feed = os.path.join(SHARED, "usgs", "usgs_all_day_abruzzi.geojson")
    events = usgs_events()
    if events is None:
        pytest.skip("../shared/data absent")
    svc = start_speed(start_service, hub_server, redis_server)
    r = run_binary("ingestor", ["replay", feed, "--speed", "0"], timeout=120,
                   env={"EVENTHUBS_CONNECTION_STRING": hub_server.connection_string,
                        "REDIS_URL": redis_server.url, "ADMIN_PORT": "0", "LOG_LEVEL": "warn"})
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    wait_all_committed(hub_server, redis_server, svc)
    # The ingestor's events are the feed's features; the region rules are the same file.
    assert_windows_equal_reference(redis_server, events)
    stored = hgetall(redis_server, "qs:ev")
    assert set(stored) == {e["event_id"] for e in events}


def test_lambda_invariant_against_the_batch_layer(start_service, redis_server, tmp_path):
    """Every hour of the batch layer (batch-worker over the hub's own Capture files) equals the
    sum of the speed layer's 5-minute windows of that hour, for the same input with revisions."""
    from conftest import binary
    hub = capture_hub(start_service, tmp_path)
    events = revision_events() or synthetic_events(5000, seed=41)
    speed = start_speed(start_service, hub, redis_server)
    send(events, hub.connection_string)
    total = wait_all_committed(hub, redis_server, speed)

    def captured():  # the hub logs each Capture file it renames into place, with its count
        return sum(r["events"] for r in hub.logs if r.get("msg") == "capture file written")
    hub.wait_for_log(lambda r: captured() >= total, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": "0", "REDIS_URL": redis_server.url,
                "GOLD_DIR": str(tmp_path / "gold"), "PROGRESS": "never"})
    p = subprocess.run([binary("batch-worker"), "run-once", "--source", str(tmp_path / "cap")],
                       env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    batch = {k: json.loads(v) for k, v in hgetall(redis_server, "qs:batch:hourly").items()}
    sums = [f for f in FIELDS if not f.endswith("magnitude")]
    rolled = {}
    for key, row in redis_windows(redis_server).items():
        region, start = key.rsplit("|", 1)
        h = rolled.setdefault(f"{region}|{int(start) // 3_600_000 * 3_600_000}",
                              {f: 0 for f in sums})
        for f in sums:
            h[f] += row[f]
    assert batch, "the batch layer produced hours"
    assert set(rolled) == set(batch)
    for k, h in rolled.items():
        assert h == {f: batch[k][f] for f in sums}, (k, h, batch[k])


# Points of several regions (the region of a point comes from proto/regions.json).
PLACES = [(61.0, -150.0), (19.4, -155.3), (36.0, -120.0), (35.7, 139.7), (38.0, 23.0),
          (-33.0, -71.0), (13.6, 120.4), (40.0, -100.0), (45.0, 10.0), (-6.0, 106.0)]


def test_region_moves_across_two_replicas_in_either_order_equal_the_reference(
        start_service, hub_server, redis_server):
    conn = hub_server.connection_string
    start_speed(start_service, hub_server, redis_server, REPLICA_ID="replica-a")
    b = start_speed(start_service, hub_server, redis_server, REPLICA_ID="replica-b")
    wait_until(lambda: sorted(list(lease_owners(redis_server).values()).count(r)
                              for r in ("replica-a", "replica-b")) == [2, 2], 60,
               "two partitions each", b)
    owners = lease_owners(redis_server)
    points = {region_of(lat, lon): (lat, lon) for lat, lon in PLACES}

    def owner(region):  # the hub maps a partition key to crc32(key) % partitions
        return owners[zlib.crc32(region.encode()) % 4]
    pair = next(((o, r) for o in points for r in points if owner(o) != owner(r)), None)
    assert pair, "no two regions on partitions of different replicas"
    old, new = pair
    t0 = (int(time.time() * 1000) - 2 * 86_400_000) // 3_600_000 * 3_600_000

    def version(eid, region, mag, t, updated, change="revision"):
        lat, lon = points[region]
        ev = make_event(eid, mag, t, updated, lat, lon, 10.0, change=change)
        assert ev["region"] == region
        return ev

    def history(eid, versions):
        """An id's versions (region, magnitude, time offset, updated, change), as the ingestor
        sends them."""
        return with_moves([version(eid, r, m, t0 + dt, u, c if c else "revision")
                           for r, m, dt, u, c in versions])
    hist = {
        # moved first, then the revision on the other replica (which also lowers the spike)
        "mfirst": history("mfirst", [(old, 6.4, 60_000, 1000, "new"),
                                     (new, 5.5, 420_000, 2000, None)]),
        # the revision on the new region first, then the old region's replica catches up
        "rfirst": history("rfirst", [(old, 6.4, 60_000, 1000, "new"),
                                     (new, 5.5, 420_000, 2000, None)]),
        # moved, then deleted: the deletion is keyed to the new region
        "mdel": history("mdel", [(old, 3.0, 90_000, 1000, "new"), (new, 3.1, 90_000, 2000, None),
                                 (new, 3.1, 90_000, 3000, "deleted")]),
        # out and back, revised on the way, the last version qualifying for a spike again
        "mback": history("mback", [(old, 2.0, 30_000, 1000, "new"), (new, 2.5, 30_000, 2000, None),
                                   (old, 6.1, 650_000, 3000, None)]),
    }
    assert moves_in(hist["mback"]) == 2 and hist["mdel"][-1]["region"] == new
    background = [version(f"bg{i}", (old, new)[i % 2], 1.0 + i / 10, t0 + i * 20_000, 500, "new")
                  for i in range(30)]

    def sent_on(eid, region):
        return [ev for ev in hist[eid] if ev["region"] == region]
    # Phase 1: mfirst's old region (new + moved) and rfirst's new region (the revision).
    phase1 = background + sent_on("mfirst", old) + sent_on("rfirst", new)
    send(phase1, conn)
    wait_all_committed(hub_server, redis_server, b)
    ev1 = hgetall(redis_server, "qs:ev")
    assert json.loads(ev1["rfirst"])["region"] == new
    # mfirst's v1 is stored unless its move was in the same commit (then v1 was never newest).
    assert "mfirst" not in ev1 or json.loads(ev1["mfirst"])["updated"] == 1000
    # Phase 2: the other halves, and the other histories (ordered per region only).
    phase2 = (sent_on("mfirst", new) + sent_on("rfirst", old)
              + hist["mdel"] + hist["mback"])
    send(phase2, conn)
    wait_all_committed(hub_server, redis_server, b)
    # Both regions' partitions were applied by different replicas throughout.
    assert owner(old) != owner(new) and lease_owners(redis_server) == owners
    everything = phase1 + phase2
    ref = assert_windows_equal_reference(redis_server, everything)
    assert any(k.startswith(new + "|") for k in ref) and any(k.startswith(old + "|") for k in ref)
    # Raw events: the newest version of each id, wherever it was applied; the deleted one gone.
    raw = hgetall(redis_server, "qs:ev")
    for eid, want in (("mfirst", (new, 2000)), ("rfirst", (new, 2000)), ("mback", (old, 3000))):
        got = json.loads(raw[eid])
        assert (got["region"], got["updated"]) == want, (eid, got)
    assert "mdel" not in raw
    # Records per (region, id): a tombstone where the event left, the version where it is.
    st = hgetall(redis_server, "qs:rt:evstate")
    assert st[f"{old}|mfirst"].startswith("2000|M|") and st[f"{new}|mfirst"].startswith("2000|R|")
    assert st[f"{old}|rfirst"].startswith("2000|M|") and st[f"{new}|rfirst"].startswith("2000|R|")
    assert st[f"{new}|mdel"].startswith("3000|D|") and st[f"{old}|mdel"].startswith("2000|M|")
    assert st[f"{new}|mback"].startswith("3000|M|") and st[f"{old}|mback"].startswith("3000|R|")
    # Alerts follow the newest version: no live spike for the events revised below 6 (raised
    # and retracted, or never raised when the newer version was stored first); mback's is live.
    alerts = {k: json.loads(v) for k, v in hgetall(redis_server, "qs:alerts").items()}
    for eid in ("mfirst", "rfirst"):
        a = alerts.get(f"MAGNITUDE_SPIKE|{eid}")
        assert a is None or a["retracted"] is True, (eid, a)
    assert alerts["MAGNITUDE_SPIKE|mfirst"]["retracted"] is True
    assert alerts["MAGNITUDE_SPIKE|mback"]["retracted"] is False


def test_serving_api_shows_neither_deleted_nor_superseded_events_and_relays_removals(
        start_service, hub_server, redis_server):
    """Speed aggregator + serving API: /events (JSON and GeoJSON) and /stats exclude deleted and
    superseded events and show a moved event once, in its new region; the WebSocket `events`
    topic relays `event_removed` for the deletion and the supersede (also to a region-filtered
    subscriber: removals carry no region) and none for the move."""
    import asyncio
    from serving_helpers import WS, http, start_serving
    start_speed(start_service, hub_server, redis_server)
    api = start_serving(start_service, redis_server.url)
    now = int(time.time() * 1000)
    (alat, alon), (jlat, jlon) = (61.0, -150.0), (35.7, 139.7)  # alaska, Tokyo
    east = region_of(jlat, jlon)
    assert east != region_of(alat, alon)
    t = now - 600_000

    def ev(eid, mag, updated, lat, lon, change="new", **kw):
        return make_event(eid, mag, t, updated, lat, lon, 10.0, change=change, **kw)
    versions = [ev("k1", 6.7, now, alat, alon), ev("k2", 3.0, now, alat, alon),
                ev("k3", 4.0, now, jlat, jlon), ev("k4", 5.0, now, alat, alon),
                ev("k1", 6.7, now + 1, alat, alon, change="deleted"),
                ev("k2", 3.0, now + 1, alat, alon, change="superseded", superseded_by="k3"),
                ev("k4", 5.2, now + 1, jlat, jlon, change="revision")]
    msgs = with_moves(versions)
    assert moves_in(msgs) == 1
    # First the events, committed (k1 raises a spike alert) ...
    send(msgs[:4], hub_server.connection_string)
    wait_all_committed(hub_server, redis_server)
    spike = json.loads(hgetall(redis_server, "qs:alerts")["MAGNITUDE_SPIKE|k1"])
    assert spike["retracted"] is False
    got = []

    async def run():  # ... then the changes, watched live
        ws = await WS.connect(api.api_port)
        await ws.subscribe(["events"], regions=[east])
        send(msgs[4:], hub_server.connection_string)
        deadline = time.monotonic() + 30
        while {m["data"]["event_id"] for m in got if m["type"] == "event_removed"} != {"k1", "k2"}:
            assert time.monotonic() < deadline, got
            m = await ws.recv()
            assert m is not None
            got.append(m)
        ws.close()
    asyncio.run(run())
    removed = {m["data"]["event_id"]: m for m in got if m["type"] == "event_removed"}
    assert removed["k1"]["topic"] == "events" and removed["k1"]["data"]["reason"] == "deleted"
    assert removed["k2"]["data"]["reason"] == "superseded"
    wait_all_committed(hub_server, redis_server)
    assert not [m for m in got if m["type"] == "event_removed" and m["data"]["event_id"] == "k4"]
    status, _, body = http(api.api + "/api/v1/events?since=1d&limit=100")
    assert status == 200, body
    events = {e["event_id"]: e for e in json.loads(body)["events"]}
    assert set(events) == {"k3", "k4"}
    assert (events["k4"]["region"], events["k4"]["magnitude"]) == (east, 5.2)
    status, _, body = http(api.api + "/api/v1/events?since=1d&limit=100&format=geojson")
    assert status == 200, body
    assert {f["id"] for f in json.loads(body)["features"]} == {"k3", "k4"}
    status, _, body = http(api.api + "/api/v1/stats?window=1d")
    stats = json.loads(body)
    assert (stats["event_count"], stats["max_magnitude"]) == (2, 5.2), stats
    alerts = {k: json.loads(v) for k, v in hgetall(redis_server, "qs:alerts").items()}
    assert alerts["MAGNITUDE_SPIKE|k1"]["retracted"] is True
