"""Catalogue changes end to end (docs/changes.md, issue 10): revisions after the feed window,
deletions, associations and region moves reach every layer exactly.

A fixture HTTP server plays a USGS catalogue: the summary feed (the events currently in its
window) and the FDSN event service (`updatedafter`, `includedeleted`, `orderby=time-asc`,
`starttime` + `limit`/`offset` key paging, 204 for an empty page), both derived from one
catalogue the test advances step by step. Each step waits until the ingestor has logged a
summary-feed poll and a whole sweep that began after the change (request counts and log lines,
never sleeps).

1. A scripted history through the ingestor, the hub, two speed-aggregator replicas, the hub's
   Capture, batch-worker and serving-api: the realtime windows, the rolling hour, the batch
   hourly/daily rows, the merged summary, /stats and /events equal changes_ref over the final
   catalogue; every message on the hub is there exactly once; the WebSocket `events` topic
   announces the removals.
2. The real revision log (../shared/data/revisions/) as a USGS change log, replayed with
   `ingestor replay` into two aggregator replicas: speed windows, the rolling hour and batch
   rows equal the reference over its final state (merged ids counted once, under the survivor).
3. kill -9 while a sweep page is half received: after a restart every event is on the hub once.
4. A sweep page that is malformed, truncated, cut, 400/429/503 is logged, counted and retried
   from the same page; the watermark in Redis moves only after a complete sweep.
5. The catalogue changes between two pages of one sweep (an event relocated forwards or
   backwards in time, an id merged away): nothing is lost, every change arrives once.
6. Malformed features at the end of a page, or filling one, are counted once and skipped; the
   sweep goes on past them (the next page's key steps over them).

The aggregators consume as group "speed" so that the test can read the hub back on $Default.
"""
import asyncio
import collections
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import changes_ref as ref
from conftest import binary, run_binary
from serving_helpers import WS, http, start_serving
from speed_support import HUB, capture_hub, hgetall, hub_totals
from test_ingestor import metric, read_hub
from test_speed_aggregator import start_speed, wait_until

MIN = 60_000
OVERLAP = 60_000  # FDSN_OVERLAP's default
SWEEP_EPOCH = -2_208_988_800_000  # 1900-01-01: the starttime of a sweep's first page
QUERY = "/fdsnws/event/1/query"


# ---- the catalogue fixture ---------------------------------------------------------------------

