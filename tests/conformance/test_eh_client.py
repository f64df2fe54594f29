"""The project's Event Hubs client (qs_eh, driven through the qs-eh tool) against the hub, and
cross-checked with the official @azure/event-hubs SDK in both directions: what qs_eh sends the SDK
reads back identical, and what the SDK sends qs_eh reads back identical."""
import json
import os
import subprocess
import threading

import pytest

from conftest import BUILD, ROOT, hub_connection_string
from test_js_sdk import receive as sdk_receive, send as sdk_send, sdk

QS_EH = os.path.join(BUILD, "tools", "qs-eh")


def qs_eh(hub, *args, stdin="", key=None, timeout=60, port=None):
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub_connection_string(
        port or hub.amqp_port, **({"key": key} if key else {})))
    return subprocess.run([QS_EH, *args], input=stdin, env=env, capture_output=True, text=True,
                          timeout=timeout)


def qs_receive(hub, partition, count, start="earliest", **kw):
    r = qs_eh(hub, "receive", "earthquake-events", str(partition), "--from", start,
              "--count", str(count), **kw)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines()]


def props(hub, *part):
    r = qs_eh(hub, "props", "earthquake-events", *map(str, part))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def hub(hub_server):
    return hub_server


def test_properties_of_hub_and_partitions(hub):
    assert props(hub) == {"name": "earthquake-events", "created_at_ms": props(hub)["created_at_ms"],
                          "partition_count": 4, "partition_ids": ["0", "1", "2", "3"]}
    p = props(hub, 1)
    assert (p["is_empty"], p["last_sequence"], p["last_offset"]) == (True, -1, "-1")


def test_send_with_key_lands_on_one_partition_with_order_props_and_bodies(hub):
    bodies = [json.dumps({"i": i, "pad": "x" * (i % 700)}) for i in range(3000)]
    r = qs_eh(hub, "send", "earthquake-events", "--key", "japan", "--prop", "source=usgs",
              stdin="\n".join(bodies) + "\n")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split("\n")[:-1]) == sorted(f"ok {i + 1}" for i in range(3000))
    parts = [props(hub, p) for p in range(4)]
    full = [p for p in parts if not p["is_empty"]]
    assert len(full) == 1 and full[0]["last_sequence"] == 2999
    got = qs_receive(hub, full[0]["partition"], 3000)
    assert [e["body"] for e in got] == bodies
    assert [e["sequence"] for e in got] == list(range(3000))
    assert all(e["partition_key"] == "japan" and e["properties"] == {"source": "usgs"}
               for e in got)


def test_the_sdk_reads_what_qs_eh_sent_batched_and_alone(hub):
    small = [json.dumps({"n": i}) for i in range(50)]
    big = json.dumps({"big": "y" * 200000})  # larger than a frame: sent alone, unbatched
    r = qs_eh(hub, "send", "earthquake-events", "--partition", "3",
              stdin="\n".join(small + [big]) + "\n")
    assert r.returncode == 0, r.stderr
    events = sdk_receive(hub, "3", "earliest", 51)
    assert [e["body"] for e in events] == [json.loads(b) for b in small + [big]]
    assert [e["sequenceNumber"] for e in events] == list(range(51))


def test_qs_eh_reads_what_the_sdk_sent(hub):
    sdk_send(hub, [{"body": {"k": i}, "partitionKey": "alaska"} for i in range(20)])
    part = next(p for p in range(4) if not props(hub, p)["is_empty"])
    got = qs_receive(hub, part, 20)
    assert [json.loads(e["body"]) for e in got] == [{"k": i} for i in range(20)]
    assert {e["partition_key"] for e in got} == {"alaska"}


def test_start_positions(hub):
    r = qs_eh(hub, "send", "earthquake-events", "--partition", "0",
              stdin="".join(f"e{i}\n" for i in range(10)))
    assert r.returncode == 0, r.stderr
    allev = qs_receive(hub, 0, 10)
    assert [e["body"] for e in qs_receive(hub, 0, 3, "seq:6")] == ["e7", "e8", "e9"]
    assert [e["body"] for e in qs_receive(hub, 0, 4, "seqi:6")] == ["e6", "e7", "e8", "e9"]
    off = allev[4]["offset"]
    assert [e["body"] for e in qs_receive(hub, 0, 5, f"offset:{off}")] == [f"e{i}" for i in
                                                                         range(5, 10)]
    r = qs_eh(hub, "receive", "earthquake-events", "0", "--from", "latest", "--idle-ms", "700")
    assert r.returncode == 0 and r.stdout == ""


