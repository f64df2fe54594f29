"""serving-api WebSocket /api/v1/live: subscribe, snapshot, updates relayed from Redis pub/sub in
order, region filters, ping/pong, protocol errors; 1,000 concurrent clients on loopback; a slow
client is coalesced per window; a client that never reads is disconnected with bounded RSS."""
import asyncio
import json
import os
import time

from conftest import ROOT
from serving_helpers import MIN5, WS, Resp, event, load, row, start_serving


def live_schema_validator():
    import jsonschema
    with open(os.path.join(ROOT, "proto", "live-ws.schema.json")) as f:
        return jsonschema.Draft7Validator(json.load(f))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(svc, name):
    _, _, body = svc.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def window_msg(region, start, n):
    return json.dumps({"type": "window", "data": row(region, start, MIN5, [(2.0 + n / 1000, 5.0,
                                                                            False)] * 1,
                                                       {"final": False, "late_count": 0,
                                                        "updated_at": n})})


def test_subscribe_snapshot_then_updates_filtered_by_topic_and_region(start_service,
                                                                       redis_server):
    now = int(time.time() * 1000)
    start = now - now % MIN5
    resp = Resp(redis_server.port)
    load(resp, rt_rows=[row("japan", start, MIN5, [(5.0, 10.0, False)]),
                        row("alaska", start, MIN5, [(3.0, 10.0, False)])],
         events=[event("e1", now - 1000, 4.5, 140.0, 35.0, region="japan")],
         rolling={"window_start": now - 3600_000, "window_end": now, "event_count": 2,
                  "avg_magnitude": 4.0, "max_magnitude": 5.0, "updated_at": now})
    svc = start_serving(start_service, redis_server.url)
    schema = live_schema_validator()
    seen = []

    async def run():
        ws = await WS.connect(svc.api_port)
        recv = ws.recv

        async def checked(timeout=10):  # every server message must match proto/live-ws.schema.json
            m = await recv(timeout)
            if m is not None:
                schema.validate(m)
                seen.append(m.get("type"))
            return m
        ws.recv = checked
        for msg in [{"type": "subscribe", "topics": ["events"], "regions": ["japan"]},
                    {"type": "ping", "id": 1}, {"type": "unsubscribe"}]:
            schema.validate(msg)  # and so must what the tests send
        ws.send_json({"type": "ping", "id": 7})
        pong = await ws.recv()
        assert pong["type"] == "pong" and pong["id"] == 7
        ws.send_json({"type": "subscribe", "topics": ["nope"]})
        err = await ws.recv()
        assert err["type"] == "error" and "topic" in err["detail"]
        ws.send_json(b"not json")
        assert (await ws.recv())["type"] == "error"
        snaps = await ws.subscribe(["aggregates", "events"], regions=["japan"])
        assert [w["region"] for w in snaps["aggregates"]["windows"]] == ["japan"]
        assert snaps["aggregates"]["rolling"]["event_count"] == 2
        assert [e["event_id"] for e in snaps["events"]["events"]] == ["e1"]
        # an alaska window and an alert are not for this client; the japan window and the
        # region-less rolling update are
        resp.call("PUBLISH", "qs:live:aggregates", window_msg("alaska", start, 1))
        resp.call("PUBLISH", "qs:live:alerts", json.dumps({"type": "alert", "data": {"id": "x"}}))
        resp.call("PUBLISH", "qs:live:aggregates", window_msg("japan", start, 2))
        resp.call("PUBLISH", "qs:live:aggregates",
                  json.dumps({"type": "rolling", "data": {"event_count": 3}}))
        resp.call("PUBLISH", "qs:live:events",
                  json.dumps({"type": "event", "data": event("e2", now, 6.0, 141.0, 36.0,
                                                               region="japan")}))
        # a removal (deleted or superseded, docs/changes.md) has no region: every events
        # subscriber gets it
        resp.call("PUBLISH", "qs:live:events", json.dumps(
            {"type": "event_removed", "data": {"event_id": "e1", "reason": "deleted"}}))
        m1, m2, m3, m4 = await ws.recv(), await ws.recv(), await ws.recv(), await ws.recv()
        assert (m1["topic"], m1["type"], m1["data"]["region"]) == ("aggregates", "window", "japan")
        assert m1["data"]["updated_at"] == 2
        assert (m2["type"], m2["data"]["event_count"]) == ("rolling", 3)
        assert (m3["topic"], m3["data"]["event_id"]) == ("events", "e2")
        assert (m4["topic"], m4["type"], m4["data"]) == (
            "events", "event_removed", {"event_id": "e1", "reason": "deleted"})
        assert m1["seq"] < m2["seq"] < m3["seq"] < m4["seq"]
        ws.send_json({"type": "unsubscribe"})
        assert (await ws.recv())["type"] == "unsubscribed"
        ws.close()

    asyncio.run(run())
    resp.close()
    assert {"pong", "error", "subscribed", "snapshot", "window", "rolling", "event",
            "event_removed", "unsubscribed"} <= set(seen)


