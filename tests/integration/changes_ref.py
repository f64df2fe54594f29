"""The reference of the catalogue-change tests (test_changes.py): USGS GeoJSON features, the final
state of a catalogue, and what every layer must show for it, computed in plain Python.

It shares no code with the services. It reads final catalogue state only (the newest version of
each id), never the messages the ingestor sent, so a layer that counts a version twice, misses a
retraction or keeps a superseded id differs from it:

- counted events: the newest version of every id, except deleted ones and ids named in the `ids`
  of another counted event (associated under a new preferred id);
- 5-minute windows (speed layer), hourly and daily rows (batch layer) per region, epoch-aligned
  and half open, with the exact integer micro-unit sums of docs/aggregates.md;
- the rolling hour (ROLLING_CLOCK=event), the merged regional summary, /stats and /events.

Regions come from proto/regions.json through speed_support.region_of (test code, first match).
"""
import datetime
import json
import os

from speed_support import micro, region_of

WINDOW_MS = 300_000
HOUR = 3_600_000
DAY = 86_400_000
SIGNIFICANT = micro(5.0)

# One point per region (box centres of proto/regions.json, checked with region_of when used),
# grouped by the hub partition their region maps to (crc32(region) % 4, as test_ingestor checks).
POINTS = {
    "us-central": (39.0, -103.5), "canada": (51.5, -129.5),            # partition 0
    "alaska": (61.5, -155.0), "hawaii": (20.5, -157.5),                # partition 1
    "us-west": (40.44, -127.15), "europe": (57.08, 14.5),              # partition 2
    "south-america": (-23.75, -58.0), "oceania": (-27.5, 133.5),       # partition 3
}


def point(region, dlat=0.0, dlon=0.0):
    lat, lon = POINTS[region]
    lat, lon = round(lat + dlat, 4), round(lon + dlon, 4)
    assert region_of(lat, lon) == region, (region, lat, lon, region_of(lat, lon))
    return lat, lon


def iso_ms(ms):
    """2026-11-25T10:00:00.000Z (the FDSN `updatedafter` form)."""
    d = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso_ms(text):
    """Inverse of iso_ms; ValueError for anything else."""
    if len(text) != 24 or text[10] != "T" or text[19] != "." or text[-1] != "Z":
        raise ValueError(text)
    d = datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp()) * 1000 + int(text[20:23])


def feature(eid, t, updated, mag, lat, lon, depth, status="automatic", net=None, ids=None,
            tsunami=0, mag_type="ml", place=None, sig=None):
    """A USGS GeoJSON Feature as the summary feed and the FDSN event service write it."""
    net = net if net is not None else eid[:2]
    ids = ids if ids is not None else [eid]
    return {
        "type": "Feature", "id": eid,
        "properties": {
            "mag": mag, "place": place if place is not None else f"10 km N of {eid}", "time": t,
            "updated": updated, "tz": None, "url": f"https://example.invalid/{eid}",
            "detail": f"https://example.invalid/{eid}.geojson", "felt": None, "cdi": None,
            "mmi": None, "alert": None, "status": status, "tsunami": tsunami,
            "sig": sig if sig is not None else (0 if mag is None else max(0, int(mag * 100))),
            "net": net, "code": eid[len(net):] or eid, "ids": "," + ",".join(ids) + ",",
            "sources": "," + ",".join(i[:2] for i in ids) + ",", "types": ",origin,",
            "nst": None, "dmin": None, "rms": 0.1, "gap": None, "magType": mag_type,
            "type": "earthquake", "title": f"M {mag} - {eid}"},
        "geometry": {"type": "Point", "coordinates": [lon, lat, depth]},
    }


def revised(feat, **props):
    """A new version of feat: properties changed (coordinates via lat/lon/depth keywords)."""
    out = json.loads(json.dumps(feat))
    lon, lat, depth = out["geometry"]["coordinates"]
    out["geometry"]["coordinates"] = [props.pop("lon", lon), props.pop("lat", lat),
                                      props.pop("depth", depth)]
    if "ids" in props:
        props["ids"] = "," + ",".join(props["ids"]) + ","
    out["properties"].update(props)
    return out


def ids_of(feat):
    return [x for x in (feat["properties"].get("ids") or "").split(",") if x]


def newest(versions):
    """{id: newest version} of features in publication order (a later equal `updated` loses)."""
    out = {}
    for f in versions:
        cur = out.get(f["id"])
        if cur is None or f["properties"]["updated"] > cur["properties"]["updated"]:
            out[f["id"]] = f
    return out


def counted(final):
    """{id: feature} of the events every layer counts, from {id: newest version}."""
    live = {i: f for i, f in final.items() if (f["properties"]["status"] or "") != "deleted"}
    named = set()
    for i, f in live.items():
        named.update(x for x in ids_of(f) if x != i)
    return {i: f for i, f in live.items() if i not in named}


def event_of(feat):
    """The fields the layers aggregate: time, region, magnitude, depth, tsunami."""
    p = feat["properties"]
    lon, lat, depth = feat["geometry"]["coordinates"]
    return {"event_id": feat["id"], "time": p["time"], "updated": p["updated"],
            "region": region_of(lat, lon), "magnitude": p["mag"], "depth_km": depth,
            "tsunami": bool(p["tsunami"]), "status": p["status"]}


def _empty():
    return {"event_count": 0, "mag_count": 0, "mag_sum_micro": 0, "depth_count": 0,
            "depth_sum_micro": 0, "significant_count": 0, "tsunami_count": 0,
            "min_magnitude": None, "max_magnitude": None}


