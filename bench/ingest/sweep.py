#!/usr/bin/python3
"""bench/ingest/sweep.py [FEATURES] — the FDSN sweep's cost (issue 10's closing numbers).

A local HTTP server plays the FDSN event service with one page of FEATURES (default 20,000,
the largest page USGS serves; the next page is empty)
synthetic USGS features over eight regions; the ingestor (SOURCES=usgs, the summary feed empty)
sweeps it against a fresh hub and Redis:
  sweep 1: every feature is new;
  sweep 2: every feature is a revision (newer `updated`, new magnitude), 10 % of them moved to
           another region (two messages: `moved` + `revision`);
  sweep 3: the same page again: every feature a duplicate.
Each sweep's time is the ingestor's own `poll done` `ms` for the page (HTTP fetch + parse +
dedupe lookups + classification + send to durable ack + records stored), three runs, medians.
Needs a release build (./quakestream build).
"""
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("QS_BUILD_DIR", os.path.join(ROOT, "build"))
PLACES = [(61.0, -150.0), (19.4, -155.3), (36.0, -120.0), (35.7, 139.7), (38.0, 23.0),
          (-33.0, -71.0), (13.6, 120.4), (40.0, -100.0)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


T0 = int(time.time() * 1000) - 3 * 86_400_000


def page(n, version, seed=1):
    rng = random.Random(seed)
    t0 = T0
    feats = []
    for i in range(n):
        lat, lon = PLACES[i % len(PLACES)]
        if version == 2 and i % 10 == 0:
            lat, lon = PLACES[(i + 1) % len(PLACES)]
        mag = round(rng.uniform(0, 6), 2) + (0.1 if version == 2 else 0)
        feats.append({"type": "Feature", "id": f"bx{i}",
                      "properties": {"mag": mag, "place": "somewhere", "time": t0 + i * 1000,
                                     "updated": t0 + i * 1000 + (5000 if version == 2 else 1000),
                                     "type": "earthquake", "status": "reviewed", "tsunami": 0,
                                     "net": "us", "ids": f",bx{i},", "magType": "ml", "sig": 100},
                      "geometry": {"type": "Point",
                                   "coordinates": [lon + rng.uniform(-0.5, 0.5),
                                                   lat + rng.uniform(-0.5, 0.5), 10.0]}})
    return json.dumps({"type": "FeatureCollection", "features": feats}).encode()


class Server:
    """The k-th sweep's first page is pages[k] (the last one repeats); other pages are empty."""

    def __init__(self, pages):
        self.pages = list(pages)
        outer = self
        empty = json.dumps({"type": "FeatureCollection", "features": []}).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = empty
                if "offset=1&" in self.path + "&":
                    body = outer.pages[0] if len(outer.pages) == 1 else outer.pages.pop(0)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def wait_line(proc_lines, pred, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        for rec in list(proc_lines):
            if pred(rec):
                proc_lines.remove(rec)
                return rec
        time.sleep(0.05)
    raise RuntimeError("timed out")


def reader(proc, out):
    for raw in proc.stderr:
        try:
            out.append(json.loads(raw))
        except ValueError:
            pass


def one_run(n, pages):
    work = tempfile.mkdtemp()
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                       "--appendonly", "no", "--bind", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL))
        hub = subprocess.Popen([os.path.join(BUILD, "services", "hub", "hub")],
                               env=dict(os.environ, ADMIN_PORT="0", AMQP_PORT="0",
                                        DATA_DIR=work + "/data", CAPTURE_DIR=work + "/cap"),
                               stderr=subprocess.PIPE, text=True)
        procs.append(hub)
        hl = []
        threading.Thread(target=reader, args=(hub, hl), daemon=True).start()
        port = wait_line(hl, lambda r: "amqp_port" in r)["amqp_port"]
        srv = Server(pages)
        env = dict(os.environ, ADMIN_PORT="0", SOURCES="usgs", REDIS_URL=f"redis://127.0.0.1:{rport}/0",
                   EVENTHUBS_CONNECTION_STRING=f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
                   USGS_FEED_URL=srv.url + "/empty", POLL_INTERVAL="3600s", FDSN_BASE_URL=srv.url,
                   FDSN_SWEEP_INTERVAL="1s", FDSN_PAGE_SIZE=str(min(n, 20000)), SEND_QUEUE="100000")
        ing = subprocess.Popen([os.path.join(BUILD, "services", "ingestor", "ingestor")], env=env,
                               stderr=subprocess.PIPE, text=True)
        procs.append(ing)
        il = []
        threading.Thread(target=reader, args=(ing, il), daemon=True).start()
        out = []
        for _ in pages:
            rec = wait_line(il, lambda r: r.get("msg") == "poll done" and r.get("source") == "fdsn"
                            and r.get("page") == 0)
            wait_line(il, lambda r: r.get("msg") == "sweep done")
            out.append(rec)
        srv.httpd.shutdown()
        return out
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    pages = [page(n, 1), page(n, 2), page(n, 2)]
    print(f"page: {n} features, {len(pages[0]) / 1e6:.1f} MB")
    names = ["new", "revisions (10 % moved)", "duplicates"]
    runs = []
    for r in range(3):
        recs = one_run(n, pages)
        runs.append([x["ms"] for x in recs])
        print(f"run {r + 1}: " + ", ".join(
            f'{nm} {x["ms"]} ms (sent {x["sent"]}, moved {x["moved"]})' for nm, x in zip(names, recs)))
    med = [sorted(col)[1] for col in zip(*runs)]
    for nm, ms in zip(names, med):
        print(f"median {nm}: {ms} ms = {n / ms * 1000:.0f} features/s")
    print(f"a revision costs {med[1] / med[0]:.2f}x a new event; a duplicate {med[2] / med[0]:.2f}x")


if __name__ == "__main__":
    main()
