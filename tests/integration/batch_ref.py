"""Test and benchmark helpers for the batch worker, independent of its C code.

- write_capture(): Event Hubs Capture files written with Debian's python3-avro (proto/capture.avsc).
- make_dataset(): a deterministic set of events with revisions, deletions, associations, ties,
  duplicates, hour/day boundary times and invalid bodies, spread over partitions and files.
- reference(): the batch layer's rules (DESIGN.md "The event", docs/aggregates.md) computed in
  plain Python from the Capture files, read back with python3-avro.
"""
import datetime
import json
import os
import random
from decimal import ROUND_HALF_UP, Decimal

import avro.datafile
import avro.io
import avro.schema

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CAPTURE_SCHEMA = os.path.join(ROOT, "proto", "capture.avsc")
HOUR = 3600000
DAY = 86400000
REGIONS = ["us-west", "alaska", "hawaii", "japan", "chile"]


def capture_schema():
    with open(CAPTURE_SCHEMA) as f:
        return avro.schema.parse(f.read())


def us_time(ms):
    """Capture's "M/D/YYYY h:mm:ss AM" form."""
    d = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    h = d.hour % 12 or 12
    return "%d/%d/%d %d:%02d:%02d %s" % (d.month, d.day, d.year, h, d.minute, d.second,
                                         "AM" if d.hour < 12 else "PM")


def iso_time(ms):
    d = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def capture_path(root, partition, start_ms, ns="qsns", hub="earthquake-events"):
    d = datetime.datetime.fromtimestamp(start_ms / 1000, tz=datetime.timezone.utc)
    return os.path.join(root, ns, hub, "p=%s" % partition, d.strftime("%Y/%m/%d/%H/%M/%S") + ".avro")