def _add(row, ev):
    row["event_count"] += 1
    if ev["magnitude"] is not None:
        m = micro(ev["magnitude"])
        row["mag_count"] += 1
        row["mag_sum_micro"] += m
        row["min_magnitude"] = m if row["min_magnitude"] is None else min(row["min_magnitude"], m)
        row["max_magnitude"] = m if row["max_magnitude"] is None else max(row["max_magnitude"], m)
        if m >= SIGNIFICANT:
            row["significant_count"] += 1
    if ev["depth_km"] is not None:
        row["depth_count"] += 1
        row["depth_sum_micro"] += micro(ev["depth_km"])
    if ev["tsunami"]:
        row["tsunami_count"] += 1


def _finish(rows):
    for r in rows.values():
        for k in ("min_magnitude", "max_magnitude"):
            if r[k] is not None:
                r[k] = r[k] / 1e6
    return rows


FIELDS = ["event_count", "mag_count", "mag_sum_micro", "depth_count", "depth_sum_micro",
          "significant_count", "tsunami_count", "min_magnitude", "max_magnitude"]


def windows(events, window_ms=WINDOW_MS):
    """{"<region>|<window_start_ms>": row} over counted events ({id: feature})."""
    rows = {}
    for f in events.values():
        ev = event_of(f)
        start = ev["time"] // window_ms * window_ms
        _add(rows.setdefault(f'{ev["region"]}|{start}', _empty()), ev)
    return _finish(rows)


def daily(events):
    """{"<region>|<YYYY-MM-DD>": row} (UTC days)."""
    rows = {}
    for f in events.values():
        ev = event_of(f)
        day = datetime.datetime.fromtimestamp(ev["time"] // DAY * DAY / 1000,
                                              tz=datetime.timezone.utc).strftime("%Y-%m-%d")
        _add(rows.setdefault(f'{ev["region"]}|{day}', _empty()), ev)
    return _finish(rows)


def regions(events):
    """{region: row} over all time (the merged summary without `since`)."""
    rows = {}
    for f in events.values():
        ev = event_of(f)
        _add(rows.setdefault(ev["region"], _empty()), ev)
    return _finish(rows)


def total(events):
    row = _empty()
    for f in events.values():
        _add(row, event_of(f))
    return _finish({"t": row})["t"]


def rolling(events):
    """The rolling hour with ROLLING_CLOCK=event: events with time in (end - 1 h, end], end the
    newest counted event's time."""
    evs = [event_of(f) for f in events.values()]
    end = max(e["time"] for e in evs)
    hour = [e for e in evs if end - HOUR < e["time"] <= end]
    mags = [micro(e["magnitude"]) for e in hour if e["magnitude"] is not None]
    return {"window_end": end, "event_count": len(hour),
            "avg_magnitude": sum(mags) / len(mags) / 1e6 if mags else None,
            "max_magnitude": max(mags) / 1e6 if mags else None}


def stats(events, now_ms, window_ms=DAY):
    """/api/v1/stats?window=…: counted events with time in (now - window, now]."""
    evs = [event_of(f) for f in events.values() if now_ms - window_ms < f["properties"]["time"]
           <= now_ms]
    mags = [e for e in evs if e["magnitude"] is not None]
    top = max(mags, key=lambda e: micro(e["magnitude"]), default=None)
    return {"event_count": len(evs),
            "significant_count": sum(1 for e in mags if micro(e["magnitude"]) >= SIGNIFICANT),
            "tsunami_count": sum(1 for e in evs if e["tsunami"]),
            "max_magnitude": top["magnitude"] if top else None,
            "max_event": top["event_id"] if top else None}


# ---- the real revision log as a USGS change log ------------------------------------------------

REVISIONS = "earthquakes-feed_changes_2026-10-05.ndjson"


def revision_log_features(path):
    """The earthquakes-feed change log as USGS GeoJSON features, one per line in `seq` order.

    - `updated` = updatedAt + rev: strictly increasing per id (two revisions can share a batch);
    - a tombstone with `mergedInto` is not a line of its own: the survivor's next version lists
      both ids (`,survivor,old,`), and so does every later version of the survivor;
    - rev 1 is `automatic`, later revisions `reviewed`; the network is `efd` (one feed).
    """
    merged = {}    # survivor -> ids merged into it so far
    pending = {}   # survivor -> merged ids waiting for its next version
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["state"] == "tombstoned":
                assert r["mergedInto"], r  # every tombstone of this log is a merge
                pending.setdefault(r["mergedInto"], []).append(r["id"])
                continue
            merged.setdefault(r["id"], []).extend(pending.pop(r["id"], []))
            out.append(feature(
                r["id"], r["time"], r["updatedAt"] + r["rev"], r["mag"], r["lat"], r["lon"],
                r["depthKm"], status="automatic" if r["rev"] == 1 else "reviewed", net="efd",
                ids=[r["id"]] + merged[r["id"]], tsunami=1 if r["tsunami"] else 0,
                mag_type=r["magType"], place=r["place"] or "", sig=0))
    assert not pending, f"merges without a later survivor version: {pending}"
    return out


def shared_revision_log():
    """Path of the real revision log, or None when ../shared/data is absent."""
    from speed_support import SHARED
    path = os.path.join(SHARED, "revisions", REVISIONS)
    return path if os.path.exists(path) else None