def test_thousand_clients_receive_every_update_for_their_topics_in_order(start_service,
                                                                         redis_server):
    svc = start_serving(start_service, redis_server.url)
    n_clients, n_updates = 1000, 40
    now = int(time.time() * 1000)
    start = now - now % MIN5

    async def run():
        clients = []
        for i in range(0, n_clients, 100):  # connect in waves of 100 (the listen backlog is ample)
            clients += await asyncio.gather(*(WS.connect(svc.api_port) for _ in range(100)))
        topics = [["events"] if i % 2 else ["aggregates", "events"] for i in range(n_clients)]
        await asyncio.gather(*(c.subscribe(t) for c, t in zip(clients, topics)))
        assert metric(svc, "quakestream_ws_clients") == n_clients
        resp = Resp(redis_server.port)
        cmds = []
        for k in range(n_updates):
            cmds.append(["PUBLISH", "qs:live:events", json.dumps(
                {"type": "event", "data": event(f"ev{k}", now + k, 3.0, 0.0, 0.0)})])
            cmds.append(["PUBLISH", "qs:live:aggregates", window_msg("japan", start - k * MIN5, k)])
        resp.pipeline(cmds)
        resp.close()

        async def collect(c, t):
            want = n_updates * len(t)
            got = []
            while len(got) < want:
                m = await c.recv(timeout=30)
                assert m is not None, "closed early"
                got.append(m)
            return got

        results = await asyncio.gather(*(collect(c, t) for c, t in zip(clients, topics)))
        for got, t in zip(results, topics):
            evs = [m["data"]["event_id"] for m in got if m["topic"] == "events"]
            assert evs == [f"ev{k}" for k in range(n_updates)]
            if "aggregates" in t:
                wins = [m["data"]["updated_at"] for m in got if m["topic"] == "aggregates"]
                assert wins == list(range(n_updates))
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(seqs)
        for c in clients:
            c.close()

    asyncio.run(run())


def test_slow_client_gets_the_latest_state_per_window_not_every_update(start_service,
                                                                      redis_server):
    svc = start_serving(start_service, redis_server.url, WS_MAX_BACKLOG="10",
                        WS_SEND_BUFFER="4096")
    now = int(time.time() * 1000)
    start = now - now % MIN5
    pad = "x" * 8000

    async def run():
        ws = await WS.connect(svc.api_port, rcvbuf=4096)
        await ws.subscribe(["aggregates"])
        resp = Resp(redis_server.port)
        n = 2000  # 16 MB of updates of one window: far more than socket buffers hold
        for base in range(0, n, 200):
            resp.pipeline([["PUBLISH", "qs:live:aggregates", json.dumps(
                {"type": "window", "data": row("japan", start, MIN5, [(3.0, 1.0, False)],
                                               {"updated_at": k, "pad": pad})})]
                for k in range(base, base + 200)])
        # a marker on another topic the client is not subscribed to cannot be used to sync, so
        # read until the final state of the window arrives
        got = []
        while True:
            m = await ws.recv(timeout=30)
            assert m is not None, "slow client was disconnected although its updates coalesce"
            got.append(m["data"]["updated_at"])
            if got[-1] == n - 1:
                break
        assert got == sorted(got)
        assert len(got) < n  # intermediate states were coalesced
        resp.close()
        ws.close()

    asyncio.run(run())
    assert metric(svc, "quakestream_ws_coalesced_total") > 0
    assert metric(svc, "quakestream_ws_slow_disconnects_total") == 0


def test_client_that_never_reads_is_disconnected_and_rss_stays_bounded(start_service,
                                                                       redis_server):
    # Under AddressSanitizer freed memory sits in its quarantine (256 MB by default), which would
    # read as growth: keep it small for this measurement.
    asan = os.environ.get("ASAN_OPTIONS", "")
    svc = start_serving(start_service, redis_server.url, WS_MAX_BACKLOG="100",
                        ASAN_OPTIONS=(asan + ":" if asan else "") + "quarantine_size_mb=4")
    now = int(time.time() * 1000)

    async def run():
        stuck = await WS.connect(svc.api_port, rcvbuf=4096)
        await stuck.subscribe(["events"])
        reader = await WS.connect(svc.api_port)
        await reader.subscribe(["events"])
        rss_before = rss_kb(svc.proc.pid)
        resp = Resp(redis_server.port)
        pad = "y" * 2000
        n = 10000  # 20 MB of distinct events: nothing coalesces
        count = 0
        for base in range(0, n, 500):
            resp.pipeline([["PUBLISH", "qs:live:events", json.dumps(
                {"type": "event", "data": dict(event(f"e{k}", now + k, 3.0, 0.0, 0.0),
                                               place=pad)})]
                for k in range(base, base + 500)])
            for _ in range(500):  # the healthy client keeps up and gets everything
                m = await reader.recv(timeout=30)
                assert m["data"]["event_id"] == f"e{count}"
                count += 1
        resp.close()
        rec = svc.wait_for_log(lambda r: r.get("msg") == "websocket client disconnected",
                               timeout=30)
        assert "backlog" in rec["reason"]
        assert metric(svc, "quakestream_ws_slow_disconnects_total") == 1
        assert metric(svc, "quakestream_ws_clients") == 1
        growth_mb = (rss_kb(svc.proc.pid) - rss_before) / 1024
        print(f"RSS growth with a stuck client: {growth_mb:.1f} MB")
        assert growth_mb < 32, f"RSS grew {growth_mb:.1f} MB with a stuck client"
        reader.close()
        stuck.close()

    asyncio.run(run())


