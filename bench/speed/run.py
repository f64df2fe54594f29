#!/usr/bin/python3
"""bench/speed/run.py [EVENTS] [options] — the speed aggregator's closing numbers, on this machine.
bench/speed/run.py changes [N] — the cost of catalogue changes (docs/changes.md), see below.

1. Throughput: EVENTS synthetic events (~20 % revisions, 8 regions over 4 partitions) are put on
   a fresh hub once; then for each run Redis is emptied and the aggregator starts from the
   earliest position with checkpoints on (every commit is state + checkpoint in one Lua call).
   Measured until the partitions' checkpoints cover every event: wall time, and the aggregator's
   own CPU time (utime + stime from /proc, from its spawn: start-up and lease round included).
   events/s per core = events / CPU seconds of the aggregator; Redis runs in its own process (its
   CPU seconds are reported beside). "Sustained" leaves start-up out: events / CPU seconds from
   the moment the checkpoints cover a tenth of the events to the end (the Node peer likewise,
   from its tenth event in).
2. Latency: a paced producer sends 1,000 events/s for 20 s; a subscriber on qs:live:events takes
   the time each event's live message arrives: send -> live p50/p99.
3. The peer: the same EVENTS consumed by the official @azure/event-hubs EventHubConsumerClient in
   Node doing the same windowing (node-consumer.mjs: in memory only, no Redis, no checkpoints, so
   the comparison favours the peer), CPU time measured the same way. Prints the ratio. Beside it
   speed_peer does the peer's in-memory windowing in C (libqs consumer and decoder): the ratio of
   the two is the runtimes' part of the aggregator's; the rest is its exactly-once Redis state.

Options:
  --repeat N        every measurement N times (default 1); medians are printed
  --baseline DIR    also measure the aggregator of another build dir (e.g. of main), runs
                    interleaved with this build's on the same hub and Redis: a side-by-side table
  --no-node         skip the Node peer;  --no-latency  skip the latency runs
  --perf DIR        record a `perf record -g` profile of each throughput run into DIR

Needs a release build (./quakestream build; QS_BUILD_DIR picks another) and tests/node/node_modules
(./quakestream deps).

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
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build"))
KEY = "SAS_KEY_VALUE"
TICK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def minor_faults(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def wait_log(path, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            for line in f:
                if needle in line:
                    return json.loads(line)
        time.sleep(0.05)
    raise SystemExit(f"no '{needle}' in {path}:\n" + open(path).read()[-2000:])


class Resp:
    """A minimal RESP client on one connection: polling the checkpoints must not cost a process
    spawn per query (that would take CPU from the measured processes on a 2-core machine)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def close(self):
        self.f.close()
        self.s.close()


def committed(r):
    total = 0
    for p in range(PARTITIONS):
        s = r.cmd("HGET", f"qs:ckpt:earthquake-events:$Default:{p}", "sequence")
        if s and int(s) >= 0:
            total += int(s) + 1
    return total


class Stack:
    def __init__(self, work):
        self.work, self.procs = work, []
        self.redis_port = free_port()
        self.redis = self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                                          "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                                          work])
        env = {"ADMIN_PORT": "0", "AMQP_PORT": "0", "DATA_DIR": f"{work}/hub",
               "CAPTURE_DIR": f"{work}/capture", "FSYNC": os.environ.get("HUB_FSYNC", "group")}
        self.hub = self.spawn("hub", [f"{BUILD}/services/hub/hub"], env)
        port = wait_log(f"{work}/hub.log", '"hub listening"')["amqp_port"]
        self.conn = (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName="
                     f"RootManageSharedAccessKey;SharedAccessKey={KEY};UseDevelopmentEmulator=true")
        for _ in range(100):
            try:
                self.r = Resp(self.redis_port)
                self.r.cmd("PING")
                break
            except OSError:
                time.sleep(0.05)

    def spawn(self, name, argv, env=None):
        log = open(f"{self.work}/{name}.log", "w")
        p = subprocess.Popen(argv, env=dict(os.environ, **(env or {})), stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def aggregator(self, name, build=None, **env):
        e = {"ADMIN_PORT": "0", "EVENTHUBS_CONNECTION_STRING": self.conn,
             "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}", "PARTITION_IDLE": "1h"}
        e.update({k: str(v) for k, v in env.items()})
        return self.spawn(name, [f"{build or os.environ.get('AGG_BUILD', BUILD)}/services/speed-aggregator/speed-aggregator"], e)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def preload(stack, events):
    load = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "load", str(events)],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    print("hub preload:", load.stdout.strip(), flush=True)


