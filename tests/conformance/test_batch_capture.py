"""The batch worker on Capture files the hub itself wrote: events sent with the official
@azure/event-hubs SDK (partition key = region), captured by the hub, reprocessed by
`batch-worker run-once`; the rows equal the independent computation (batch_ref.py) over the same
files."""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, binary
from test_capture import capture_hub  # noqa: F401  (the fixture: a hub capturing every second)
from test_js_sdk import send

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
pytest.importorskip("avro.datafile")
import batch_ref  # noqa: E402


def test_batch_worker_reprocesses_what_the_hub_captured(capture_hub, tmp_path):
    now = int(time.time() * 1000)
    base = now // batch_ref.HOUR * batch_ref.HOUR - 5 * batch_ref.HOUR
    events = []
    for i in range(40):
        t = base + i * 7 * 60000
        events.append(batch_ref.event("us%04d" % i, t, t + 1000, 2.0 + i / 10, 5.0 + i,
                                      batch_ref.REGIONS[i % 4], tsunami=(i == 7)))
    events.append(batch_ref.event("us0003", base + 21 * 60000, base + 99999999, 6.5, 9.0,
                                  batch_ref.REGIONS[3], change="revision"))
    events.append(batch_ref.event("us0004", base + 28 * 60000, base + 99999999, 2.4, 9.0,
                                  batch_ref.REGIONS[0], change="deleted", status="deleted"))
    send(capture_hub, [{"body": e, "partitionKey": e["region"]} for e in events])

    def captured():  # the hub logs each file it renames into place, with its event count
        return sum(r["events"] for r in capture_hub.logs if r.get("msg") == "capture file written")

    capture_hub.wait_for_log(lambda r: captured() >= len(events), timeout=30)
    files = sorted(glob.glob(str(capture_hub.capture_dir / "**" / "*.avro"), recursive=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"ADMIN_PORT": "0", "REDIS_URL": "", "GOLD_DIR": str(tmp_path / "gold")})
    p = subprocess.run([binary("batch-worker"), "run-once", "--source",
                        str(capture_hub.capture_dir)], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    run = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert run["files"] == len(files) and run["files_failed"] == 0
    assert run["records"] == len(events) and run["invalid_bodies"] == 0
    assert run["bad_enqueued_time"] == 0  # the hub writes "M/D/YYYY h:mm:ss AM"
    hourly, daily, counters = batch_ref.reference(files)
    assert run["events_counted"] == counters["counted"] == 39
    assert batch_ref.read_gold(tmp_path / "gold" / "hourly.avro") == hourly
    assert batch_ref.read_gold(tmp_path / "gold" / "daily.avro") == daily
    assert run["cutoff_ms"] > 0 and run["cutoff_ms"] % batch_ref.HOUR == 0

