#!/usr/bin/python3
"""bench/speed/run.py [EVENTS] — the speed aggregator's closing numbers, on this machine.
bench/speed/run.py changes [N] — the cost of catalogue changes (docs/changes.md), see below.

1. Throughput: EVENTS synthetic events (~20 % revisions, 8 regions over 4 partitions) are put on
   a fresh hub first; then the aggregator starts from the earliest position with checkpoints on
   (every commit is state + checkpoint in one Lua call) and the time until the last checkpoint
   covers every event is measured, with the aggregator's own CPU time from /proc (events/s per
   core = events / CPU seconds of the aggregator; Redis runs in its own process).
2. Latency: a paced producer sends 1,000 events/s for 20 s; a subscriber on qs:live:events takes
   the time each event's live message arrives: send -> live p50/p99.
3. The peer: the same EVENTS consumed by the official @azure/event-hubs EventHubConsumerClient in
   Node doing the same windowing (in memory only: no Redis, no checkpoints, so the comparison
   favours the peer), CPU time measured the same way. Prints the ratio.
Needs a release build (./quakestream build) and tests/node/node_modules (./quakestream deps).

`changes`: three phases on one hub and Redis, each preloaded on the hub first and then consumed
by a freshly started aggregator (cold cache: every record and window is fetched from Redis, as
for changes that arrive hours after the event): N first sightings, then a magnitude revision of
each (same region), then N retractions (a third each deleted, superseded, and moved to another
region: `moved` on the old region plus the revision on the new one). Prints messages/s (wall and
per aggregator CPU-second) per phase, retractions/s, and the CPU cost of a revision and of a
retraction relative to a new event. AGG_BUILD selects another build's aggregator (to compare).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build"))
KEY = "SAS_KEY_VALUE"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_log(path, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            for line in f:
                if needle in line:
                    return json.loads(line)
        time.sleep(0.05)
    raise SystemExit(f"no '{needle}' in {path}:\n" + open(path).read()[-2000:])


def rcli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), "--raw", *args], capture_output=True,
                          text=True, check=True).stdout


def committed(port):
    total = 0
    for p in range(4):
        s = rcli(port, "HGET", f"qs:ckpt:earthquake-events:$Default:{p}", "sequence").strip()
        if s and int(s) >= 0:
            total += int(s) + 1
    return total


class Stack:
    def __init__(self, work):
        self.work, self.procs = work, []
        self.redis_port = free_port()
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work])
        env = {"ADMIN_PORT": "0", "AMQP_PORT": "0", "DATA_DIR": f"{work}/hub",
               "CAPTURE_DIR": f"{work}/capture", "FSYNC": os.environ.get("HUB_FSYNC", "group")}
        self.spawn("hub", [f"{BUILD}/services/hub/hub"], env)
        port = wait_log(f"{work}/hub.log", '"hub listening"')["amqp_port"]
        self.conn = (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName="
                     f"RootManageSharedAccessKey;SharedAccessKey={KEY};UseDevelopmentEmulator=true")
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)

    def spawn(self, name, argv, env=None):
        log = open(f"{self.work}/{name}.log", "w")
        p = subprocess.Popen(argv, env=dict(os.environ, **(env or {})), stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def aggregator(self, name, **env):
        e = {"ADMIN_PORT": "0", "EVENTHUBS_CONNECTION_STRING": self.conn,
             "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}", "PARTITION_IDLE": "1h"}
        e.update({k: str(v) for k, v in env.items()})
        build = os.environ.get("AGG_BUILD", BUILD)
        return self.spawn(name, [f"{build}/services/speed-aggregator/speed-aggregator"], e)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def throughput(stack, events):
    load = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "load", str(events)],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    print("hub preload:", load.stdout.strip())
    agg = stack.aggregator("speed-throughput")
    t0 = time.monotonic()
    cpu0 = cpu_seconds(agg.pid)
    redis_cpu0 = cpu_seconds(stack.procs[0].pid)
    while committed(stack.redis_port) < events:
        if agg.poll() is not None:
            raise SystemExit(open(f"{stack.work}/speed-throughput.log").read()[-3000:])
        time.sleep(0.01)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(agg.pid) - cpu0
    redis_cpu = cpu_seconds(stack.procs[0].pid) - redis_cpu0
    agg.terminate()
    agg.wait(20)
    res = {"events": events, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "events_per_s_wall": round(events / wall), "events_per_cpu_s": round(events / cpu),
           "redis_cpu_s": round(redis_cpu, 3)}
    print("speed-aggregator throughput:", json.dumps(res))
    return res


def latency(stack, rate=1000, seconds=20):
    for k in rcli(stack.redis_port, "KEYS", "qs:*").split():
        rcli(stack.redis_port, "DEL", k)
    agg = stack.aggregator("speed-latency", START_POSITION="latest", BATCH_INTERVAL="2ms")
    wait_log(f"{stack.work}/speed-latency.log", '"partition consuming"')
    time.sleep(0.5)  # all four partition links attach (log lines name each)
    r = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "latency", str(rate), str(seconds),
                        str(stack.redis_port)], capture_output=True, text=True,
                       env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    agg.terminate()
    agg.wait(20)
    print("send -> live latency:", r.stdout.strip(), r.stderr.strip()[-500:])
    return json.loads(r.stdout) if r.stdout.strip() else None


def node_peer(stack, events):
    node = shutil.which("node")
    if os.environ.get("SKIP_NODE") or not node or not os.path.isdir(os.path.join(ROOT, "tests", "node", "node_modules")):
        print("node peer: skipped (node or tests/node/node_modules missing)")
        return None
    p = subprocess.run([node, os.path.join(ROOT, "bench", "speed", "node-consumer.mjs")],
                       capture_output=True, text=True, timeout=1800,
                       env=dict(os.environ, EH_CONNECTION_STRING=stack.conn,
                                EH_EVENTS=str(events)))
    if p.returncode != 0:
        print("node peer failed:", p.stderr[-2000:])
        return None
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print("node @azure/event-hubs peer:", json.dumps(res))
    return res


def changes_phase(stack, kind, n, base, total_before):
    load = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "changes", kind, str(n), str(base)],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    sent = json.loads(load.stdout)["sent"]
    agg = stack.aggregator(f"speed-{kind}")
    t0 = time.monotonic()
    cpu0 = cpu_seconds(agg.pid)
    redis_cpu0 = cpu_seconds(stack.procs[0].pid)
    while committed(stack.redis_port) < total_before + sent:
        if agg.poll() is not None:
            raise SystemExit(open(f"{stack.work}/speed-{kind}.log").read()[-3000:])
        time.sleep(0.01)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(agg.pid) - cpu0
    redis_cpu = cpu_seconds(stack.procs[0].pid) - redis_cpu0
    agg.terminate()
    agg.wait(20)
    res = {"kind": kind, "messages": sent, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "redis_cpu_s": round(redis_cpu, 3), "per_s_wall": round(sent / wall),
           "per_cpu_s": round(sent / cpu), "cpu_us_per_message": round(cpu / sent * 1e6, 1),
           "redis_cpu_us_per_message": round(redis_cpu / sent * 1e6, 1)}
    print(json.dumps(res))
    return res


def changes(n):
    work = tempfile.mkdtemp(prefix="qs-speed-changes-")
    stack = Stack(work)
    base = (int(time.time() * 1000) - 86_400_000) // 3_600_000 * 3_600_000
    try:
        total, out = 0, {}
        for kind in ("new", "revise", "retract"):
            out[kind] = changes_phase(stack, kind, n, base, total)
            total += out[kind]["messages"]
        left = rcli(stack.redis_port, "HKEYS", "qs:ev").split()
        moved = sum(1 for i in range(n) if i % 3 == 2)
        wrong = [k for k in left if int(k[5:]) % 3 != 2]
        assert len(left) == moved and not wrong, (
            f"{len(left)} raw events left, want the {moved} moved ones; e.g. "
            + "; ".join(f"{k}: {rcli(stack.redis_port, 'HGET', 'qs:ev:ver', k).strip()} "
                        f"{rcli(stack.redis_port, 'HGET', 'qs:ev', k).strip()[:300]}"
                        f"{rcli(stack.redis_port, 'HGETALL', 'qs:rt:evstate').count(k + chr(10))}"
                        for k in wrong[:3])
            + f"; dead letters {rcli(stack.redis_port, 'LRANGE', 'qs:rt:dlq', '0', '2')[:600]}")
        r = out["retract"]
        print(f"retractions (deleted + superseded + moved): {n} in {r['wall_s']} s with their "
              f"{moved} revisions on the new region: {round(n / r['wall_s'])}/s wall, "
              f"{round(n / r['cpu_s'])} per aggregator CPU-second")
        for k in ("revise", "retract"):
            agg = out[k]["cpu_us_per_message"] / out["new"]["cpu_us_per_message"]
            red = out[k]["redis_cpu_us_per_message"] / out["new"]["redis_cpu_us_per_message"]
            print(f"CPU per message, {k} / new: aggregator {agg:.2f}x, Redis {red:.2f}x")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "changes":
        changes(int(sys.argv[2]) if len(sys.argv) > 2 else 60_000)
        return
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    work = tempfile.mkdtemp(prefix="qs-speed-bench-")
    stack = Stack(work)
    try:
        ours = throughput(stack, events)
        peer = node_peer(stack, events)
        lat = latency(stack)
        if peer:
            print(f"ratio (events per CPU second): {ours['events_per_cpu_s'] / peer['events_per_cpu_s']:.1f}x"
                  f"; wall: {ours['events_per_s_wall'] / peer['events_per_s_wall']:.1f}x")
        if lat:
            print(f"latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms at {lat['rate']} events/s")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