def test_upgrade_needs_a_websocket_handshake(start_service, redis_server):
    from serving_helpers import http
    svc = start_serving(start_service, redis_server.url)
    status, h, body = http(svc.api + "/api/v1/live")
    assert status == 400 and h["content-type"] == "application/problem+json"
    assert os.path.exists(f"/proc/{svc.proc.pid}")


def test_sigterm_with_live_clients_and_requests_stops_cleanly(start_service, redis_server):
    import signal
    from serving_helpers import http
    svc = start_serving(start_service, redis_server.url)

    async def run():
        clients = [await WS.connect(svc.api_port) for _ in range(20)]
        for c in clients:
            await c.subscribe(["events"])
        assert http(svc.api + "/api/v1/stats")[0] == 200
        svc.signal(signal.SIGTERM)
        for c in clients:  # every client sees its connection end (close frame or EOF)
            try:
                assert await c.recv(timeout=10) is None
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

    asyncio.run(run())
    assert svc.wait(timeout=10) == 0
    assert not [r for r in svc.logs if r.get("level") == "error"], svc.lines
    assert any(r.get("msg") == "stopped" for r in svc.logs)


def test_live_requires_the_api_key_when_keys_are_set(start_service, redis_server):
    from serving_helpers import http
    svc = start_serving(start_service, redis_server.url, API_KEYS="k1")

    async def run():
        try:
            await WS.connect(svc.api_port)
            raise AssertionError("upgrade without a key accepted")
        except AssertionError as e:
            assert "401" in str(e)
        ws = await WS.connect(svc.api_port, path="/api/v1/live?access_token=k1")
        await ws.subscribe(["alerts"])
        ws.close()

    asyncio.run(run())
    assert http(svc.api + "/api/v1/live?access_token=nope")[0] == 401


def test_clients_get_a_fresh_snapshot_after_redis_comes_back(start_service, tmp_path):
    import socket
    import subprocess
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def redis():
        p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for raw in p.stdout:
            if b"Ready to accept connections" in raw:
                return p
        raise AssertionError("redis-server did not start")

    r = redis()
    try:
        svc = start_serving(start_service, f"redis://127.0.0.1:{port}/0")

        async def run():
            ws = await WS.connect(svc.api_port)
            snaps = await ws.subscribe(["events"])
            assert snaps["events"]["events"] == []
            # written while the client is subscribed but never published: only a fresh snapshot
            # can bring it; SAVE keeps it across the restart (dump.rdb in --dir)
            resp = Resp(port)
            load(resp, events=[event("after", int(time.time() * 1000), 4.0, 1.0, 1.0)])
            resp.call("SAVE")
            resp.close()
            r.kill()
            r.wait()
            r2 = redis()
            try:
                snap = await ws.recv(timeout=20)  # sent when the subscription is back
                assert snap["type"] == "snapshot" and snap["topic"] == "events"
                assert [e["event_id"] for e in snap["data"]["events"]] == ["after"]
            finally:
                r2.kill()
                r2.wait()
            ws.close()

        asyncio.run(run())
    finally:
        if r.poll() is None:
            r.kill()
            r.wait()


def test_sigterm_while_upgrades_are_in_flight_stops_cleanly(start_service, redis_server):
    import signal
    import socket as sk
    svc = start_serving(start_service, redis_server.url)
    socks = []
    for i in range(200):  # handshakes sent, 101 responses not read
        try:
            s = sk.create_connection(("127.0.0.1", svc.api_port))
            socks.append(s)
            s.sendall(b"GET /api/v1/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
        except OSError:  # after the signal the listener closes: refused or reset is expected
            assert i > 150
            break
        if i == 150:
            svc.signal(signal.SIGTERM)
    assert svc.wait(timeout=10) == 0
    assert not [r for r in svc.logs if r.get("level") == "error"], svc.lines
    for s in socks:
        s.close()


def test_clients_beyond_ws_max_clients_get_503(start_service, redis_server):
    from serving_helpers import http
    svc = start_serving(start_service, redis_server.url, WS_MAX_CLIENTS="2")

    async def run():
        a = await WS.connect(svc.api_port)
        b = await WS.connect(svc.api_port)
        try:
            await WS.connect(svc.api_port)
            raise AssertionError("third client accepted")
        except AssertionError as e:
            assert "503" in str(e)
        a.close()
        b.close()

    asyncio.run(run())
    _, _, body = svc.get("/metrics")
    assert 'quakestream_api_requests_total{route="live",code="503"} 1' in body.decode()
    assert 'quakestream_api_requests_total{route="live",code="101"} 2' in body.decode()
    assert http(svc.api + "/api/v1/live")[0] == 400
