"""The whole pipeline as `./quakestream up` runs it: the recorded USGS week (vega-datasets'
earthquakes.json) is replayed into the hub, the ingestor -> hub -> speed-aggregator -> Redis ->
serving-api path carries it, and REST and the WebSocket snapshot show the numbers an independent
computation from the same feed gives (region rules and windows recomputed here in Python)."""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from serving_helpers import WS, http  # noqa: E402
from speed_support import make_event, reference_windows  # noqa: E402
from test_up import ROOT, stack  # noqa: E402,F401  (the fixture: ./quakestream up on free ports)

NODE_DIR = os.environ.get("QS_NODE_DIR", os.path.join(ROOT, "tests", "node"))
VEGA = os.path.join(NODE_DIR, "node_modules", "vega-datasets", "data", "earthquakes.json")


def reference(shift_ms):
    """Per region: event_count, mag sum (micro), max magnitude, from the feed shifted as the
    replay shifted it."""
    with open(VEGA) as f:
        feed = json.load(f)
    events = []
    for ft in feed["features"]:
        p, (lon, lat, depth) = ft["properties"], ft["geometry"]["coordinates"]
        events.append(make_event(ft["id"], p["mag"], p["time"] + shift_ms,
                                 p["updated"] + shift_ms, lat, lon, depth,
                                 tsunami=bool(p.get("tsunami"))))
    wins, latest = reference_windows(events)
    out = {}
    for key, w in wins.items():
        region = key.split("|")[0]
        r = out.setdefault(region, {"event_count": 0, "mag_sum_micro": 0, "mag_count": 0,
                                    "max_magnitude": None})
        r["event_count"] += w["event_count"]
        r["mag_sum_micro"] += w["mag_sum_micro"]
        r["mag_count"] += w["mag_count"]
        if w["max_magnitude"] is not None:
            r["max_magnitude"] = max(r["max_magnitude"] or -99, w["max_magnitude"])
    newest = [e["event_id"] for e in sorted(latest.values(), key=lambda e: -e["time"])[:20]]
    return out, len(events), wins, newest


def test_replayed_feed_reaches_rest_and_websocket_with_exact_numbers(stack):  # noqa: F811
    assert stack["ready"].wait(240), "".join(stack["lines"])
    log = [json.loads(l) for l in (stack["var"] / "log" / "replay.log").read_text().splitlines()
           if l.startswith("{")]
    started = next(r for r in log if r.get("msg") == "replay started")
    assert next(r for r in log if r.get("msg") == "replay done")["acknowledged"] == 1707
    want, total, wins, newest = reference(started["shift_ms"])
    api = f"http://127.0.0.1:{stack['base'] + 6}"

    # the aggregator consumes asynchronously: ask until it has applied the whole feed
    deadline = time.monotonic() + 120
    while True:
        status, _, body = http(api + "/api/v1/stats?window=8d")
        if status == 200 and json.loads(body)["event_count"] == total:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.5)

    status, _, body = http(api + "/api/v1/summary/regions?since=8d")
    assert status == 200, body
    summary = json.loads(body)
    got = {r["region"]: r for r in summary["regions"] if r["event_count"]}
    assert set(got) == set(want)
    for region, w in want.items():
        g = got[region]
        assert g["event_count"] == w["event_count"], region
        assert g["mag_sum_micro"] == w["mag_sum_micro"], region
        assert g["max_magnitude"] == w["max_magnitude"], region
        assert g["data_freshness"] == "realtime-only"  # no batch run has happened yet
    assert summary["total"]["event_count"] == total

    status, _, body = http(api + "/api/v1/events?limit=20")
    assert [e["event_id"] for e in json.loads(body)["events"]] == newest

    async def live():
        ws = await WS.connect(stack["base"] + 6)
        snaps = await ws.subscribe(["aggregates", "events"])
        ws.close()
        return snaps

    snaps = asyncio.run(live())
    windows = snaps["aggregates"]["windows"]  # the last hour's windows: each exactly as computed
    assert windows, "the feed ends now: the last hour has windows"
    for w in windows:
        ref = wins[f'{w["region"]}|{w["window_start_ms"]}']
        assert (w["event_count"], w["mag_sum_micro"]) == (ref["event_count"],
                                                          ref["mag_sum_micro"]), w
    assert [e["event_id"] for e in snaps["events"]["events"]] == newest
