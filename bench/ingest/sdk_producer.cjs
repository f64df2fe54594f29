// sdk_producer.cjs EVENTS.ndjson — the official @azure/event-hubs producer sending the same events
// (one JSON line per event: {"key": partition key, "body": the event JSON text}) to a hub, batched
// per partition key with createBatch/tryAdd and up to 16 batches in flight; prints events/s.
// Run with NODE_PATH pointing at a node_modules that has @azure/event-hubs (tests/node).
const fs = require("fs");
const { EventHubProducerClient } = require("@azure/event-hubs");

async function main() {
  const lines = fs.readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l);
  const events = lines.map((l) => JSON.parse(l));
  const p = new EventHubProducerClient(process.env.EH_CONNECTION_STRING, process.env.EH_NAME);
  const t0 = process.hrtime.bigint();
  const byKey = new Map();
  for (const e of events) {
    if (!byKey.has(e.key)) byKey.set(e.key, []);
    byKey.get(e.key).push(e.body);
  }
  const inflight = new Set();
  for (const [key, bodies] of byKey) {
    let batch = await p.createBatch({ partitionKey: key });
    for (const b of bodies) {
      // the body goes as bytes, as the project's client sends it (no JSON re-encoding)
      if (!batch.tryAdd({ body: Buffer.from(b) })) {
        const s = p.sendBatch(batch);
        inflight.add(s);
        s.finally(() => inflight.delete(s));
        if (inflight.size >= 16) await Promise.race(inflight);
        batch = await p.createBatch({ partitionKey: key });
        batch.tryAdd({ body: Buffer.from(b) });
      }
    }
    if (batch.count) {
      const s = p.sendBatch(batch);
      inflight.add(s);
      s.finally(() => inflight.delete(s));
    }
  }
  await Promise.all(inflight);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await p.close();
  console.log(JSON.stringify({ events: events.length, seconds: secs, events_per_s: events.length / secs }));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
