"""Every service binary: admin endpoints, valid Prometheus metrics, orderly shutdown, config errors."""
import json
import shutil
import signal
import subprocess

import pytest

from conftest import SERVICES, run_binary


# Services whose /readyz needs Redis or the hub: their own tests check readiness with them.
NEEDS_DEPENDENCIES = {"speed-aggregator"}


@pytest.mark.parametrize("name", SERVICES)
def test_health_and_readiness_answer_200(start_service, name):
    if name in NEEDS_DEPENDENCIES:
        pytest.skip(f"{name} is ready only with its dependencies (tested with them)")
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
def test_invalid_admin_port_exits_2_naming_variable_value_and_range(name):
    r = run_binary(name, env={"ADMIN_PORT": "abc"})
    assert r.returncode == 2
    err = r.stderr.decode()
    assert 'ADMIN_PORT="abc"' in err and "0..65535" in err
    # the same message as a JSON log line (for log collectors) and as plain text (for people)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(rec["level"] == "error" and 'ADMIN_PORT="abc"' in rec["error"] for rec in records)
    assert any(line.startswith(f"{name}: ") and "ADMIN_PORT" in line for line in err.splitlines())


@pytest.mark.parametrize("name", SERVICES)
def test_admin_host_name_instead_of_ip_exits_2(name):
    r = run_binary(name, env={"ADMIN_HOST": "localhost"})
    assert r.returncode == 2
    err = r.stderr.decode()
    assert 'ADMIN_HOST="localhost"' in err and "IPv4 or IPv6" in err


@pytest.mark.parametrize("name", SERVICES)
def test_stray_argument_exits_2(name):
    r = run_binary(name, args=["--config", "x.json"])
    assert r.returncode == 2
    assert 'unexpected argument "--config"' in r.stderr.decode()


@pytest.mark.parametrize("name", SERVICES)
def test_invalid_log_level_lists_allowed_values(name):
    r = run_binary(name, env={"LOG_LEVEL": "loud"})
    assert r.returncode == 2
    assert "debug|info|warn|error" in r.stderr.decode()


@pytest.mark.parametrize("name", SERVICES)
def test_help_lists_every_common_variable(name):
    r = run_binary(name, args=["--help"])
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.decode().splitlines() if line.startswith("  ")]
    for var in ("LOG_LEVEL", "ADMIN_HOST", "ADMIN_PORT"):
        assert var in names


def test_busy_admin_port_fails_with_status_1(start_service):
    first = start_service("hub")
    r = run_binary("ingestor", env={"ADMIN_PORT": str(first.admin_port)})
    assert r.returncode == 1
    assert "address already in use" in r.stderr.decode()
