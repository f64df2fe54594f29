"""The merged numbers of serving-api equal an independent computation from a real USGS feed.

The month feed (../shared/data/usgs, shifted so its newest event is ten minutes old) is laid out in
Redis as the two layers would write it: the batch layer's hourly rows up to a cutoff six hours ago
(and, as a run that saw part of the next hours would, rows after it), the speed layer's 5-minute
windows for every event (also before the cutoff). The expected numbers are computed here from the
feed's events directly — no rows involved — and REST (/summary/regions, /timeseries, /stats) and
the WebSocket snapshot must give exactly them: nothing counted twice at the cutoff, nothing lost."""
import asyncio
import json
import os
import time

import pytest

from conftest import ROOT
from serving_helpers import (DAY, HOUR, MIN5, WS, Resp, event, http, load, micro, row,
                             start_serving)

SHARED = os.environ.get("QS_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
FEED = os.path.join(SHARED, "data", "usgs", "usgs_4.5_month_utero.geojson")


def region_of(lon, lat):
    """Any deterministic rule will do: the test checks the merge, not the region rules."""
    return ("west" if lon < -30 else "middle" if lon < 60 else "east") + ("-n" if lat >= 0 else "-s")


def feed_events(now):
    with open(FEED) as f:
        feats = json.load(f)["features"]
    newest = max(ft["properties"]["time"] for ft in feats)
    shift = now - 10 * 60_000 - newest
    out = []
    for ft in feats:
        p, (lon, lat, depth) = ft["properties"], ft["geometry"]["coordinates"]
        if p.get("mag") is None or p.get("type", "earthquake") != "earthquake":
            continue
        e = event(ft["id"], p["time"] + shift, p["mag"], lon, lat, depth=depth,
                  region=region_of(lon, lat), tsunami=bool(p.get("tsunami")))
        out.append(e)
    return out


def bucket(events, length):
    rows = {}
    for e in events:
        start = e["time"] - e["time"] % length
        rows.setdefault((e["region"], start), []).append(
            (e["magnitude"], e["depth_km"], e["tsunami_flag"]))
    return [row(r, s, length, evs) for (r, s), evs in rows.items()]


def test_rest_and_live_equal_an_independent_computation_from_the_feed(start_service,
                                                                      redis_server):
    if not os.path.exists(FEED):
        pytest.skip("reference feed absent (../shared/data)")
    now = int(time.time() * 1000)
    events = feed_events(now)
    assert len(events) > 300
    C = now - now % HOUR - 6 * HOUR
    before = [e for e in events if e["time"] < C]
    after = [e for e in events if e["time"] >= C]
    batch = bucket(before, HOUR) + bucket(after[: len(after) // 2], HOUR)  # a partial later run
    speed = bucket(events, MIN5)  # the speed layer keeps windows from before the cutoff too
    resp = Resp(redis_server.port)
    load(resp, rt_rows=speed, batch_rows=batch, events=events, cutoff_ms=C)
    svc = start_serving(start_service, redis_server.url)

    # independent: straight from the events
    expect = {}
    for e in events:
        x = expect.setdefault(e["region"], {"n": 0, "mag": 0, "depth": 0, "sig": 0, "tsu": 0})
        x["n"] += 1
        x["mag"] += micro(e["magnitude"])
        x["depth"] += micro(e["depth_km"])
        x["sig"] += micro(e["magnitude"]) >= 5_000_000
        x["tsu"] += e["tsunami_flag"]
    _, _, body = http(svc.api + "/api/v1/summary/regions")
    got = {r["region"]: r for r in json.loads(body)["regions"]}
    assert sorted(got) == sorted(expect)
    for reg, x in expect.items():
        g = got[reg]
        assert (g["event_count"], g["mag_sum_micro"], g["depth_sum_micro"]) == (
            x["n"], x["mag"], x["depth"]), reg
        assert (g["significant_count"], g["tsunami_count"]) == (x["sig"], x["tsu"]), reg
        assert g["avg_magnitude"] == x["mag"] / x["n"] / 1e6
        assert g["data_freshness"] == "batch+realtime" or not any(
            e["region"] == reg and e["time"] >= C for e in events)

    _, _, body = http(svc.api + "/api/v1/timeseries?since=31d&bin=1h")
    per_hour = {}
    for e in events:
        h = e["time"] - e["time"] % HOUR
        per_hour[h] = per_hour.get(h, 0) + 1
    pts = json.loads(body)["points"]
    assert {p["t_ms"]: p["event_count"] for p in pts if p["event_count"]} == per_hour

    _, _, body = http(svc.api + "/api/v1/stats?window=24h")
    st = json.loads(body)
    day = [e for e in events if e["time"] >= now - DAY]
    top = max(day, key=lambda e: e["magnitude"])
    assert st["event_count"] == len(day) and st["max_magnitude"] == top["magnitude"]

    async def live():
        ws = await WS.connect(svc.api_port)
        snaps = await ws.subscribe(["aggregates"])
        ws.close()
        return snaps["aggregates"]["windows"]

    windows = asyncio.run(live())
    hour_ago = now - HOUR + MIN5  # well inside the snapshot's hour (its clock ran a bit later)
    expect_w = {}
    for e in events:
        s = e["time"] - e["time"] % MIN5
        if s >= hour_ago:
            expect_w[(e["region"], s)] = expect_w.get((e["region"], s), 0) + 1
    assert {(w["region"], w["window_start_ms"]): w["event_count"] for w in windows
            if w["window_start_ms"] >= hour_ago} == expect_w
    assert expect_w  # the replayed feed has events in the last hour
    resp.close()
