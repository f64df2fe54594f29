"""Helpers for the serving-api tests: rows in the exact shape qs_agg_row_to_json writes (field list
of common/include/qs/agg.h), events, a loader for the Redis keyspace of docs/keyspace.md, a tiny
RESP client (publishing without redis-cli per message), a minimal asyncio WebSocket client, and an
OpenAPI 3.0 response validator on Debian's python3-jsonschema."""
import asyncio
import base64
import copy
import json
import math
import os
import socket
import struct
import urllib.error
import urllib.request

HOUR = 3_600_000
MIN5 = 300_000
DAY = 86_400_000


def iso(ms):
    import datetime
    d = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def micro(x):
    """llround(x * 1e6): rounding half away from zero, as libqs does."""
    v = x * 1e6
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def row(region, start_ms, length_ms, events, extra=None):
    """A row of `region` over [start, start+length) from events [(mag or None, depth or None,
    tsunami bool)], as qs_agg_row_to_json writes it."""
    mags = [micro(m) for m, _, _ in events if m is not None]
    depths = [micro(d) for _, d, _ in events if d is not None]
    r = {
        "window_start": iso(start_ms), "window_end": iso(start_ms + length_ms),
        "window_start_ms": start_ms, "window_end_ms": start_ms + length_ms, "region": region,
        "event_count": len(events),
        "avg_magnitude": (sum(mags) / len(mags) / 1e6) if mags else None,
        "min_magnitude": (min(mags) / 1e6) if mags else None,
        "max_magnitude": (max(mags) / 1e6) if mags else None,
        "avg_depth_km": (sum(depths) / len(depths) / 1e6) if depths else None,
        "significant_count": sum(1 for m in mags if m >= 5_000_000),
        "tsunami_count": sum(1 for _, _, t in events if t),
        "tsunami_alerts": sum(1 for _, _, t in events if t),
        "mag_sum_micro": sum(mags), "mag_count": len(mags),
        "depth_sum_micro": sum(depths), "depth_count": len(depths),
    }
    if extra:
        r.update(extra)
    return r


def event(event_id, t_ms, mag, lon, lat, depth=10.0, region="us-west", tsunami=False):
    return {"event_id": event_id, "magnitude": mag, "mag_type": "ml", "place": f"near {event_id}",
            "time": t_ms, "updated": t_ms + 1000, "longitude": lon, "latitude": lat,
            "depth_km": depth, "event_type": "earthquake", "status": "reviewed",
            "tsunami_flag": tsunami, "alert_level": None, "net": "ci", "sig": 100,
            "region": region, "source": "usgs", "ingested_at": t_ms + 2000, "ids": f",{event_id},"}


class Resp:
    """A blocking RESP2 client, enough for loading test data and publishing."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.f = self.sock.makefile("rb")

    def _read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad RESP reply {line!r}")

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def call(self, *args):
        self.sock.sendall(self._encode(args))
        return self._read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def close(self):
        self.sock.close()


def load(resp, rt_rows=(), batch_rows=(), events=(), alerts=(), cutoff_ms=None, baselines=None,
         runs=(), daily=(), rolling=None):
    """Writes rows to the keyspace of docs/keyspace.md."""
    cmds = []
    for r in rt_rows:
        k = f"{r['region']}|{r['window_start_ms']}"
        cmds += [["HSET", "qs:rt:win", k, json.dumps(r)],
                 ["ZADD", "qs:rt:win:idx", r["window_start_ms"], k]]
    for r in batch_rows:
        k = f"{r['region']}|{r['window_start_ms']}"
        cmds += [["HSET", "qs:batch:hourly", k, json.dumps(r)],
                 ["ZADD", "qs:batch:hourly:idx", r["window_start_ms"], k]]
    for d in daily:
        k = f"{d['region']}|{d['date']}"
        cmds += [["HSET", "qs:batch:daily", k, json.dumps(d)],
                 ["ZADD", "qs:batch:daily:idx", d["day_start_ms"], k]]
    for e in events:
        cmds += [["HSET", "qs:ev", e["event_id"], json.dumps(e)],
                 ["ZADD", "qs:ev:idx", e["time"], e["event_id"]]]
    for a in alerts:
        k = f"{a['type']}|{a.get('event_id') or a.get('window_key')}"
        cmds += [["HSET", "qs:alerts", k, json.dumps(a)],
                 ["ZADD", "qs:alerts:idx", a["created_at"], k]]
    if cutoff_ms is not None:
        cmds.append(["HSET", "qs:batch:meta", "run_id", "run-1", "cutoff_ms", cutoff_ms,
                     "finished_at", cutoff_ms + 60_000])
    for region, b in (baselines or {}).items():
        cmds.append(["HSET", "qs:batch:baseline", region, json.dumps(b)])
    for run in runs:
        cmds.append(["RPUSH", "qs:batch:runs", json.dumps(run)])
    if rolling is not None:
        cmds.append(["SET", "qs:rt:rolling", json.dumps(rolling)])
    if cmds:
        resp.pipeline(cmds)


def http(url, headers=None, timeout=10):
    """GET -> (status, headers (lower-case keys), body bytes)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def start_serving(start_service, redis_url, **env):
    """serving-api on free ports; .api is its base URL."""
    from conftest import ROOT
    full = {"REDIS_URL": redis_url, "API_PORT": "0", "RATE_LIMIT_RPS": "0",
            "CACHE_MAX_AGE": "0", "STATIC_DIR": os.path.join(ROOT, "services", "serving-api", "www"),
            "VENDOR_DIR": os.path.join(ROOT, "web", "node_modules")}
    full.update({k: str(v) for k, v in env.items()})
    svc = start_service("serving-api", env=full)
    rec = svc.wait_for_log(lambda r: r.get("msg") == "api listening")
    svc.api_port = rec["api_port"]
    svc.api = f"http://127.0.0.1:{svc.api_port}"
    svc.wait_for_log(lambda r: r.get("msg") == "live subscription ready")
    import time
    deadline = time.monotonic() + 10
    while svc.get("/readyz")[0] != 200:  # the command connection answers its first PING
        assert time.monotonic() < deadline, "serving-api not ready"
        time.sleep(0.02)
    return svc


