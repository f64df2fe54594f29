"""Helpers of the speed-aggregator tests: event streams built from the reference feeds (or a
seeded generator), sending them to the hub with the qs-eh CLI, an independent Python
computation of the windows, and a dump of the aggregator's Redis tables for exact comparison.

The reference computation deliberately shares no code with the service: it reads the same
events, keeps the newest `updated` of each event_id (dropping deleted/superseded ones, ignoring
`moved` messages as the batch layer does), and bins them into epoch-aligned half-open windows
with the integer micro-unit sums of docs/aggregates.md.

Streams with region changes are sent as the ingestor sends them (docs/changes.md): with_moves()
adds the `moved` message on the old region before a version that changes region, and keys
deletions and supersedes to the region the event was last counted in.
"""
import json
import math
import os
import random
import subprocess
import time

from conftest import BUILD, ROOT

SHARED = os.path.join(os.environ.get("QS_SHARED_DIR", os.path.join(ROOT, "..", "shared")), "data")
HUB = "earthquake-events"
WINDOW_MS = 300_000


def _regions():
    with open(os.path.join(ROOT, "proto", "regions.json")) as f:
        return json.load(f)["regions"]


_RULES = None


def region_of(lat, lon):
    """First rule with a box containing the point (edges included; min_lon > max_lon wraps)."""
    global _RULES
    if _RULES is None:
        _RULES = _regions()
    for rule in _RULES:
        for b in rule["boxes"]:
            if not (b["min_lat"] <= lat <= b["max_lat"]):
                continue
            if b["min_lon"] <= b["max_lon"]:
                ok = b["min_lon"] <= lon <= b["max_lon"]
            else:
                ok = lon >= b["min_lon"] or lon <= b["max_lon"]
            if ok:
                return rule["name"]
    return "other"


def make_event(eid, mag, t, updated, lat, lon, depth, change="new", superseded_by=None,
               tsunami=False, place="somewhere"):
    ev = {"event_id": eid, "magnitude": mag, "mag_type": "ml", "place": place or "",
          "time": t, "updated": updated, "longitude": lon, "latitude": lat, "depth_km": depth,
          "event_type": "earthquake", "status": "reviewed", "tsunami_flag": tsunami,
          "alert_level": None, "net": "", "sig": 0, "region": region_of(lat, lon),
          "source": "test", "ingested_at": updated, "ids": [eid], "change": change}
    if superseded_by:
        ev["superseded_by"] = superseded_by
    return ev