class Catalogue:
    """A USGS catalogue behind a summary feed (`/feed`) and the FDSN event service (QUERY).

    `features` holds the newest version of every event the catalogue knows (deleted ones
    included, as `includedeleted=true` shows them); `in_feed` the ids inside the summary feed's
    window. Change both under `with cat.cond:`. A sweep's pages are numbered from 1 (its first
    page asks from starttime 1900, offset 1; a request with the same key as the previous one is
    a retry of the same page). `faults` are (page, kind) pairs applied to the next request of
    that page (None: any): "400", "429", "503", "malformed" (an HTML page),
    "truncated" (a JSON document cut short, Content-Length matching), "cut" (the connection
    closes mid-body) and "pause" (half the body, then the connection hangs until `release`).
    `meet()` makes the next summary-feed request and the next sweep's first page wait for each
    other, so both pollers see a change at the same moment."""

    def __init__(self):
        self.features = {}
        self.in_feed = set()
        self.faults = []
        self.cond = threading.Condition()
        self.fdsn = []           # every FDSN request: dict(page, after, start, offset, ...)
        self.feed_requests = 0
        self.sweep_starts = 0    # requests of a first page
        self.page, self.last_key = 0, None
        self.errors = []         # requests that broke the FDSN contract
        self.paused = threading.Event()
        self.release = threading.Event()
        self._barrier, self._sides = None, set()
        self.hooks = []          # (page, fn): fn() runs (under cond) before that page is cut
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/feed":
                    outer._feed(self)
                elif url.path == QUERY:
                    outer._query(self, urllib.parse.parse_qs(url.query, keep_blank_values=True))
                else:
                    self._reply(404, b"not here", "text/plain")

            def _reply(self, status, body, ctype="application/json", extra=None, write=None):
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if status != 204:
                    self.wfile.write(body if write is None else body[:write])

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    # -- the catalogue
    def publish(self, *feats, feed=True):
        """New versions (caller holds cond); in the summary feed too unless feed=False."""
        for f in feats:
            self.features[f["id"]] = f
            if feed and f["properties"]["status"] != "deleted":
                self.in_feed.add(f["id"])
            else:
                self.in_feed.discard(f["id"])

    def forget(self, *ids):
        """Ids the catalogue no longer lists (associated into a new preferred id)."""
        for i in ids:
            self.features.pop(i, None)
            self.in_feed.discard(i)

    def meet(self):
        """Arms the rendezvous of the next feed poll and sweep (caller holds cond)."""
        self._barrier, self._sides = threading.Barrier(2, timeout=20), {"feed", "sweep"}

    def _meet(self, side):
        with self.cond:
            barrier = self._barrier if side in self._sides else None
            self._sides.discard(side)
        if barrier:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other side never came: the test's own waits report it

    # -- HTTP
    @staticmethod
    def _collection(feats):
        return json.dumps({"type": "FeatureCollection",
                           "metadata": {"generated": int(time.time() * 1000), "status": 200,
                                        "count": len(feats), "title": "quakestream fixture"},
                           "features": feats}).encode()

    def _feed(self, h):
        self._meet("feed")
        with self.cond:
            self.feed_requests += 1
            feats = sorted((self.features[i] for i in self.in_feed),
                           key=lambda f: -f["properties"]["time"])
            body = self._collection(feats)
            self.cond.notify_all()
        h._reply(200, body)

    def _query(self, h, q):
        def one(name):
            v = q.get(name, [])
            return v[0] if len(v) == 1 else None
        try:
            if (one("format"), one("includedeleted"), one("orderby")) != ("geojson", "true",
                                                                           "time-asc"):
                raise ValueError("format/includedeleted/orderby")
            after = ref.parse_iso_ms(one("updatedafter") or "")
            start = ref.parse_iso_ms(one("starttime") or "")
            limit, offset = int(one("limit")), int(one("offset"))
            if limit < 1 or offset < 1:
                raise ValueError("limit/offset")
        except (TypeError, ValueError) as e:
            with self.cond:
                self.errors.append((h.path, str(e)))
                self.cond.notify_all()
            h._reply(400, f"Bad request: {e}".encode(), "text/plain")
            return
        first = start == SWEEP_EPOCH and offset == 1
        if first:
            self._meet("sweep")
        with self.cond:
            key = (after, start, offset, limit)
            if first:
                self.sweep_starts += 1
                self.page = 1
            elif key != self.last_key:
                self.page += 1
            self.last_key, page_no = key, self.page
            hook = next((x for x in self.hooks if x[0] == page_no), None)
            if hook:
                self.hooks.remove(hook)
                hook[1]()
            fault = next((f for f in self.faults if f[0] in (None, page_no)), None)
            if fault:
                self.faults.remove(fault)
            rows = sorted((f for f in self.features.values()
                           if f["properties"]["updated"] > after and f["properties"]["time"] >= start),
                          key=lambda f: (f["properties"]["time"], f["id"]))
            page = rows[offset - 1:offset - 1 + limit]
            body = self._collection(page)
            status = 204 if not page else 200
            if fault and fault[1] in ("400", "429", "503"):
                status = int(fault[1])
            self.fdsn.append({"page": page_no, "after": after, "start": start, "offset": offset,
                              "limit": limit, "status": status,
                              "n": len(page), "fault": fault[1] if fault else None,
                              "ids": [f["id"] for f in page]})
            self.cond.notify_all()
        kind = fault[1] if fault else None
        if kind in ("400", "429", "503"):
            h._reply(status, b"<html>busy</html>", "text/html",
                     {"Retry-After": "1"} if kind == "429" else None)
        elif kind == "malformed":
            h._reply(200, b"<html><body>Service maintenance</body></html>", "text/html")
        elif kind == "truncated":
            h._reply(200, body[:len(body) // 2])
        elif kind == "cut":
            h._reply(200, body, write=len(body) // 2)
            h.wfile.flush()
            h.close_connection = True
        elif kind == "pause":
            h._reply(200, body, write=len(body) // 2)
            h.wfile.flush()
            self.paused.set()
            self.release.wait(60)
            h.close_connection = True
        else:
            h._reply(status, body)

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def catalogue():
    c = Catalogue()
    yield c
    c.stop()


# ---- helpers -----------------------------------------------------------------------------------

def count_logs(svc, pred):
    return sum(1 for r in list(svc.logs) if pred(r))


def nth_log(svc, pred, n, timeout=30.0):
    """Waits until svc has logged n lines matching pred; returns the n-th."""
    svc.wait_for_log(lambda _: count_logs(svc, pred) >= n, timeout)
    return [r for r in list(svc.logs) if pred(r)][n - 1]


def feed_done(r):
    return r.get("msg") == "poll done" and r.get("source") == "usgs"


def sweep_done(r):
    return r.get("msg") == "sweep done"


def sweep_failed(r):
    """A failed sweep page. (Not "redis_unavailable": the first timer tick can come before the
    Redis connection is up, which is no page's fault.)"""
    return (r.get("msg") == "poll failed, backing off" and r.get("source") == "fdsn"
            and r.get("result") != "redis_unavailable")


def settle(ing, cat, change=None):
    """Applies change (under the catalogue's lock), then waits for a summary-feed poll and a
    whole sweep that both began after it. A poll/sweep logs its "done" line after at least one
    request, so the (k+1)-th "done" line follows the (k+1)-th request: after the change."""
    with cat.cond:
        if change:
            change()
        feeds, sweeps = cat.feed_requests, cat.sweep_starts
    nth_log(ing, feed_done, feeds + 1)
    return nth_log(ing, sweep_done, sweeps + 1)


def ingestor_env(hub, redis, cat, **kw):
    env = {"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "REDIS_URL": redis.url,
           "SOURCES": "usgs", "USGS_FEED_URL": cat.base + "/feed", "FDSN_BASE_URL": cat.base,
           "POLL_INTERVAL": "1s", "FDSN_SWEEP_INTERVAL": "1s", "BACKOFF_MAX": "1s",
           "HTTP_TIMEOUT": "20s"}
    env.update({k: str(v) for k, v in kw.items()})
    return env


def redis_get(redis, key):
    out = redis.cli("GET", key).strip()
    return out or None


def partition_of(region):
    return zlib.crc32(region.encode()) % 4


# The aggregators consume as group "speed": the test reads the hub back on $Default, which the
# aggregators' exclusive (owner-level) receivers would otherwise refuse.
GROUP = "speed"


def speed(start_service, hub, redis, **kw):
    return start_speed(start_service, hub, redis, CONSUMER_GROUP=GROUP, **kw)


def lease_owners(redis):
    return {p: redis.cli("GET", f"qs:lease:{HUB}:{GROUP}:{p}").strip() for p in range(4)}


def wait_all_committed(hub, redis, svc, timeout=120.0):
    """Waits until the aggregators committed every event on the hub; returns their number."""
    total = hub_totals(hub.connection_string)

    def committed():
        n = 0
        for p in range(4):
            seq = redis.cli("HGET", f"qs:ckpt:{HUB}:{GROUP}:{p}", "sequence").strip()
            n += int(seq) + 1 if seq and int(seq) >= 0 else 0
        return n
    wait_until(lambda: committed() >= total, timeout, f"{total} events committed", svc)
    return total


def run_batch(hub, redis, tmp_path, total):
    """Waits until the hub's Capture holds all `total` events, then batch-worker run-once over
    it; returns the run record."""
    def captured():
        return sum(r["events"] for r in list(hub.logs) if r.get("msg") == "capture file written")
    hub.wait_for_log(lambda _: captured() >= total, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": "0", "REDIS_URL": redis.url,
                "GOLD_DIR": str(tmp_path / "gold"), "PROGRESS": "never"})
    p = subprocess.run([binary("batch-worker"), "run-once", "--source", str(hub.capture_dir)],
                       env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def rows_of(redis, key, fields):
    return {k: {f: json.loads(v).get(f) for f in fields} for k, v in hgetall(redis, key).items()}


def assert_rows(got, want, what):
    assert set(got) == set(want), (what, sorted(set(got) ^ set(want))[:10])
    for k in want:
        assert got[k] == want[k], (what, k, got[k], want[k])


def assert_speed_and_batch(redis, events, rec):
    """qs:rt:win, qs:batch:hourly and qs:batch:daily equal the reference over `events`."""
    F = ref.FIELDS
    assert_rows(rows_of(redis, "qs:rt:win", F),
                {k: {f: r[f] for f in F} for k, r in ref.windows(events).items()}, "qs:rt:win")
    assert_rows(rows_of(redis, "qs:batch:hourly", F),
                {k: {f: r[f] for f in F} for k, r in ref.windows(events, ref.HOUR).items()},
                "qs:batch:hourly")
    DF = ["event_count", "mag_count", "mag_sum_micro", "depth_count", "depth_sum_micro",
          "max_magnitude", "tsunami_events"]
    want = {k: dict({f: r[f] for f in DF if f in r}, tsunami_events=r["tsunami_count"])
            for k, r in ref.daily(events).items()}
    assert_rows(rows_of(redis, "qs:batch:daily", DF), want, "qs:batch:daily")
    assert rec["status"] == "ok" and rec["files_failed"] == 0 and rec["invalid_bodies"] == 0
    assert rec["events_counted"] == len(events)


def assert_rolling(redis, events, svc):
    want = ref.rolling(events)

    def rolling():
        raw = redis_get(redis, "qs:rt:rolling")
        return {k: json.loads(raw).get(k) for k in want} if raw else None
    wait_until(lambda: rolling() == want, 30, f"rolling hour {want} (is {rolling()})", svc)


class LiveEvents:
    """A WebSocket client of serving-api subscribed to the `events` topic, on its own thread;
    .msgs collects the updates."""

    def __init__(self, port):
        self.msgs = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.ws = None
        self.error = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(port),),
                                       daemon=True)
        self.thread.start()
        assert self.ready.wait(20), f"no WebSocket subscription: {self.error}"

    async def _run(self, port):
        try:
            self.ws = await WS.connect(port)
            await self.ws.subscribe(["events"])
            self.ready.set()
            while True:
                m = await self.ws.recv(timeout=3600)
                if m is None:
                    return
                self.msgs.append(m)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e
            self.ready.set()

    def removed(self):
        return {m["data"]["event_id"]: m["data"]["reason"] for m in list(self.msgs)
                if m.get("type") == "event_removed"}

    def close(self):
        if self.ws is not None:
            self.loop.call_soon_threadsafe(self.ws.w.close)
        self.thread.join(10)


# ---- 1. a scripted catalogue history through every layer ---------------------------------------

class Scenario:
    """The scripted history's feature versions (times relative to `now`): A appears automatic
    M4.1 and is reviewed M4.3 after leaving the summary feed; B is deleted; C1 (ci) and C2 (nc)
    are associated under the new preferred id P; D moves across a 5-minute boundary from
    old_region to new_region; fillers stay as they are (one on each side of D's move, a
    significant tsunami event, a null magnitude, a null depth, the newest event)."""

    def __init__(self, now, old_region, new_region):
        t = lambda minutes: now - int(minutes * MIN)  # noqa: E731
        self.edge = edge = t(45) // ref.WINDOW_MS * ref.WINDOW_MS  # a boundary 45-50 min ago
        self.old_region, self.new_region = old_region, new_region
        F = ref.feature

        def at(region, i, **kw):
            lat, lon = ref.point(region, 0.01 * i, -0.01 * i)
            return dict(lat=lat, lon=lon, **kw)

        self.A = F("ci40000001", t(100), t(99), 4.1, depth=8.2, **at("us-west", 1))
        self.B = F("nc73000001", t(70), t(69), 2.5, depth=3.0, **at("hawaii", 1))
        self.C1 = F("ci40000002", t(50), t(49), 3.0, depth=11.0, **at("us-central", 1))
        self.C2 = F("nc73000002", t(50) + 1500, t(49) + 1500, 3.1, depth=12.5,
                    **at("us-central", 2))
        self.D = F("ak02400001", edge - 20_000, edge + 40_000, 2.2, depth=30.0,
                   **at(old_region, 3))
        self.fillers = [
            F("ak02400002", edge - 60_000, edge, 1.7, depth=20.0, **at(old_region, 4)),
            F("us7000f002", edge + 100_000, edge + 160_000, 2.9, depth=15.0,
              **at(new_region, 5)),
            F("us7000f003", t(130), t(129), 5.2, depth=35.0, tsunami=1, **at("europe", 1)),
            F("us7000f004", t(30), t(29), None, depth=9.0, **at("oceania", 1)),
            F("us7000f005", t(170), t(169), 3.7, depth=None, **at("south-america", 1)),
            F("us7000f006", t(2), t(1.5), 1.2, depth=4.4, **at("canada", 1)),
            F("ci40000003", t(20), t(19), 0.8, depth=-0.6, **at("us-west", 2)),
        ]
        self.first = [self.A, self.B, self.C1, self.C2, self.D] + self.fillers
        assert len({f["properties"]["time"] for f in self.first}) == len(self.first)

    def later(self, step):
        """The changes, `updated` from step on (after every first version's)."""
        self.A2 = ref.revised(self.A, mag=4.3, status="reviewed", magType="mw", updated=step)
        self.B2 = ref.revised(self.B, status="deleted", updated=step + 1)
        lat, lon = ref.point("us-central", 0.03, -0.03)
        self.P = ref.feature("us7000p001", self.C1["properties"]["time"] + 700, step + 2, 3.2,
                             lat=lat, lon=lon, depth=11.8, status="reviewed", mag_type="mww",
                             ids=["us7000p001", self.C1["id"], self.C2["id"]])
        lat, lon = ref.point(self.new_region, -0.02, 0.02)
        self.D2 = ref.revised(self.D, time=self.edge + 25_000, updated=step + 3, mag=2.4,
                              status="reviewed", lat=lat, lon=lon)

    def messages(self):
        """(event_id, change, partition key) of every message the ingestor must send, once."""
        region = lambda f: ref.event_of(f)["region"]  # noqa: E731
        return collections.Counter(
            [(f["id"], "new", region(f)) for f in self.first + [self.P]]
            + [(self.A["id"], "revision", "us-west"), (self.B["id"], "deleted", "hawaii"),
               (self.C1["id"], "superseded", "us-central"),
               (self.C2["id"], "superseded", "us-central"),
               (self.D["id"], "moved", self.old_region),
               (self.D["id"], "revision", self.new_region)])


KINDS = {"new": 13, "revision": 2, "deleted": 1, "superseded": 2, "moved": 1}


def start_replicas(start_service, hub, redis):
    """Two aggregator replicas holding two partitions each; -> (a, b, old_region, new_region)
    with the regions' partitions owned by different replicas."""
    a = speed(start_service, hub, redis, REPLICA_ID="replica-a")
    b = speed(start_service, hub, redis, REPLICA_ID="replica-b")
    wait_until(lambda: set(lease_owners(redis).values()) == {"replica-a", "replica-b"}, 60,
               "both replicas hold leases", b)
    owners = lease_owners(redis)
    by_part = collections.defaultdict(list)
    for region in ref.POINTS:
        by_part[partition_of(region)].append(region)
    old_region = by_part[next(p for p in range(4) if owners[p] == "replica-a")][0]
    new_region = by_part[next(p for p in range(4) if owners[p] == "replica-b")][0]
    assert partition_of(old_region) != partition_of(new_region)
    return a, b, old_region, new_region


def test_scripted_catalogue_history_reaches_every_layer_exactly(catalogue, start_service,
                                                                  redis_server, tmp_path):
    cat, redis = catalogue, redis_server
    hub = capture_hub(start_service, tmp_path)
    serving = start_serving(start_service, redis.url)
    live = LiveEvents(serving.api_port)
    try:
        a, b, old_region, new_region = start_replicas(start_service, hub, redis)
        sc = Scenario(int(time.time() * 1000), old_region, new_region)
        ing = start_service("ingestor", env=ingestor_env(hub, redis, cat, FDSN_PAGE_SIZE="4"))

        # Step 1: everything appears, automatic, in the summary feed and the catalogue; the feed
        # poll and the sweep see it at the same moment (each event is still sent once).
        def appear():
            cat.publish(*sc.first)
            cat.meet()
        settle(ing, cat, appear)
        # Step 2: A leaves the summary window; then it is reviewed (M4.1 -> M4.3), which only
        # the sweep can see. B is deleted (the feed drops it, FDSN shows status "deleted").
        settle(ing, cat, lambda: cat.in_feed.discard(sc.A["id"]))
        sc.later(int(time.time() * 1000))
        settle(ing, cat, lambda: cat.publish(sc.A2, feed=False))
        settle(ing, cat, lambda: cat.publish(sc.B2))

        # Step 3: the two networks' solutions are one earthquake under a new preferred id.
        def associate():
            cat.forget(sc.C1["id"], sc.C2["id"])
            cat.publish(sc.P)
        settle(ing, cat, associate)
        # Step 4: D is relocated: across the 5-minute boundary and into another region (both
        # pollers see it at once).
        def move():
            cat.publish(sc.D2)
            cat.meet()
        settle(ing, cat, move)
        # One more round: nothing changed, nothing is sent.
        quiet = settle(ing, cat)
        assert quiet["sent"] == 0 and quiet["failed"] == 0, quiet
        assert not cat.errors, cat.errors
        with cat.cond:
            final = dict(cat.features)

        # The hub: every message exactly once, on its region's partition.
        got = read_hub(hub)
        msgs = collections.Counter((body["event_id"], body["change"], key)
                                   for _, key, body in got)
        want = sc.messages()
        assert msgs == want, (sorted((msgs - want).elements()), sorted((want - msgs).elements()))
        revision_a = next(b for _, _, b in got
                          if b["event_id"] == sc.A["id"] and b["change"] == "revision")
        assert (revision_a["magnitude"], revision_a["status"]) == (4.3, "reviewed")
        kinds = {k: sum(metric(ing, "quakestream_ingest_events_total", source=s, kind=k)
                        for s in ("usgs", "fdsn")) for k in KINDS}
        assert kinds == KINDS, kinds
        # A's revision and B's deletion were never in the summary feed: the sweep found them.
        assert metric(ing, "quakestream_ingest_events_total", source="fdsn", kind="revision") >= 1
        assert metric(ing, "quakestream_ingest_events_total", source="fdsn", kind="deleted") == 1
        # The per-id records: <updated>|<state>|<region counted in>|<preferred id>.
        u = lambda f: f["properties"]["updated"]  # noqa: E731
        records = {f["id"]: redis_get(redis, f"qs:ingest:seen:{f['id']}")
                   for f in (sc.A, sc.B, sc.C1, sc.C2, sc.P, sc.D)}
        assert records == {
            sc.A["id"]: f"{u(sc.A2)}|L|us-west|", sc.B["id"]: f"{u(sc.B2)}|D|hawaii|",
            sc.C1["id"]: f"{u(sc.P)}|S|us-central|{sc.P['id']}",
            sc.C2["id"]: f"{u(sc.P)}|S|us-central|{sc.P['id']}",
            sc.P["id"]: f"{u(sc.P)}|L|us-central|",
            sc.D["id"]: f"{u(sc.D2)}|L|{sc.new_region}|"}, records

        check_layers(sc, final, got, hub, redis, serving, live, b, tmp_path)
        assert a.proc.poll() is None and b.proc.poll() is None and ing.proc.poll() is None
    finally:
        live.close()


def check_layers(sc, final, got, hub, redis, serving, live, agg, tmp_path):
    """Speed (two replicas), batch (over the hub's Capture) and serving equal the reference
    over the final catalogue; `got` is everything on the hub."""
    events = ref.counted(final)
    assert set(events) == {sc.A["id"], sc.P["id"], sc.D["id"]} | {f["id"] for f in sc.fillers}
    region = lambda f: ref.event_of(f)["region"]  # noqa: E731
    for part, key, body in got:
        assert body["region"] == key and part == partition_of(key), (part, key, body)
        if body["change"] == "superseded":
            assert body["superseded_by"] == sc.P["id"], body

    total = wait_all_committed(hub, redis, agg)
    assert total == len(got)
    assert_rolling(redis, events, agg)
    rec = run_batch(hub, redis, tmp_path, total)
    assert_speed_and_batch(redis, events, rec)
    assert rec["changes"] == KINDS, rec["changes"]
    assert (rec["excluded_deleted"], rec["excluded_superseded"]) == (1, 2), rec
    stored = hgetall(redis, "qs:ev")
    assert set(stored) == set(events)
    for i, f in events.items():
        ev = json.loads(stored[i])
        assert (ev["updated"], ev["region"]) == (f["properties"]["updated"], region(f)), ev

    # Serving: the merged summary (batch before the cutoff, speed after), /stats, /events.
    status, _, body = http(serving.api + "/api/v1/summary/regions")
    assert status == 200, body
    summary = json.loads(body)
    assert summary["batch_cutoff_ms"] == rec["cutoff_ms"]
    S = ref.FIELDS
    got_regions = {r["region"]: {f: r[f] for f in S} for r in summary["regions"]
                   if r["event_count"]}
    assert_rows(got_regions, {k: {f: r[f] for f in S} for k, r in ref.regions(events).items()},
                "summary")
    assert {f: summary["total"][f] for f in S} == {f: ref.total(events)[f] for f in S}
    # Both layers took part: the cutoff is the current hour, A is 100 minutes old.
    if max(f["properties"]["time"] for f in events.values()) >= rec["cutoff_ms"]:
        assert summary["total"]["data_freshness"] == "batch+realtime", summary["total"]

    status, _, body = http(serving.api + "/api/v1/stats?window=24h")
    assert status == 200, body
    st = json.loads(body)
    want = ref.stats(events, int(time.time() * 1000))
    keys = ("event_count", "significant_count", "tsunami_count", "max_magnitude")
    assert {k: st[k] for k in keys} == {k: want[k] for k in keys}, st
    assert st["max_event"]["event_id"] == want["max_event"]

    status, _, body = http(serving.api + "/api/v1/events?limit=1000&since=1d")
    assert status == 200, body
    listed = json.loads(body)["events"]
    newest_first = sorted(events.values(), key=lambda f: -f["properties"]["time"])
    assert [e["event_id"] for e in listed] == [f["id"] for f in newest_first]
    for e in listed:
        f = events[e["event_id"]]
        assert (e["magnitude"], e["updated"], e["region"], e["time"]) == (
            f["properties"]["mag"], f["properties"]["updated"], region(f),
            f["properties"]["time"])
    status, _, body = http(serving.api + "/api/v1/events?limit=1000&since=1d&format=geojson")
    assert status == 200
    assert {x["id"] for x in json.loads(body)["features"]} == set(events)

    # The WebSocket `events` topic announced the removals; a move removes nothing.
    wait_until(lambda: len(live.removed()) >= 3 or live.error, 20, "event_removed messages")
    assert live.error is None, live.error
    assert live.removed() == {sc.B["id"]: "deleted", sc.C1["id"]: "superseded",
                              sc.C2["id"]: "superseded"}


# ---- 2. the real revision log ------------------------------------------------------------------

def test_real_revision_log_replayed_as_a_change_log(start_service, redis_server, tmp_path):
    path = ref.shared_revision_log()
    if path is None:
        pytest.skip("../shared/data/revisions absent (set QS_SHARED_DIR)")
    feats = ref.revision_log_features(path)
    log = tmp_path / "changes.ndjson"
    log.write_text("".join(json.dumps(f, separators=(",", ":")) + "\n" for f in feats))
    events = ref.counted(ref.newest(feats))
    assert len(events) == 1585  # 1,597 ids of which 12 were merged into survivors

    hub = capture_hub(start_service, tmp_path)
    speed(start_service, hub, redis_server, REPLICA_ID="replica-a")
    agg = speed(start_service, hub, redis_server, REPLICA_ID="replica-b")
    r = run_binary("ingestor", ["replay", str(log), "--speed", "0"], timeout=120,
                   env={"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "SOURCES": "",
                        "ADMIN_PORT": "0", "LOG_LEVEL": "info"})
    logs = [json.loads(x) for x in r.stderr.decode().splitlines() if x.startswith("{")]
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert not [x for x in logs if "malformed" in x.get("msg", "")], logs[-5:]
    done = next(x for x in logs if x.get("msg") == "replay done")
    assert (done["events"], done["failed"]) == (len(feats), 0), done
    assert done["acknowledged"] == done["messages"], done
    assert (done["superseded"], done["deleted"], done["folded"]) == (6, 0, 0), done
    assert done["moved"] >= 1, done  # the log relocates an event into another region

    total = wait_all_committed(hub, redis_server, agg)
    assert total == done["acknowledged"]
    got = read_hub(hub)
    changes = collections.Counter(b["change"] for _, _, b in got)
    assert changes["superseded"] == 6, changes  # merged ids that were live before their merge
    # At most one "new" per id (a merged id seen only in the survivor's ids is never sent).
    news = collections.Counter(b["event_id"] for _, _, b in got if b["change"] == "new")
    assert max(news.values()) == 1 and len(news) == 1591

    assert_rolling(redis_server, events, agg)
    rec = run_batch(hub, redis_server, tmp_path, total)
    assert_speed_and_batch(redis_server, events, rec)
    stored = hgetall(redis_server, "qs:ev")
    assert set(stored) == set(events)
    assert all(json.loads(stored[i])["updated"] == f["properties"]["updated"]
               for i, f in events.items())


# ---- 3. kill -9 in the middle of a sweep page --------------------------------------------------

def test_kill_9_mid_page_then_restart_sends_every_event_once(catalogue, hub_server, redis_server,
                                                             start_service):
    cat = catalogue
    now = int(time.time() * 1000)
    feats = [ref.feature(f"us70009{k:03d}", now - (60 - k) * MIN, now - (59 - k) * MIN,
                         2.0 + k / 10, depth=10.0 + k, **dict(zip(("lat", "lon"),
                                                                  ref.point("alaska", k / 100))))
             for k in range(7)]
    with cat.cond:
        cat.publish(*feats, feed=False)  # the summary feed is empty: only the sweep sees them
        cat.faults.append((2, "pause"))  # page 2 hangs half sent
    env = ingestor_env(hub_server, redis_server, cat, FDSN_PAGE_SIZE="3")
    ing = start_service("ingestor", env=env)
    first = nth_log(ing, lambda r: r.get("msg") == "poll done" and r.get("source") == "fdsn"
                    and r.get("page") == 0, 1)
    assert first["sent"] == 3, first
    assert cat.paused.wait(30), "the ingestor never asked for page 2"
    ing.signal(signal.SIGKILL)
    ing.wait()
    assert redis_get(redis_server, "qs:ingest:fdsn:watermark") is None  # the sweep never ended
    cat.release.set()

    ing2 = start_service("ingestor", env=env)
    done = nth_log(ing2, sweep_done, 1)
    assert (done["new"], done["duplicates"], done["sent"], done["failed"]) == (4, 3, 4, 0), done
    got = read_hub(hub_server)
    assert sorted(b["event_id"] for _, _, b in got) == sorted(f["id"] for f in feats)
    assert all(b["change"] == "new" for _, _, b in got)
    top = max(f["properties"]["updated"] for f in feats)
    assert redis_get(redis_server, "qs:ingest:fdsn:watermark") == str(top)


# ---- 4. bad sweep pages ------------------------------------------------------------------------

def test_bad_sweep_pages_are_counted_retried_and_hold_the_watermark(catalogue, hub_server,
                                                                    redis_server, start_service):
    cat = catalogue
    now = int(time.time() * 1000)

    def feat(k, updated, **kw):
        lat, lon = ref.point("hawaii", k / 100)
        return ref.feature(f"hv7440{k:04d}", now - (90 - k) * MIN, updated, 1.0 + k / 10,
                           lat=lat, lon=lon, depth=2.0, **kw)
    first = [feat(k, now - (80 - k) * MIN) for k in range(5)]
    bad = feat(9, now - 85 * MIN)
    del bad["geometry"]  # a malformed feature: counted and skipped, the sweep goes on
    bad["properties"]["time"] = now - 95 * MIN  # first on page 1 (test 6 has them elsewhere)
    with cat.cond:
        cat.publish(*first, bad, feed=False)
        cat.faults += [(2, "503"), (2, "malformed"), (2, "truncated")]
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server, cat,
                                                     FDSN_PAGE_SIZE="2"))
    for n in (1, 2, 3):
        nth_log(ing, sweep_failed, n)
        assert redis_get(redis_server, "qs:ingest:fdsn:watermark") is None
    done = nth_log(ing, sweep_done, 1)
    assert (done["new"], done["malformed"], done["sent"]) == (5, 1, 5), done
    w1 = max(f["properties"]["updated"] for f in first)
    assert done["watermark"] == w1
    assert redis_get(redis_server, "qs:ingest:fdsn:watermark") == str(w1)
    with cat.cond:  # the failing page was asked again with the same key, never skipped
        asked = [(q["page"], q["start"], q["offset"]) for q in cat.fdsn]
    assert [a[0] for a in asked[:6]] == [1, 2, 2, 2, 2, 3], asked
    assert len(set(asked[1:5])) == 1, asked

    # The next sweep fails three times on its first page before the new changes get through.
    later = int(time.time() * 1000)
    second = [feat(5, later), feat(6, later + 1)]
    revision = ref.revised(first[2], mag=2.5, updated=later + 2, status="reviewed")

    def change():
        cat.publish(*second, revision, feed=False)
        cat.faults.extend([(1, "400"), (1, "429"), (1, "cut")])
    with cat.cond:
        change()
        sweeps, failed = cat.sweep_starts, count_logs(ing, sweep_failed)
    for n in (1, 2, 3):
        nth_log(ing, sweep_failed, failed + n)
        assert redis_get(redis_server, "qs:ingest:fdsn:watermark") == str(w1)
    done2 = nth_log(ing, sweep_done, sweeps + 1)
    assert (done2["new"], done2["revisions"], done2["failed"]) == (2, 1, 0), done2
    w2 = later + 2
    assert redis_get(redis_server, "qs:ingest:fdsn:watermark") == str(w2)
    with cat.cond:
        asked = [q for q in cat.fdsn if q["fault"] in ("400", "429", "cut")]
        errors = list(cat.errors)
    assert not errors, errors
    # updatedafter = the stored watermark - FDSN_OVERLAP
    assert [q["after"] for q in asked] == [w1 - OVERLAP] * 3

    results = [r["result"] for r in ing.logs if sweep_failed(r)]
    assert results[:6] == ["http_error", "malformed", "malformed", "http_error", "http_error",
                           "network_error"], results
    assert metric(ing, "quakestream_ingest_polls_total", source="fdsn", result="http_error") == 3
    assert metric(ing, "quakestream_ingest_polls_total", source="fdsn", result="malformed") == 2
    assert metric(ing, "quakestream_ingest_polls_total", source="fdsn",
                  result="network_error") == 1
    assert metric(ing, "quakestream_ingest_malformed_total", source="fdsn", kind="document") == 2
    assert metric(ing, "quakestream_ingest_malformed_total", source="fdsn", kind="feature") >= 1
    got = collections.Counter((b["event_id"], b["change"]) for _, _, b in read_hub(hub_server))
    want = collections.Counter([(f["id"], "new") for f in first + second]
                               + [(first[2]["id"], "revision")])
    assert got == want
    assert ing.proc.poll() is None


