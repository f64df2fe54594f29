/* eh.h — Event Hubs client: one implementation for Azure Event Hubs and the local hub, chosen by
 * the connection string alone (UseDevelopmentEmulator=true → plain AMQP on the given port,
 * otherwise AMQPS on 5671 with system CAs and hostname verification).
 *
 * One qs_eh_client is one AMQP connection to a namespace. It authenticates with SASL ANONYMOUS
 * and CBS put-token (SAS tokens made from the connection string's key, or the given
 * SharedAccessSignature), renews tokens before they expire, answers idle-timeout heartbeats, and
 * reconnects with jittered exponential backoff. On reconnect producers re-attach and resend what
 * was not settled; consumers resume after the last delivered sequence number.
 *
 * Threading: everything on the loop's thread. Callbacks never run inside the call that
 * registered them (always from the loop), so a callback may call any function here.
 */
#ifndef QS_EH_H
#define QS_EH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define QS_EH_HUB_MAX 256
#define QS_EH_PARTITIONS_MAX 1024
#define QS_EH_PARTITION_KEY_MAX 128
#define QS_EH_OFFSET_MAX 32
#define QS_EH_PROPS_MAX 16

typedef struct qs_eh_client qs_eh_client;
typedef struct qs_eh_producer qs_eh_producer;
typedef struct qs_eh_consumer qs_eh_consumer;

/* ---- Client ------------------------------------------------------------------------------- */

typedef struct qs_eh_client_opts {
  const char *connection_string; /* required */
  const char *client_name;       /* container id prefix / user agent; default "quakestream" */
  uint32_t idle_timeout_ms;      /* AMQP idle timeout we announce; default 60000 */
  uint32_t backoff_min_ms;       /* reconnect backoff; default 250 */
  uint32_t backoff_max_ms;       /* default 30000 */
  uint32_t token_ttl_s;          /* SAS token lifetime; default 3600, renewed at 80 % */
  const char *ca_file;           /* optional extra CA bundle (PEM) for TLS (tests, private CA) */
  /* Optional: every state change (connected, disconnected with reason, auth failure). */
  void (*on_state)(qs_eh_client *c, bool connected, const char *reason, void *ud);
  void *ud;
} qs_eh_client_opts;

/* Parses the connection string and starts connecting. QS_ERR_INVALID with err filled for a bad
 * connection string; nothing fires then. */
int qs_eh_client_open(qs_eh_client **out, uv_loop_t *loop, const qs_eh_client_opts *opts, char *err,
                      size_t errlen);
/* EntityPath of the connection string, or "" when it has none. */
const char *qs_eh_client_entity_path(const qs_eh_client *c);
/* true while connected and authenticated; *reason (may be NULL) says why not. */
bool qs_eh_client_ready(const qs_eh_client *c, const char **reason);
/* Counters for metrics. */
typedef struct qs_eh_client_stats {
  uint64_t connects, disconnects, auth_failures, tokens_renewed;
} qs_eh_client_stats;
void qs_eh_client_stats_get(const qs_eh_client *c, qs_eh_client_stats *out);

/* Closes the connection cleanly: producers first flush what is queued and in flight (each
 * event's callback fires: accepted, rejected or QS_ERR_CLOSED when it could not be sent before
 * timeout_ms), consumers detach, then the connection closes. cb fires once, last; c is freed
 * right after it. Producers and consumers of c are closed with it. */
void qs_eh_client_close(qs_eh_client *c, uint32_t timeout_ms, void (*cb)(void *ud), void *ud);

/* ---- Producer ----------------------------------------------------------------------------- */

typedef struct qs_eh_producer_opts {
  const char *hub;     /* required */
  int partition;       /* -1: to the hub (the service routes by partition key or round robin) */
  size_t queue_max;    /* events queued and not yet sent; default 10000 */
  size_t inflight_max; /* unsettled transfers (batches); default 16 */
  size_t batch_max;    /* events per batch; default 1000 (bytes capped by max-message-size) */
  uint32_t send_timeout_ms; /* an event not settled within this fails with QS_ERR_TIMEOUT;
                               default 60000 (retried across reconnects until then) */
} qs_eh_producer_opts;

typedef struct qs_eh_prop {
  const char *key;
  const char *value; /* string application properties */
} qs_eh_prop;

typedef struct qs_eh_event_out {
  const void *body; /* copied */
  size_t len;
  const char *partition_key; /* NULL or ≤ QS_EH_PARTITION_KEY_MAX bytes; copied */
  const qs_eh_prop *props;   /* copied */
  size_t nprops;
} qs_eh_event_out;

/* Outcome of one event: status 0 accepted (durable on the hub); QS_ERR_REJECTED with the AMQP
 * error condition and description when the hub rejected it; QS_ERR_TIMEOUT; QS_ERR_CLOSED. */
typedef void (*qs_eh_send_cb)(int status, const char *condition, const char *description, void *ud);

int qs_eh_producer_open(qs_eh_client *c, const qs_eh_producer_opts *opts, qs_eh_producer **out);
/* Queues one event. QS_ERR_FULL when queue_max events are queued (back-pressure: wait for the
 * drain callback), QS_ERR_TOOBIG when the event alone exceeds the link's max-message-size,
 * QS_ERR_INVALID for a partition key over the limit, QS_ERR_CLOSED after close, and the link's
 * error (QS_ERR_AUTH: the key was refused; QS_ERR_NOTFOUND: no such hub) once the hub refused the
 * producer for good. On any error cb is never called. */
