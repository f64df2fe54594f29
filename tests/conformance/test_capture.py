"""Capture: the hub writes each partition's events as Event Hubs Capture Avro files, read back
here by an independent reader (Debian's python3-avro) with the exact Capture schema."""
import glob
import json
import os
import re
import signal

import pytest

from conftest import ROOT
from test_js_sdk import NODE_DIR, send  # noqa: F401  (the SDK helpers)

avro_datafile = pytest.importorskip("avro.datafile")
avro_io = pytest.importorskip("avro.io")


def capture_config(tmp_path, interval_s, size_limit):
    cfg = json.load(open(os.path.join(ROOT, "proto", "hub-config.json")))
    for ns in cfg["UserConfig"]["NamespaceConfig"]:
        for e in ns["Entities"]:
            if e["Name"] == "earthquake-events":
                e["Capture"]["IntervalInSeconds"] = interval_s
                e["Capture"]["SizeLimitInBytes"] = size_limit
    path = tmp_path / "hub-config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture
def capture_hub(start_service, tmp_path):
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@azure", "event-hubs")):
        pytest.fail("@azure/event-hubs missing: run ./quakestream deps")
    svc = start_service("hub", env={
        "AMQP_PORT": "0", "DATA_DIR": str(tmp_path / "hub"), "CAPTURE_DIR": str(tmp_path / "cap"),
        "HUB_CONFIG": capture_config(tmp_path, 1, 1024 * 1024), "LOG_LEVEL": "debug"})
    svc.amqp_port = svc.wait_for_log(lambda r: r.get("msg") == "hub listening")["amqp_port"]
    svc.capture_dir = tmp_path / "cap"
    return svc


def read_avro(path):
    with open(path, "rb") as f:
        reader = avro_datafile.DataFileReader(f, avro_io.DatumReader())
        schema = json.loads(reader.meta["avro.schema"].decode())
        return schema, list(reader)


def test_capture_files_hold_every_event_with_the_capture_schema(capture_hub):
    bodies = [{"event_id": f"us{i}", "mag": 4.0 + i / 10} for i in range(12)]
    props = {"source": "usgs", "revision": 3, "ratio": 0.5}
    send(capture_hub, [{"body": b, "partitionId": "2", "properties": props} for b in bodies])
    # The hub logs each file it renames into place: wait for that, not for time.
    rec = capture_hub.wait_for_log(lambda r: r.get("msg") == "capture file written", timeout=30)
    assert rec["events"] == 12
    files = glob.glob(str(capture_hub.capture_dir / "quakestream/earthquake-events/p=2/*/*/*/*/*/*.avro"))
    assert [rec["path"]] == files
    assert re.search(r"/p=2/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}/\d{2}\.avro$", files[0])
    schema, records = read_avro(files[0])
    want = json.load(open(os.path.join(ROOT, "proto", "capture.avsc")))
    assert schema == want
    assert [json.loads(r["Body"]) for r in records] == bodies
    assert all(r["Properties"] == props for r in records)  # application properties kept
    assert [r["SequenceNumber"] for r in records] == list(range(12))
    offsets = [int(r["Offset"]) for r in records]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} [AP]M", r["EnqueuedTimeUtc"])
               for r in records)
    assert not glob.glob(str(capture_hub.capture_dir / "**/.*.tmp"), recursive=True)


def test_partition_key_is_kept_and_restart_neither_loses_nor_repeats(capture_hub, start_service,
                                                                       tmp_path):
    send(capture_hub, [{"body": f"k{i}", "partitionKey": "hawaii"} for i in range(5)])
    first = capture_hub.wait_for_log(lambda r: r.get("msg") == "capture file written", timeout=30)
    capture_hub.signal(signal.SIGTERM)
    assert capture_hub.wait(timeout=10) == 0
    again = start_service("hub", env={
        "AMQP_PORT": "0", "DATA_DIR": str(tmp_path / "hub"), "CAPTURE_DIR": str(tmp_path / "cap"),
        "HUB_CONFIG": str(tmp_path / "hub-config.json"), "LOG_LEVEL": "debug"})
    again.amqp_port = again.wait_for_log(lambda r: r.get("msg") == "hub listening")["amqp_port"]
    send(again, [{"body": f"k{i}", "partitionKey": "hawaii"} for i in range(5, 8)])
    second = again.wait_for_log(lambda r: r.get("msg") == "capture file written", timeout=30)
    assert second["path"] != first["path"]
    rows = read_avro(first["path"])[1] + read_avro(second["path"])[1]
    assert [json.loads(r["Body"]) for r in rows] == [f"k{i}" for i in range(8)]
    assert [r["SequenceNumber"] for r in rows] == list(range(8))
    assert all(r["SystemProperties"]["x-opt-partition-key"] == "hawaii" for r in rows)