def test_wrong_key_is_refused_with_a_reason(hub):
    r = qs_eh(hub, "props", "earthquake-events", key="d3Jvbmc=")
    assert r.returncode == 1
    assert "401" in r.stderr or "unauthorized" in r.stderr.lower(), r.stderr


def test_unknown_hub_is_reported_not_hung(hub):
    r = qs_eh(hub, "props", "no-such-hub")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    r = qs_eh(hub, "receive", "no-such-hub", "0", "--count", "1", timeout=30)
    assert r.returncode == 1 and "not-found" in r.stderr, r.stderr


def test_producer_reconnects_and_resends_after_the_hub_restarts(hub, start_service):
    """The hub is killed with SIGKILL while the producer is sending; a new hub on the same port and
    data dir comes up; every event the client reported accepted is in the log, and the client
    finishes sending the rest without being restarted."""
    port = hub.amqp_port
    n = 40000
    lines = "".join(json.dumps({"i": i, "pad": "z" * 300}) + "\n" for i in range(n))
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub_connection_string(port))
    proc = subprocess.Popen([QS_EH, "send", "earthquake-events", "--partition", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        second_half = threading.Event()

        def feed():  # on a thread: the test reads acknowledgements while the tool reads events
            proc.stdin.write(lines[: len(lines) // 2])
            proc.stdin.flush()
            second_half.wait(timeout=120)
            proc.stdin.write(lines[len(lines) // 2:])
            proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        acked_before = []
        while len(acked_before) < 1000:  # the producer is well under way
            acked_before.append(proc.stdout.readline())
        hub.kill()
        hub2 = start_service("hub", env={"AMQP_PORT": str(port), "DATA_DIR": str(hub.data_dir),
                                         "CAPTURE_DIR": str(hub.capture_dir)})
        hub2.wait_for_log(lambda r: r.get("msg") == "hub listening")
        hub2.amqp_port = port
        second_half.set()
        out = proc.stdout.read()
        feeder.join(timeout=60)
        assert proc.wait(timeout=120) == 0
        oks = {l.split()[1] for l in acked_before + out.splitlines() if l.startswith("ok")}
        assert len(oks) == n
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    total = props(hub2, 1)["last_sequence"] + 1
    got = qs_receive(hub2, 1, total, timeout=120)
    seen = [json.loads(e["body"])["i"] for e in got]
    assert set(seen) == set(range(n))  # nothing lost; resends after the crash may repeat some
    assert len(seen) - len(set(seen)) < 5000


def test_tokens_are_renewed_before_they_expire(hub):
    """With 2 s SAS tokens, a consumer that stays connected for 3.5 s renews them (at 80 % of
    their life: the hub accepts each renewal, which is what the counter counts) and is never
    disconnected."""
    r = qs_eh(hub, "send", "earthquake-events", "--partition", "2", stdin="one\n")
    assert r.returncode == 0, r.stderr
    r = qs_eh(hub, "receive", "earthquake-events", "2", "--idle-ms", "3500", "--token-ttl", "2",
              "--stats")
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["body"] for l in r.stdout.splitlines()] == ["one"]
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert stats["tokens_renewed"] >= 1 and stats["disconnects"] == 0, stats


@pytest.fixture
def tls_hub(start_service, tmp_path):
    certs = tmp_path / "certs"
    subprocess.run([os.path.join(ROOT, "tools", "hub-certs.sh"), str(certs)], check=True,
                   capture_output=True)
    svc = start_service("hub", env={"AMQP_PORT": "0", "AMQPS_PORT": "0",
                                    "TLS_CERT": str(certs / "server.pem"),
                                    "TLS_KEY": str(certs / "server.key"),
                                    "DATA_DIR": str(tmp_path / "hub")})
    rec = svc.wait_for_log(lambda r: r.get("msg") == "hub listening")
    svc.amqps_port = rec["amqps_port"]
    svc.ca = str(certs / "ca.pem")
    return svc


def tls_env(hub, host="127.0.0.1", ca=True):
    """The Azure path: no UseDevelopmentEmulator, so AMQPS with certificate and host name
    verification against the trust store (the local CA through SSL_CERT_FILE, as for any
    OpenSSL client)."""
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=(
        f"Endpoint=sb://{host}:{hub.amqps_port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey=SAS_KEY_VALUE"))
    if ca:
        env["SSL_CERT_FILE"] = hub.ca
    return env


def test_tls_with_verification_sends_and_receives(tls_hub):
    env = tls_env(tls_hub)
    r = subprocess.run([QS_EH, "send", "earthquake-events", "--partition", "0"], input="tls\n",
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok 1\n", r.stderr
    r = subprocess.run([QS_EH, "receive", "earthquake-events", "0", "--count", "1"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["body"] == "tls", r.stderr


def test_tls_refuses_an_untrusted_certificate(tls_hub):
    r = subprocess.run([QS_EH, "props", "earthquake-events"], env=tls_env(tls_hub, ca=False),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "certificate" in r.stderr.lower() or "verif" in r.stderr.lower(), r.stderr


def test_a_higher_owner_level_takes_the_partition(hub):
    """An exclusive (epoch) receiver is closed with amqp:link:stolen when one with a higher owner
    level attaches; the client reports it as final instead of retrying."""
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub_connection_string(hub.amqp_port))
    low = subprocess.Popen([QS_EH, "receive", "earthquake-events", "1", "--from", "latest",
                            "--owner-level", "1"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        r = qs_eh(hub, "send", "earthquake-events", "--partition", "1", stdin="x\n")
        assert r.returncode == 0
        # a high receiver that reads the event is attached: the low one must have been stolen
        r = qs_eh(hub, "receive", "earthquake-events", "1", "--count", "1", "--owner-level", "5")
        assert r.returncode == 0, r.stderr
        out, err = low.communicate(timeout=30)
    finally:
        if low.poll() is None:
            low.kill()
    assert low.returncode == 1 and "stolen" in err, err


def test_consumer_resumes_after_the_last_delivered_event_when_the_hub_restarts(hub,
                                                                               start_service):
    n = 3000
    r = qs_eh(hub, "send", "earthquake-events", "--partition", "3",
              stdin="".join(f"{i}\n" for i in range(n)))
    assert r.returncode == 0, r.stderr
    port = hub.amqp_port
    env = dict(os.environ, EVENTHUBS_CONNECTION_STRING=hub_connection_string(port))
    rcv = subprocess.Popen([QS_EH, "receive", "earthquake-events", "3", "--count", str(2 * n),
                            "--stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        first = [rcv.stdout.readline() for _ in range(n)]  # all of the first half, then...
        hub.kill()  # ...the hub dies while the consumer waits for more
        hub2 = start_service("hub", env={"AMQP_PORT": str(port), "DATA_DIR": str(hub.data_dir),
                                         "CAPTURE_DIR": str(hub.capture_dir)})
        hub2.wait_for_log(lambda r: r.get("msg") == "hub listening")
        hub2.amqp_port = port
        r = qs_eh(hub2, "send", "earthquake-events", "--partition", "3",
                  stdin="".join(f"{i}\n" for i in range(n, 2 * n)))
        assert r.returncode == 0, r.stderr
        rest, err = rcv.communicate(timeout=120)
    finally:
        if rcv.poll() is None:
            rcv.kill()
    assert rcv.returncode == 0, err
    got = [json.loads(l) for l in first + rest.splitlines()]
    assert [int(e["body"]) for e in got] == list(range(2 * n))  # no gap, no repeat
    assert [e["sequence"] for e in got] == list(range(2 * n))
    assert json.loads(err.strip().splitlines()[-1])["connects"] >= 2


def test_the_sdk_reads_the_ingestors_events(hub, start_service):
    vega = os.path.join(os.environ.get("QS_NODE_DIR", os.path.join(ROOT, "tests", "node")),
                        "node_modules", "vega-datasets", "data", "earthquakes.json")
    svc = start_service("ingestor", env={"EVENTHUBS_CONNECTION_STRING": hub.connection_string,
                                         "SOURCES": ""}, args=("replay", vega, "--speed", "0"))
    assert svc.wait(60) == 0
    part = max(range(4), key=lambda p: props(hub, p)["last_sequence"])
    count = props(hub, part)["last_sequence"] + 1
    ours = qs_receive(hub, part, count)
    theirs = sdk_receive(hub, str(part), "earliest", count)
    assert [json.loads(e["body"]) for e in ours] == [e["body"] for e in theirs]
    assert [e["partition_key"] for e in ours] == [e["partitionKey"] for e in theirs]
    assert all(e["body"]["region"] == e["partitionKey"] for e in theirs)
