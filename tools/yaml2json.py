#!/usr/bin/python3
"""Convert a YAML document (proto/openapi.yaml) to compact, key-order-preserving JSON.
Runs on Debian's python3 (python3-yaml), whatever python3 is first on PATH.

usage: yaml2json.py INPUT.yaml OUTPUT.json
"""
import json
import sys

import yaml


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