# ---- 5. the catalogue changes between two pages of one sweep -----------------------------------

@pytest.mark.parametrize("change", ["revised-later", "revised-earlier", "associated"])
def test_a_change_between_two_pages_loses_nothing(change, catalogue, hub_server, redis_server,
                                                  start_service):
    """Between page 1 and page 2 of a sweep an event changes place in the time order: relocated
    to a later origin time (past the page boundary), to an earlier one (behind the pages already
    read), or merged away under a new id with a later origin time. With plain offsets every later
    feature would shift one place and the one at the page boundary would be on no page, and the
    watermark would pass it. The ingestor must send every event once, and the change too (by
    the next sweep at the latest: its `updated` is after this sweep began)."""
    cat = catalogue
    now = int(time.time() * 1000)
    feats = []
    for k in range(5):  # 10 s apart, in the order of the sweep; pages of 2
        lat, lon = ref.point("alaska", k / 100)
        feats.append(ref.feature(f"ak0250{k:04d}", now - 60 * MIN + k * 10_000,
                                 now - (50 - k) * MIN, 2.0 + k / 10, lat=lat, lon=lon, depth=5.0))
    t0 = feats[0]["properties"]["time"]
    lat, lon = ref.point("alaska", 0.0)
    changed = {}

    def between_pages():  # runs when page 2 is asked for: the change is newer than the sweep
        u = int(time.time() * 1000)
        if change == "revised-later":  # f0 (page 1) moves 25 s later, past f2
            changed["f"] = ref.revised(feats[0], time=t0 + 25_000, updated=u)
        elif change == "revised-earlier":  # f3 (not read yet) moves before f0
            changed["f"] = ref.revised(feats[3], time=t0 - 5_000, updated=u)
        else:  # f0 (page 1) is merged into another network's solution, 25 s later
            cat.forget(feats[0]["id"])
            changed["f"] = ref.feature("us7000a250", t0 + 25_000, u, 2.1, lat=lat, lon=lon,
                                       depth=5.0, status="reviewed",
                                       ids=["us7000a250", feats[0]["id"]])
        cat.publish(changed["f"], feed=False)
    with cat.cond:
        cat.publish(*feats, feed=False)
        cat.hooks.append((2, between_pages))
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server, cat,
                                                     FDSN_PAGE_SIZE="2"))
    nth_log(ing, sweep_done, 1)  # the sweep the catalogue changed under
    with cat.cond:
        sweeps = cat.sweep_starts
    nth_log(ing, sweep_done, sweeps + 1)  # and a whole sweep after it
    got = read_hub(hub_server)
    msgs = collections.Counter((b["event_id"], b["change"]) for _, _, b in got)
    f = changed["f"]
    if change == "revised-later":
        want = [(x["id"], "new") for x in feats] + [(f["id"], "revision")]
    elif change == "revised-earlier":  # f3 was first read in its new place
        want = [(x["id"], "new") for x in feats]
    else:
        want = [(x["id"], "new") for x in feats] + [(f["id"], "new"),
                                                    (feats[0]["id"], "superseded")]
    assert msgs == collections.Counter(want), sorted(msgs.items())
    latest = {}
    for _, _, b in got:
        if b["updated"] >= latest.get(b["event_id"], {"updated": -1})["updated"]:
            latest[b["event_id"]] = b
    assert latest[f["id"]]["time"] == f["properties"]["time"]
    assert latest[f["id"]]["updated"] == f["properties"]["updated"]


