"""The dashboard in a real browser: playwright-core drives Debian's chromium (headless,
--no-sandbox) against serving-api on a Redis loaded from a real USGS feed (../shared/data, or a
small synthetic one when absent): map, hourly chart, max-magnitude tile and the latest-20 table
render those numbers, and an event published live appears without a reload. Screenshots go to
QS_ARTIFACTS (test-artifacts/ under ./quakestream test)."""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import ROOT
from serving_helpers import HOUR, MIN5, Resp, event, load, row, start_serving

SHARED = os.environ.get("QS_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
NODE_DIR = os.environ.get("QS_NODE_DIR", os.path.join(ROOT, "tests", "node"))


def replayed_feed(now):
    """Events of a real USGS feed, shifted so the newest is 10 minutes old (a replay), with their
    5-minute speed windows; or a synthetic feed without the reference data."""
    path = os.path.join(SHARED, "data", "usgs", "usgs_all_day_abruzzi.geojson")
    events = []
    if os.path.exists(path):
        with open(path) as f:
            feats = json.load(f)["features"]
        newest = max(ft["properties"]["time"] for ft in feats)
        shift = now - 10 * 60_000 - newest
        for ft in feats:
            p, (lon, lat, depth) = ft["properties"], ft["geometry"]["coordinates"]
            if p.get("mag") is None or not (-2 <= p["mag"] <= 10.5):
                continue
            e = event(ft["id"], p["time"] + shift, p["mag"], lon, lat, depth=depth,
                      region="world", tsunami=bool(p.get("tsunami")))
            e["place"] = p.get("place") or ""
            events.append(e)
    else:
        events = [event(f"syn{i}", now - i * 7 * 60_000, 2.0 + (i % 40) / 10, -120 + i, 35 - i / 2)
                  for i in range(60)]
    windows = {}
    for e in events:
        start = e["time"] - e["time"] % MIN5
        windows.setdefault((e["region"], start), []).append((e["magnitude"], e["depth_km"],
                                                              e["tsunami_flag"]))
    rt = [row(reg, start, MIN5, evs) for (reg, start), evs in windows.items()]
    return events, rt


def test_dashboard_renders_real_data_and_shows_a_live_event(start_service, redis_server, tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.fail("chromium missing: ./quakestream deps installs Debian's chromium")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "playwright-core")):
        pytest.fail("playwright-core missing: ./quakestream deps installs tests/node")
    if not os.path.isdir(os.path.join(ROOT, "web", "node_modules", "uplot")):
        pytest.fail("web/node_modules missing: ./quakestream build installs it")
    now = int(time.time() * 1000)
    events, rt = replayed_feed(now)
    resp = Resp(redis_server.port)
    load(resp, rt_rows=rt, events=events)
    svc = start_serving(start_service, redis_server.url)
    shots = os.environ.get("QS_ARTIFACTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    proc = subprocess.Popen(["node", os.path.join(NODE_DIR, "dashboard.mjs"), svc.api + "/", shots],
                            cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, CHROMIUM=chromium))
    try:
        first = json.loads(proc.stdout.readline() or b'{"stage":"none"}')
        assert first["stage"] == "rendered", (first, proc.stderr.read().decode()[-2000:])
        assert first["errors"] == []
        day = [e for e in events if e["time"] >= now - 24 * HOUR]
        in_week = [e for e in events if e["time"] >= now - 7 * 24 * HOUR]
        latest = sorted(events, key=lambda e: e["time"], reverse=True)[:20]
        assert first["countries"] > 100 and first["landPaths"] == first["countries"]
        assert first["circles"] == min(len(in_week), 1000)
        assert first["chartCanvas"] >= 1 and first["chartPoints"] >= 7 * 24
        assert first["chartTotal"] == len(in_week)  # the merged hourly counts of the windows
        assert first["tile"] == f"M {max(e['magnitude'] for e in day):.1f}"
        assert first["tileCount"] == str(len(day))
        assert first["rows"] == [e["event_id"] for e in latest]

        big = event("live-test-1", now + 1, 7.9, 142.4, 38.3, region="japan")  # the newest
        load(resp, events=[big])
        resp.call("PUBLISH", "qs:live:events", json.dumps({"type": "event", "data": big}))
        proc.stdin.write(b"live-test-1\n")
        proc.stdin.flush()
        live = json.loads(proc.stdout.readline() or b'{"stage":"none"}')
        assert live["stage"] == "live", (live, proc.stderr.read().decode()[-2000:])
        assert live["firstRow"] == "live-test-1" and live["circle"] and live["rows"] == 20
        assert live["tile"] == "M 7.9" and live["errors"] == []
        assert proc.wait(timeout=30) == 0
        assert os.path.getsize(os.path.join(shots, "dashboard.png")) > 10_000
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        resp.close()
