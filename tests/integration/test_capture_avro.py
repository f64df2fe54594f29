"""Cross-check the C Capture writer/reader against Debian's python3-avro.

Run by meson (tools/meson.build) as
  /usr/bin/python3 -m pytest tests/integration/test_capture_avro.py
with QS_CAPTURE_TOOL pointing at the built tools/capture-tool.
"""
import io
import json
import os
import subprocess

import pytest

avro_datafile = pytest.importorskip("avro.datafile")
avro_io = pytest.importorskip("avro.io")
avro_schema = pytest.importorskip("avro.schema")

SOURCE = os.environ.get("QS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.environ.get("QS_CAPTURE_TOOL") or os.path.join(
    os.environ.get("QS_BUILD_DIR", os.path.join(SOURCE, "build")), "tools", "capture-tool")
SCHEMA_PATH = os.path.join(SOURCE, "proto", "capture.avsc")



def expected(i):
    """The record capture-tool writes as number i (mirrors sample_record in capture-tool.c)."""
    sys_props = {}
    if i % 3 == 0:
        sys_props["x-opt-sequence-number"] = 1000 + i
        sys_props["x-opt-weight"] = i * 0.5
    if i % 2 == 0:
        sys_props["x-opt-partition-key"] = "key-%d" % (i % 7)
    props = {"GUID": "g-%d" % i, "RandomInt": i * 7 - 50}
    if i % 4 == 0:
        props["Null"] = None
    if i % 5 == 0:
        props["Raw"] = bytes([0, 0xFF, i & 0xFF])
    props["Ratio"] = i / 8.0
    return {
        "SequenceNumber": 1000 + i,
        "Offset": str(i * 300),
        "EnqueuedTimeUtc": "12/7/2018 10:%02d:%02d AM" % (i // 60 % 60, i % 60),
        "SystemProperties": sys_props,
        "Properties": props,
        "Body": None if i % 10 == 9 else ("Message %d \u00e9" % i).encode("utf-8"),
    }


def read_with_python(path):
    with open(path, "rb") as f:
        reader = avro_datafile.DataFileReader(f, avro_io.DatumReader())
        codec = reader.meta.get("avro.codec")
        schema = reader.meta.get("avro.schema")
        records = list(reader)
    return codec, schema, records


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_python_avro_reads_what_the_c_writer_wrote(tmp_path, codec):
    path = tmp_path / ("p=0-%s.avro" % codec)
    n = 1500
    subprocess.run([TOOL, "write", str(path), codec, str(n)], check=True)
    got_codec, schema, records = read_with_python(path)
    assert got_codec == codec.encode()
    with open(SCHEMA_PATH, "rb") as f:
        assert json.loads(schema) == json.load(f)
    assert len(records) == n
    for i, rec in enumerate(records):
        assert rec == expected(i), "record %d" % i
    assert not list(tmp_path.glob(".*.tmp"))


def test_c_reader_reads_what_python_avro_wrote(tmp_path):
    path = tmp_path / "from-python.avro"
    with open(SCHEMA_PATH) as f:
        schema = avro_schema.parse(f.read())
    n = 700
    with open(path, "wb") as f:
        writer = avro_datafile.DataFileWriter(f, avro_io.DatumWriter(), schema, codec="deflate")
        for i in range(n):
            writer.append(expected(i))
        writer.close()
    out = subprocess.run([TOOL, "dump", str(path)], check=True, capture_output=True).stdout
    lines = out.decode().splitlines()
    assert len(lines) == n
    names = {int: "long", float: "double", str: "string", bytes: "bytes", type(None): "null"}

    # python3-avro writes an int into a [long, double, ...] union as the LAST branch that
    # accepts it (double), so numbers are compared by value, not by branch.
    def as_dump(props):
        res = {}
        for k, v in props.items():
            kind = names[type(v)]
            if kind in ("long", "double"):
                kind, v = "number", float(v)
            elif isinstance(v, str):
                v = v.encode().hex()
            elif isinstance(v, bytes):
                v = v.hex()
            res[k] = [kind, v]
        return res

    def numbers(dumped):
        return {k: (["number", float(v[1])] if v[0] in ("long", "double") else v)
                for k, v in dumped.items()}

    for i, line in enumerate(lines):
        got = json.loads(line)
        want = expected(i)
        assert got["seq"] == want["SequenceNumber"]
        assert got["offset"] == want["Offset"]
        assert got["time"] == want["EnqueuedTimeUtc"]
        assert numbers(got["sys"]) == as_dump(want["SystemProperties"])
        assert numbers(got["props"]) == as_dump(want["Properties"])
        pk = want["SystemProperties"].get("x-opt-partition-key")
        assert got["partition_key"] == (pk.encode().hex() if pk else None)
        assert got["body"] == (want["Body"].hex() if want["Body"] is not None else None)


def test_c_reader_rejects_a_damaged_file_with_a_reason(tmp_path):
    path = tmp_path / "cut.avro"
    subprocess.run([TOOL, "write", str(path), "deflate", "200"], check=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    res = subprocess.run([TOOL, "dump", str(path)], capture_output=True)
    assert res.returncode == 1
    assert b"block 0 at byte" in res.stderr