# ---- 6. malformed features where the next page's key comes from -------------------------------

@pytest.mark.parametrize("where", ["end-of-page", "whole-page"])
def test_malformed_features_at_a_page_end_are_skipped_once(where, catalogue, hub_server,
                                                           redis_server, start_service):
    """Malformed features are counted once and skipped, wherever they are on a page: at its end
    (after the last usable feature) or filling a whole page; the sweep still ends and sends
    every usable event."""
    cat = catalogue
    now = int(time.time() * 1000)
    lat, lon = ref.point("hawaii")
    feats = [ref.feature(f"hv7450{k:04d}", now - 60 * MIN + k * 10_000, now - 50 * MIN, 1.5,
                         lat=lat, lon=lon, depth=2.0) for k in range(6)]
    bad = [1] if where == "end-of-page" else [2, 3]  # pages of 2: [0 1] [2 3] [4 5]
    for k in bad:
        del feats[k]["geometry"]
    with cat.cond:
        cat.publish(*feats, feed=False)
    ing = start_service("ingestor", env=ingestor_env(hub_server, redis_server, cat,
                                                     FDSN_PAGE_SIZE="2"))
    done = nth_log(ing, sweep_done, 1, timeout=8)
    assert (done["new"], done["malformed"]) == (6 - len(bad), len(bad)), done
    sent = sorted(b["event_id"] for _, _, b in read_hub(hub_server))
    assert sent == sorted(f["id"] for k, f in enumerate(feats) if k not in bad)
