"""`./quakestream up` as a user runs it: everything ready, metrics valid, Ctrl-C leaves nothing."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PARTS = ["hub", "ingestor", "speed-aggregator", "batch-worker", "serving-api"]


def free_port_block(n):
    """A base port such that base..base+n-1 are all free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65000:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                t.bind(("127.0.0.1", p))
                socks.append(t)
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    pytest.fail("no block of free ports")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def stack(tmp_path):
    base = free_port_block(8)
    env = dict(os.environ, QS_VAR_DIR=str(tmp_path / "var"), QS_PORT_BASE=str(base),
               QS_REDIS_PORT=str(base + 5), QS_API_PORT=str(base + 6),
               QS_AMQP_PORT=str(base + 7))
    proc = subprocess.Popen([os.path.join(ROOT, "quakestream"), "up"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    lines, ready = [], threading.Event()

    def read():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if "Ctrl-C stops everything" in line:  # said after the addresses
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    info = {"proc": proc, "lines": lines, "base": base, "var": tmp_path / "var", "ready": ready}
    yield info
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for f in (tmp_path / "var" / "run").glob("*.pid"):  # never leave a stray process behind
        pid = int(f.read_text())
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_up_starts_every_part_ready_and_ctrl_c_leaves_no_process(stack):
    assert stack["ready"].wait(180), "".join(stack["lines"])
    assert stack["proc"].poll() is None, "".join(stack["lines"])
    out = "".join(stack["lines"])
    # the addresses are printed, dashboard first
    addr_lines = [l for l in out.splitlines() if l.startswith("  ") and "http://" in l]
    assert addr_lines[0].strip().startswith("dashboard")
    promtool = shutil.which("promtool")
    for i, name in enumerate(PARTS):
        port = stack["base"] + i
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200, name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read()
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        assert check.returncode == 0, (name, check.stdout, check.stderr)
    # the recorded USGS feed was replayed into the hub before the addresses were printed
    assert "replay done" in (stack["var"] / "log" / "replay.log").read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{stack['base']}/metrics", timeout=5) as r:
        hub_metrics = r.read().decode()
    events_in = sum(float(l.rsplit(" ", 1)[1]) for l in hub_metrics.splitlines()
                    if l.startswith('hub_events_in_total{hub="earthquake-events"'))
    assert events_in == 1707
    # the hub holds its partitions under the stack's var directory
    assert (stack["var"] / "hub" / "earthquake-events").is_dir()
    pids = {f.stem: int(f.read_text()) for f in (stack["var"] / "run").glob("*.pid")}
    assert set(pids) == set(PARTS) | {"redis"}
    assert all(alive(p) for p in pids.values())

    os.killpg(stack["proc"].pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert stack["proc"].wait(timeout=30) == 0, "".join(stack["lines"])
    # the launcher returns only after every part has exited
    assert not [n for n, p in pids.items() if alive(p)], "processes left behind"
    for name in PARTS:  # each service stopped in order, not killed
        log = (stack["var"] / "log" / f"{name}.log").read_text()
        assert '"msg":"stopped"' in log, (name, log)