def write_capture(path, records, codec="deflate"):
    """records: list of (enqueued_time_string, body bytes or None)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        w = avro.datafile.DataFileWriter(f, avro.io.DatumWriter(), capture_schema(), codec=codec)
        for i, (t, body) in enumerate(records):
            w.append({"SequenceNumber": i, "Offset": str(i * 512), "EnqueuedTimeUtc": t,
                      "SystemProperties": {"x-opt-partition-key": "k"}, "Properties": {},
                      "Body": body})
        w.close()


def event(eid, t, updated, mag, depth, region, tsunami=False, change=None, ids=None,
          status="reviewed", superseded_by=None, ingested_at=None):
    ev = {"event_id": eid, "magnitude": mag, "mag_type": "ml", "place": "somewhere " + eid,
          "time": t, "updated": updated, "longitude": -120.5, "latitude": 35.25,
          "depth_km": depth, "event_type": "earthquake", "status": status,
          "tsunami_flag": tsunami, "alert_level": None, "net": "ci", "sig": 100,
          "region": region, "source": "test",
          "ingested_at": ingested_at if ingested_at is not None else updated + 1000,
          "ids": ids if ids is not None else [eid]}
    if change:
        ev["change"] = change
    if superseded_by:
        ev["superseded_by"] = superseded_by
    return ev


def body(ev):
    return json.dumps(ev, separators=(",", ":")).encode()


def make_dataset(root, base_ms, n_random=400, seed=7):
    """Writes Capture files under root; returns (files, expected cutoff). base_ms is a UTC day
    start. Partition 0 covers up to base+2d+5:30, partition 1 up to base+2d+3:10."""
    rnd = random.Random(seed)
    bodies = []
    for i in range(n_random):
        t = base_ms + rnd.randrange(2 * DAY)
        mag = None if i % 17 == 0 else round(rnd.uniform(-0.5, 7.5), rnd.choice([1, 2, 3]))
        depth = None if i % 23 == 0 else round(rnd.uniform(-3, 600), rnd.choice([0, 1, 2, 3]))
        bodies.append(body(event("ev%04d" % i, t, t + 60000, mag, depth, rnd.choice(REGIONS),
                                 tsunami=(i % 29 == 0))))
    # Boundaries: hour start, last ms of an hour, midnight, last ms of a day.
    for j, t in enumerate([base_ms + 5 * HOUR, base_ms + 6 * HOUR - 1, base_ms + DAY,
                           base_ms + DAY - 1, base_ms]):
        bodies.append(body(event("edge%d" % j, t, t + 1, 4.9999996, 10.0, "japan")))
    # Revisions: newest wins regardless of file order (the old one is written later).
    revisions = [
        body(event("rev1", base_ms + 3 * HOUR, base_ms + 3 * HOUR + 5000, 5.6, 12.0, "us-west",
                   change="revision")),
        body(event("rev1", base_ms + 3 * HOUR, base_ms + 3 * HOUR + 1000, 4.2, 11.0, "us-west")),
        body(event("rev2", base_ms + 7 * HOUR, base_ms + 9 * HOUR, 6.1, 30.0, "chile",
                   change="revision")),
        # The revision moves the event to another hour and region.
        body(event("rev2", base_ms + 8 * HOUR + 59 * 60000, base_ms + 10 * HOUR, 6.3, 33.0,
                   "japan", change="revision", tsunami=True)),
        body(event("rev2", base_ms + 7 * HOUR, base_ms + 8 * HOUR, 5.9, 29.0, "chile")),
    ]
    # Deletions, explicit supersession, association through ids, ties and duplicates.
    others = [
        body(event("del1", base_ms + 2 * HOUR, base_ms + 2 * HOUR + 10, 3.3, 5.0, "alaska")),
        body(event("del1", base_ms + 2 * HOUR, base_ms + 4 * HOUR, 3.3, 5.0, "alaska",
                   change="deleted", status="deleted")),
        body(event("sup1", base_ms + 11 * HOUR, base_ms + 11 * HOUR + 10, 2.0, 1.0, "hawaii")),
        body(event("sup1", base_ms + 11 * HOUR, base_ms + 12 * HOUR, 2.0, 1.0, "hawaii",
                   change="superseded", superseded_by="us9000abc")),
        body(event("ci111", base_ms + 13 * HOUR, base_ms + 13 * HOUR + 10, 3.1, 7.0, "us-west")),
        body(event("us7000xyz", base_ms + 13 * HOUR, base_ms + 14 * HOUR, 3.2, 7.5, "us-west",
                   ids=["ci111", "us7000xyz"])),
        body(event("tie1", base_ms + 15 * HOUR, base_ms + 15 * HOUR, 1.5, 2.0, "alaska",
                   ingested_at=base_ms + 16 * HOUR)),
        body(event("tie1", base_ms + 15 * HOUR, base_ms + 15 * HOUR, 1.7, 2.0, "alaska",
                   ingested_at=base_ms + 16 * HOUR + 1)),
        body(event("tie2", base_ms + 15 * HOUR, base_ms + 15 * HOUR, 1.1, 2.0, "alaska",
                   ingested_at=base_ms)),
        body(event("tie2", base_ms + 15 * HOUR, base_ms + 15 * HOUR, 1.2, 2.0, "alaska",
                   ingested_at=base_ms)),
        body(event("dup1", base_ms + 16 * HOUR, base_ms + 16 * HOUR, 2.5, None, "chile")),
        body(event("dup1", base_ms + 16 * HOUR, base_ms + 16 * HOUR, 2.5, None, "chile")),
    ]
    invalid = [b"not json at all", b'{"event_id":"x1"}', None,
               body(event("bad region", base_ms, base_ms, 1.0, 1.0, "us-west"))]
    everything = bodies + revisions[:1] + others + invalid + revisions[1:]
    # Two partitions, three files each, alternating codecs and time formats.
    p_end = {0: base_ms + 2 * DAY + 5 * HOUR + 30 * 60000, 1: base_ms + 2 * DAY + 3 * HOUR +
             10 * 60000}
    files = []
    chunks = [everything[k::6] for k in range(6)]
    for k, chunk in enumerate(chunks):
        part = k % 2
        start = base_ms + (k // 2) * (DAY // 2)
        recs = []
        for i, b in enumerate(chunk):
            t = start + i * 1000
            if k >= 4 and i == len(chunk) - 1:
                t = p_end[part]
            recs.append(((us_time if (k + i) % 2 else iso_time)(t), b))
        path = capture_path(root, part, start)
        write_capture(path, recs, codec="deflate" if k % 2 else "null")
        files.append(path)
    return files, min(p_end.values()) // HOUR * HOUR


# ---- the reference computation ----------------------------------------------------------------

def micro(v):
    """llround(v * 1e6): the product in double precision, then half away from zero."""
    return int(Decimal(v * 1e6).to_integral_value(rounding=ROUND_HALF_UP))


def body_hash(data):
    """The worker's tie-break hash (fold.h bw_body_hash)."""
    m, p = 0xFFFFFFFFFFFFFFFF, 1099511628211
    basis = 14695981039346656037
    h = [basis, basis ^ 1, basis ^ 2, basis ^ 3]

    def step(x, w):
        x = ((x ^ w) * p) & m
        return x ^ (x >> 32)

    n = len(data)
    i = 0
    while i + 32 <= n:
        for k in range(4):
            h[k] = step(h[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little"))
        i += 32
    while i + 8 <= n:
        h[0] = step(h[0], int.from_bytes(data[i:i + 8], "little"))
        i += 8
    for b in data[i:]:
        h[0] = ((h[0] ^ b) * p) & m
    r = h[0]
    for k in range(1, 4):
        r = ((r ^ h[k]) * p) & m
    return ((r ^ n) * p) & m


REQUIRED = ["event_id", "magnitude", "mag_type", "place", "time", "updated", "longitude",
            "latitude", "depth_km", "event_type", "status", "tsunami_flag", "alert_level", "net",
            "sig", "region", "source", "ingested_at", "ids"]


def usable(ev):
    import re
    return (isinstance(ev, dict) and all(k in ev for k in REQUIRED)
            and re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", ev["event_id"] or "") is not None
            and re.fullmatch(r"[A-Za-z0-9._:-]{1,63}", ev["region"] or "") is not None)


def read_bodies(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            for rec in avro.datafile.DataFileReader(f, avro.io.DatumReader()):
                out.append(rec["Body"])
    return out


def reference(paths, significant=5.0):
    """-> (hourly rows, daily rows, counters) exactly as the batch layer must compute them."""
    latest = {}
    invalid = 0
    for b in read_bodies(paths):
        try:
            ev = json.loads(b) if b is not None else None
        except ValueError:
            ev = None
        if not usable(ev):
            invalid += 1
            continue
        key = (ev["updated"], ev["ingested_at"], body_hash(b))
        cur = latest.get(ev["event_id"])
        if cur is None or key > cur[0]:
            latest[ev["event_id"]] = (key, ev)

    def live(ev):
        return (ev.get("change") not in ("deleted", "superseded") and ev["status"] != "deleted")

    out = set()
    for eid, (_, ev) in latest.items():
        if not live(ev):
            continue
        for x in ev["ids"]:
            if x == eid or x not in latest or not live(latest[x][1]):
                continue
            xev = latest[x][1]
            if eid in xev["ids"]:
                out.add(x if (ev["updated"], eid) > (xev["updated"], x) else eid)
            else:
                out.add(x)
    thr = micro(significant)
    hours = {}
    counted = 0
    for eid, (_, ev) in latest.items():
        if not live(ev) or eid in out:
            continue
        counted += 1
        h = ev["time"] // HOUR * HOUR
        a = hours.setdefault((h, ev["region"]), dict(event_count=0, mag_count=0, mag_sum=0,
                                                      mag_min=None, mag_max=None, depth_count=0,
                                                      depth_sum=0, significant=0, tsunami=0))
        a["event_count"] += 1
        if ev["magnitude"] is not None:
            m = micro(ev["magnitude"])
            a["mag_count"] += 1
            a["mag_sum"] += m
            a["mag_min"] = m if a["mag_min"] is None else min(a["mag_min"], m)
            a["mag_max"] = m if a["mag_max"] is None else max(a["mag_max"], m)
            if m >= thr:
                a["significant"] += 1
        if ev["depth_km"] is not None:
            a["depth_count"] += 1
            a["depth_sum"] += micro(ev["depth_km"])
        if ev["tsunami_flag"]:
            a["tsunami"] += 1
    days = {}
    for (h, region), a in hours.items():
        d = days.setdefault((h // DAY * DAY, region), dict(event_count=0, mag_count=0, mag_sum=0,
                                                            mag_min=None, mag_max=None,
                                                            depth_count=0, depth_sum=0,
                                                            significant=0, tsunami=0))
        for k in ("event_count", "mag_count", "mag_sum", "depth_count", "depth_sum", "significant",
                  "tsunami"):
            d[k] += a[k]
        for k, f in (("mag_min", min), ("mag_max", max)):
            if a[k] is not None:
                d[k] = a[k] if d[k] is None else f(d[k], a[k])

    def stats(a):
        return {
            "event_count": a["event_count"],
            "avg_magnitude": a["mag_sum"] / a["mag_count"] / 1e6 if a["mag_count"] else None,
            "max_magnitude": a["mag_max"] / 1e6 if a["mag_count"] else None,
            "min_magnitude": a["mag_min"] / 1e6 if a["mag_count"] else None,
            "avg_depth_km": a["depth_sum"] / a["depth_count"] / 1e6 if a["depth_count"] else None,
            "significant_count": a["significant"],
            "mag_sum_micro": a["mag_sum"], "mag_count": a["mag_count"],
            "depth_sum_micro": a["depth_sum"], "depth_count": a["depth_count"],
        }

    hourly = []
    for (h, region) in sorted(hours):
        r = {"window_start": h, "window_end": h + HOUR, "region": region}
        r.update(stats(hours[(h, region)]))
        r["tsunami_count"] = hours[(h, region)]["tsunami"]
        hourly.append(r)
    daily = []
    for (d, region) in sorted(days):
        date = datetime.datetime.fromtimestamp(d / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d")
        r = {"date": date, "day_start": d, "region": region}
        r.update(stats(days[(d, region)]))
        r["tsunami_events"] = days[(d, region)]["tsunami"]
        daily.append(r)
    counters = {"invalid": invalid, "events": len(latest), "counted": counted}
    return hourly, daily, counters


def read_gold(path):
    """Gold rows with timestamp-millis as epoch ms (python3-avro turns them into datetimes)."""
    def ms(v):
        if isinstance(v, datetime.datetime):
            return round(v.timestamp() * 1000)
        return v
    with open(path, "rb") as f:
        return [{k: ms(v) for k, v in r.items()}
                for r in avro.datafile.DataFileReader(f, avro.io.DatumReader())]
