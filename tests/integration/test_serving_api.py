"""serving-api REST: every endpoint against known Redis contents (docs/keyspace.md), the exact merge
at the batch cutoff, validation (400/404/405), Redis down (503 + /readyz), ETag, CORS, API keys,
rate limit, and every response checked against proto/openapi.yaml."""
import json
import os
import time

import pytest
import yaml

from conftest import ROOT
from serving_helpers import (DAY, HOUR, MIN5, OpenAPI, Resp, event, http, load, row,
                             start_serving)


def floor(ms, n):
    return ms - ms % n


@pytest.fixture
def data(redis_server):
    """The reference contents. C is the batch cutoff, two hours before the current hour.

    japan : batch hour [C-1h, C) = {4.0, 6.0}; a batch row for [C, C+1h) = {5.5} that a run
            wrote from partial data (must be ignored: speed covers it); speed [C-5m, C) = {6.0}
            (the same event as batch: must be ignored); speed [C, C+5m) = {5.5, 3.0}
    alaska: batch only, [C-3h, C-2h) = {2.0, 3.0}
    hawaii: speed only, [C+1h, C+1h+5m) = {4.4}
    """
    now = int(time.time() * 1000)
    C = floor(now, HOUR) - 2 * HOUR
    batch = [row("japan", C - HOUR, HOUR, [(4.0, 10.0, False), (6.0, 30.0, True)]),
             row("japan", C, HOUR, [(5.5, 20.0, False)]),
             row("alaska", C - 3 * HOUR, HOUR, [(2.0, 5.0, False), (3.0, 7.0, False)])]
    rt = [row("japan", C - MIN5, MIN5, [(6.0, 30.0, True)], {"final": True, "late_count": 0}),
          row("japan", C, MIN5, [(5.5, 20.0, False), (3.0, None, False)],
              {"final": True, "late_count": 0}),
          row("hawaii", C + HOUR, MIN5, [(4.4, 12.0, False)], {"final": False, "late_count": 0})]
    events = [event("ev1", now - 3 * HOUR, 2.5, -118.0, 34.0, region="us-west"),
              event("ev2", now - 2 * HOUR, 6.1, 142.0, 38.0, region="japan", tsunami=True),
              event("ev3", now - HOUR, 4.0, -155.0, 19.5, region="hawaii"),
              event("ev4", now - 30 * 60_000, 5.0, 179.5, -17.0, region="fiji"),
              event("ev5", now - 2 * DAY, 7.2, -70.0, -30.0, region="chile")]
    alerts = [{"id": "MAGNITUDE_SPIKE|ev2", "type": "MAGNITUDE_SPIKE", "created_at": now - 2 * HOUR,
               "region": "japan", "window_start": None, "event_id": "ev2", "magnitude": 6.1,
               "count": None, "threshold": 6.0, "message": "M6.1", "retracted": False},
              {"id": "TSUNAMI|ev2", "type": "TSUNAMI", "created_at": now - 2 * HOUR + 1,
               "region": "japan", "window_start": None, "event_id": "ev2", "magnitude": 6.1,
               "count": None, "threshold": None, "message": "tsunami", "retracted": False}]
    baselines = {"japan": {"hours": 10, "count_sum": 10, "count_sq_sum": 10},
                 "hawaii": {"hours": 10, "count_sum": 120, "count_sq_sum": 1440}}
    runs = [{"run_id": "run-1", "cutoff_ms": C, "files": 3, "events": 5, "errors": 0}]
    daily = [{"date": "2026-01-01", "region": "japan", "day_start_ms": 1767225600000,
              "event_count": 1}]
    resp = Resp(redis_server.port)
    load(resp, rt_rows=rt, batch_rows=batch, events=events, alerts=alerts, cutoff_ms=C,
         baselines=baselines, runs=runs, daily=daily)
    resp.close()
    return {"C": C, "now": now}


@pytest.fixture
def api(start_service, redis_server):
    return start_serving(start_service, redis_server.url)


def get_json(svc, path, **headers):
    status, h, body = http(svc.api + path, headers)
    return status, h, (json.loads(body) if body else None)


