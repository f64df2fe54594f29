/* live.h — the WebSocket feed /api/v1/live (protocol: proto/live.md, proto/live.schema.json).
 *
 * One Redis subscription per process (qs:live:aggregates, qs:live:alerts, qs:live:events) fanned
 * out to every client subscribed to that topic (and region). Each pub/sub message is parsed once
 * and formatted once into a shared, reference-counted frame.
 *
 * Memory per client is bounded whatever the client does:
 * - frames wait in the client's queue until its previous write completes, then all of them (up to
 *   64 frames, about WS_SEND_BUFFER bytes) leave in one writev;
 * - a waiting window (or rolling-window) update is replaced in place by a newer update of the same
 *   window ("latest per window"), so a slow client gets coalesced updates;
 * - when more than WS_MAX_BACKLOG frames wait, the client is disconnected and counted.
 * A client that subscribes gets a snapshot first (read from Redis after its subscription began,
 * so nothing falls between the snapshot and the updates); updates that arrive meanwhile wait in
 * its backlog. Snapshot reads are shared: one Redis call serves every client waiting for one.
 */
#ifndef SERVING_LIVE_H
#define SERVING_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "qs/log.h"
#include "qs/metrics.h"
#include "qs/redis.h"

typedef struct live live;

typedef struct live_options {
  size_t send_buffer;        /* bytes queued per client before updates go to its backlog */
  size_t max_backlog;        /* backlog updates per client before it is disconnected */
  size_t max_clients;        /* WebSocket clients at once */
  uint64_t ping_interval_ms; /* server pings; a client silent for 3 intervals is closed */
} live_options;

/* cmd: the command connection (snapshots); sub: a fresh qs_redis that live turns into the
 * subscriber. */
live *live_new(uv_loop_t *loop, const live_options *o, qs_redis *cmd, qs_redis *sub, qs_log *log,
               qs_metrics *metrics);
/* Handles GET /api/v1/live: 0 when the upgrade started, 1 when it answered 503 (closing, or
 * WS_MAX_CLIENTS reached), -1 if req is not a WebSocket handshake (nothing sent). */
int live_upgrade(live *l, h2o_req_t *req);
size_t live_clients(const live *l);
/* Close every client and the subscription; cb when done. */
void live_close(live *l, void (*cb)(void *), void *arg);
void live_free(live *l);

#endif
