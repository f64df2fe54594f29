/* broker.h — the hub's AMQP broker logic (Event Hubs dialect) as a
 * socket-free proton event handler.
 *
 * The transport glue owns sockets, TLS and a pn_connection_driver_t per
 * connection. For each one it calls hub_conn_new() after
 * pn_connection_driver_init() and before pn_connection_driver_bind(), then
 * hub_conn_handle() for every event the driver yields, hub_conn_flush()
 * after each completed write, hub_conn_tick() from its timer, and
 * hub_conn_free() before destroying the driver. When broker state changes
 * outside an event (a store append became durable, new data woke a
 * receiver, another connection stole a link) the broker calls the glue's
 * wake callback so that the glue writes the driver's pending output.
 *
 * Invariants: single-threaded (the loop thread); the broker never touches a
 * socket; a client receiver never gets a delivery beyond its credit; an
 * event-data delivery is accepted only after the store reports it durable;
 * every per-connection structure is freed by hub_conn_free().
 */
#ifndef HUB_BROKER_H
#define HUB_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proton/connection_driver.h>

#include "hub_config.h"
#include "store.h"

#define HUB_NAME_MAX 128
#define HUB_PATH_MAX 320
#define HUB_MAX_PARTITIONS 1024

/* SAS rights a grant can carry: HUB_RIGHT_SEND | HUB_RIGHT_LISTEN | HUB_RIGHT_MANAGE
 * (hub_config.h). */

typedef struct hub_entity {
  const char *name; /* canonical hub name */
  int partition_count;
  int64_t created_at_ms;
  const char *const *consumer_groups; /* "$Default" is always accepted */
  size_t n_consumer_groups;
} hub_entity;

typedef struct hub_auth_result {
  int64_t expires_s; /* token expiry, epoch seconds */
  unsigned rights;   /* HUB_RIGHT_* the key grants */
  char reason[128];  /* on failure */
} hub_auth_result;

/* Verify a SAS token for an audience (the put-token "name", a URI).
 * 0 with *out filled, or -QS_ERR_AUTH / -QS_ERR_EXPIRED with out->reason.
 * (Codes are negative qs_err values, e.g. QS_ERR_AUTH itself.) */
typedef int (*hub_auth_verify_fn)(void *ctx, const char *token, const char *audience, int64_t now_s,
                                  unsigned rights_needed, hub_auth_result *out);
/* Hub by name (case-insensitive) or NULL. The entity stays valid for the
 * broker's lifetime. */
typedef const hub_entity *(*hub_entity_lookup_fn)(void *ctx, const char *name);
typedef int64_t (*hub_clock_fn)(void *ctx); /* wall clock, epoch ms */

typedef struct hub_broker_config {
  const char *container_id; /* default "quakestream-hub" */
  hub_auth_verify_fn auth_verify;
  void *auth_ctx;
  hub_entity_lookup_fn entity_lookup;
  void *entity_ctx;
  hub_store store;
  hub_clock_fn now_ms;
  void *clock_ctx;
  uint32_t link_credit;      /* credit kept on incoming links; default 300 */
  uint64_t max_message_size; /* default 1 MiB */
  uint32_t max_frame;        /* default 65536 */
  uint32_t idle_timeout_ms;  /* default 60000 */
  uint32_t cbs_timeout_ms;   /* close a connection with no token; default 20000 */
} hub_broker_config;

typedef struct hub_broker hub_broker;
typedef struct hub_conn hub_conn;
typedef void (*hub_conn_wake_fn)(void *arg);

/* A broker shared by all connections. Copies cfg (not what it points to).
 * Registers itself as the store's listener. */
int hub_broker_new(const hub_broker_config *cfg, hub_broker **out);
/* Only once every connection is freed. */
void hub_broker_free(hub_broker *b);

/* Configure d's transport as a server (SASL ANONYMOUS or none, max frame,
 * idle timeout, container id) and attach broker state. Call before bind. */
hub_conn *hub_conn_new(hub_broker *b, pn_connection_driver_t *d, hub_conn_wake_fn wake,
                       void *wake_arg);
void hub_conn_handle(hub_conn *c, pn_event_t *e);
/* Continue deliveries paused by the session output cap. */
void hub_conn_flush(hub_conn *c);
/* Enforce the CBS deadline (no token within cbs_timeout_ms closes the
 * connection with amqp:unauthorized-access) and token expiry (a sender or
 * consumer link whose grant lapsed is detached with the same condition).
 * Uses the broker clock (cfg.now_ms) for expiry and now_ms for the
 * deadline. Returns the next time (ms) tick wants to run, or -1. */
int64_t hub_conn_tick(hub_conn *c, int64_t now_ms);
void hub_conn_free(hub_conn *c);

/* ---- addresses ---- */
typedef enum hub_addr_kind {
  HUB_ADDR_CBS,
  HUB_ADDR_MGMT, /* $management or <hub>/$management */
  HUB_ADDR_HUB,
  HUB_ADDR_PARTITION,
  HUB_ADDR_CG_PARTITION,
  HUB_ADDR_NAMESPACE /* empty path (an audience for the whole namespace) */
} hub_addr_kind;

typedef struct hub_addr {
  hub_addr_kind kind;
  char path[HUB_PATH_MAX]; /* lower-cased path without scheme/host/slashes */
  char hub[HUB_NAME_MAX];
  char cg[HUB_NAME_MAX];
  int part;
} hub_addr;

/* Parse an address or audience: optional "amqp(s)://" or "sb://" host
 * prefix, then "$cbs", "$management", "<hub>", "<hub>/Partitions/<n>",
 * "<hub>/ConsumerGroups/<cg>/Partitions/<n>" (words case-insensitive).
 * 0, or QS_ERR_INVALID / QS_ERR_TOOBIG. */
int hub_addr_parse(const char *addr, size_t len, hub_addr *out);

/* crc32 (IEEE 802.3, as zlib) of the key bytes mod count. */
int hub_partition_for_key(const char *key, size_t len, int count);

#endif