int qs_eh_send(qs_eh_producer *p, const qs_eh_event_out *ev, qs_eh_send_cb cb, void *ud);
/* Events queued or in flight (callback still owed). */
size_t qs_eh_producer_pending(const qs_eh_producer *p);
/* Called once each time the queue, after having been full, drops to half of queue_max. */
void qs_eh_producer_on_drain(qs_eh_producer *p, void (*cb)(qs_eh_producer *p, void *ud), void *ud);
/* cb fires once when nothing is pending any more (at once, from the loop, if nothing is). */
void qs_eh_producer_flush(qs_eh_producer *p, void (*cb)(qs_eh_producer *p, void *ud), void *ud);

/* ---- Consumer ----------------------------------------------------------------------------- */

typedef enum qs_eh_pos_kind {
  QS_EH_POS_EARLIEST = 0,
  QS_EH_POS_LATEST,
  QS_EH_POS_SEQUENCE, /* value = sequence number */
  QS_EH_POS_OFFSET,   /* value = offset */
  QS_EH_POS_TIME,     /* value = enqueued time, epoch ms */
} qs_eh_pos_kind;

typedef struct qs_eh_position {
  qs_eh_pos_kind kind;
  int64_t value;
  bool inclusive; /* >= instead of > */
} qs_eh_position;

typedef struct qs_eh_event_in {
  int partition;
  int64_t sequence;
  char offset[QS_EH_OFFSET_MAX];
  int64_t enqueued_ms;
  char partition_key[QS_EH_PARTITION_KEY_MAX + 1]; /* "" when none */
  const void *body;                                /* valid during the callback only */
  size_t len;
  qs_eh_prop props[QS_EH_PROPS_MAX]; /* string application properties (first QS_EH_PROPS_MAX) */
  size_t nprops;
} qs_eh_event_in;

/* How a consumer reads a delivered message (for tests): fast = the decoder of the hub's shapes
 * that reads the bytes directly (false: not handled, the consumer then uses proton), else
 * proton's pn_message_decode. Both fill ev alike; body and props stay valid until the next call. */
bool qs_eh_message_decode(const void *msg, size_t len, int partition, bool fast,
                          qs_eh_event_in *ev);

typedef struct qs_eh_consumer_opts {
  const char *hub;            /* required */
  const char *consumer_group; /* default "$Default" */
  int partition;              /* required, >= 0 */
  qs_eh_position start;
  uint32_t prefetch;   /* link credit kept topped up; default 300 */
  int64_t owner_level; /* -1: none; else com.microsoft:epoch */
  /* Each event, in order. */
  void (*on_event)(qs_eh_consumer *cons, const qs_eh_event_in *ev, void *ud);
  /* The link ended and will not be re-attached: code QS_ERR_STOLEN (a higher owner level took
   * the partition), QS_ERR_NOTFOUND (no such hub / group / partition), QS_ERR_AUTH. Transient
   * failures are retried silently. The consumer stays valid until qs_eh_consumer_close. */
  void (*on_error)(qs_eh_consumer *cons, int code, const char *condition, const char *desc,
                   void *ud);
  void *ud;
} qs_eh_consumer_opts;

int qs_eh_consumer_open(qs_eh_client *c, const qs_eh_consumer_opts *opts, qs_eh_consumer **out);
/* Stops granting credit (events already granted still arrive) / resumes. For back-pressure. */
void qs_eh_consumer_pause(qs_eh_consumer *cons);
void qs_eh_consumer_resume(qs_eh_consumer *cons);
/* Sequence number of the last event delivered, or -1. */
int64_t qs_eh_consumer_last_sequence(const qs_eh_consumer *cons);
/* Detaches and frees (no callback fires after this returns). */
void qs_eh_consumer_close(qs_eh_consumer *cons);

/* ---- Management --------------------------------------------------------------------------- */

typedef struct qs_eh_hub_props {
  char name[QS_EH_HUB_MAX + 1];
  int64_t created_ms;
  int partition_count;
  int partition_ids[QS_EH_PARTITIONS_MAX];
} qs_eh_hub_props;

typedef struct qs_eh_partition_props {
  char hub[QS_EH_HUB_MAX + 1];
  int partition;
  int64_t begin_sequence;
  int64_t last_sequence;
  char last_offset[QS_EH_OFFSET_MAX];
  int64_t last_enqueued_ms;
  bool is_empty;
} qs_eh_partition_props;

/* Results: status 0 with props, or a negative qs_err with a reason (props NULL). Requests wait
 * for the connection (up to timeout_ms, default 30000 when 0). */
int qs_eh_get_hub_props(qs_eh_client *c, const char *hub, uint32_t timeout_ms,
                        void (*cb)(int status, const qs_eh_hub_props *props, const char *reason,
                                   void *ud),
                        void *ud);
int qs_eh_get_partition_props(qs_eh_client *c, const char *hub, int partition, uint32_t timeout_ms,
                              void (*cb)(int status, const qs_eh_partition_props *props,
                                         const char *reason, void *ud),
                              void *ud);

#endif