def test_summary_counts_batch_before_cutoff_and_speed_after_once_each(data, api):
    status, h, s = get_json(api, "/api/v1/summary/regions")
    assert status == 200 and h["content-type"] == "application/json"
    assert s["batch_cutoff_ms"] == data["C"]
    by = {r["region"]: r for r in s["regions"]}
    assert sorted(by) == ["alaska", "hawaii", "japan"]
    j = by["japan"]
    # batch {4.0, 6.0} before the cutoff + speed {5.5, 3.0} after it; the speed copy of 6.0
    # before the cutoff and the batch row of 5.5 after it are not counted again
    assert j["event_count"] == 4
    assert j["mag_sum_micro"] == 18_500_000 and j["mag_count"] == 4
    assert j["avg_magnitude"] == 4.625  # weighted by counts: 18.5 / 4
    assert (j["min_magnitude"], j["max_magnitude"]) == (3.0, 6.0)
    assert j["depth_count"] == 3 and j["avg_depth_km"] == 20.0  # (10 + 30 + 20) / 3
    assert j["significant_count"] == 2 and j["tsunami_count"] == 1
    assert j["data_freshness"] == "batch+realtime"
    assert (j["batch_hours"], j["realtime_windows"]) == (1, 1)
    assert by["alaska"]["data_freshness"] == "batch-only" and by["alaska"]["avg_magnitude"] == 2.5
    assert by["hawaii"]["data_freshness"] == "realtime-only" and by["hawaii"]["event_count"] == 1
    assert s["total"]["event_count"] == 7
    # since: only the hours from it on
    status, _, s2 = get_json(api, "/api/v1/summary/regions?since=" + str(
        (data["now"] - data["C"]) // HOUR + 1) + "h")
    assert status == 200
    assert {r["region"]: r["event_count"] for r in s2["regions"]} == {"japan": 4, "hawaii": 1}


def test_timeseries_puts_each_event_in_one_bin_on_both_sides_of_the_cutoff(data, api):
    C = data["C"]
    status, _, ts = get_json(api, "/api/v1/timeseries?since=6h&bin=1h")
    assert status == 200 and ts["bin_ms"] == HOUR
    pts = {p["t_ms"]: p for p in ts["points"]}
    assert pts[C - 3 * HOUR]["event_count"] == 2 and pts[C - 3 * HOUR]["data_freshness"] == "batch-only"
    assert pts[C - HOUR]["event_count"] == 2 and pts[C - HOUR]["data_freshness"] == "batch-only"
    assert pts[C]["event_count"] == 2 and pts[C]["data_freshness"] == "realtime-only"
    assert pts[C + HOUR]["event_count"] == 1
    assert sum(p["event_count"] for p in ts["points"]) == 7
    status, _, tj = get_json(api, "/api/v1/timeseries?since=6h&bin=1h&region=japan")
    assert sum(p["event_count"] for p in tj["points"]) == 4 and tj["region"] == "japan"
    status, _, td = get_json(api, "/api/v1/timeseries?since=2d&bin=1d")
    assert status == 200 and sum(p["event_count"] for p in td["points"]) == 7


def test_anomalies_are_windows_strictly_above_mean_plus_k_sigma(data, api):
    status, _, a = get_json(api, "/api/v1/anomalies?since=1d")
    assert status == 200 and a["k"] == 2
    got = [(x["region"], x["window_start_ms"]) for x in a["anomalies"]]
    # japan: mean 1/h, sigma 0 -> threshold 1/12 per 5 min: both japan windows (1 and 2 events);
    # hawaii: mean 12/h, sigma 0 -> threshold exactly 1: its 1-event window is not above it
    assert got == [("japan", data["C"]), ("japan", data["C"] - MIN5)]
    first = a["anomalies"][0]
    assert first["baseline"]["mean_per_hour"] == 1 and first["baseline"]["hours"] == 10
    assert abs(first["threshold"] - 1 / 12) < 1e-12
    assert abs(a["baselines"]["hawaii"]["threshold"] - 1.0) < 1e-12
    status, _, a2 = get_json(api, "/api/v1/anomalies?since=1d&region=hawaii&k=0")
    assert status == 200 and a2["anomalies"] == [] and list(a2["baselines"]) == ["hawaii"]


def test_events_latest_first_with_filters_and_geojson(data, api):
    status, _, e = get_json(api, "/api/v1/events?limit=3")
    assert status == 200 and [x["event_id"] for x in e["events"]] == ["ev4", "ev3", "ev2"]
    assert e["count"] == 3
    _, _, e = get_json(api, "/api/v1/events?min_mag=5")
    assert [x["event_id"] for x in e["events"]] == ["ev4", "ev2", "ev5"]
    _, _, e = get_json(api, "/api/v1/events?region=hawaii")
    assert [x["event_id"] for x in e["events"]] == ["ev3"]
    _, _, e = get_json(api, "/api/v1/events?since=1d")
    assert [x["event_id"] for x in e["events"]] == ["ev4", "ev3", "ev2", "ev1"]
    _, _, e = get_json(api, "/api/v1/events?bbox=170,-20,-150,40")  # across the antimeridian
    assert [x["event_id"] for x in e["events"]] == ["ev4", "ev3"]
    status, h, g = get_json(api, "/api/v1/events?limit=2&format=geojson")
    assert h["content-type"] == "application/geo+json" and g["type"] == "FeatureCollection"
    f = g["features"][0]
    assert f["id"] == "ev4" and f["geometry"] == {"type": "Point", "coordinates": [179.5, -17, 10]}
    assert f["properties"]["magnitude"] == 5.0
    status, h, g = get_json(api, "/api/v1/events?limit=1", Accept="application/geo+json")
    assert h["content-type"] == "application/geo+json" and len(g["features"]) == 1


def test_stats_give_max_magnitude_with_its_event_and_counts(data, api):
    status, _, s = get_json(api, "/api/v1/stats?window=24h")
    assert status == 200
    assert s["event_count"] == 4 and s["significant_count"] == 2 and s["tsunami_count"] == 1
    assert s["max_magnitude"] == 6.1 and s["max_event"]["event_id"] == "ev2"
    _, _, s = get_json(api, "/api/v1/stats?window=7d")
    assert s["event_count"] == 5 and s["max_event"]["event_id"] == "ev5"


def test_alerts_windows_and_batch_runs_lists(data, api):
    _, _, a = get_json(api, "/api/v1/alerts?since=1d")
    assert [x["type"] for x in a["alerts"]] == ["TSUNAMI", "MAGNITUDE_SPIKE"]
    _, _, a = get_json(api, "/api/v1/alerts?since=1d&type=TSUNAMI")
    assert [x["id"] for x in a["alerts"]] == ["TSUNAMI|ev2"]
    _, _, w = get_json(api, "/api/v1/windows/realtime?since=1d")
    assert [(x["region"], x["window_start_ms"]) for x in w["windows"]] == [
        ("hawaii", data["C"] + HOUR), ("japan", data["C"]), ("japan", data["C"] - MIN5)]
    assert w["windows"][0]["final"] is False
    _, _, w = get_json(api, "/api/v1/windows/realtime?since=1d&region=japan&limit=1")
    assert [x["window_start_ms"] for x in w["windows"]] == [data["C"]]
    _, _, w = get_json(api, "/api/v1/windows/batch/hourly?since=1d&region=alaska")
    assert [x["event_count"] for x in w["windows"]] == [2]
    _, _, w = get_json(api, "/api/v1/windows/batch/daily?since=366d")
    assert w["count"] == 1 and w["windows"][0]["region"] == "japan"
    _, _, r = get_json(api, "/api/v1/batch/runs")
    assert r["batch"]["cutoff_ms"] == data["C"] and r["batch"]["run_id"] == "run-1"
    assert r["runs"][0]["files"] == 3


def test_etag_and_if_none_match_give_304_and_reads_carry_cache_control(data, api):
    status, h, body = http(api.api + "/api/v1/summary/regions")
    assert status == 200 and h["etag"].startswith('"') and "max-age" in h["cache-control"]
    status, h2, body2 = http(api.api + "/api/v1/summary/regions", {"If-None-Match": h["etag"]})
    assert status == 304 and body2 == b"" and h2["etag"] == h["etag"]
    status, _, _ = http(api.api + "/api/v1/summary/regions", {"If-None-Match": '"other"'})
    assert status == 200


BAD = [
    ("/api/v1/summary/regions?since=yesterday", "since"),
    ("/api/v1/summary/regions?since=800d", "since"),
    ("/api/v1/summary/regions?foo=1", "foo"),
    ("/api/v1/summary/regions?since=1d&since=2d", "since"),
    ("/api/v1/timeseries?bin=90m", "bin"),
    ("/api/v1/timeseries?bin=0h", "bin"),
    ("/api/v1/timeseries?bin=1", "bin"),
    ("/api/v1/timeseries?since=400d", "since"),
    ("/api/v1/timeseries?region=bad%20region", "region"),
    ("/api/v1/anomalies?k=-1", "k"),
    ("/api/v1/anomalies?k=abc", "k"),
    ("/api/v1/anomalies?since=32d", "since"),
    ("/api/v1/events?limit=0", "limit"),
    ("/api/v1/events?limit=1001", "limit"),
    ("/api/v1/events?limit=1e3", "limit"),
    ("/api/v1/events?min_mag=11", "min_mag"),
    ("/api/v1/events?min_mag=nan", "min_mag"),
    ("/api/v1/events?bbox=1,2,3", "bbox"),
    ("/api/v1/events?bbox=0,50,10,40", "bbox"),
    ("/api/v1/events?bbox=-200,0,10,10", "bbox"),
    ("/api/v1/events?format=xml", "format"),
    ("/api/v1/events?since=2030-01-01T00:00:00Z", "since"),
    ("/api/v1/stats?window=24", "window"),
    ("/api/v1/stats?window=91d", "window"),
    ("/api/v1/stats?window=1s", "window"),
    ("/api/v1/alerts?type=QUAKE", "type"),
    ("/api/v1/alerts?limit=-5", "limit"),
    ("/api/v1/windows/realtime?limit=10001", "limit"),
    ("/api/v1/windows/batch/hourly?region=", "region"),
    ("/api/v1/windows/batch/daily?since=%ZZ", "query"),
    ("/api/v1/batch/runs?limit=x", "limit"),
]


def test_every_invalid_parameter_is_a_400_problem_naming_it(data, api):
    for path, param in BAD:
        status, h, body = http(api.api + path)
        assert status == 400, (path, status, body)
        assert h["content-type"] == "application/problem+json", path
        p = json.loads(body)
        assert p["status"] == 400 and p["invalid_param"] == param, (path, p)
        assert param in p["detail"] or param == "query", (path, p)


def test_unknown_path_is_404_and_other_methods_405(data, api):
    for path in ["/api/v1/nope", "/api/v1/summary", "/api/v1/summary/regions/x", "/api/v2/x"]:
        status, h, body = http(api.api + path)
        assert status == 404 and h["content-type"] == "application/problem+json", path
        assert json.loads(body)["status"] == 404
    import urllib.request
    req = urllib.request.Request(api.api + "/api/v1/events", method="POST", data=b"{}")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("POST accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers["allow"].startswith("GET")


def test_redis_down_gives_503_problem_and_readyz_says_so(data, api, redis_server):
    assert http(api.api + "/api/v1/summary/regions")[0] == 200
    redis_server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # readiness follows the connection; poll its answer
        status, _, body = api.get("/readyz")
        if status == 503:
            break
        time.sleep(0.05)
    assert status == 503
    checks = {c["name"]: c for c in json.loads(body)["checks"]}
    assert checks["redis"]["ok"] is False and "127.0.0.1" in checks["redis"]["reason"]
    for path in ["/api/v1/summary/regions", "/api/v1/events", "/api/v1/stats"]:
        status, h, body = http(api.api + path)
        assert status == 503 and h["content-type"] == "application/problem+json", path
        assert h["retry-after"] == "1" and "redis" in json.loads(body)["detail"]


def test_api_keys_require_a_bearer_token(start_service, redis_server, data):
    svc = start_serving(start_service, redis_server.url, API_KEYS="k1, secret-two")
    status, h, body = http(svc.api + "/api/v1/stats")
    assert status == 401 and h["www-authenticate"].startswith("Bearer")
    assert http(svc.api + "/api/v1/stats", {"Authorization": "Bearer nope"})[0] == 401
    assert http(svc.api + "/api/v1/stats", {"Authorization": "Bearer secret-two"})[0] == 200
    assert http(svc.api + "/api/v1/openapi.json")[0] == 200  # the document stays public
    assert "secret-two" not in "\n".join(svc.lines)


def test_api_keys_file_adds_keys_and_a_missing_file_stops_the_start(start_service, redis_server,
                                                                     tmp_path, data):
    from conftest import run_binary
    f = tmp_path / "keys"
    f.write_text("# mounted secret\nfrom-file-1\n\nfrom-file-2\n")
    svc = start_serving(start_service, redis_server.url, API_KEYS="env-key", API_KEYS_FILE=str(f))
    for k in ["env-key", "from-file-1", "from-file-2"]:
        assert http(svc.api + "/api/v1/stats", {"Authorization": f"Bearer {k}"})[0] == 200, k
    assert http(svc.api + "/api/v1/stats", {"Authorization": "Bearer # mounted secret"})[0] == 401
    r = run_binary("serving-api", env={"API_KEYS_FILE": str(tmp_path / "absent"),
                                       "ADMIN_PORT": "0", "API_PORT": "0"})
    assert r.returncode == 2 and b"API_KEYS_FILE" in r.stderr


def test_cors_allows_configured_origins_only(start_service, redis_server, data):
    svc = start_serving(start_service, redis_server.url, CORS_ORIGINS="https://a.example")
    _, h, _ = http(svc.api + "/api/v1/stats", {"Origin": "https://a.example"})
    assert h["access-control-allow-origin"] == "https://a.example"
    _, h, _ = http(svc.api + "/api/v1/stats", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in h
    import urllib.request
    req = urllib.request.Request(svc.api + "/api/v1/stats", method="OPTIONS",
                                 headers={"Origin": "https://a.example",
                                          "Access-Control-Request-Method": "GET"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204 and "GET" in r.headers["access-control-allow-methods"]


def test_rate_limit_answers_429_with_retry_after(start_service, redis_server, data):
    svc = start_serving(start_service, redis_server.url, RATE_LIMIT_RPS="1",
                        RATE_LIMIT_BURST="3")
    codes = [http(svc.api + "/api/v1/openapi.json")[0] for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    status, h, body = http(svc.api + "/api/v1/openapi.json")
    assert status == 429 and int(h["retry-after"]) >= 1
    assert json.loads(body)["status"] == 429


def openapi_doc():
    with open(os.path.join(ROOT, "proto", "openapi.yaml")) as f:
        return yaml.safe_load(f)


def test_openapi_json_is_the_yaml_document(api):
    status, h, body = http(api.api + "/api/v1/openapi.json")
    assert status == 200 and h["content-type"] == "application/json"
    assert json.loads(body) == openapi_doc()


def test_every_route_response_matches_the_openapi_document(data, api, redis_server):
    spec = OpenAPI(openapi_doc())
    ok = ["/summary/regions", "/summary/regions?since=3h", "/timeseries", "/anomalies",
          "/events", "/events?format=geojson", "/stats", "/alerts", "/windows/realtime",
          "/windows/batch/hourly", "/windows/batch/daily?since=366d", "/batch/runs",
          "/openapi.json"]
    documented = set(spec.doc["paths"]) - {"/live"}
    assert {p.split("?")[0] for p in ok} == documented
    for p in ok:
        status, h, body = http(api.api + "/api/v1" + p)
        assert status == 200, p
        spec.validate(p.split("?")[0], status, h["content-type"], body)
    for p, _ in BAD:
        status, h, body = http(api.api + p)
        path = p.split("?")[0][len("/api/v1"):]
        spec.validate(path, status, h["content-type"], body)
    redis_server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, h, body = http(api.api + "/api/v1/stats")
        if status == 503:
            break
        time.sleep(0.05)
    spec.validate("/stats", status, h["content-type"], body)


def test_dashboard_and_vendor_files_are_served(api):
    status, h, body = http(api.api + "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    assert b"quakestream" in body
    if not os.path.isdir(os.path.join(ROOT, "web", "node_modules", "uplot")):
        pytest.skip("web/node_modules missing: ./quakestream build installs it")
    for f in ["/vendor/uplot/dist/uPlot.iife.min.js", "/vendor/world-atlas/countries-110m.json",
              "/vendor/topojson-client/dist/topojson-client.min.js"]:
        assert http(api.api + f)[0] == 200, f
