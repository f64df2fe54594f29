// Drives the official @azure/event-hubs SDK against a hub and prints one JSON object per step.
// Usage: node eh-sdk.mjs <scenario> ; connection string in EH_CONNECTION_STRING, hub in EH_NAME.
// The pytest harness (tests/conformance/test_js_sdk.py; it lives here so Node resolves node_modules beside it) asserts the results.
import { writeSync } from "node:fs";
import {
  EventHubProducerClient,
  EventHubConsumerClient,
  earliestEventPosition,
  latestEventPosition,
} from "@azure/event-hubs";

const conn = process.env.EH_CONNECTION_STRING;
const hub = process.env.EH_NAME || "earthquake-events";
const scenario = process.argv[2];
// EH_MAX_RETRIES lets a test see a refusal at once instead of after the SDK's retries.
const clientOptions = process.env.EH_MAX_RETRIES
  ? { retryOptions: { maxRetries: Number(process.env.EH_MAX_RETRIES) } }
  : {};
// Synchronous: process.exit() would cut an asynchronous pipe write at 64 KiB.
const out = (o) => {
  const buf = Buffer.from(JSON.stringify(o) + "\n");
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(1, buf, off);
    } catch (e) {
      if (e.code !== "EAGAIN") throw e; // a non-blocking pipe that is full: try again
    }
  }
};

async function props() {
  const p = new EventHubProducerClient(conn, hub, clientOptions);
  try {
    const h = await p.getEventHubProperties();
    const ids = await p.getPartitionIds();
    const parts = [];
    for (const id of ids) parts.push(await p.getPartitionProperties(id));
    out({ name: h.name, partitionIds: h.partitionIds, createdOn: h.createdOn.getTime(), ids, parts });
  } finally {
    await p.close();
  }
}

async function send() {
  // events given as JSON in EH_EVENTS: [{body, partitionKey?, partitionId?}]
  const events = JSON.parse(process.env.EH_EVENTS);
  const p = new EventHubProducerClient(conn, hub, clientOptions);
  try {
    const groups = new Map();
    for (const e of events) {
      const k = JSON.stringify({ partitionKey: e.partitionKey, partitionId: e.partitionId });
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(e);
    }
    let sent = 0;
    for (const [k, list] of groups) {
      const opts = JSON.parse(k);
      const batch = await p.createBatch(opts);
      for (const e of list)
        if (!batch.tryAdd({ body: e.body, properties: e.properties })) throw new Error("batch full");
      await p.sendBatch(batch);
      sent += list.length;
    }
    out({ sent });
  } finally {
    await p.close();
  }
}

async function receive() {
  // EH_START: "earliest" | "latest" | {"sequenceNumber":n,"isInclusive":b} | {"offset":"x"} |
  // {"enqueuedOn":ms}; EH_PARTITION; EH_EXPECT: how many events to wait for.
  const part = process.env.EH_PARTITION;
  const expect = Number(process.env.EH_EXPECT);
  const raw = process.env.EH_START;
  let pos;
  if (raw === "earliest") pos = earliestEventPosition;
  else if (raw === "latest") pos = latestEventPosition;
  else {
    pos = JSON.parse(raw);
    if (pos.enqueuedOn !== undefined) pos.enqueuedOn = new Date(pos.enqueuedOn);
  }
  const c = new EventHubConsumerClient("$Default", conn, hub, clientOptions);
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(), Number(process.env.EH_WAIT_MS || 15000));
    const sub = c.subscribe(
      part,
      {
        processEvents: async (events) => {
          for (const e of events)
            got.push({
              body: e.body,
              sequenceNumber: e.sequenceNumber,
              offset: e.offset,
              enqueuedTimeUtc: e.enqueuedTimeUtc.getTime(),
              partitionKey: e.partitionKey ?? null,
            });
          if (got.length >= expect) {
            clearTimeout(timer);
            resolve();
          }
        },
        processError: async (err) => {
          clearTimeout(timer);
          reject(err);
        },
      },
      { startPosition: pos, maxBatchSize: 50, maxWaitTimeInSeconds: 1 },
    );
    if (process.env.EH_SEND_AFTER_SUBSCRIBE) {
      // for "latest": send once the receiver is attached
      setTimeout(async () => {
        const p = new EventHubProducerClient(conn, hub, clientOptions);
        const b = await p.createBatch({ partitionId: part });
        b.tryAdd({ body: process.env.EH_SEND_AFTER_SUBSCRIBE });
        await p.sendBatch(b);
        await p.close();
      }, 1500);
    }
    void sub;
  });
  await c.close();
  out({ events: got });
}

const scenarios = { props, send, receive };
try {
  await scenarios[scenario]();
  process.exit(0);
} catch (e) {
  out({ error: e.name, code: e.code ?? null, message: String(e.message) });
  process.exit(3);
}