def usgs_events(name="usgs_all_day_abruzzi.geojson"):
    """The features of a real USGS summary feed as events (None when the data is absent)."""
    path = os.path.join(SHARED, "usgs", name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        feed = json.load(f)
    out = []
    for feat in feed["features"]:
        p, (lon, lat, depth) = feat["properties"], feat["geometry"]["coordinates"]
        out.append(make_event(feat["id"], p["mag"], p["time"], p["updated"], lat, lon, depth,
                              tsunami=bool(p.get("tsunami")), place=p.get("place")))
    return out


def with_moves(events):
    """events as the ingestor sends them (docs/changes.md, "Region moves"): before a version of
    an id whose region differs from the region the id was last counted in, the `moved` message
    (that version's fields, region = the old region, change "moved"); deletions and supersedes
    of a counted id keyed to the region it was last counted in. Versions not newer than the
    newest one of their id (duplicates, late old revisions) pass unchanged, on their own region
    (the aggregator must ignore them)."""
    out, where, newest = [], {}, {}
    for ev in events:
        eid = ev["event_id"]
        if eid in newest and ev["updated"] <= newest[eid]:
            out.append(ev)
            continue
        newest[eid] = ev["updated"]
        counted = where.get(eid)
        if ev.get("change") in ("deleted", "superseded"):
            if counted is not None and counted != ev["region"]:
                ev = dict(ev, region=counted)
            where[eid] = None
        elif ev.get("change") != "moved":
            if counted is not None and counted != ev["region"]:
                out.append(dict(ev, region=counted, change="moved"))
            where[eid] = ev["region"]
        out.append(ev)
    return out


def moves_in(events):
    """Number of `moved` messages in a stream."""
    return sum(1 for ev in events if ev.get("change") == "moved")


def revision_events():
    """The earthquakes-feed revision log as events: revisions, and merges as `superseded`, as the
    ingestor sends them (with_moves: the log moves events between regions).
    `updated` is updatedAt + rev so that two revisions of one id in one batch stay ordered."""
    path = os.path.join(SHARED, "revisions", "earthquakes-feed_changes_2026-10-05.ndjson")
    if not os.path.exists(path):
        return None
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            change = {"live": "new", "updated": "revision"}.get(r["state"], "superseded")
            out.append(make_event(r["id"], r["mag"], r["time"], r["updatedAt"] + r["rev"],
                                  r["lat"], r["lon"], r["depthKm"], change=change,
                                  superseded_by=r["mergedInto"] if change == "superseded" else None,
                                  tsunami=r["tsunami"], place=r["place"]))
    return with_moves(out)


def synthetic_events(n, seed=7, t0=None):
    """n events: ~70 % new, ~25 % revisions (magnitude/location/time changes, some moving
    window or region), ~3 % deletions, plus exact duplicates; a few null magnitudes/depths."""
    if t0 is None:  # two days ago, on an hour: inside every retention, outside any lateness
        t0 = (int(time.time() * 1000) - 2 * 86_400_000) // 3_600_000 * 3_600_000
    rng = random.Random(seed)
    out, live, k = [], [], 0
    places = [(61.0, -150.0), (19.4, -155.3), (36.0, -120.0), (35.7, 139.7), (38.0, 23.0),
              (-33.0, -71.0), (13.6, 120.4), (40.0, -100.0)]
    while len(out) < n:
        x = rng.random()
        if x < 0.70 or not live:
            k += 1
            lat, lon = places[rng.randrange(len(places))]
            t = t0 + rng.randrange(0, 6 * 3600_000)
            mag = None if rng.random() < 0.02 else round(rng.uniform(-0.5, 6.8), 2)
            depth = None if rng.random() < 0.01 else round(rng.uniform(-1, 300), 3)
            ev = make_event(f"ev{k}", mag, t, t + 1000, lat + rng.uniform(-1, 1),
                            lon + rng.uniform(-1, 1), depth, tsunami=rng.random() < 0.005)
            live.append(ev)
        elif x < 0.95:
            old = live[rng.randrange(len(live))]
            ev = dict(old)
            ev["updated"] = old["updated"] + rng.randrange(1, 100000)
            ev["change"] = "revision"
            if ev["magnitude"] is not None:
                ev["magnitude"] = round(min(10.0, max(-1.0, ev["magnitude"] + rng.uniform(-1, 1))), 2)
            if rng.random() < 0.3:
                ev["time"] = ev["time"] + rng.randrange(-400_000, 400_000)
            live[live.index(old)] = ev
        elif x < 0.98:
            old = live.pop(rng.randrange(len(live)))
            ev = dict(old)
            ev["updated"] = old["updated"] + 1
            ev["change"] = "deleted"
        else:
            ev = dict(out[rng.randrange(len(out))])  # exact duplicate of an earlier message
        out.append(ev)
    return out


def send(events, conn):
    """Sends events to the hub, keyed by region (as the ingestor does), in order per region."""
    by_region = {}
    for ev in events:
        by_region.setdefault(ev["region"], []).append(json.dumps(ev, separators=(",", ":")))
    tool = os.path.join(BUILD, "tools", "qs-eh")
    for region, lines in by_region.items():
        r = subprocess.run([tool, "send", HUB, "--key", region], input="\n".join(lines) + "\n",
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=conn))
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.count("ok ") == len(lines), r.stdout[-2000:] + r.stderr[-2000:]


def llround(x):
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def micro(v):
    return llround(v * 1e6)


def reference_windows(events, window_ms=WINDOW_MS, significant=5.0):
    """Independent computation: {window key: row dict of exact integers}."""
    latest = {}
    for ev in events:
        if ev.get("change") == "moved":
            continue  # says where the event no longer is; its version comes as a revision
        cur = latest.get(ev["event_id"])
        if cur is None or ev["updated"] > cur["updated"]:
            latest[ev["event_id"]] = ev
    wins = {}
    sig = micro(significant)
    for ev in latest.values():
        if ev.get("change") in ("deleted", "superseded"):
            continue
        start = ev["time"] // window_ms * window_ms
        key = f'{ev["region"]}|{start}'
        w = wins.setdefault(key, {"event_count": 0, "mag_count": 0, "mag_sum_micro": 0,
                                  "depth_count": 0, "depth_sum_micro": 0, "significant_count": 0,
                                  "tsunami_count": 0, "mags": []})
        w["event_count"] += 1
        if ev["magnitude"] is not None:
            m = micro(ev["magnitude"])
            w["mag_count"] += 1
            w["mag_sum_micro"] += m
            w["mags"].append(m)
            if m >= sig:
                w["significant_count"] += 1
        if ev["depth_km"] is not None:
            w["depth_count"] += 1
            w["depth_sum_micro"] += micro(ev["depth_km"])
        if ev["tsunami_flag"]:
            w["tsunami_count"] += 1
    for w in wins.values():
        mags = w.pop("mags")
        w["min_magnitude"] = min(mags) / 1e6 if mags else None
        w["max_magnitude"] = max(mags) / 1e6 if mags else None
    return wins, latest


