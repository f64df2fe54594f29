"""Shared fixtures for the integration, conformance and end-to-end tests: start real quakestream
binaries on 127.0.0.1.

A service is started with ADMIN_PORT=0 and its address is read from its own "started" log line
(no sleeps, no port guessing). Every process started here is killed at teardown, even when the
test fails.
"""
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build"))
SERVICES = ["hub", "ingestor", "speed-aggregator", "batch-worker", "serving-api"]


def binary(name):
    path = os.path.join(BUILD, "services", name, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built (run ./quakestream build)")
    return path


class Service:
    """A running service process whose JSON log lines are collected on a thread."""

    def __init__(self, name, env=None, args=(), start_timeout=30.0):
        self.name = name
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
        full_env.update({"ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": "0", "LOG_LEVEL": "info"})
        full_env.update(env or {})
        self.proc = subprocess.Popen([binary(name), *args], env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []          # every stderr line, raw
        self.logs = []           # the JSON ones, parsed
        self._q = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        started = self.wait_for_log(lambda r: r.get("msg") in ("started", "stopped"),
                                    start_timeout)
        if started.get("msg") != "started":
            raise AssertionError(f"{name} did not start; log:\n" + "\n".join(self.lines[-20:]))
        self.admin_port = started["admin_port"]
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                self.logs.append(rec)
                self._q.put(rec)
        self._q.put(None)  # EOF

    def wait_for_log(self, pred, timeout=10.0):
        """Block until a log record matching pred arrives (records seen earlier count too)."""
        for rec in list(self.logs):
            if pred(rec):
                return rec
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no matching log line in {timeout}s; "
                                     f"log so far:\n" + "\n".join(self.lines[-20:]))
            try:
                rec = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if rec is None:
                raise AssertionError(f"{self.name} exited (rc={self.proc.wait()}) before the "
                                     f"expected log line; log:\n" + "\n".join(self.lines[-20:]))
            if pred(rec):
                return rec

    def get(self, path, timeout=5.0):
        """GET admin path -> (status, headers, body bytes)."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=10.0):
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def start_service():
    """start_service(name, env=None, args=()) -> Service; all are killed at teardown."""
    started = []

    def start(name, env=None, args=()):
        s = Service(name, env=env, args=args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def run_binary(name, args=(), env=None, timeout=20):
    """Run a binary to completion (for --help, bad configuration) -> CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    full_env.update(env or {})
    return subprocess.run([binary(name), *args], env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


HUB_KEY = "SAS_KEY_VALUE"  # the built-in hub config's local-only RootManageSharedAccessKey


def hub_connection_string(port, key=HUB_KEY):
    return (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true")


class RedisServer:
    """A redis-server on 127.0.0.1 and a free port (it cannot pick one itself: we probe one and
    retry when another process took it first), persistence off, killed at teardown. Ready when
    its own log says it accepts connections."""

    def __init__(self, tmp_path):
        import shutil
        import socket
        if not shutil.which("redis-server"):
            pytest.fail("redis-server missing: run ./quakestream deps")
        for _ in range(20):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path), "--loglevel", "notice"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for raw in self.proc.stdout:  # redis says when it accepts connections, or why not
                if b"Ready to accept connections" in raw:
                    self.port = port
                    self.url = f"redis://127.0.0.1:{port}/0"
                    threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                    return
            self.stop()
        raise AssertionError("could not start redis-server on a free port")

    def cli(self, *args):
        """Runs one command with redis-cli --raw; returns its stdout as str."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw", *args],
                             capture_output=True, timeout=20, check=True)
        return out.stdout.decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server per test: .url, .port, .cli(*args)."""
    r = RedisServer(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def hub_server(start_service, tmp_path):
    """The quakestream hub on a free AMQP port with a fresh data dir: .amqp_port,
    .connection_string, .data_dir, .capture_dir (plus everything a Service has)."""
    data = tmp_path / "hub"
    svc = start_service("hub", env={"AMQP_PORT": "0", "DATA_DIR": str(data),
                                    "CAPTURE_DIR": str(tmp_path / "capture")})
    rec = svc.wait_for_log(lambda r: r.get("msg") == "hub listening")
    svc.amqp_port = rec["amqp_port"]
    svc.connection_string = hub_connection_string(svc.amqp_port)
    svc.data_dir = data
    svc.capture_dir = tmp_path / "capture"
    return svc


__all__ = ["SERVICES", "Service", "run_binary", "binary", "ROOT", "BUILD", "signal",
           "hub_connection_string", "HUB_KEY"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's outcome to fixtures (item.rep_call), to dump a server's log on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
