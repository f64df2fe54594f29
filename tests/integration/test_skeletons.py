"""Every service binary: admin endpoints, valid Prometheus metrics, orderly shutdown, config errors."""
import json
import shutil
import signal
import subprocess

import pytest

from conftest import SERVICES, run_binary


def needs(request, name):
    """The environment a service needs to be ready: its dependencies, started for the test."""
    if name == "ingestor":  # ready when connected to an event hub; no polling source here
        hub = request.getfixturevalue("hub_server")
        return {"EVENTHUBS_CONNECTION_STRING": hub.connection_string, "SOURCES": ""}
    if name == "serving-api":  # ready when connected to Redis; its public port on a free one
        return {"REDIS_URL": request.getfixturevalue("redis_server").url, "API_PORT": "0"}
    if name == "batch-worker":  # without Redis it writes gold files only and needs nothing
        return {"REDIS_URL": ""}
    if name == "speed-aggregator":  # ready with Redis and the hub's partitions leased
        hub = request.getfixturevalue("hub_server")
        return {"EVENTHUBS_CONNECTION_STRING": hub.connection_string,
                "REDIS_URL": request.getfixturevalue("redis_server").url}
    return {}


@pytest.fixture
def start_service(start_service, request):
    """start_service with each service's dependencies provided."""
    def start(name, env=None, args=()):
        svc = start_service(name, env={**needs(request, name), **(env or {})}, args=args)
        if name == "ingestor":  # ready once its dependency answered
            svc.wait_for_log(lambda r: r.get("msg") == "event hub connected")
        if name == "serving-api":
            svc.wait_for_log(lambda r: r.get("msg") == "live subscription ready")
        if name == "speed-aggregator":  # the first lease round ran
            svc.wait_for_log(lambda r: r.get("msg") == "lease acquired")
        return svc
    return start


@pytest.mark.parametrize("name", SERVICES)
def test_health_and_readiness_answer_200(start_service, name):
    svc = start_service(name)
    status, _, body = svc.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = svc.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


@pytest.mark.parametrize("name", SERVICES)
def test_metrics_are_valid_prometheus_text(start_service, name):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: ./quakestream deps installs Debian's prometheus package"
    svc = start_service(name)
    status, headers, body = svc.get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert f'quakestream_build_info{{service="{name}",version="' in text
    assert "process_resident_memory_bytes " in text
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("name", SERVICES)
def test_signal_stops_cleanly_with_status_0(start_service, name, sig):
    svc = start_service(name)
    svc.signal(sig)
    assert svc.wait(timeout=5) == 0
    assert any(r.get("msg") == "stopped" for r in svc.logs), svc.lines
    assert not any(r.get("level") == "error" for r in svc.logs), svc.lines


@pytest.mark.parametrize("name", SERVICES)
def test_unknown_admin_path_is_a_404_problem(start_service, name):
    svc = start_service(name)
    status, headers, body = svc.get("/nope")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 404


@pytest.mark.parametrize("name", SERVICES)
def test_invalid_admin_port_exits_2_naming_variable_value_and_range(name, request):
    r = run_binary(name, env={**needs(request, name), "ADMIN_PORT": "abc"})
    assert r.returncode == 2
    err = r.stderr.decode()
    assert 'ADMIN_PORT="abc"' in err and "0..65535" in err
    # the same message as a JSON log line (for log collectors) and as plain text (for people)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(rec["level"] == "error" and 'ADMIN_PORT="abc"' in rec["error"] for rec in records)
    assert any(line.startswith(f"{name}: ") and "ADMIN_PORT" in line for line in err.splitlines())


@pytest.mark.parametrize("name", SERVICES)
def test_admin_host_name_instead_of_ip_exits_2(name, request):
    r = run_binary(name, env={**needs(request, name), "ADMIN_HOST": "localhost"})
    assert r.returncode == 2
    err = r.stderr.decode()
    assert 'ADMIN_HOST="localhost"' in err and "IPv4 or IPv6" in err


@pytest.mark.parametrize("name", SERVICES)
def test_stray_argument_exits_2(name):
    r = run_binary(name, args=["--config", "x.json"])
    assert r.returncode == 2
    assert 'unexpected argument "--config"' in r.stderr.decode()


@pytest.mark.parametrize("name", SERVICES)
def test_invalid_log_level_lists_allowed_values(name, request):
    r = run_binary(name, env={**needs(request, name), "LOG_LEVEL": "loud"})
    assert r.returncode == 2
    assert "debug|info|warn|error" in r.stderr.decode()


@pytest.mark.parametrize("name", SERVICES)
def test_help_lists_every_common_variable(name):
    r = run_binary(name, args=["--help"])
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.decode().splitlines() if line.startswith("  ")]
    for var in ("LOG_LEVEL", "ADMIN_HOST", "ADMIN_PORT"):
        assert var in names


def test_busy_admin_port_fails_with_status_1(start_service, request):
    first = start_service("hub")
    r = run_binary("ingestor", env={**needs(request, "ingestor"),
                                    "ADMIN_PORT": str(first.admin_port)})
    assert r.returncode == 1
    assert "address already in use" in r.stderr.decode()