FIELDS = ["event_count", "mag_count", "mag_sum_micro", "depth_count", "depth_sum_micro",
          "significant_count", "tsunami_count", "min_magnitude", "max_magnitude"]


def redis_windows(redis):
    out = {}
    raw = redis.cli("--raw", "HGETALL", "qs:rt:win").split("\n")
    raw = [x for x in raw if x != ""]
    for k, v in zip(raw[0::2], raw[1::2]):
        row = json.loads(v)
        out[k] = {f: row[f] for f in FIELDS}
    return out


_DUMP_LUA = """
local out = {}
local function add(kind, key, field, value)
  out[#out + 1] = kind; out[#out + 1] = key; out[#out + 1] = field; out[#out + 1] = value
end
for _, h in ipairs({'qs:rt:win', 'qs:ev', 'qs:rt:evstate', 'qs:alerts'}) do
  local kv = redis.call('HGETALL', h)
  for i = 1, #kv, 2 do add('h', h, kv[i], kv[i + 1]) end
end
for _, k in ipairs(redis.call('KEYS', 'qs:rt:mem:*')) do
  local kv = redis.call('HGETALL', k)
  for i = 1, #kv, 2 do add('h', k, kv[i], kv[i + 1]) end
end
for _, k in ipairs(redis.call('KEYS', 'qs:ckpt:*')) do
  add('h', k, 'sequence', redis.call('HGET', k, 'sequence'))
  add('h', k, 'watermark', redis.call('HGET', k, 'watermark'))
end
for _, z in ipairs({'qs:rt:win:idx', 'qs:ev:idx'}) do
  local kv = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for i = 1, #kv, 2 do add('z', z, kv[i], kv[i + 1]) end
end
local d = redis.call('LRANGE', 'qs:rt:dlq', 0, -1)
for i = 1, #d do add('l', 'qs:rt:dlq', tostring(i), d[i]) end
return out
"""


def dump_state(redis):
    """Every speed-layer table as {(key, field): value}, wall-clock fields (updated_at,
    created_at) removed, so two runs over the same input compare exactly."""
    raw = redis.cli("EVAL", _DUMP_LUA, "0").split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    assert len(raw) % 4 == 0, len(raw)
    out = {}
    for i in range(0, len(raw), 4):
        _, key, field, value = raw[i:i + 4]
        if key in ("qs:rt:win", "qs:alerts", "qs:rt:dlq"):
            try:
                obj = json.loads(value)
                obj.pop("updated_at", None)
                obj.pop("created_at", None)
                value = json.dumps(obj, sort_keys=True)
            except ValueError:
                pass
        out[(key, field)] = value
    return out


def hgetall(redis, key):
    raw = redis.cli("HGETALL", key)
    items = raw.split("\n")
    if items and items[-1] == "":
        items.pop()
    return dict(zip(items[0::2], items[1::2]))


def committed_events(redis, partitions=4):
    """Sum over partitions of (checkpoint sequence + 1): events committed (sequences from 0)."""
    total = 0
    for p in range(partitions):
        seq = redis.cli("HGET", f"qs:ckpt:{HUB}:$Default:{p}", "sequence").strip()
        if seq and int(seq) >= 0:
            total += int(seq) + 1
    return total


def hub_totals(conn, partitions=4):
    """Events on the hub per partition (last sequence + 1), via qs-eh props."""
    tool = os.path.join(BUILD, "tools", "qs-eh")
    total = 0
    for p in range(partitions):
        r = subprocess.run([tool, "props", HUB, str(p)], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=conn))
        assert r.returncode == 0, r.stderr
        props = json.loads(r.stdout)
        if not props.get("is_empty"):
            total += props["last_sequence"] + 1
    return total


def capture_hub(start_service, tmp_path):
    """The hub, capturing every second (so the test need not wait 5 minutes)."""
    from conftest import hub_connection_string
    with open(os.path.join(ROOT, "proto", "hub-config.json")) as f:
        cfg = json.load(f)
    for ns in cfg["UserConfig"]["NamespaceConfig"]:
        for e in ns["Entities"]:
            if e["Name"] == HUB:
                e["Capture"]["IntervalInSeconds"] = 1
    (tmp_path / "hub-config.json").write_text(json.dumps(cfg))
    hub = start_service("hub", env={"AMQP_PORT": "0", "DATA_DIR": str(tmp_path / "hub"),
                                    "CAPTURE_DIR": str(tmp_path / "cap"), "LOG_LEVEL": "debug",
                                    "HUB_CONFIG": str(tmp_path / "hub-config.json")})
    hub.connection_string = hub_connection_string(
        hub.wait_for_log(lambda r: r.get("msg") == "hub listening")["amqp_port"])
    hub.capture_dir = tmp_path / "cap"
    return hub
