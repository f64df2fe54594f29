"""The batch worker end to end: Capture files in (directory or Azurite blob container), gold Avro
files and Redis batch tables out, checked against an independent Python computation
(batch_ref.py, reading the same files with Debian's python3-avro)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
pytest.importorskip("avro.datafile")
import batch_ref  # noqa: E402
from conftest import ROOT, binary  # noqa: E402

SHARED = os.path.join(os.environ.get("QS_SHARED_DIR", os.path.join(ROOT, "..", "shared")), "data",
                      "capture")
AZURITE = os.path.join(ROOT, "tests", "node", "node_modules", ".bin", "azurite-blob")
DEV_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development account key.
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


def base_day():
    """A UTC day start 3 days ago: inside every retention window, stable within a test."""
    now = int(time.time() * 1000)
    return (now // batch_ref.DAY - 3) * batch_ref.DAY


def run_once(tmp_path, source, redis=None, extra=None, args=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": "0", "LOG_LEVEL": "info",
                "GOLD_DIR": str(tmp_path / "gold"), "REDIS_URL": redis.url if redis else "",
                "PROGRESS": "never"})
    env.update(extra or {})
    p = subprocess.run([binary("batch-worker"), "run-once", "--source", source, *(args or [])],
                       env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    logs = [json.loads(line) for line in p.stderr.decode().splitlines() if line.startswith("{")]
    record = json.loads(p.stdout.decode().strip().splitlines()[-1]) if p.stdout.strip() else None
    return p.returncode, record, logs


def redis_hash(redis, key):
    out = redis.cli("HGETALL", key).splitlines()
    return dict(zip(out[0::2], out[1::2]))


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "capture"
    base = base_day()
    files, cutoff = batch_ref.make_dataset(str(root), base)
    return root, files, cutoff, base


def test_rows_equal_an_independent_computation(tmp_path, dataset, redis_server):
    root, files, cutoff, base = dataset
    rc, rec, logs = run_once(tmp_path, str(root), redis_server)
    assert rc == 0, logs
    hourly, daily, counters = batch_ref.reference(files)
    gold_h = batch_ref.read_gold(tmp_path / "gold" / "hourly.avro")
    gold_d = batch_ref.read_gold(tmp_path / "gold" / "daily.avro")
    assert gold_h == hourly
    assert gold_d == daily
    # The run record counts what happened.
    assert rec["status"] == "ok" and rec["files"] == 6 and rec["files_failed"] == 0
    assert rec["bad_enqueued_time"] == 0  # both M/D/YYYY h:mm:ss AM and ISO-8601 parsed
    assert rec["invalid_bodies"] == counters["invalid"] == 4
    assert rec["events"] == counters["events"]
    assert rec["events_counted"] == counters["counted"]
    assert rec["cutoff_ms"] == cutoff
    assert rec["excluded_deleted"] == 1
    assert rec["excluded_superseded"] == 2  # sup1 (explicit) and ci111 (association)
    assert rec["duplicates"] == 1
    # rev1 1, rev2 2, del1 1, sup1 1, tie1 1, tie2 1 (dup1's copy is a duplicate instead)
    assert rec["revisions_folded"] == 7
    assert rec["changes"]["deleted"] == 1 and rec["changes"]["superseded"] == 1
    assert len(rec["invalid"]) == 4
    # Redis: the same rows, the cutoff, the baseline.
    h = redis_hash(redis_server, "qs:batch:hourly")
    assert len(h) == len(hourly)
    for r in hourly:
        got = json.loads(h["%s|%d" % (r["region"], r["window_start"])])
        for k in ("event_count", "avg_magnitude", "min_magnitude", "max_magnitude", "avg_depth_km",
                  "significant_count", "tsunami_count", "mag_sum_micro", "mag_count",
                  "depth_sum_micro", "depth_count"):
            assert got[k] == r[k], (k, r)
        assert got["window_start_ms"] == r["window_start"]
    d = redis_hash(redis_server, "qs:batch:daily")
    assert len(d) == len(daily)
    for r in daily:
        got = json.loads(d["%s|%s" % (r["region"], r["date"])])
        for k in ("event_count", "avg_magnitude", "max_magnitude", "tsunami_events",
                  "mag_sum_micro", "mag_count", "depth_sum_micro", "depth_count"):
            assert got[k] == r[k], (k, r)
    idx = redis_server.cli("ZRANGE", "qs:batch:hourly:idx", "0", "0", "WITHSCORES").split()
    assert int(idx[1]) == hourly[0]["window_start"]
    meta = redis_hash(redis_server, "qs:batch:meta")
    assert int(meta["cutoff_ms"]) == cutoff and meta["run_id"] == rec["run_id"]
    bl = json.loads(redis_hash(redis_server, "qs:batch:baseline")["japan"])
    start = base  # the first file's path time: where the capture starts
    hours = (cutoff - start) // batch_ref.HOUR
    counts = [r["event_count"] for r in hourly
              if r["region"] == "japan" and start <= r["window_start"] < cutoff]
    assert bl == {"hours": hours, "count_sum": sum(counts),
                    "count_sq_sum": sum(c * c for c in counts)}
    runs = redis_server.cli("LRANGE", "qs:batch:runs", "0", "-1").splitlines()
    assert json.loads(runs[0])["run_id"] == rec["run_id"]
    assert redis_server.cli("EXISTS", "qs:batch:lock").strip() == "0"
    assert redis_server.cli("KEYS", "qs:batch:tmp:*").strip() == ""
    ttl = int(redis_server.cli("PTTL", "qs:batch:hourly"))
    assert 364 * batch_ref.DAY < ttl <= 365 * batch_ref.DAY


def test_two_runs_give_identical_gold_bytes_and_tables(tmp_path, dataset, redis_server):
    root, _, _, _ = dataset
    rc, rec1, _ = run_once(tmp_path, str(root), redis_server)
    assert rc == 0
    gold1 = {n: (tmp_path / "gold" / n).read_bytes() for n in ("hourly.avro", "daily.avro")}
    tables1 = {k: redis_hash(redis_server, k) for k in
               ("qs:batch:hourly", "qs:batch:daily", "qs:batch:baseline")}
    idx1 = redis_server.cli("ZRANGE", "qs:batch:hourly:idx", "0", "-1", "WITHSCORES")
    rc, rec2, _ = run_once(tmp_path, str(root), redis_server)
    assert rc == 0 and rec2["run_id"] != rec1["run_id"]
    for n, data in gold1.items():
        assert (tmp_path / "gold" / n).read_bytes() == data
    for k, v in tables1.items():
        assert redis_hash(redis_server, k) == v
    assert redis_server.cli("ZRANGE", "qs:batch:hourly:idx", "0", "-1", "WITHSCORES") == idx1
    assert int(redis_server.cli("LLEN", "qs:batch:runs")) == 2
    assert not [p for p in (tmp_path / "gold").iterdir() if p.name.startswith(".")]


def test_truncated_and_empty_files_are_reported_and_skipped(tmp_path, dataset):
    root, files, _, _ = dataset
    # An empty Capture file (header only) and a truncated copy of a real one.
    batch_ref.write_capture(str(root / "qsns" / "earthquake-events" / "p=0" / "empty.avro"), [])
    data = open(files[0], "rb").read()
    trunc = root / "qsns" / "earthquake-events" / "p=1" / "truncated.avro"
    trunc.write_bytes(data[: len(data) * 2 // 3])
    # Another hub's capture (EVENT_HUB keeps it out: it would hold the cutoff back).
    other = root / "qsns" / "weather-events" / "p=0" / "2020" / "01" / "01" / "00" / "00" / "00.avro"
    batch_ref.write_capture(str(other), [("1/1/2020 12:00:00 AM", b"{}")])
    rc, rec, _ = run_once(tmp_path, str(root))
    assert rc == 0
    assert rec["files"] == 8 and rec["files_failed"] == 1 and rec["files_empty"] == 1
    assert rec["cutoff_ms"] == dataset[2]
    assert [e["path"] for e in rec["errors"]] == ["qsns/earthquake-events/p=1/truncated.avro"]
    assert rec["errors"][0]["reason"]
    # The truncated file contributes nothing: rows equal the computation without it.
    hourly, daily, _ = batch_ref.reference(files)
    assert batch_ref.read_gold(tmp_path / "gold" / "hourly.avro") == hourly
    assert batch_ref.read_gold(tmp_path / "gold" / "daily.avro") == daily


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, dataset):
    root = dataset[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"ADMIN_PORT": "0", "REDIS_URL": "", "GOLD_DIR": str(tmp_path / "g")})
    cmd = [binary("batch-worker"), "run-once", "--source", str(root)]
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=60)  # stderr is a pipe
    assert p.returncode == 0
    assert b"\r" not in p.stderr
    assert all(json.loads(line) for line in p.stderr.decode().splitlines())  # JSON lines only
    p = subprocess.run(cmd, env=dict(env, PROGRESS="always"), capture_output=True, timeout=60)
    assert p.returncode == 0
    assert b"files 6/6" in p.stderr and b"MB/s" in p.stderr
    assert b"ok: 6 files (0 failed)" in p.stderr  # the closing summary


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data/capture not present")
def test_real_capture_files_count_invalid_bodies(tmp_path):
    src = tmp_path / "real"
    shutil.copytree(SHARED, src)
    usql = src / "eventhub_capture_usql_EHC.avro"
    data = usql.read_bytes()
    (src / "truncated_usql.avro").write_bytes(data[: len(data) // 2])
    rc, rec, _ = run_once(tmp_path, str(src))
    assert rc == 0
    records = len(batch_ref.read_bodies([str(usql)]))
    assert rec["files"] == 3 and rec["files_ok"] == 2 and rec["files_failed"] == 1
    assert rec["errors"][0]["path"] == "truncated_usql.avro"
    assert rec["records"] == records and rec["invalid_bodies"] == records
    assert rec["events"] == 0 and rec["hourly_rows"] == 0
    # 12/7/2018 10:22:49 AM .. the last record: the cutoff is the start of that hour.
    assert rec["cutoff_ms"] > 0 and rec["cutoff_ms"] % batch_ref.HOUR == 0
    assert batch_ref.read_gold(tmp_path / "gold" / "hourly.avro") == []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def azurite(tmp_path):
    """Azurite's blob service on a free port, in memory; killed at teardown, also when its start
    fails or times out."""
    if not os.access(AZURITE, os.X_OK):
        pytest.skip("azurite not installed (./quakestream deps)")
    import threading
    started = []
    try:
        for _ in range(10):
            port = free_port()
            proc = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                     "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
                                     "--silent"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, cwd=str(tmp_path))
            started.append(proc)
            for raw in proc.stdout:  # Azurite says when it listens, or exits (port taken)
                if b"successfully listens" in raw:
                    break
            if proc.poll() is None:
                break
        else:
            pytest.fail("azurite did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        proc.url = "http://127.0.0.1:%d/%s" % (port, DEV_ACCOUNT)
        proc.conn = ("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;"
                     % (DEV_ACCOUNT, DEV_KEY, proc.url))
        yield proc
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def test_blob_source_gives_the_same_gold_as_the_directory(tmp_path, dataset, azurite):
    blob = pytest.importorskip("azure.storage.blob")
    root, files, _, _ = dataset
    svc = blob.BlobServiceClient.from_connection_string(azurite.conn)
    cont = svc.create_container("capture")
    for p in files:
        rel = os.path.relpath(p, root)
        with open(p, "rb") as f:
            cont.upload_blob("archive/" + rel, f)
    cont.upload_blob("archive/notes.txt", b"not a capture file")
    cont.upload_blob("other/ignored.avro", b"outside the prefix")

    rc, rec_dir, _ = run_once(tmp_path / "d", str(root))
    assert rc == 0
    # Shared Key, paging through 2 blobs per List Blobs call; gold also uploaded to a container.
    gold = svc.create_container("gold")
    rc, rec_blob, logs = run_once(tmp_path / "b", azurite.url + "/capture/archive/",
                                  extra={"BLOB_ACCOUNT_KEY": DEV_KEY, "BLOB_PAGE_SIZE": "2",
                                         "GOLD_URL": azurite.url + "/gold/batch"})
    assert rc == 0, logs
    for n in ("hourly.avro", "daily.avro"):
        assert gold.download_blob("batch/" + n).readall() == \
            (tmp_path / "b" / "gold" / n).read_bytes()
    assert rec_blob["files"] == 6 and rec_blob["files_failed"] == 0
    assert rec_blob["records"] == rec_dir["records"]
    for n in ("hourly.avro", "daily.avro"):
        assert (tmp_path / "b" / "gold" / n).read_bytes() == (tmp_path / "d" / "gold" / n).read_bytes()
    assert rec_blob["cutoff_ms"] == rec_dir["cutoff_ms"]
    # SAS instead of the key.
    import datetime
    sas = blob.generate_container_sas(DEV_ACCOUNT, "capture", account_key=DEV_KEY,
                                      permission=blob.ContainerSasPermissions(read=True, list=True),
                                      expiry=datetime.datetime.utcnow() + datetime.timedelta(hours=1))
    rc, rec_sas, logs = run_once(tmp_path / "s", azurite.url + "/capture/archive",
                                 extra={"BLOB_SAS": sas})
    assert rc == 0, logs
    assert (tmp_path / "s" / "gold" / "hourly.avro").read_bytes() == \
        (tmp_path / "d" / "gold" / "hourly.avro").read_bytes()
    # A wrong key fails the run with the service's reason.
    rc, rec_bad, _ = run_once(tmp_path / "x", azurite.url + "/capture/archive",
                              extra={"BLOB_ACCOUNT_KEY": "AAAA" + DEV_KEY[4:]})
    assert rc == 1 and rec_bad["status"] == "failed" and "403" in rec_bad["error"]


def test_service_runs_on_start_and_refuses_to_overlap(tmp_path, dataset, start_service,
                                                      redis_server):
    root, _, _, _ = dataset
    redis_server.cli("SET", "qs:batch:lock", "someone-else", "PX", "60000")
    env = {"SOURCE": str(root), "REDIS_URL": redis_server.url, "GOLD_DIR": str(tmp_path / "g"),
           "RUN_ON_START": "true", "CRON": "0 */6 * * *"}
    svc = start_service("batch-worker", env=env)
    svc.wait_for_log(lambda r: r.get("msg") == "run skipped: another run holds the lock")
    assert svc.get("/readyz")[0] == 200
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0
    redis_server.cli("DEL", "qs:batch:lock")
    svc = start_service("batch-worker", env=env)
    rec = svc.wait_for_log(lambda r: r.get("msg") == "run finished", timeout=60)
    assert rec["status"] == "ok"
    svc.wait_for_log(lambda r: r.get("msg") == "next run scheduled")
    status, _, body = svc.get("/metrics")
    assert b'quakestream_batch_runs_total{status="ok"} 1' in body
    assert b"quakestream_batch_cutoff_age_seconds" in body
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0


def test_bad_schedule_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADMIN_", "LOG_"))}
    env.update({"CRON": "61 * * * *", "ADMIN_PORT": "0", "REDIS_URL": ""})
    p = subprocess.run([binary("batch-worker")], env=env, capture_output=True, timeout=20)
    assert p.returncode == 2
    assert b"minute" in p.stderr


def test_serving_api_serves_what_the_batch_worker_loaded(tmp_path, dataset, redis_server,
                                                         start_service):
    import serving_helpers
    root, files, cutoff, base = dataset
    rc, rec, _ = run_once(tmp_path, str(root), redis_server)
    assert rc == 0
    hourly, daily, _ = batch_ref.reference(files)
    svc = serving_helpers.start_serving(start_service, redis_server.url)
    status, _, body = serving_helpers.http(
        svc.api + "/api/v1/windows/batch/hourly?since=7d&limit=10000")
    assert status == 200, body
    got = {(w["region"], w["window_start_ms"]): w for w in json.loads(body)["windows"]}
    assert len(got) == len(hourly)
    for r in hourly:
        w = got[(r["region"], r["window_start"])]
        for k in ("event_count", "avg_magnitude", "min_magnitude", "max_magnitude",
                  "avg_depth_km", "significant_count", "tsunami_count", "mag_sum_micro"):
            assert w[k] == r[k], (k, r)
    status, _, body = serving_helpers.http(svc.api + "/api/v1/batch/runs")
    assert status == 200, body
    runs = json.loads(body)
    assert runs["runs"][0]["run_id"] == rec["run_id"]
    assert runs["batch"]["cutoff_ms"] == cutoff and runs["batch"]["run_id"] == rec["run_id"]
