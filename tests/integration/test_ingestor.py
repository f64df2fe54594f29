"""The ingestor end to end: a fixture HTTP server plays real USGS feeds (vega-datasets'
earthquakes.json, ../shared/data/usgs/* when present) and weather.gov alerts, with revisions,
a malformed feed and 503/429/304 on demand; the events that reach the hub are read back with the
project's client (qs-eh) and compared with an independent expectation."""
import glob
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import zlib

import pytest

from conftest import BUILD, ROOT, run_binary

QS_EH = os.path.join(BUILD, "tools", "qs-eh")
NODE_DIR = os.environ.get("QS_NODE_DIR", os.path.join(ROOT, "tests", "node"))
VEGA = os.path.join(NODE_DIR, "node_modules", "vega-datasets", "data", "earthquakes.json")
SHARED = os.environ.get("QS_SHARED_DIR", os.path.join(ROOT, "..", "shared"))


class FeedServer:
    """Serves scripted answers: each GET of a path pops the next (status, body, headers) of its
    script, repeating the last one. Records the request headers it saw."""

    def __init__(self):
        self.scripts = {}
        self.seen = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                with outer.lock:
                    outer.seen.append((self.path, dict(self.headers)))
                    script = outer.scripts.get(path, [(404, b"not here", {})])
                    status, body, headers = script[0] if len(script) == 1 else script.pop(0)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path, *answers):
        with self.lock:
            self.scripts[path] = list(answers)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feeds():
    s = FeedServer()
    yield s
    s.stop()


def vega_feed():
    if not os.path.exists(VEGA):
        pytest.fail("vega-datasets missing: run ./quakestream deps")
    with open(VEGA, "rb") as f:
        return json.load(f)


