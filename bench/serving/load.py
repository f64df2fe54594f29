#!/usr/bin/env python3
"""Loads a benchmark dataset into Redis (docs/keyspace.md): REGIONS regions x DAYS days of batch
hourly rows with the cutoff at the start of the current hour minus 1 h, speed windows from the
cutoff on, and the latest events.

usage: load.py REDIS_PORT [regions=24] [days=7]
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "integration"))
from serving_helpers import HOUR, MIN5, Resp, event, load, row  # noqa: E402


def main():
    port = int(sys.argv[1])
    regions = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    days = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    rnd = random.Random(42)
    now = int(time.time() * 1000)
    cutoff = now - now % HOUR - HOUR
    names = [f"region-{i:02d}" for i in range(regions)]
    batch, rt, events = [], [], []
    for name in names:
        for h in range(days * 24):
            start = cutoff - (h + 1) * HOUR
            n = rnd.randint(0, 6)
            batch.append(row(name, start, HOUR, [(round(rnd.uniform(0.5, 6.5), 2),
                                                   round(rnd.uniform(1, 300), 1), False)
                                                  for _ in range(n)]))
        t = cutoff
        while t < now:
            n = rnd.randint(0, 2)
            if n:
                rt.append(row(name, t, MIN5, [(round(rnd.uniform(0.5, 6.5), 2), 10.0, False)
                                               for _ in range(n)]))
            t += MIN5
    for i in range(500):
        events.append(event(f"b{i}", now - i * 60_000, round(rnd.uniform(0.5, 7), 1),
                            rnd.uniform(-180, 180), rnd.uniform(-60, 70), region=rnd.choice(names)))
    r = Resp(port)
    load(r, rt_rows=rt, batch_rows=batch, events=events, cutoff_ms=cutoff)
    r.close()
    print(f"loaded {len(batch)} batch rows, {len(rt)} speed windows, {len(events)} events")


if __name__ == "__main__":
    main()
