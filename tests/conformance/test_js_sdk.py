"""The official @azure/event-hubs SDK (npm, v6) against the hub, as a user's code would use it.

Each test starts a hub on free ports with a fresh data directory, runs tests/node/eh-sdk.mjs for
one scenario and asserts what the SDK saw. The hub is always stopped at teardown.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import zlib

import pytest

from conftest import ROOT

NODE_DIR = os.environ.get("QS_NODE_DIR", os.path.join(ROOT, "tests", "node"))
SCRIPT = os.path.join(NODE_DIR, "eh-sdk.mjs")
KEY = "SAS_KEY_VALUE"  # the built-in config's local-only RootManageSharedAccessKey


@pytest.fixture
def hub(start_service, tmp_path):
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@azure", "event-hubs")):
        pytest.fail("@azure/event-hubs missing: run ./quakestream deps")
    svc = start_service("hub", env={"AMQP_PORT": "0", "DATA_DIR": str(tmp_path / "hub")})
    rec = svc.wait_for_log(lambda r: r.get("msg") == "hub listening")
    svc.amqp_port = rec["amqp_port"]
    svc.data_dir = tmp_path / "hub"
    return svc


def sdk(hub, scenario, key=KEY, timeout=60, **env):
    conn = (f"Endpoint=sb://127.0.0.1:{hub.amqp_port};SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true")
    full = dict(os.environ, EH_CONNECTION_STRING=conn, **{k: str(v) for k, v in env.items()})
    r = subprocess.run(["node", SCRIPT, scenario], cwd=NODE_DIR, env=full, capture_output=True,
                       text=True, timeout=timeout)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no output from the SDK script (rc={r.returncode}):\n{r.stderr[-2000:]}"
    return json.loads(lines[-1])


def send(hub, events):
    res = sdk(hub, "send", EH_EVENTS=json.dumps(events))
    assert res == {"sent": len(events)}, res


def receive(hub, partition, start, expect, **env):
    res = sdk(hub, "receive", EH_PARTITION=partition, EH_START=start, EH_EXPECT=expect, **env)
    assert "events" in res, res
    return res["events"]


def test_properties_and_partition_ids(hub):
    res = sdk(hub, "props")
    assert res["name"] == "earthquake-events"
    assert res["partitionIds"] == ["0", "1", "2", "3"] == res["ids"]
    assert all(p["isEmpty"] and p["lastEnqueuedSequenceNumber"] == -1 for p in res["parts"])
    assert abs(res["createdOn"] / 1000 - time.time()) < 3600


def test_partition_key_batches_land_on_one_partition_and_come_back_identical(hub):
    bodies = [{"event_id": f"ci{i}", "mag": 1.5 + i / 10} for i in range(20)]
    send(hub, [{"body": b, "partitionKey": "us-west"} for b in bodies])
    part = str(zlib.crc32(b"us-west") % 4)  # the hub's documented stable hash
    got = receive(hub, part, "earliest", 20)
    assert [e["body"] for e in got] == bodies
    assert [e["sequenceNumber"] for e in got] == list(range(20))
    assert all(e["partitionKey"] == "us-west" for e in got)
    offsets = [int(e["offset"]) for e in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 20
    props = sdk(hub, "props")["parts"][int(part)]
    assert props["lastEnqueuedSequenceNumber"] == 19 and not props["isEmpty"]
    assert props["lastEnqueuedOffset"] == got[-1]["offset"]


def test_start_positions_sequence_offset_time_and_latest(hub):
    send(hub, [{"body": f"e{i}", "partitionId": "1"} for i in range(5)])  # two batches: two
    send(hub, [{"body": f"e{i}", "partitionId": "1"} for i in range(5, 10)])  # enqueue times
    all_ev = receive(hub, "1", "earliest", 10)
    assert [e["body"] for e in all_ev] == [f"e{i}" for i in range(10)]
    after5 = receive(hub, "1", json.dumps({"sequenceNumber": 5}), 4)
    assert [e["sequenceNumber"] for e in after5] == [6, 7, 8, 9]
    from5 = receive(hub, "1", json.dumps({"sequenceNumber": 5, "isInclusive": True}), 5)
    assert [e["sequenceNumber"] for e in from5] == [5, 6, 7, 8, 9]
    off = all_ev[3]["offset"]
    after_off = receive(hub, "1", json.dumps({"offset": off}), 6)
    assert [e["sequenceNumber"] for e in after_off] == [4, 5, 6, 7, 8, 9]
    t = all_ev[4]["enqueuedTimeUtc"]
    assert all_ev[5]["enqueuedTimeUtc"] > t
    after_t = receive(hub, "1", json.dumps({"enqueuedOn": t}), 5)
    assert [e["sequenceNumber"] for e in after_t] == [5, 6, 7, 8, 9]
    latest = receive(hub, "1", "latest", 1, EH_SEND_AFTER_SUBSCRIBE="fresh")
    assert [e["body"] for e in latest] == ["fresh"]
    assert latest[0]["sequenceNumber"] == 10


def test_wrong_key_is_refused_as_unauthorized(hub):
    res = sdk(hub, "props", key="d3JvbmcK", EH_MAX_RETRIES=0)
    assert "Unauthorized" in res.get("message", ""), res
    assert "signature does not match" in res["message"], res


def test_acknowledged_events_survive_kill_9(hub, start_service):
    send(hub, [{"body": f"d{i}", "partitionId": "3"} for i in range(50)])
    before = receive(hub, "3", "earliest", 50)
    hub.proc.send_signal(signal.SIGKILL)
    hub.wait()
    again = start_service("hub", env={"AMQP_PORT": "0", "DATA_DIR": str(hub.data_dir)})
    again.amqp_port = again.wait_for_log(lambda r: r.get("msg") == "hub listening")["amqp_port"]
    after = receive(again, "3", "earliest", 50)
    assert [(e["body"], e["sequenceNumber"], e["offset"]) for e in after] == \
           [(e["body"], e["sequenceNumber"], e["offset"]) for e in before]
    props = sdk(again, "props")
    assert props["createdOn"] == sdk(again, "props")["createdOn"]


def test_sigterm_after_sdk_traffic_commits_and_exits_0(hub):
    send(hub, [{"body": f"s{i}", "partitionKey": "alaska"} for i in range(30)])
    part = str(zlib.crc32(b"alaska") % 4)
    assert len(receive(hub, part, "earliest", 30)) == 30
    hub.signal(signal.SIGTERM)
    assert hub.wait(timeout=10) == 0, "\n".join(hub.lines[-20:])  # under ASan: no leak either
    assert not [r for r in hub.logs if r.get("level") == "error"], hub.lines


def metric(hub, line_prefix):
    status, _, body = hub.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_prefix} not in /metrics")


def test_metrics_count_events_in_and_out_per_partition_connections_and_links(hub):
    send(hub, [{"body": f"m{i}", "partitionId": "0"} for i in range(7)])
    assert metric(hub, 'hub_events_in_total{hub="earthquake-events",partition="0"}') == 7
    assert metric(hub, 'hub_events_out_total{hub="earthquake-events",partition="0"}') == 0
    assert len(receive(hub, "0", "earliest", 7)) == 7
    assert metric(hub, 'hub_events_out_total{hub="earthquake-events",partition="0"}') >= 7
    assert metric(hub, 'hub_events_in_total{hub="earthquake-events",partition="1"}') == 0
    # every SDK client has closed: no connection or link is left open
    assert metric(hub, "hub_connections") == 0
    assert metric(hub, "hub_links") == 0
    assert metric(hub, "hub_fsync_seconds_count") >= 1
