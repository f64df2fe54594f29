// The peer of bench/speed: the official @azure/event-hubs EventHubConsumerClient reading every
// partition of earthquake-events from the earliest event and doing the speed layer's windowing
// in memory (latest revision per event_id, 5-minute windows per region with count, magnitude and
// depth sums; min/max recomputed from the members when a retraction removes the min or the max,
// the rule qs_agg uses). What it leaves out, which favours it: Redis (no state fetch, no commit,
// no checkpoints, no live messages), validation of each event, alerts, watermarks/lateness/final,
// the raw-event store, the rolling hour, leases. What does not count against it: bodies are
// parsed straight from the SDK's Buffer (no extra copy), and its CPU clock starts after the SDK
// is loaded (ours at process start).
// Prints {"events","wall_s","cpu_s","events_per_s_wall","events_per_cpu_s"} when EH_EVENTS
// events have been consumed.
import { createRequire } from "node:module";
const require = createRequire(new URL("../../tests/node/package.json", import.meta.url));
const { EventHubConsumerClient, earliestEventPosition } = require("@azure/event-hubs");

const conn = process.env.EH_CONNECTION_STRING;
const target = Number(process.env.EH_EVENTS);
const WINDOW = 300000;
const latest = new Map(); // event_id -> {updated, key, mag, depth}
const windows = new Map(); // key -> {count, magSum, magCount, depthSum, depthCount, members:Map}
let n = 0;
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
let n10 = null, c10 = null; // a tenth of the events in: the "sustained" rate is measured from here

function micro(v) {
  return Math.sign(v) * Math.floor(Math.abs(v * 1e6) + 0.5);
}

function apply(ev) {
  const cur = latest.get(ev.event_id);
  if (cur && ev.updated <= cur.updated) return;
  if (cur && cur.key) {
    const w = windows.get(cur.key);
    w.count--;
    if (cur.mag !== null) { w.magSum -= cur.mag; w.magCount--; }
    if (cur.depth !== null) { w.depthSum -= cur.depth; w.depthCount--; }
    w.members.delete(ev.event_id);
    if (cur.mag !== null && (cur.mag === w.min || cur.mag === w.max)) {
      let mn = Infinity, mx = -Infinity;
      for (const m of w.members.values()) if (m !== null) { mn = Math.min(mn, m); mx = Math.max(mx, m); }
      w.min = mn; w.max = mx;
    }
  }
  if (ev.change === "deleted" || ev.change === "superseded") {
    latest.set(ev.event_id, { updated: ev.updated, key: null });
    return;
  }
  const key = ev.region + "|" + Math.floor(ev.time / WINDOW) * WINDOW;
  let w = windows.get(key);
  if (!w) windows.set(key, (w = { count: 0, magSum: 0, magCount: 0, depthSum: 0, depthCount: 0,
                                   min: Infinity, max: -Infinity, members: new Map() }));
  const mag = ev.magnitude === null ? null : micro(ev.magnitude);
  const depth = ev.depth_km === null ? null : micro(ev.depth_km);
  w.count++;
  if (mag !== null) { w.magSum += mag; w.magCount++; w.min = Math.min(w.min, mag); w.max = Math.max(w.max, mag); }
  if (depth !== null) { w.depthSum += depth; w.depthCount++; }
  w.members.set(ev.event_id, mag);
  latest.set(ev.event_id, { updated: ev.updated, key, mag, depth });
}

const client = new EventHubConsumerClient("$Default", conn, "earthquake-events");
const sub = client.subscribe(
  {
    processEvents: async (events) => {
      for (const e of events) {
        const b = e.body;
        const body = Buffer.isBuffer(b) ? JSON.parse(b.toString("utf8"))
          : b instanceof Uint8Array ? JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8"))
          : b;
        apply(body);
        n++;
        if (n10 === null && n >= Math.floor(target / 10)) { n10 = n; c10 = process.cpuUsage(c0); }
      }
      if (n >= target) {
        const wall = Number(process.hrtime.bigint() - t0) / 1e9;
        const cu = process.cpuUsage(c0);
        const cpu = (cu.user + cu.system) / 1e6;
        const cpu10 = c10 ? (c10.user + c10.system) / 1e6 : 0;
        process.stdout.write(JSON.stringify({ events: n, windows: windows.size, wall_s: wall, cpu_s: cpu,
          events_per_s_wall: Math.round(n / wall), events_per_cpu_s: Math.round(n / cpu),
          sustained_events_per_cpu_s: n10 !== null && cpu > cpu10 ? Math.round((n - n10) / (cpu - cpu10)) : null }) + "\n");
        await sub.close();
        await client.close();
        process.exit(0);
      }
    },
    processError: async (err) => { process.stderr.write(String(err) + "\n"); },
  },
  { startPosition: earliestEventPosition, maxBatchSize: 1000, maxWaitTimeInSeconds: 1 },
);