def read_hub(hub, hubname="earthquake-events", partitions=4):
    """Every event on the hub: list of (partition, partition_key, body dict)."""
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub.connection_string)
    out = []
    for p in range(partitions):
        r = subprocess.run([QS_EH, "props", hubname, str(p)], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        n = json.loads(r.stdout)["last_sequence"] + 1
        if n == 0:
            continue
        r = subprocess.run([QS_EH, "receive", hubname, str(p), "--count", str(n)], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out += [(p, e["partition_key"], json.loads(e["body"])) for e in
                map(json.loads, r.stdout.splitlines())]
    return out


def ingestor_env(hub, redis, **kw):
    env = {"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "REDIS_URL": redis.url,
           "SOURCES": "usgs", "POLL_INTERVAL": "1s", "BACKOFF_MAX": "2s"}
    env.update({k: str(v) for k, v in kw.items()})
    return env


def polls(svc, n, timeout=30):
    """Waits for the n-th "poll done" line and returns it."""
    count = [0]

    def pred(r):
        if r.get("msg") == "poll done":
            count[0] += 1
            return count[0] >= n
        return False
    count[0] = 0
    return svc.wait_for_log(pred, timeout)


def metric(svc, name, **labels):
    status, _, body = svc.get("/metrics")
    assert status == 200
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{" + want + "}") or (not labels and line.startswith(name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_real_feed_reaches_the_hub_once_keyed_by_region(feeds, hub_server, redis_server,
                                                          start_service):
    feed = vega_feed()
    feeds.set("/feed.geojson", (200, json.dumps(feed).encode(), {"ETag": '"v1"'}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/feed.geojson")))
    first = polls(ing, 1)
    assert (first["new"], first["duplicates"], first["sent"]) == (1707, 0, 1707)
    second = polls(ing, 2)  # the next poll: same document, nothing new is sent
    assert (second["new"], second["revisions"], second["sent"]) == (0, 0, 0)
    events = read_hub(hub_server)
    ids = [b["event_id"] for _, _, b in events]
    assert sorted(ids) == sorted(f["id"] for f in feed["features"])  # all, once
    by_region = {}
    for part, key, body in events:
        assert key == body["region"] and body["source"] == "usgs" and body["change"] == "new"
        by_region.setdefault(key, set()).add(part)
    assert all(len(parts) == 1 for parts in by_region.values())  # one partition per region
    assert all(parts == {zlib.crc32(r.encode()) % 4} for r, parts in by_region.items())
    # conditional GET: the second poll sent the validator of the first answer
    assert any(h.get("If-None-Match") == '"v1"' for _, h in feeds.seen[1:])
    assert metric(ing, "quakestream_ingest_events_total", source="usgs", kind="new") == 1707


def test_revisions_are_sent_marked_exact_repeats_are_not(feeds, hub_server, redis_server,
                                                         start_service):
    feed = vega_feed()
    revised = json.loads(json.dumps(feed))
    changed = [f["id"] for f in revised["features"][:25]]
    for f in revised["features"][:25]:
        f["properties"]["updated"] += 60000
        f["properties"]["mag"] = round((f["properties"]["mag"] or 0) + 0.1, 2)
    feeds.set("/f", (200, json.dumps(feed).encode(), {}), (200, json.dumps(revised).encode(), {}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/f")))
    polls(ing, 1)
    second = polls(ing, 2)
    assert (second["new"], second["revisions"], second["duplicates"]) == (0, 25, 1682)
    third = polls(ing, 3)
    assert (third["revisions"], third["sent"]) == (0, 0)
    events = read_hub(hub_server)
    revs = [b for _, _, b in events if b["change"] == "revision"]
    assert sorted(b["event_id"] for b in revs) == sorted(changed)
    assert len(events) == 1707 + 25


def test_errors_back_off_and_nothing_crashes(feeds, hub_server, redis_server, start_service):
    feed = vega_feed()
    small = dict(feed, features=feed["features"][:10])
    with open(os.path.join(ROOT, "tests", "data", "usgs_not_json.html"), "rb") as f:
        html = f.read()
    feeds.set("/f", (503, b"busy", {}), (429, b"slow down", {"Retry-After": "1"}),
              (200, html, {}), (200, json.dumps(small).encode(), {"ETag": '"e"'}),
              (304, b"", {}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/f")))
    done = polls(ing, 1)
    assert done["sent"] == 10
    ing.wait_for_log(lambda r: r.get("msg") == "poll failed, backing off" and
                     r.get("result") == "malformed")
    assert metric(ing, "quakestream_ingest_polls_total", source="usgs", result="http_error") == 2
    assert metric(ing, "quakestream_ingest_polls_total", source="usgs", result="malformed") == 1
    assert metric(ing, "quakestream_ingest_malformed_total", source="usgs", kind="document") == 1
    nm = polls(ing, 2)  # the next poll is answered 304: nothing parsed, nothing sent
    assert nm["not_modified"] is True and nm["sent"] == 0
    assert metric(ing, "quakestream_ingest_polls_total", source="usgs", result="not_modified") >= 1
    assert ing.proc.poll() is None
    assert len(read_hub(hub_server)) == 10


def test_malformed_features_are_counted_and_skipped(feeds, hub_server, redis_server,
                                                    start_service):
    with open(os.path.join(ROOT, "tests", "data", "usgs_malformed_features.geojson"), "rb") as f:
        doc = f.read()
    parsed = json.loads(doc)
    feeds.set("/f", (200, doc, {}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/f")))
    done = polls(ing, 1)
    assert done["malformed"] > 0
    assert done["deleted"] == 1  # ok2's status is DELETED: a deletion, sent as one
    assert done["new"] + done["deleted"] + done["malformed"] == len(parsed["features"])
    assert len(read_hub(hub_server)) == done["new"] + done["deleted"]


def test_kill_9_between_polls_resends_nothing_and_loses_nothing(feeds, hub_server, redis_server,
                                                                start_service):
    feed = vega_feed()
    half = dict(feed, features=feed["features"][:800])
    feeds.set("/f", (200, json.dumps(half).encode(), {}), (200, json.dumps(feed).encode(), {}))
    env = ingestor_env(hub_server, redis_server, USGS_FEED_URL=feeds.url("/f"))
    ing = start_service("ingestor", env=env)
    assert polls(ing, 1)["sent"] == 800
    ing.signal(signal.SIGKILL)
    ing.wait()
    ing2 = start_service("ingestor", env=env)
    second = polls(ing2, 1)
    assert (second["new"], second["duplicates"], second["sent"]) == (907, 800, 907)
    ids = [b["event_id"] for _, _, b in read_hub(hub_server)]
    assert sorted(ids) == sorted(f["id"] for f in feed["features"])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SHARED, "data", "usgs",
                                                               "*.geojson"))) or [None])
def test_real_usgs_feeds_from_shared(path, feeds, hub_server, redis_server, start_service):
    if path is None:
        pytest.skip("../shared/data/usgs not present")
    with open(path, "rb") as f:
        doc = f.read()
    n = len(json.loads(doc)["features"])
    feeds.set("/f", (200, doc, {}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/f")))
    done = polls(ing, 1)
    assert done["new"] + done["malformed"] == n and done["sent"] == done["new"]
    assert len(read_hub(hub_server)) == done["new"]


def test_weather_alerts_are_sent_once_by_id(feeds, hub_server, redis_server, start_service):
    nws = os.path.join(SHARED, "data", "nws", "nws_pynws_alerts_active_zone.json")
    if os.path.exists(nws):
        with open(nws, "rb") as f:
            doc = json.load(f)
    else:
        doc = {"features": [{"properties": {"id": f"urn:oid:2.49.0.1.840.0.{i}",
                                            "event": "Flood Warning", "severity": "Severe",
                                            "headline": "h", "areaDesc": "Somewhere",
                                            "onset": "2026-11-25T00:00:00-08:00",
                                            "expires": "2026-11-26T00:00:00-08:00"}}
                             for i in range(3)]}
    feeds.set("/alerts/active", (200, json.dumps(doc).encode(), {}))
    ing = start_service("ingestor", env=ingestor_env(
        hub_server, redis_server, SOURCES="weather", WEATHER_URL=feeds.url("/alerts/active"),
        WEATHER_AREA="CA", WEATHER_INTERVAL="1s"))
    first = polls(ing, 1)
    second = polls(ing, 2)
    want = {f["properties"]["id"] for f in doc["features"]}
    assert first["new"] == len(want) and second["sent"] == 0
    got = read_hub(hub_server, "weather-events", 2)
    assert sorted(b["id"] for _, _, b in got) == sorted(want)
    assert all(set(b) >= {"id", "event", "severity", "headline", "area", "onset", "expires"}
               for _, _, b in got)
    assert "area=CA" in feeds.seen[0][0]


def test_replay_sends_every_feature_and_ends(hub_server, start_service):
    svc = start_service("ingestor", env={"EVENTHUBS_CONNECTION_STRING":
                                         hub_server.connection_string, "SOURCES": ""},
                        args=("replay", VEGA, "--speed", "0"))
    done = svc.wait_for_log(lambda r: r.get("msg") == "replay done", 60)
    assert (done["events"], done["acknowledged"], done["failed"]) == (1707, 1707, 0)
    assert svc.wait(30) == 0
    events = read_hub(hub_server)
    assert len(events) == 1707
    times = {}
    for _, key, b in events:  # per partition key (region), in event-time order
        assert times.get(key, 0) <= b["time"]
        times[key] = b["time"]


def test_replay_of_a_missing_file_fails_clearly(hub_server):
    r = run_binary("ingestor", ["replay", "/nonexistent.geojson"],
                   env={"EVENTHUBS_CONNECTION_STRING": hub_server.connection_string,
                        "ADMIN_PORT": "0", "SOURCES": ""})
    assert r.returncode == 1
    err = [json.loads(l) for l in r.stderr.decode().splitlines() if '"error"' in l]
    assert err and "cannot read" in err[0]["msg"] and "nonexistent" in err[0]["reason"]


def test_replay_usage_errors_exit_2(hub_server):
    env = {"EVENTHUBS_CONNECTION_STRING": hub_server.connection_string, "ADMIN_PORT": "0"}
    assert run_binary("ingestor", ["replay"], env=env).returncode == 2
    assert run_binary("ingestor", ["replay", VEGA, "--speed", "-1"], env=env).returncode == 2
    assert run_binary("ingestor", ["frobnicate"], env=env).returncode == 2


def test_sigterm_flushes_and_exits_0(feeds, hub_server, redis_server, start_service):
    feeds.set("/f", (200, json.dumps(vega_feed()).encode(), {}))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server,
                                                     USGS_FEED_URL=feeds.url("/f")))
    polls(ing, 1)
    ing.signal(signal.SIGTERM)
    assert ing.wait(30) == 0


def test_clickstream_simulator_sends_keyed_page_events(hub_server, start_service):
    start_service("ingestor", env={"EVENTHUBS_CONNECTION_STRING": hub_server.connection_string,
                                   "SOURCES": "clickstream", "CLICKSTREAM_RATE": "400"})
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub_server.connection_string)
    r = subprocess.run([QS_EH, "receive", "clickstream-events", "0", "--count", "20"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(got) == 20
    for e in got:
        body = json.loads(e["body"])
        assert set(body) == {"event_id", "session_id", "user_id", "page", "action", "ts"}
        assert e["partition_key"] == body["session_id"]


def fdsn_feature(eid, mag, t, updated, lat, lon, status="reviewed", ids=None):
    return {"type": "Feature", "id": eid,
            "properties": {"mag": mag, "place": "x", "time": t, "updated": updated,
                           "type": "earthquake", "status": status, "tsunami": 0, "net": "us",
                           "ids": ids or f",{eid},"},
            "geometry": {"type": "Point", "coordinates": [lon, lat, 10.0]}}


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def fc(*features):
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def test_the_fdsn_sweep_pages_sends_changes_and_keeps_its_watermark(feeds, hub_server,
                                                                   redis_server, start_service):
    """Sweep 1 (first start: FDSN_BACKFILL back) pages 2 + 1 features and stores the largest
    `updated`; sweep 2 asks from that watermark minus FDSN_OVERLAP and sends a revision that moves
    an event to another region (moved on the old key, revision on the new), a deletion and an
    association (the old id superseded before the survivor)."""
    t = int(time.time() * 1000) - 3_600_000
    a = fdsn_feature("ak1", 4.1, t, t + 1000, 61.0, -150.0, status="automatic")
    b = fdsn_feature("hv1", 3.0, t + 10, t + 2000, 19.4, -155.3)
    c = fdsn_feature("ci1", 2.5, t + 20, t + 3000, 36.0, -120.0)
    d = fdsn_feature("nc1", 2.6, t + 30, t + 3500, 36.1, -120.1)
    q = "/fdsnws/event/1/query"
    feeds.set(q, (200, fc(a, b), {}), (200, fc(c, d), {}), (200, fc(), {}),
              (503, b"busy", {}),  # sweep 2, page 1: retried
              (200, fc(fdsn_feature("ak1", 4.3, t, t + 9000, 19.5, -155.2),  # now in hawaii
                       fdsn_feature("hv1", None, t + 10, t + 9100, 19.4, -155.3,
                                    status="deleted")), {}),
              (200, fc(fdsn_feature("us1", 2.7, t + 25, t + 9200, 36.0, -120.0,
                                    ids=",us1,ci1,nc1,")), {}))
    feeds.set("/feed.geojson", (200, fc(), {}))
    ing = start_service("ingestor", env=ingestor_env(
        hub_server, redis_server, USGS_FEED_URL=feeds.url("/feed.geojson"), POLL_INTERVAL="60s",
        FDSN_BASE_URL=feeds.url(""), FDSN_SWEEP_INTERVAL="1s", FDSN_PAGE_SIZE="2",
        FDSN_BACKFILL="2h", FDSN_OVERLAP="30s"))
    first = ing.wait_for_log(lambda r: r.get("msg") == "sweep done", 30)
    assert (first["pages"], first["features"], first["new"], first["watermark"]) == (
        3, 4, 4, t + 3500)
    assert redis_server.cli("GET", "qs:ingest:fdsn:watermark").strip() == str(t + 3500)
    second = ing.wait_for_log(lambda r: r.get("msg") == "sweep done" and r["features"] == 3, 30)
    assert second["pages"] == 2
    assert (second["revisions"], second["moved"], second["deleted"], second["superseded"],
            second["new"]) == (1, 1, 1, 2, 1)
    ing.wait_for_log(lambda r: r.get("msg") == "poll failed, backing off" and
                     r.get("source") == "fdsn" and r.get("result") == "http_error")
    sweeps = [p for p, _ in feeds.seen if p.startswith(q)]
    # keyset paging: each page starts at the origin time of the previous page's last feature,
    # past the features at exactly that time already seen; the first at 1900 (USGS would
    # default to 30 days back)
    assert "starttime=1900-01-01T00:00:00.000Z&limit=2&offset=1" in sweeps[0]
    assert f"starttime={iso(t + 10)}&limit=2&offset=2" in sweeps[1]
    assert f"starttime={iso(t + 30)}&limit=2&offset=2" in sweeps[2]
    assert f"updatedafter={iso(t + 3500 - 30_000)}&" in sweeps[3]
    assert "includedeleted=true" in sweeps[0] and "orderby=time-asc" in sweeps[0]
    assert redis_server.cli("GET", "qs:ingest:fdsn:watermark").strip() == str(t + 9200)
    events = read_hub(hub_server)
    by = {}
    for _, key, body in events:
        by.setdefault(body["event_id"], []).append((body.get("change", "new"), key))
    assert by["ak1"] == [("new", "alaska"), ("moved", "alaska"), ("revision", "hawaii")]
    assert by["hv1"] == [("new", "hawaii"), ("deleted", "hawaii")]
    assert by["ci1"] == [("new", "us-west"), ("superseded", "us-west")]
    assert by["nc1"] == [("new", "us-west"), ("superseded", "us-west")]
    assert by["us1"] == [("new", "us-west")]
    sup = [b for _, _, b in events if b.get("change") == "superseded"]
    assert {b["superseded_by"] for b in sup} == {"us1"}
    assert redis_server.cli("GET", "qs:ingest:seen:ci1").strip().split("|")[1:] == [
        "S", "us-west", "us1"]


def test_a_refused_key_is_logged_and_fails_sends_at_once(feeds, hub_server, redis_server,
                                                         start_service):
    feeds.set("/feed.geojson", (200, fc(fdsn_feature("ak9", 4.1, 1700000000000, 1700000001000,
                                                     61.0, -150.0)), {}))
    conn = hub_server.connection_string.replace("SharedAccessKeyName=RootManageSharedAccessKey",
                                                "SharedAccessKeyName=nobody")
    assert conn != hub_server.connection_string
    env = ingestor_env(hub_server, redis_server, USGS_FEED_URL=feeds.url("/feed.geojson"),
                       FDSN_SWEEP_INTERVAL="0")
    env["EVENTHUBS_CONNECTION_STRING"] = conn
    ing = start_service("ingestor", env=env)
    refused = ing.wait_for_log(lambda r: r.get("msg") == "event hub refused a link")
    assert "nobody" in refused["reason"]
    done = ing.wait_for_log(lambda r: r.get("msg") == "poll done" and r.get("failed") == 1, 15)
    assert done["sent"] == 0
    assert redis_server.cli("GET", "qs:ingest:seen:ak9").strip() == ""  # tried again next poll
