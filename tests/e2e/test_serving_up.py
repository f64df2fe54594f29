"""serving-api inside `./quakestream up`: the dashboard and its vendor files, REST and the
WebSocket answer on QS_API_PORT against the stack's own Redis, and what is written to that Redis
(keyspace of docs/keyspace.md) shows up in REST and on the WebSocket with the same numbers."""
import asyncio
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from serving_helpers import MIN5, WS, Resp, event, http, load, row  # noqa: E402
from test_up import stack  # noqa: E402,F401  (the fixture: ./quakestream up on free ports)


def test_up_serves_dashboard_rest_and_live_from_the_stacks_redis(stack):  # noqa: F811
    assert stack["ready"].wait(180), "".join(stack["lines"])
    base = stack["base"]
    api = f"http://127.0.0.1:{base + 6}"
    redis_port = base + 5
    out = "".join(stack["lines"])
    assert f"dashboard        http://127.0.0.1:{base + 6}/   (serving-api" in out
    status, h, body = http(api + "/")
    assert status == 200 and b"quakestream" in body
    assert http(api + "/vendor/uplot/dist/uPlot.iife.min.js")[0] == 200
    assert http(api + "/api/v1/openapi.json")[0] == 200

    now = int(time.time() * 1000)
    start = now - now % MIN5
    evs = [event("e2e-1", now - 60_000, 4.2, 142.0, 38.0, region="japan"),
           event("e2e-2", now - 30_000, 5.1, 142.5, 38.5, region="japan")]
    resp = Resp(redis_port)
    load(resp, rt_rows=[row("japan", start, MIN5, [(4.2, 10.0, False), (5.1, 10.0, False)])],
         events=evs)

    # the server reuses answers for CACHE_MAX_AGE (1 s): ask until the new rows are visible
    deadline = time.monotonic() + 10
    while True:
        _, _, b = http(api + "/api/v1/summary/regions?since=1h")
        regions = {r["region"]: r for r in json.loads(b)["regions"]}
        if "japan" in regions or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    j = regions["japan"]
    assert j["event_count"] == 2 and j["max_magnitude"] == 5.1
    assert j["avg_magnitude"] == (4.2 + 5.1) / 2 and j["data_freshness"] == "realtime-only"
    _, _, b = http(api + "/api/v1/stats?window=1h")
    assert json.loads(b)["max_event"]["event_id"] == "e2e-2"

    async def live():
        ws = await WS.connect(base + 6)
        snaps = await ws.subscribe(["aggregates", "events"])
        win = [w for w in snaps["aggregates"]["windows"] if w["region"] == "japan"]
        assert win and win[0]["event_count"] == j["event_count"]
        assert {e["event_id"] for e in snaps["events"]["events"]} >= {"e2e-1", "e2e-2"}
        resp.call("PUBLISH", "qs:live:events",
                  json.dumps({"type": "event", "data": event("e2e-3", now, 3.3, 0, 0)}))
        m = await ws.recv()
        assert m["topic"] == "events" and m["data"]["event_id"] == "e2e-3"
        ws.close()

    asyncio.run(live())
    resp.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{base + 4}/readyz", timeout=5) as r:
        assert r.status == 200
