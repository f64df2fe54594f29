#!/usr/bin/env python3
"""Add up every test suite's results and print the closing line "N passed, N failed".

Reads, from the artifacts folder given as the only argument:
  *.testlog.json   meson's test log; each cmocka binary prints TAP (CMOCKA_MESSAGE_OUTPUT=TAP), so
                   every case counts. A binary that failed without a failing case in its TAP output
                   (a crash, a sanitizer report at exit, a timeout) counts as one more failure.
  *.junit.xml      pytest / node --test results (JUnit XML).
Exit status: 0 when nothing failed and something ran, 1 otherwise.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET


def count_meson(path, failures):
    passed = failed = skipped = 0
    suite = os.path.basename(path).replace(".testlog.json", "")
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            p = fl = s = 0
            for out in (t.get("stdout") or "").splitlines():
                # cmocka 1.1 reports a skipped case as "not ok N # SKIP": a skip, not a failure
                if out.startswith(("ok ", "not ok ")) and "# SKIP" in out.upper():
                    s += 1
                elif out.startswith("not ok "):
                    fl += 1
                    failures.append(f"{suite}: {t['name']}: {out[7:].strip()}")
                elif out.startswith("ok "):
                    p += 1
            if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL") and fl == 0:
                fl = 1
                failures.append(f"{suite}: {t['name']}: binary ended with {t.get('result')} "
                                f"(exit {t.get('returncode')})")
            passed += p
            failed += fl
            skipped += s
    return suite, passed, failed, skipped


def count_junit(path, failures):
    suite = os.path.basename(path).replace(".junit.xml", "")
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") is not None or case.find("error") is not None
        if bad:
            failed += 1
            failures.append(f"{suite}: {name}")
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return suite, passed, failed, skipped


def main() -> int:
    art = sys.argv[1]
    failures = []
    rows = []
    for p in sorted(glob.glob(os.path.join(art, "*.testlog.json"))):
        rows.append(count_meson(p, failures))
    for p in sorted(glob.glob(os.path.join(art, "*.junit.xml"))):
        rows.append(count_junit(p, failures))
    tp = sum(r[1] for r in rows)
    tf = sum(r[2] for r in rows)
    ts = sum(r[3] for r in rows)
    for suite, p, fl, s in rows:
        print(f"  {suite:<28} {p:5d} passed {fl:4d} failed {s:4d} skipped")
    if failures:
        print("failed:")
        for f in failures:
            print(f"  {f}")
    if ts:
        print(f"{ts} skipped (reference data or optional tools absent)")
    print(f"{tp} passed, {tf} failed")
    return 0 if tf == 0 and tp > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