def throughput(stack, events, build, label, perf_dir=None, run=0):
    stack.r.cmd("FLUSHALL")
    name = f"speed-throughput-{label}-{run}"
    agg = stack.aggregator(name, build)
    t0 = time.monotonic()
    cpu0 = cpu_seconds(agg.pid)
    redis_cpu0 = cpu_seconds(stack.redis.pid)
    hub_cpu0 = cpu_seconds(stack.hub.pid)
    perfs = []
    if perf_dir:  # the aggregator, and Redis (the wall-clock side)
        for who, pid in ((label, agg.pid), (f"redis-{label}", stack.redis.pid)):
            perfs.append(subprocess.Popen(
                ["perf", "record", "-q", "-F", os.environ.get("PERF_FREQ", "999"),
                 *os.environ.get("PERF_CALLGRAPH", "-g").split(), "-p", str(pid),
                 "-o", os.path.join(perf_dir, f"{who}-{run}.data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # "sustained": from the moment the checkpoints cover a tenth of the events to the end, so
    # start-up (process, TLS-free connects, lease round, first fetches) is not in the rate
    c10, cpu10 = None, None
    while True:
        done = committed(stack.r)
        if done >= events:
            break
        if c10 is None and done >= events // 10:
            c10, cpu10 = done, cpu_seconds(agg.pid)
        if agg.poll() is not None:
            raise SystemExit(open(f"{stack.work}/{name}.log").read()[-3000:])
        time.sleep(0.01)
    wall = time.monotonic() - t0
    cpu_end = cpu_seconds(agg.pid)
    cpu = cpu_end - cpu0
    sustained = round((events - c10) / (cpu_end - cpu10)) if c10 is not None and cpu_end > cpu10 else None
    faults = minor_faults(agg.pid)
    redis_cpu = cpu_seconds(stack.redis.pid) - redis_cpu0
    hub_cpu = cpu_seconds(stack.hub.pid) - hub_cpu0
    for perf in perfs:
        perf.send_signal(2)
        perf.wait(60)
    agg.terminate()
    agg.wait(20)
    res = {"build": label, "events": events, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "events_per_s_wall": round(events / wall), "events_per_cpu_s": round(events / cpu),
           "sustained_events_per_cpu_s": sustained,
           "redis_cpu_s": round(redis_cpu, 3), "hub_cpu_s": round(hub_cpu, 3),
           "page_faults": faults}
    print("speed-aggregator throughput:", json.dumps(res), flush=True)
    return res


def latency(stack, build, label, rate=1000, seconds=20):
    stack.r.cmd("FLUSHALL")
    name = f"speed-latency-{label}"
    agg = stack.aggregator(name, build, START_POSITION="latest", BATCH_INTERVAL="2ms")
    wait_log(f"{stack.work}/{name}.log", '"partition consuming"')
    time.sleep(0.5)  # all four partition links attach (log lines name each)
    r = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "latency", str(rate), str(seconds),
                        str(stack.redis_port)], capture_output=True, text=True,
                       env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    agg.terminate()
    agg.wait(20)
    print(f"send -> live latency ({label}):", r.stdout.strip(), r.stderr.strip()[-500:], flush=True)
    return json.loads(r.stdout) if r.stdout.strip() else None


def node_peer(stack, events):
    node = shutil.which("node")
    if not node or not os.path.isdir(os.path.join(ROOT, "tests", "node", "node_modules")):
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
    print("node @azure/event-hubs peer:", json.dumps(res), flush=True)
    return res


def c_peer(stack, events):
    """The Node peer's in-memory windowing in C (speed_peer): what the runtime costs, apart from
    the aggregator's exactly-once state in Redis."""
    p = subprocess.run([f"{BUILD}/bench/speed/speed_peer", str(events), str(PARTITIONS)],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    if p.returncode != 0:
        print("C peer failed:", p.stderr[-2000:])
        return None
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print("C in-memory peer:", json.dumps(res), flush=True)
    return res


def rcli(stack, *args):
    v = stack.r.cmd(*args)
    return "\n".join(v) if isinstance(v, list) else ("" if v is None else str(v))


def changes_phase(stack, kind, n, base, total_before):
    load = subprocess.run([f"{BUILD}/bench/speed/speed_bench", "changes", kind, str(n), str(base)],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, EVENTHUBS_CONNECTION_STRING=stack.conn))
    sent = json.loads(load.stdout)["sent"]
    agg = stack.aggregator(f"speed-{kind}")
    t0 = time.monotonic()
    cpu0 = cpu_seconds(agg.pid)
    redis_cpu0 = cpu_seconds(stack.procs[0].pid)
    while committed(stack.r) < total_before + sent:
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
        left = rcli(stack, "HKEYS", "qs:ev").split()
        moved = sum(1 for i in range(n) if i % 3 == 2)
        wrong = [k for k in left if int(k[5:]) % 3 != 2]
        assert len(left) == moved and not wrong, (
            f"{len(left)} raw events left, want the {moved} moved ones; e.g. "
            + "; ".join(f"{k}: {rcli(stack, 'HGET', 'qs:ev:ver', k).strip()} "
                        f"{rcli(stack, 'HGET', 'qs:ev', k).strip()[:300]}"
                        f"{rcli(stack, 'HGETALL', 'qs:rt:evstate').count(k + chr(10))}"
                        for k in wrong[:3])
            + f"; dead letters {rcli(stack, 'LRANGE', 'qs:rt:dlq', '0', '2')[:600]}")
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


def med(rows, key):
    vals = [r[key] for r in rows if r and key in r]
    return statistics.median(vals) if vals else None


def main():
    args = sys.argv[1:]
    if args and args[0] == "changes":
        changes(int(args[1]) if len(args) > 1 else 60_000)
        return
    events, repeat, baseline, perf_dir = 200_000, 1, None, None
    do_node = not os.environ.get("SKIP_NODE")
    do_latency = True
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--repeat":
            repeat = int(args[i + 1])
            i += 1
        elif a == "--baseline":
            baseline = os.path.abspath(args[i + 1])
            i += 1
        elif a == "--perf":
            perf_dir = os.path.abspath(args[i + 1])
            os.makedirs(perf_dir, exist_ok=True)
            i += 1
        elif a == "--no-node":
            do_node = False
        elif a == "--no-latency":
            do_latency = False
        elif a.isdigit():
            events = int(a)
        else:
            raise SystemExit(__doc__)
        i += 1
    builds = ([("baseline", baseline)] if baseline else []) + [("this", BUILD)]
    work = tempfile.mkdtemp(prefix="qs-speed-bench-")
    stack = Stack(work)
    tp = {label: [] for label, _ in builds}
    lat = {label: [] for label, _ in builds}
    peers, cpeers = [], []
    try:
        preload(stack, events)
        for run in range(repeat):
            for label, build in builds:
                tp[label].append(throughput(stack, events, build, label, perf_dir, run))
            if do_node:
                peers.append(node_peer(stack, events))
                cpeers.append(c_peer(stack, events))
        if do_latency:
            for run in range(repeat):
                for label, build in builds:
                    lat[label].append(latency(stack, build, label))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {repeat} (events={events}):")
    cols = ["events_per_cpu_s", "sustained_events_per_cpu_s", "events_per_s_wall", "cpu_s",
            "wall_s", "redis_cpu_s", "hub_cpu_s"]
    print("  " + "build".ljust(10) + "".join(c.rjust(19) for c in cols))
    for label, _ in builds:
        print("  " + label.ljust(10) + "".join(f"{med(tp[label], c):>19.6g}" for c in cols))
    peer_cpu, peer_wall = med(peers, "events_per_cpu_s"), med(peers, "events_per_s_wall")
    if peer_cpu:
        print("  " + "node peer".ljust(10) + "".join(
            f"{med(peers, c):>19.6g}" for c in cols[:5]))
        peer_sus = med(peers, "sustained_events_per_cpu_s")
        for label, _ in builds:
            sus = med(tp[label], "sustained_events_per_cpu_s")
            print(f"  ratio {label} / node: {med(tp[label], 'events_per_cpu_s') / peer_cpu:.1f}x"
                  f" per CPU second ({sus / peer_sus:.1f}x sustained, start-up left out on both"
                  f" sides); {med(tp[label], 'events_per_s_wall') / peer_wall:.1f}x wall"
                  if sus and peer_sus else
                  f"  ratio {label} / node: {med(tp[label], 'events_per_cpu_s') / peer_cpu:.1f}x"
                  f" per CPU second; {med(tp[label], 'events_per_s_wall') / peer_wall:.1f}x wall")
        cp = [c for c in cpeers if c]
        if cp:
            print("  " + "C peer".ljust(10) + "".join(f"{med(cp, c):>19.6g}" for c in cols[:5]))
            print(f"  ratio C peer / node (the same in-memory windowing): "
                  f"{med(cp, 'events_per_cpu_s') / peer_cpu:.1f}x per CPU second "
                  f"({med(cp, 'sustained_events_per_cpu_s') / peer_sus:.1f}x sustained)")
    for label, _ in builds:
        if lat[label] and all(lat[label]):
            print(f"  latency {label}: p50 {med(lat[label], 'p50_ms')} ms, p99 "
                  f"{med(lat[label], 'p99_ms')} ms, max {med(lat[label], 'max_ms')} ms at "
                  f"{lat[label][0]['rate']} events/s")


if __name__ == "__main__":
    main()
