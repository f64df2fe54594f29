"""Debian's azure-eventhub 5.11 (pyamqp) against the hub's TLS listener.

azure-eventhub 5.11 always dials TLS on port 5671 and ignores the port in the connection string
(see docs/hub-amqp.md), so this test needs 127.0.0.1:5671 free; trust is given with
connection_verify=<the test CA>. The hub is started with a CA and certificate made by
tools/hub-certs.sh, and always stopped at teardown.
"""
import os
import socket
import subprocess
import time
import zlib

import pytest

from conftest import ROOT

eventhub = pytest.importorskip("azure.eventhub")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def tls_hub(start_service, tmp_path, request):
    if not port_free(5671):
        pytest.skip("127.0.0.1:5671 is busy; azure-eventhub 5.11 can only dial 5671")
    certs = tmp_path / "certs"
    subprocess.run([os.path.join(ROOT, "tools", "hub-certs.sh"), str(certs)], check=True)
    svc = start_service("hub", env={"AMQP_PORT": "0", "AMQPS_PORT": "5671",
                                    "TLS_CERT": str(certs / "server.pem"),
                                    "TLS_KEY": str(certs / "server.key"),
                                    "DATA_DIR": str(tmp_path / "hub")})
    rec = svc.wait_for_log(lambda r: r.get("msg") == "hub listening")
    assert rec["amqps_port"] == 5671
    svc.ca = str(certs / "ca.pem")
    yield svc
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("hub log:\n" + "\n".join(svc.lines[-40:]))


def conn(key="SAS_KEY_VALUE"):
    return ("Endpoint=sb://127.0.0.1:5671/;SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={key}")


def producer(hub, **kw):
    return eventhub.EventHubProducerClient.from_connection_string(
        conn(**kw), eventhub_name="earthquake-events", connection_verify=hub.ca, retry_total=0)


def receive_all(hub, partition, expect, start="-1", deadline_s=30):
    """Events of a partition until `expect` arrived or the deadline passed (then the caller's
    assertion shows what is missing): receive() only returns once the client is closed."""
    got = []
    deadline = time.monotonic() + deadline_s
    c = eventhub.EventHubConsumerClient.from_connection_string(
        conn(), consumer_group="$Default", eventhub_name="earthquake-events",
        connection_verify=hub.ca)

    def on_event(ctx, ev):
        if ev is not None:
            got.append(ev)
        if len(got) >= expect or time.monotonic() > deadline:
            c.close()

    def on_error(ctx, err):
        c.close()
        raise err

    with c:
        c.receive(on_event=on_event, on_error=on_error, partition_id=partition,
                  starting_position=start, max_wait_time=1)
    return got


def test_python_sdk_properties_send_and_receive_over_tls(tls_hub):
    with producer(tls_hub) as p:
        props = p.get_eventhub_properties()
        assert props["eventhub_name"] == "earthquake-events"
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        batch = p.create_batch(partition_key="hawaii")
        for i in range(10):
            batch.add(eventhub.EventData(f'{{"n": {i}}}'))
        p.send_batch(batch)
        batch = p.create_batch(partition_id="3")
        batch.add(eventhub.EventData(b"\x00binary\xff"))
        p.send_batch(batch)
        part = str(zlib.crc32(b"hawaii") % 4)
        pp = p.get_partition_properties(part)
        assert pp["last_enqueued_sequence_number"] == 9 and not pp["is_empty"]
    got = receive_all(tls_hub, part, 10)
    assert [e.body_as_str() for e in got] == [f'{{"n": {i}}}' for i in range(10)]
    assert [e.sequence_number for e in got] == list(range(10))
    assert all(e.partition_key == b"hawaii" for e in got)
    only = receive_all(tls_hub, "3", 1)
    assert b"".join(only[0].body) == b"\x00binary\xff"
    later = receive_all(tls_hub, part, 4, start=got[5].offset)  # a str position is an offset
    assert [e.sequence_number for e in later] == [6, 7, 8, 9]


def test_python_sdk_wrong_key_is_refused(tls_hub):
    with producer(tls_hub, key="d3Jvbmc=") as p:
        with pytest.raises(Exception) as e:
            p.get_eventhub_properties()
    assert "signature does not match" in str(e.value) or "401" in str(e.value) or \
        "uthoriz" in str(e.value), repr(e.value)

