#!/usr/bin/python3
"""bench/batch: records/s of the batch worker vs a straightforward python3-avro + dict peer.

Generates N captured events (default 1,000,000; 10% of them revisions of earlier ids) as Event
Hubs Capture files (4 partitions, deflate by default, 50,000 records per file) with python3-avro, then runs
`batch-worker run-once` (no Redis; gold files into a temp dir) REPS times and the peer REPS times
on the same files, and prints the median records/s of each and their ratio. The worker's figure
is records / read_seconds from its run record: reading, decoding, JSON parsing and folding the
files (page cache warm, so "excluding disk"), without the final row sort and gold write, which
the total time includes and is printed too.

The codec argument may list several codecs ("deflate,null"): each gets its own files and rows.
With QS_BASELINE_BUILD_DIR set (another build of the worker, e.g. of main), that worker is run
too, alternating with this one on the same files, and both are printed side by side.

usage: QS_BUILD_DIR=build [QS_BASELINE_BUILD_DIR=../main/build] \
       /usr/bin/python3 bench/batch/run.py [N] [REPS] [deflate|null|deflate,null]
"""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import batch_ref  # noqa: E402

PER_FILE = 50000


def generate(root, n, codec="deflate"):
    rnd = random.Random(1)
    base = 1764028800000  # 2025-11-25T00:00:00Z
    distinct = n - n // 10
    recs = {p: [] for p in range(4)}
    for i in range(n):
        k = i if i < distinct else rnd.randrange(distinct)
        t = base + (k * 7919) % (30 * batch_ref.DAY)
        upd = t + 60000 + (i - distinct if i >= distinct else 0) * 1000
        ev = batch_ref.event("us%08d" % k, t, upd, round(rnd.uniform(-0.5, 7.5), 2),
                             round(rnd.uniform(0, 300), 2), batch_ref.REGIONS[k % 5],
                             tsunami=(k % 97 == 0), change="revision" if i >= distinct else None)
        recs[k % 4].append((batch_ref.us_time(t + 5000), batch_ref.body(ev)))
    for p, lst in recs.items():
        for j in range(0, len(lst), PER_FILE):
            path = batch_ref.capture_path(root, p, base + j)
            batch_ref.write_capture(path, lst[j:j + PER_FILE], codec=codec)


def run_worker(src, gold, build):
    env = dict(os.environ, REDIS_URL="", GOLD_DIR=gold, ADMIN_PORT="0", PROGRESS="never",
               LOG_LEVEL="warn")
    out = subprocess.run([os.path.join(build, "services", "batch-worker", "batch-worker"),
                          "run-once", "--source", src], env=env, capture_output=True, check=True)
    rec = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return rec["records"], rec["read_seconds"], rec["read_cpu_seconds"], rec["duration_ms"] / 1000.0


def run_peer(src):
    """The straightforward way: python3-avro, json.loads, dicts."""
    import avro.datafile
    import avro.io
    t0, c0 = time.monotonic(), time.process_time()
    latest, records = {}, 0
    for d, _, names in os.walk(src):
        for name in sorted(names):
            with open(os.path.join(d, name), "rb") as f:
                for rec in avro.datafile.DataFileReader(f, avro.io.DatumReader()):
                    records += 1
                    try:
                        ev = json.loads(rec["Body"])
                    except (TypeError, ValueError):
                        continue
                    cur = latest.get(ev["event_id"])
                    if cur is None or ev["updated"] > cur["updated"]:
                        latest[ev["event_id"]] = ev
    hours = {}
    for ev in latest.values():
        if ev.get("change") in ("deleted", "superseded"):
            continue
        key = (ev["time"] // 3600000 * 3600000, ev["region"])
        a = hours.setdefault(key, [0, 0.0, None, 0.0])
        a[0] += 1
        if ev["magnitude"] is not None:
            a[1] += ev["magnitude"]
            a[2] = ev["magnitude"] if a[2] is None else max(a[2], ev["magnitude"])
        if ev["depth_km"] is not None:
            a[3] += ev["depth_km"]
    return records, time.monotonic() - t0, time.process_time() - c0


def bench_worker(label, src, gold, build, n, rates):
    records, read_s, cpu_s, total_s = run_worker(src, gold, build)
    assert records == n, records
    r = rates.setdefault(label, ([], [], []))
    r[0].append(records / read_s)
    r[1].append(records / cpu_s)
    r[2].append(records / total_s)
    print("%s: %.0f records/s (read+fold), %.0f records per CPU second, %.0f records/s "
          "end to end" % (label, r[0][-1], r[1][-1], r[2][-1]), flush=True)


def bench_codec(tmp, n, reps, codec):
    src = os.path.join(tmp, codec, "capture")
    t0 = time.monotonic()
    generate(src, n, codec)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs)
    print("generated %d records, %.1f MB %s Capture, in %.1f s" %
          (n, size / 1e6, codec, time.monotonic() - t0), flush=True)
    builds = [("worker", os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build")))]
    if os.environ.get("QS_BASELINE_BUILD_DIR"):
        builds.append(("baseline", os.environ["QS_BASELINE_BUILD_DIR"]))
    rates = {}
    for _ in range(reps):
        for label, build in builds:
            bench_worker(label, src, os.path.join(tmp, codec, "gold-" + label), build, n, rates)
    p_rates, p_cpu = [], []
    for _ in range(reps):
        records, secs, cpu = run_peer(src)
        assert records == n, records
        p_rates.append(records / secs)
        p_cpu.append(records / cpu)
        print("peer (python3-avro + dict): %.0f records/s, %.0f records per CPU second" %
              (p_rates[-1], p_cpu[-1]), flush=True)
    if len(builds) > 1:
        for name in ("hourly.avro", "daily.avro"):
            with open(os.path.join(tmp, codec, "gold-worker", name), "rb") as a, \
                    open(os.path.join(tmp, codec, "gold-baseline", name), "rb") as b:
                assert a.read() == b.read(), "gold %s differs from the baseline's" % name
    p, pc = statistics.median(p_rates), statistics.median(p_cpu)
    rows = []
    for label, _ in builds:
        w, wc, wt = (statistics.median(x) for x in rates[label])
        print("median %s %s: %.0f records/s read+fold (%.0f per CPU second, %.0f end to end), "
              "peer %.0f records/s (%.0f per CPU second); ratio %.1fx wall, %.1fx CPU" %
              (codec, label, w, wc, wt, p, pc, w / p, wc / pc), flush=True)
        rows.append((codec, size, label, w, wc, wt, p, pc))
    return rows


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    codecs = (sys.argv[3] if len(sys.argv) > 3 else "deflate").split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec in codecs:
            rows += bench_codec(tmp, n, reps, codec)
    print("\n| codec | build | worker records/s (per CPU second) | end to end | peer records/s "
          "(per CPU second) | ratio wall, CPU |")
    print("|---|---|---|---|---|---|")
    for codec, size, label, w, wc, wt, p, pc in rows:
        print("| %s (%.1f MB) | %s | %.0f (%.0f) | %.0f | %.0f (%.0f) | %.1fx, %.1fx |" %
              (codec, size / 1e6, label, w, wc, wt, p, pc, w / p, wc / pc))


if __name__ == "__main__":
    main()