# ---- WebSocket client (RFC 6455, client side: masked frames) ------------------------------------

class WS:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def connect(cls, port, path="/api/v1/live", rcvbuf=None):
        if rcvbuf:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(f"no upgrade: {head!r}")
        import hashlib
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        fields = {k.lower(): v for k, v in fields.items()}
        assert fields.get(b"sec-websocket-accept") == want, head  # RFC 6455 4.2.2
        return cls(reader, writer)

    def send_json(self, obj, opcode=1):
        data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.w.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def recv_frame(self):
        b0, b1 = await self.r.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", await self.r.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await self.r.readexactly(8))[0]
        return b0 & 0x0F, await self.r.readexactly(n)

    async def recv(self, timeout=10):
        """Next text message as JSON (pings are answered, pongs skipped); None on close."""
        while True:
            op, data = await asyncio.wait_for(self.recv_frame(), timeout)
            if op == 1:
                return json.loads(data)
            if op == 8:
                return None
            if op == 9:
                self.send_json(data, opcode=10)

    async def subscribe(self, topics, regions=None):
        msg = {"type": "subscribe", "topics": topics}
        if regions is not None:
            msg["regions"] = regions
        self.send_json(msg)
        ack = await self.recv()
        assert ack["type"] == "subscribed", ack
        snaps = {}
        for _ in topics:
            s = await self.recv()
            assert s["type"] == "snapshot", s
            snaps[s["topic"]] = s["data"]
        return snaps

    def close(self):
        self.w.close()


# ---- OpenAPI 3.0 response validation ------------------------------------------------------------

def _to_jsonschema(node):
    """OpenAPI 3.0 schema objects -> JSON Schema (nullable -> a null alternative)."""
    if isinstance(node, list):
        return [_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_jsonschema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        if "type" in out and isinstance(out["type"], str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = out["enum"] + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class OpenAPI:
    def __init__(self, doc):
        self.doc = doc
        self.schema_doc = _to_jsonschema(copy.deepcopy(doc))

    def validate(self, path, status, content_type, body):
        """Validates a response of GET path against the document; raises on mismatch."""
        import jsonschema
        op = self.doc["paths"][path]["get"]
        responses = op["responses"]
        key = str(status)
        assert key in responses, f"{path}: status {status} not documented"
        resp = responses[key]
        if "$ref" in resp:
            resp = self.doc["components"]["responses"][resp["$ref"].split("/")[-1]]
        content = resp.get("content")
        if not content:
            return
        ctype = content_type.split(";")[0].strip()
        assert ctype in content, f"{path} {status}: content type {ctype} not documented"
        schema = _to_jsonschema(content[ctype]["schema"])
        resolver = jsonschema.RefResolver.from_schema(self.schema_doc)
        jsonschema.Draft7Validator(schema, resolver=resolver).validate(json.loads(body))
