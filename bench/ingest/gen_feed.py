#!/usr/bin/python3
"""gen_feed.py SRC.geojson N OUT.geojson — a large USGS-shaped feed: the real features of SRC
repeated until there are N, each copy with a new id (`<id>r<k>`) and its times moved by k days, so
every event is distinct and the regional mix stays the real one."""
import json
import sys

src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(src, encoding="utf-8") as f:
    feed = json.load(f)
base = feed["features"]
features = []
k = 0
while len(features) < n:
    for ft in base:
        if len(features) == n:
            break
        c = json.loads(json.dumps(ft))
        c["id"] = f"{ft['id']}r{k}"
        c["properties"]["time"] -= k * 86400000
        c["properties"]["updated"] -= k * 86400000
        features.append(c)
    k += 1
feed["features"] = features
feed.setdefault("metadata", {})["count"] = len(features)
with open(out, "w", encoding="utf-8") as f:
    json.dump(feed, f)
