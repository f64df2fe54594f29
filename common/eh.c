/* eh.c — the Event Hubs client (qs/eh.h) on the project's AMQP transport.
 *
 * One AMQP connection per client. Every entity link (producer, consumer, management pair) is an
 * eh_link that walks IDLE → TOKEN (CBS put-token in flight) → ATTACHING → ATTACHED; a lost
 * connection puts every link back to IDLE and the client reconnects after a jittered
 * exponential backoff. One 100 ms timer drives reconnects, token renewal, link retries and the
 * deadlines of queued sends and management requests.
 *
 * Producers keep events in one FIFO and, threaded through it, one FIFO per partition key; a batch
 * is the oldest events of the key of the oldest queued event, so per-key order holds across
 * batches and forming a batch costs only its own events.
 * A batch is one delivery: message-annotations (the partition key) followed by one data section
 * per event, each an encoded AMQP message. Proton 0.37 cannot set a delivery's message-format, so
 * the connection's outgoing frame filter (qs_amqp_conn_use_batch_marking) sets 0x80013700 on the
 * transfers of such deliveries. On reconnect the unsettled batches go back to the queue's front.
 */
#include "qs/eh.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "qs/amqp_transport.h"
#include "qs/buf.h"
#include "qs/ehconn.h"
#include "qs/error.h"
#include "qs/timeutil.h"
#include "qs/tls.h"

#define TICK_MS 100
#define ADDR_MAX 512
#define CBS_TIMEOUT_MS 30000
#define DEFAULT_MAX_MESSAGE (1024 * 1024)
#define ENTITY_RETRY_MS 1000

enum { LK_PRODUCER = 1, LK_CONSUMER, LK_MGMT };
enum { LS_IDLE = 0, LS_TOKEN, LS_ATTACHING, LS_ATTACHED, LS_FAILED };

typedef struct eh_link {
  struct eh_link *next;
  qs_eh_client *c;
  int kind, state;
  char address[ADDR_MAX];
  char audience[ADDR_MAX];
  pn_session_t *ssn;
  pn_link_t *link;  /* the entity link (mgmt: the sender) */
  pn_link_t *link2; /* mgmt: the receiver */
  char reply_to[64];
  int64_t token_expiry_ms; /* 0: none yet */
  bool token_pending;
  int64_t retry_at_ms; /* while IDLE after a link error: not before this */
  unsigned failures;
  int fail_code; /* LS_FAILED: why (QS_ERR_AUTH, QS_ERR_NOTFOUND, ...) */
} eh_link;

struct eh_keyq;

typedef struct eh_ev {
  struct eh_ev *prev, *next;   /* the producer's queue, in send order */
  struct eh_ev *kprev, *knext; /* the queue of its partition key */
  struct eh_keyq *kq;
  uint8_t *msg; /* encoded inner message */
  size_t msg_len;
  char key[QS_EH_PARTITION_KEY_MAX + 1];
  qs_eh_send_cb cb;
  void *ud;
  int64_t deadline_ms;
} eh_ev;

/* Queued events of one partition key, oldest first (a batch is formed from one of these). */
typedef struct eh_keyq {
  struct eh_keyq *hnext; /* hash chain */
  eh_ev *head, *tail;
  char key[QS_EH_PARTITION_KEY_MAX + 1];
} eh_keyq;

#define KEYQ_BUCKETS 256

typedef struct eh_batch {
  pn_delivery_t *d;
  eh_ev **evs;
  size_t n;
} eh_batch;

struct qs_eh_producer {
  eh_link lk;
  qs_eh_producer_opts o;
  char hub[QS_EH_HUB_MAX + 1];
  eh_ev *qhead, *qtail;
  size_t queued;
  eh_keyq *keyqs[KEYQ_BUCKETS];
  eh_batch *inflight;
  size_t ninflight;
  size_t inflight_events;
  bool was_full;
  void (*drain_cb)(qs_eh_producer *, void *);
  void *drain_ud;
  void (*flush_cb)(qs_eh_producer *, void *);
  void *flush_ud;
  uint64_t next_tag;
  qs_buf enc;
};

struct qs_eh_consumer {
  eh_link lk;
  qs_eh_consumer_opts o;
  char hub[QS_EH_HUB_MAX + 1];
  char group[QS_EH_HUB_MAX + 1];
  int64_t last_seq;
  bool paused;
  pn_message_t *msg;
  qs_buf rbuf;
};

typedef struct eh_mreq {
  struct eh_mreq *next;
  char id[32];
  bool is_partition, sent;
  char hub[QS_EH_HUB_MAX + 1];
  int partition;
  int64_t deadline_ms;
  void (*hub_cb)(int, const qs_eh_hub_props *, const char *, void *);
  void (*part_cb)(int, const qs_eh_partition_props *, const char *, void *);
  void *ud;
} eh_mreq;

typedef struct eh_cbs_req {
  struct eh_cbs_req *next;
  char id[32];
  eh_link *lk;
  int64_t expiry_ms;
  int64_t deadline_ms;
} eh_cbs_req;

struct qs_eh_client {
  uv_loop_t *loop;
  qs_ehconn cs;
  qs_eh_client_opts o;
  char name[64];
  char container[96];
  char ca_file[1024];
  qs_tls_ctx tls;
  bool tls_ready;
  qs_amqp_conn *conn;
  bool connected; /* AMQP open answered */
  bool closing;
  bool conn_closing; /* pn_connection_close sent */
  int64_t connect_at_ms;
  uint32_t backoff_ms;
  uint64_t rng;
  uint64_t next_id;
  pn_session_t *cbs_ssn;
  pn_link_t *cbs_snd, *cbs_rcv;
  char cbs_reply[64];
  eh_cbs_req *cbs_reqs;
  eh_link *links;
  eh_link mgmt;
  bool mgmt_used;
  eh_mreq *mreqs;
  uv_timer_t timer;
  char reason[256];
  qs_eh_client_stats stats;
  int64_t close_deadline_ms;
  void (*close_cb)(void *);
  void *close_ud;
  bool freed_pending;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t rng_next(qs_eh_client *c) {
  uint64_t x = c->rng;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  return c->rng = x;
}

static int64_t now_ms(void) { return qs_time_now_ms(); }

static void set_reason(qs_eh_client *c, const char *what, const char *a, const char *b) {
  qs_set_reason(c->reason, sizeof c->reason, "%s: %s %s", what, a ? a : "", b ? b : "");
}

static void notify_state(qs_eh_client *c, bool connected, const char *reason) {
  if (c->o.on_state)
    c->o.on_state(c, connected, reason, c->o.ud);
}

static pn_bytes_t bstr(const char *s) { return pn_bytes(strlen(s), s); }

static void put_str_kv(pn_data_t *d, const char *k, const char *v) {
  pn_data_put_string(d, bstr(k));
  pn_data_put_string(d, bstr(v));
}

static void audience_for(const qs_eh_client *c, const char *address, char *out, size_t cap) {
  if (c->cs.use_tls && c->cs.port == 5671)
    qs_set_reason(out, cap, "sb://%s/%s", c->cs.host, address);
  else
    qs_set_reason(out, cap, "sb://%s:%d/%s", c->cs.host, c->cs.port, address);
}

/* ---- AMQP encoding of events ------------------------------------------------------------- */

static void enc_u8(qs_buf *b, uint8_t v) { qs_buf_append(b, &v, 1); }

static void enc_be32(qs_buf *b, uint32_t v) {
  uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  qs_buf_append(b, p, 4);
}

/* str8/sym8 code given; the 32-bit form is code + 0x10. */
static void enc_text(qs_buf *b, uint8_t code8, const char *s, size_t n) {
  if (n < 256) {
    enc_u8(b, code8);
    enc_u8(b, (uint8_t)n);
  } else {
    enc_u8(b, (uint8_t)(code8 + 0x10));
    enc_be32(b, (uint32_t)n);
  }
  qs_buf_append(b, s, n);
}

/* A map section: descriptor, then map32 of `count` already-encoded items in items. */
static void enc_map_section(qs_buf *b, uint8_t descriptor, const qs_buf *items, uint32_t count) {
  uint8_t d[3] = {0x00, 0x53, descriptor};
  qs_buf_append(b, d, 3);
  enc_u8(b, 0xd1);
  enc_be32(b, (uint32_t)(items->len + 4));
  enc_be32(b, count);
  qs_buf_append(b, items->p, items->len);
}

static void enc_partition_key_annotations(qs_buf *b, const char *key) {
  qs_buf items = {0};
  uint32_t count = 0;
  if (key && *key) {
    static const char pk[] = "x-opt-partition-key";
    enc_text(&items, 0xa3, pk, sizeof pk - 1);
    enc_text(&items, 0xa1, key, strlen(key));
    count = 2;
  }
  enc_map_section(b, 0x72, &items, count);
  qs_buf_free(&items);
}

/* ---- links: common life cycle ------------------------------------------------------------ */

static void link_attach(eh_link *lk);
static void producer_pump(qs_eh_producer *p);
static void mgmt_pump(qs_eh_client *c);
static void cbs_pump(qs_eh_client *c);

static void link_register(qs_eh_client *c, eh_link *lk, int kind, const char *address) {
  lk->c = c;
  lk->kind = kind;
  lk->state = LS_IDLE;
  qs_set_reason(lk->address, sizeof lk->address, "%s", address);
  audience_for(c, address, lk->audience, sizeof lk->audience);
  lk->next = c->links;
  c->links = lk;
}

static void link_unregister(qs_eh_client *c, eh_link *lk) {
  for (eh_link **pp = &c->links; *pp; pp = &(*pp)->next)
    if (*pp == lk) {
      *pp = lk->next;
      break;
    }
  for (eh_cbs_req *r = c->cbs_reqs; r; r = r->next)
    if (r->lk == lk)
      r->lk = NULL;
}

/* Forget proton objects (the connection is gone or going). */
static void link_reset(eh_link *lk) {
  if (lk->link)
    pn_link_set_context(lk->link, NULL);
  if (lk->link2)
    pn_link_set_context(lk->link2, NULL);
  lk->link = lk->link2 = NULL;
  lk->ssn = NULL;
  lk->token_pending = false;
  lk->token_expiry_ms = 0;
  if (lk->state != LS_FAILED)
    lk->state = LS_IDLE;
}

/* Detach on the wire (if connected) and forget. */
static void link_detach(eh_link *lk) {
  if (lk->link) {
    pn_link_set_context(lk->link, NULL);
    pn_link_close(lk->link);
  }
  if (lk->link2) {
    pn_link_set_context(lk->link2, NULL);
    pn_link_close(lk->link2);
  }
  if (lk->ssn)
    pn_session_close(lk->ssn);
  lk->link = lk->link2 = NULL;
  lk->ssn = NULL;
}

static bool token_needed(const qs_eh_client *c) { return c->cs.key[0] || c->cs.sas[0]; }

/* Starts (or continues) bringing a link up: token first, then attach. */
static void link_start(eh_link *lk) {
  qs_eh_client *c = lk->c;
  if (!c->connected || lk->state != LS_IDLE || c->closing)
    return;
  if (lk->retry_at_ms && now_ms() < lk->retry_at_ms)
    return;
  lk->retry_at_ms = 0;
  if (!token_needed(c)) {
    link_attach(lk);
    return;
  }
  lk->state = LS_TOKEN;
  lk->token_pending = true;
  cbs_pump(c);
}

/* A link failed transiently: retry after a delay growing with repeated failures. */
static void link_retry_later(eh_link *lk) {
  link_detach(lk);
  lk->state = LS_IDLE;
  lk->failures++;
  uint32_t d = ENTITY_RETRY_MS << (lk->failures < 5 ? lk->failures : 5);
  lk->retry_at_ms = now_ms() + d / 2 + (int64_t)(rng_next(lk->c) % (d / 2 + 1));
}

/* ---- CBS --------------------------------------------------------------------------------- */

static void cbs_open(qs_eh_client *c, pn_connection_t *pc) {
  c->cbs_ssn = pn_session(pc);
  pn_session_open(c->cbs_ssn);
  c->cbs_snd = pn_sender(c->cbs_ssn, "cbs-sender");
  pn_terminus_set_address(pn_link_target(c->cbs_snd), "$cbs");
  pn_link_open(c->cbs_snd);
  qs_set_reason(c->cbs_reply, sizeof c->cbs_reply, "cbs-%s", c->container);
  c->cbs_rcv = pn_receiver(c->cbs_ssn, c->cbs_reply);
  pn_terminus_set_address(pn_link_source(c->cbs_rcv), "$cbs");
  pn_terminus_set_address(pn_link_target(c->cbs_rcv), c->cbs_reply);
  pn_link_open(c->cbs_rcv);
  pn_link_flow(c->cbs_rcv, 100);
}

static int make_token(qs_eh_client *c, const char *audience, char *out, size_t cap,
                      int64_t *expiry_ms) {
  if (c->cs.sas[0]) {
    qs_set_reason(out, cap, "%s", c->cs.sas);
    qs_sas_token t;
    *expiry_ms = qs_sas_token_parse(c->cs.sas, &t, NULL, 0) == 0 ? t.expiry_s * 1000 : 0;
    return 0;
  }
  int64_t exp_s = now_ms() / 1000 + c->o.token_ttl_s;
  *expiry_ms = exp_s * 1000;
  return qs_sas_token_make(audience, c->cs.key_name, c->cs.key, exp_s, out, cap);
}

static void cbs_send(qs_eh_client *c, eh_link *lk) {
  char token[2048];
  int64_t expiry;
  if (make_token(c, lk->audience, token, sizeof token, &expiry) != 0) {
    lk->token_pending = false;
    link_retry_later(lk);
    return;
  }
  eh_cbs_req *r = qs_xcalloc(1, sizeof *r);
  qs_set_reason(r->id, sizeof r->id, "cbs-%" PRIu64, ++c->next_id);
  r->lk = lk;
  r->expiry_ms = expiry;
  r->deadline_ms = now_ms() + CBS_TIMEOUT_MS;
  r->next = c->cbs_reqs;
  c->cbs_reqs = r;

  pn_message_t *m = pn_message();
  pn_data_put_string(pn_message_id(m), bstr(r->id));
  pn_message_set_address(m, "$cbs");
  pn_message_set_reply_to(m, c->cbs_reply);
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  put_str_kv(ap, "operation", "put-token");
  put_str_kv(ap, "name", lk->audience);
  put_str_kv(ap, "type", "servicebus.windows.net:sastoken");
  pn_data_exit(ap);
  pn_data_put_string(pn_message_body(m), bstr(token));
  char buf[4096];
  size_t len = sizeof buf;
  int rc = pn_message_encode(m, buf, &len);
  pn_message_free(m);
  if (rc != 0) {
    link_retry_later(lk);
    return;
  }
  pn_delivery(c->cbs_snd, pn_dtag(r->id, strlen(r->id)));
  pn_link_send(c->cbs_snd, buf, len);
  pn_link_advance(c->cbs_snd);
  lk->token_pending = false;
}

static void cbs_pump(qs_eh_client *c) {
  if (!c->connected || !c->cbs_snd)
    return;
  for (eh_link *lk = c->links; lk; lk = lk->next) {
    if (!lk->token_pending)
      continue;
    if (pn_link_credit(c->cbs_snd) <= 0)
      return;
    cbs_send(c, lk);
  }
}

static int64_t annotation_int(pn_data_t *d);

/* The text of a string or symbol at d's position (a map key in AMQP maps is either); empty
 * otherwise. */
static pn_bytes_t data_text(pn_data_t *d) {
  pn_type_t t = pn_data_type(d);
  return t == PN_STRING   ? pn_data_get_string(d)
         : t == PN_SYMBOL ? pn_data_get_symbol(d)
                          : pn_bytes(0, NULL);
}

/* Reads status-code / status-description from application properties. */
static void read_status(pn_message_t *m, int *status, char *desc, size_t cap) {
  *status = 0;
  if (cap)
    desc[0] = 0;
  pn_data_t *ap = pn_message_properties(m);
  pn_data_rewind(ap);
  if (!pn_data_next(ap) || pn_data_type(ap) != PN_MAP || !pn_data_enter(ap))
    return;
  while (pn_data_next(ap)) {
    pn_bytes_t k = data_text(ap);
    if (!pn_data_next(ap))
      break;
    if (k.size == 11 && memcmp(k.start, "status-code", 11) == 0) {
      *status = (int)annotation_int(ap); /* int32 as the SDKs send it; other integer or string */
    } else if (k.size == 18 && memcmp(k.start, "status-description", 18) == 0 &&
               pn_data_type(ap) == PN_STRING) {
      pn_bytes_t v = pn_data_get_string(ap);
      qs_set_reason(desc, cap, "%.*s", (int)v.size, v.start);
    }
  }
  pn_data_exit(ap);
}

static void correlation_id(pn_message_t *m, char *out, size_t cap) {
  pn_data_t *d = pn_message_correlation_id(m);
  pn_data_rewind(d);
  out[0] = 0;
  if (pn_data_next(d) && pn_data_type(d) == PN_STRING) {
    pn_bytes_t b = pn_data_get_string(d);
    qs_set_reason(out, cap, "%.*s", (int)b.size, b.start);
  } else {
    pn_atom_t a = pn_message_get_correlation_id(m);
    if (a.type == PN_STRING)
      qs_set_reason(out, cap, "%.*s", (int)a.u.as_bytes.size, a.u.as_bytes.start);
  }
}

/* Receives a complete delivery into a pn_message. false if it could not be decoded. */
static bool recv_message(pn_link_t *l, pn_delivery_t *d, qs_buf *buf, pn_message_t *m) {
  size_t pend = pn_delivery_pending(d);
  qs_buf_reset(buf);
  qs_buf_reserve(buf, pend + 1);
  ssize_t n;
  while ((n = pn_link_recv(l, buf->p + buf->len, buf->cap - buf->len)) > 0) {
    buf->len += (size_t)n;
    if (buf->len == buf->cap)
      qs_buf_reserve(buf, buf->cap);
  }
  pn_message_clear(m);
  return pn_message_decode(m, buf->p, buf->len) == 0;
}

static void link_failed_final(eh_link *lk, int code, const char *cond, const char *desc);

static void cbs_on_reply(qs_eh_client *c, pn_link_t *l, pn_delivery_t *d) {
  qs_buf buf = {0};
  pn_message_t *m = pn_message();
  bool ok = recv_message(l, d, &buf, m);
  pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  char cid[64], desc[256];
  int status = 0;
  if (ok) {
    correlation_id(m, cid, sizeof cid);
    read_status(m, &status, desc, sizeof desc);
  }
  pn_message_free(m);
  qs_buf_free(&buf);
  if (!ok)
    return;
  eh_cbs_req *r = NULL;
  for (eh_cbs_req **pp = &c->cbs_reqs; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->id, cid) == 0) {
      r = *pp;
      *pp = r->next;
      break;
    }
  if (!r)
    return;
  eh_link *lk = r->lk;
  int64_t expiry = r->expiry_ms;
  free(r);
  if (!lk)
    return;
  if (status >= 200 && status < 300) {
    c->backoff_ms = 0;
    bool renewal = lk->token_expiry_ms != 0;
    lk->token_expiry_ms = expiry ? expiry : now_ms() + 3600 * 1000LL;
    if (renewal)
      c->stats.tokens_renewed++;
    if (lk->state == LS_TOKEN)
      link_attach(lk);
    return;
  }
  c->stats.auth_failures++;
  char why[300];
  qs_set_reason(why, sizeof why, "put-token for %s refused: %d %s", lk->audience, status, desc);
  qs_set_reason(c->reason, sizeof c->reason, "%s", why);
  notify_state(c, true, why);
  if (status == 401 || status == 403)
    link_failed_final(lk, QS_ERR_AUTH, "com.microsoft:unauthorized-access", why);
  else if (status == 404)
    link_failed_final(lk, QS_ERR_NOTFOUND, "amqp:not-found", why);
  else
    link_retry_later(lk);
}

/* ---- producer ---------------------------------------------------------------------------- */

static uint32_t key_hash(const char *k) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *k; k++)
    h = (h ^ (uint8_t)*k) * 16777619u;
  return h % KEYQ_BUCKETS;
}

static eh_keyq *keyq_get(qs_eh_producer *p, const char *key) {
  uint32_t h = key_hash(key);
  for (eh_keyq *q = p->keyqs[h]; q; q = q->hnext)
    if (strcmp(q->key, key) == 0)
      return q;
  eh_keyq *q = qs_xcalloc(1, sizeof *q);
  memcpy(q->key, key, strlen(key) + 1);
  q->hnext = p->keyqs[h];
  p->keyqs[h] = q;
  return q;
}

static void keyq_drop_if_empty(qs_eh_producer *p, eh_keyq *q) {
  if (q->head)
    return;
  for (eh_keyq **pp = &p->keyqs[key_hash(q->key)]; *pp; pp = &(*pp)->hnext)
    if (*pp == q) {
      *pp = q->hnext;
      free(q);
      return;
    }
}

static void q_unlink(qs_eh_producer *p, eh_ev *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    p->qhead = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    p->qtail = e->prev;
  e->prev = e->next = NULL;
  eh_keyq *q = e->kq;
  if (e->kprev)
    e->kprev->knext = e->knext;
  else
    q->head = e->knext;
  if (e->knext)
    e->knext->kprev = e->kprev;
  else
    q->tail = e->kprev;
  e->kprev = e->knext = NULL;
  e->kq = NULL;
  keyq_drop_if_empty(p, q);
  p->queued--;
}

static void q_push_back(qs_eh_producer *p, eh_ev *e) {
  e->next = NULL;
  e->prev = p->qtail;
  if (p->qtail)
    p->qtail->next = e;
  else
    p->qhead = e;
  p->qtail = e;
  eh_keyq *q = e->kq = keyq_get(p, e->key);
  e->knext = NULL;
  e->kprev = q->tail;
  if (q->tail)
    q->tail->knext = e;
  else
    q->head = e;
  q->tail = e;
  p->queued++;
}

/* Back at the very front (an unsettled batch after a reconnect, or a released one). */
static void q_push_front(qs_eh_producer *p, eh_ev *e) {
  e->prev = NULL;
  e->next = p->qhead;
  if (p->qhead)
    p->qhead->prev = e;
  else
    p->qtail = e;
  p->qhead = e;
  eh_keyq *q = e->kq = keyq_get(p, e->key);
  e->kprev = NULL;
  e->knext = q->head;
  if (q->head)
    q->head->kprev = e;
  else
    q->tail = e;
  q->head = e;
  p->queued++;
}

static void ev_finish(eh_ev *e, int status, const char *cond, const char *desc) {
  if (e->cb)
    e->cb(status, cond, desc, e->ud);
  free(e->msg);
  free(e);
}

static void producer_check_drain(qs_eh_producer *p) {
  if (p->was_full && p->queued <= p->o.queue_max / 2) {
    p->was_full = false;
    if (p->drain_cb)
      p->drain_cb(p, p->drain_ud);
  }
  if (p->flush_cb && p->queued == 0 && p->inflight_events == 0) {
    void (*cb)(qs_eh_producer *, void *) = p->flush_cb;
    p->flush_cb = NULL;
    cb(p, p->flush_ud);
  }
}

/* Puts the events of every unsettled batch back at the queue's front, in sending order. */
static void producer_requeue_inflight(qs_eh_producer *p) {
  for (size_t bi = p->ninflight; bi-- > 0;) {
    eh_batch *b = &p->inflight[bi];
    for (size_t i = b->n; i-- > 0;)
      q_push_front(p, b->evs[i]);
    free(b->evs);
  }
  p->ninflight = 0;
  p->inflight_events = 0;
}

static size_t producer_max_message(const qs_eh_producer *p) {
  uint64_t m = p->lk.link ? pn_link_remote_max_message_size(p->lk.link) : 0;
  return m == 0 || m > 64 * 1024 * 1024 ? DEFAULT_MAX_MESSAGE : (size_t)m;
}

/* Largest batch payload: it must fit in ONE frame, because the batch-marking filter grows the
 * transfer performative by 4 bytes and cannot split frames; 128 bytes of margin cover the frame
 * header and the performative. */
static size_t producer_batch_cap(const qs_eh_producer *p) {
  size_t max = producer_max_message(p);
  qs_eh_client *c = p->lk.c;
  uint32_t frame = c->conn ? pn_transport_get_remote_max_frame(qs_amqp_conn_transport(c->conn)) : 0;
  size_t cap = frame > 1024 ? (size_t)frame - 128 : 65536 - 128;
  return cap < max ? cap : max;
}

static void producer_deliver(qs_eh_producer *p, eh_batch *b, const qs_buf *enc) {
  char tag[24];
  int tl = snprintf(tag, sizeof tag, "%" PRIu64, p->next_tag++);
  b->d = pn_delivery(p->lk.link, pn_dtag(tag, (size_t)tl));
  pn_link_send(p->lk.link, enc->p, enc->len);
  pn_link_advance(p->lk.link);
  p->ninflight++;
  p->inflight_events += b->n;
}

/* Forms and sends one batch (or one large event alone). false when nothing could be sent. */
static bool producer_send_batch(qs_eh_producer *p) {
  eh_ev *head = p->qhead;
  if (!head)
    return false;
  size_t max = producer_max_message(p), cap = producer_batch_cap(p);
  const size_t overhead = 16 + 32 + QS_EH_PARTITION_KEY_MAX; /* outer annotations */
  qs_buf *enc = &p->enc;
  eh_batch *b = &p->inflight[p->ninflight];
  qs_buf_reset(enc);
  if (head->msg_len + 8 + overhead > cap) {
    /* Too big for a one-frame batch: send it as a plain message (format 0, one event), which
     * starts with a header section so the marking filter leaves it alone. */
    q_unlink(p, head);
    if (head->msg_len + 4 > max) {
      ev_finish(head, QS_ERR_TOOBIG, "amqp:link:message-size-exceeded",
                "event larger than the link's max-message-size");
      return true;
    }
    static const uint8_t header[] = {0x00, 0x53, 0x70, 0x45};
    qs_buf_append(enc, header, sizeof header);
    qs_buf_append(enc, head->msg, head->msg_len);
    b->evs = qs_xmalloc(sizeof *b->evs);
    b->evs[0] = head;
    b->n = 1;
    producer_deliver(p, b, enc);
    return true;
  }
  b->evs = qs_xmalloc(p->o.batch_max * sizeof *b->evs);
  b->n = 0;
  size_t bytes = overhead;
  char key[QS_EH_PARTITION_KEY_MAX + 1];
  memcpy(key, head->key, sizeof key); /* head's key queue may be freed as it empties */
  /* the global head is the oldest event of its key: the batch is its key's oldest events */
  for (eh_ev *e = head, *next; e && b->n < p->o.batch_max; e = next) {
    next = e->knext;
    if (bytes + e->msg_len + 8 > cap)
      break;
    bytes += e->msg_len + 8;
    q_unlink(p, e);
    b->evs[b->n++] = e;
  }
  enc_partition_key_annotations(enc, key);
  for (size_t i = 0; i < b->n; i++) {
    static const uint8_t data_hdr[] = {0x00, 0x53, 0x75, 0xb0};
    qs_buf_append(enc, data_hdr, sizeof data_hdr);
    enc_be32(enc, (uint32_t)b->evs[i]->msg_len);
    qs_buf_append(enc, b->evs[i]->msg, b->evs[i]->msg_len);
  }
  producer_deliver(p, b, enc);
  return true;
}

static void producer_pump(qs_eh_producer *p) {
  if (p->lk.state != LS_ATTACHED || !p->lk.link)
    return;
  while (p->qhead && p->ninflight < p->o.inflight_max && pn_link_credit(p->lk.link) > 0) {
    if (!producer_send_batch(p))
      break;
  }
  producer_check_drain(p);
}

static void producer_on_delivery(qs_eh_producer *p, pn_delivery_t *d) {
  if (!pn_delivery_updated(d))
    return;
  uint64_t state = pn_delivery_remote_state(d);
  if (state == 0 && !pn_delivery_settled(d))
    return;
  size_t bi = 0;
  while (bi < p->ninflight && p->inflight[bi].d != d)
    bi++;
  if (bi == p->ninflight) {
    pn_delivery_settle(d);
    return;
  }
  eh_batch b = p->inflight[bi];
  memmove(&p->inflight[bi], &p->inflight[bi + 1], (p->ninflight - bi - 1) * sizeof b);
  p->ninflight--;
  p->inflight_events -= b.n;
  char cond[128] = "", desc[256] = "";
  if (state == PN_REJECTED) {
    pn_condition_t *cd = pn_disposition_condition(pn_delivery_remote(d));
    if (pn_condition_is_set(cd)) {
      qs_set_reason(cond, sizeof cond, "%s", pn_condition_get_name(cd));
      qs_set_reason(desc, sizeof desc, "%s",
                    pn_condition_get_description(cd) ? pn_condition_get_description(cd) : "");
    }
  }
  pn_delivery_settle(d);
  if (state == PN_RELEASED || state == PN_MODIFIED) { /* not taken: send again, first */
    for (size_t i = b.n; i-- > 0;)
      q_push_front(p, b.evs[i]);
  } else {
    for (size_t i = 0; i < b.n; i++) {
      if (state == PN_ACCEPTED)
        ev_finish(b.evs[i], 0, NULL, NULL);
      else
        ev_finish(b.evs[i], QS_ERR_REJECTED, cond[0] ? cond : "amqp:rejected", desc);
    }
  }
  free(b.evs);
  producer_pump(p);
}

static void producer_fail_all(qs_eh_producer *p, int code, const char *cond, const char *desc) {
  producer_requeue_inflight(p);
  while (p->qhead) {
    eh_ev *e = p->qhead;
    q_unlink(p, e);
    ev_finish(e, code, cond, desc);
  }
  producer_check_drain(p);
}

static void producer_expire(qs_eh_producer *p, int64_t now) {
  bool any = false;
  for (eh_ev *e = p->qhead, *next; e; e = next) {
    next = e->next;
    if (e->deadline_ms <= now) {
      q_unlink(p, e);
      ev_finish(e, QS_ERR_TIMEOUT, "qs:timeout", "not acknowledged in time");
      any = true;
    }
  }
  if (any)
    producer_check_drain(p);
}

int qs_eh_producer_open(qs_eh_client *c, const qs_eh_producer_opts *opts, qs_eh_producer **out) {
  if (!c || !opts || !opts->hub || !*opts->hub || strlen(opts->hub) > QS_EH_HUB_MAX ||
      opts->partition < -1 || opts->partition >= QS_EH_PARTITIONS_MAX)
    return QS_ERR_INVALID;
  if (c->closing)
    return QS_ERR_CLOSED;
  qs_eh_producer *p = qs_xcalloc(1, sizeof *p);
  p->o = *opts;
  qs_set_reason(p->hub, sizeof p->hub, "%s", opts->hub);
  p->o.hub = p->hub;
  if (!p->o.queue_max)
    p->o.queue_max = 10000;
  if (!p->o.inflight_max)
    p->o.inflight_max = 16;
  if (!p->o.batch_max)
    p->o.batch_max = 1000;
  if (!p->o.send_timeout_ms)
    p->o.send_timeout_ms = 60000;
  p->inflight = qs_xcalloc(p->o.inflight_max, sizeof *p->inflight);
  char addr[ADDR_MAX];
  if (opts->partition >= 0)
    qs_set_reason(addr, sizeof addr, "%s/Partitions/%d", p->hub, opts->partition);
  else
    qs_set_reason(addr, sizeof addr, "%s", p->hub);
  link_register(c, &p->lk, LK_PRODUCER, addr);
  link_start(&p->lk);
  *out = p;
  return 0;
}

int qs_eh_send(qs_eh_producer *p, const qs_eh_event_out *ev, qs_eh_send_cb cb, void *ud) {
  if (!p || !ev || (!ev->body && ev->len) || ev->nprops > QS_EH_PROPS_MAX * 4)
    return QS_ERR_INVALID;
  if (p->lk.c->closing)
    return QS_ERR_CLOSED;
  if (p->lk.state == LS_FAILED) /* refused for good (wrong key, unknown hub): say so now */
    return p->lk.fail_code ? p->lk.fail_code : QS_ERR_CLOSED;
  size_t klen = ev->partition_key ? strlen(ev->partition_key) : 0;
  if (klen > QS_EH_PARTITION_KEY_MAX || (klen && p->o.partition >= 0))
    return QS_ERR_INVALID;
  if (p->queued >= p->o.queue_max) {
    p->was_full = true;
    return QS_ERR_FULL;
  }
  if (ev->len + 512 + klen > producer_max_message(p))
    return QS_ERR_TOOBIG;
  qs_buf m = {0};
  if (klen)
    enc_partition_key_annotations(&m, ev->partition_key);
  if (ev->nprops) {
    qs_buf items = {0};
    for (size_t i = 0; i < ev->nprops; i++) {
      const char *k = ev->props[i].key ? ev->props[i].key : "";
      const char *v = ev->props[i].value ? ev->props[i].value : "";
      enc_text(&items, 0xa1, k, strlen(k));
      enc_text(&items, 0xa1, v, strlen(v));
    }
    enc_map_section(&m, 0x74, &items, (uint32_t)(ev->nprops * 2));
    qs_buf_free(&items);
  }
  static const uint8_t data_hdr[] = {0x00, 0x53, 0x75, 0xb0};
  qs_buf_append(&m, data_hdr, sizeof data_hdr);
  enc_be32(&m, (uint32_t)ev->len);
  if (ev->len)
    qs_buf_append(&m, ev->body, ev->len);
  eh_ev *e = qs_xcalloc(1, sizeof *e);
  e->msg = (uint8_t *)m.p;
  e->msg_len = m.len;
  if (klen)
    memcpy(e->key, ev->partition_key, klen + 1);
  e->cb = cb;
  e->ud = ud;
  e->deadline_ms = now_ms() + p->o.send_timeout_ms;
  q_push_back(p, e);
  producer_pump(p);
  /* Outside the connection's own pump the frames would wait for the next read or the 100 ms
   * tick: wake the connection so they are written on this loop turn (uv_async coalesces). */
  if (p->lk.c->conn)
    qs_amqp_conn_wake(p->lk.c->conn);
  return 0;
}

size_t qs_eh_producer_pending(const qs_eh_producer *p) { return p->queued + p->inflight_events; }

void qs_eh_producer_on_drain(qs_eh_producer *p, void (*cb)(qs_eh_producer *, void *), void *ud) {
  p->drain_cb = cb;
  p->drain_ud = ud;
}

void qs_eh_producer_flush(qs_eh_producer *p, void (*cb)(qs_eh_producer *, void *), void *ud) {
  p->flush_cb = cb;
  p->flush_ud = ud;
  /* fires from the next tick if nothing is pending */
}

/* ---- consumer ---------------------------------------------------------------------------- */

static void consumer_filter(qs_eh_consumer *k, pn_terminus_t *src) {
  char expr[160];
  qs_eh_position pos = k->o.start;
  if (k->last_seq >= 0) { /* resuming: strictly after what was delivered */
    pos.kind = QS_EH_POS_SEQUENCE;
    pos.value = k->last_seq;
    pos.inclusive = false;
  }
  const char *op = pos.inclusive ? ">=" : ">";
  switch (pos.kind) {
  case QS_EH_POS_LATEST:
    qs_set_reason(expr, sizeof expr, "amqp.annotation.x-opt-offset > '@latest'");
    break;
  case QS_EH_POS_SEQUENCE:
    qs_set_reason(expr, sizeof expr, "amqp.annotation.x-opt-sequence-number %s '%" PRId64 "'", op,
                  pos.value);
    break;
  case QS_EH_POS_OFFSET:
    qs_set_reason(expr, sizeof expr, "amqp.annotation.x-opt-offset %s '%" PRId64 "'", op,
                  pos.value);
    break;
  case QS_EH_POS_TIME:
    qs_set_reason(expr, sizeof expr, "amqp.annotation.x-opt-enqueued-time %s '%" PRId64 "'", op,
                  pos.value);
    break;
  case QS_EH_POS_EARLIEST:
  default:
    qs_set_reason(expr, sizeof expr, "amqp.annotation.x-opt-offset > '-1'");
    break;
  }
  pn_data_t *f = pn_terminus_filter(src);
  pn_data_clear(f);
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, bstr("apache.org:selector-filter:string"));
  pn_data_put_described(f);
  pn_data_enter(f);
  pn_data_put_ulong(f, 0x0000468C00000004ull);
  pn_data_put_string(f, bstr(expr));
  pn_data_exit(f);
  pn_data_exit(f);
}

static void consumer_topup(qs_eh_consumer *k) {
  if (k->paused || !k->lk.link || k->lk.state != LS_ATTACHED)
    return;
  int credit = pn_link_credit(k->lk.link) + pn_link_queued(k->lk.link);
  if (credit < (int)k->o.prefetch / 2 + 1)
    pn_link_flow(k->lk.link, (int)k->o.prefetch - credit);
}

static int64_t annotation_int(pn_data_t *d) {
  switch (pn_data_type(d)) {
  case PN_LONG:
    return pn_data_get_long(d);
  case PN_INT:
    return pn_data_get_int(d);
  case PN_ULONG:
    return (int64_t)pn_data_get_ulong(d);
  case PN_UINT:
    return pn_data_get_uint(d);
  case PN_SHORT:
    return pn_data_get_short(d);
  case PN_TIMESTAMP:
    return pn_data_get_timestamp(d);
  case PN_STRING: {
    pn_bytes_t b = pn_data_get_string(d);
    char tmp[32];
    qs_set_reason(tmp, sizeof tmp, "%.*s", (int)(b.size < 31 ? b.size : 31), b.start);
    return strtoll(tmp, NULL, 10);
  }
  default:
    return -1;
  }
}

/* b into dst[cap], cut to cap - 1 bytes and NUL-terminated (qs_set_reason's "%.*s" result). */
static void copy_bytes(char *dst, size_t cap, pn_bytes_t b) {
  size_t n = b.size < cap ? b.size : cap - 1;
  if (n)
    memcpy(dst, b.start, n);
  dst[n] = '\0';
}

/* ---- received messages without proton's message decoder -----------------------------------
 *
 * pn_message_decode builds pn_data trees of every section and was a large part of the speed
 * aggregator's per-event cost. msg_fast reads the sections straight from the delivery's bytes for
 * the shapes a hub sends (integer, timestamp or string annotations; string application
 * properties; one data or string/binary amqp-value body) and fills the event exactly as the
 * pn_message path below does; anything else (a described value where a number is read, an
 * amqp-sequence body, two body sections, a malformed encoding) returns false and that path runs.
 * tests/unit/test_eh_message.c compares both on encoded messages. */

typedef struct amqp_cur {
  const uint8_t *p, *end;
} amqp_cur;

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* Length of the encoded value at p (constructor included), 0 if malformed or too deep. */
static size_t amqp_skip(const uint8_t *p, const uint8_t *end, int depth) {
  if (p >= end || depth > 32)
    return 0;
  size_t n = (size_t)(end - p), need;
  uint8_t c = p[0];
  if (c == 0x00) {
    size_t d = amqp_skip(p + 1, end, depth + 1);
    size_t v = d ? amqp_skip(p + 1 + d, end, depth + 1) : 0;
    return d && v ? 1 + d + v : 0;
  }
  /* The constructors AMQP 1.0 defines (others are malformed). */
  if ((c >= 0x40 && c <= 0x45) || (c >= 0x50 && c <= 0x56))
    need = c < 0x50 ? 1 : 2;
  else if (c == 0x60 || c == 0x61)
    need = 3;
  else if (c >= 0x70 && c <= 0x74)
    need = 5;
  else if (c >= 0x80 && c <= 0x84)
    need = 9;
  else if (c == 0x94 || c == 0x98)
    need = 17;
  else if (c == 0xa0 || c == 0xa1 || c == 0xa3)
    need = n >= 2 ? 2 + (size_t)p[1] : SIZE_MAX;
  else if (c == 0xb0 || c == 0xb1 || c == 0xb3)
    need = n >= 5 ? 5 + (size_t)be32(p + 1) : SIZE_MAX;
  else if (c == 0xc0 || c == 0xc1 || c == 0xd0 || c == 0xd1) {
    /* A list or map: its count of values must fill its size exactly. */
    bool small = c < 0xd0;
    size_t hdr = small ? 3 : 9;
    if (n < hdr)
      return 0;
    size_t size = small ? p[1] : be32(p + 1);
    uint32_t count = small ? p[2] : be32(p + 5);
    need = (small ? 2 : 5) + size;
    if (size < hdr - (small ? 2 : 5) || need > n || ((c & 1) && count % 2))
      return 0;
    const uint8_t *q = p + hdr, *qend = p + need;
    for (uint32_t i = 0; i < count; i++) {
      size_t l = amqp_skip(q, qend, depth + 1);
      if (!l)
        return 0;
      q += l;
    }
    if (q != qend)
      return 0;
  } else {
    return 0; /* arrays and undefined constructors: proton's decoder */
  }
  return need <= n ? need : 0;
}

/* A string or symbol value (str8/32, sym8/32): its bytes. */
static bool amqp_text(const uint8_t *p, size_t len, pn_bytes_t *out, bool strings_only) {
  if (len >= 2 && (p[0] == 0xa1 || (!strings_only && p[0] == 0xa3))) {
    *out = pn_bytes(p[1], (const char *)p + 2);
    return true;
  }
  if (len >= 5 && (p[0] == 0xb1 || (!strings_only && p[0] == 0xb3))) {
    *out = pn_bytes(be32(p + 1), (const char *)p + 5);
    return true;
  }
  return false;
}

/* An integer or timestamp value as annotation_int reads it; false for any other type. */
static bool amqp_int(const uint8_t *p, size_t len, int64_t *out) {
  switch (p[0]) {
  case 0x81: /* long */
  case 0x83: /* timestamp */
  case 0x80: /* ulong */
    *out = (int64_t)be64(p + 1);
    return len >= 9;
  case 0x55: /* smalllong */
  case 0x54: /* smallint */
    *out = (int8_t)p[1];
    return len >= 2;
  case 0x53: /* smallulong */
  case 0x52: /* smalluint */
    *out = p[1];
    return len >= 2;
  case 0x44: /* ulong0 */
  case 0x43: /* uint0 */
    *out = 0;
    return true;
  case 0x71: /* int */
    *out = (int32_t)be32(p + 1);
    return len >= 5;
  case 0x70: /* uint */
    *out = be32(p + 1);
    return len >= 5;
  case 0x61: /* short */
    *out = (int16_t)((uint16_t)p[1] << 8 | p[2]);
    return len >= 3;
  default:
    return false;
  }
}

/* The entries of a map value (map8/map32; null: none): first key and byte span, entry count. */
static bool amqp_map(const uint8_t *v, size_t len, amqp_cur *body, uint32_t *count) {
  if (len >= 1 && v[0] == 0x40) {
    body->p = body->end = v + 1;
    *count = 0;
    return true;
  }
  if (len >= 3 && v[0] == 0xc1 && v[1] >= 1 && (size_t)v[1] + 2 <= len) {
    *count = v[2];
    body->p = v + 3;
    body->end = v + 2 + v[1];
    return *count % 2 == 0;
  }
  if (len >= 9 && v[0] == 0xd1 && be32(v + 1) >= 4 && (size_t)be32(v + 1) + 5 <= len) {
    *count = be32(v + 5);
    body->p = v + 9;
    body->end = v + 5 + be32(v + 1);
    return *count % 2 == 0;
  }
  return false;
}

static char prop_keys[QS_EH_PROPS_MAX][128], prop_vals[QS_EH_PROPS_MAX][512];

static bool msg_fast(const uint8_t *msg, size_t n, qs_eh_event_in *ev) {
  const uint8_t *p = msg, *end = msg + n;
  bool have_body = false;
  unsigned seen = 0;
  while (p < end) {
    size_t total = amqp_skip(p, end, 0);
    if (!total || p[0] != 0x00 || total < 3 || p[1] != 0x53)
      return false; /* other descriptor forms: proton's decoder */
    uint8_t code = p[2];
    if (code < 0x70 || code > 0x78 || (seen & (1u << (code - 0x70))))
      return false; /* a repeated section: proton's decoder decides */
    seen |= 1u << (code - 0x70);
    const uint8_t *v = p + 3, *vend = p + total;
    size_t vlen = (size_t)(vend - v);
    p = vend;
    amqp_cur m;
    uint32_t count;
    switch (code) {
    case 0x70: /* header: a list */
    case 0x73: /* properties: a list */
      if (v[0] != 0x45 && v[0] != 0xc0 && v[0] != 0xd0)
        return false;
      break;
    case 0x71: /* delivery annotations: a map */
    case 0x78: /* footer: a map */
      if (v[0] != 0xc1 && v[0] != 0xd1)
        return false;
      break;
    case 0x72: /* message annotations */
      if (!amqp_map(v, vlen, &m, &count))
        return false;
      for (uint32_t i = 0; i < count; i += 2) {
        size_t kl = amqp_skip(m.p, m.end, 1);
        size_t vl = kl ? amqp_skip(m.p + kl, m.end, 1) : 0;
        if (!kl || !vl)
          return false;
        const uint8_t *val = m.p + kl;
        pn_bytes_t key = pn_bytes(0, NULL), t;
        amqp_text(m.p, kl, &key, false);
        m.p += kl + vl;
        int64_t iv;
        if (key.size == 21 && memcmp(key.start, "x-opt-sequence-number", 21) == 0) {
          if (!amqp_int(val, vl, &iv))
            return false;
          ev->sequence = iv;
        } else if (key.size == 19 && memcmp(key.start, "x-opt-enqueued-time", 19) == 0) {
          if (!amqp_int(val, vl, &iv))
            return false;
          ev->enqueued_ms = iv;
        } else if (key.size == 12 && memcmp(key.start, "x-opt-offset", 12) == 0) {
          if (amqp_text(val, vl, &t, true)) {
            copy_bytes(ev->offset, sizeof ev->offset, t);
          } else {
            if (!amqp_int(val, vl, &iv))
              return false;
            char num[24];
            int nl = snprintf(num, sizeof num, "%" PRId64, iv);
            copy_bytes(ev->offset, sizeof ev->offset, pn_bytes((size_t)nl, num));
          }
        } else if (key.size == 19 && memcmp(key.start, "x-opt-partition-key", 19) == 0 &&
                   amqp_text(val, vl, &t, true)) {
          copy_bytes(ev->partition_key, sizeof ev->partition_key, t);
        }
      }
      break;
    case 0x74: /* application properties: string keys and values only */
      if (!amqp_map(v, vlen, &m, &count))
        return false;
      for (uint32_t i = 0; i < count && ev->nprops < QS_EH_PROPS_MAX; i += 2) {
        size_t kl = amqp_skip(m.p, m.end, 1);
        size_t vl = kl ? amqp_skip(m.p + kl, m.end, 1) : 0;
        if (!kl || !vl)
          return false;
        pn_bytes_t key, val;
        bool ok = amqp_text(m.p, kl, &key, true) && key.size && amqp_text(m.p + kl, vl, &val, true);
        m.p += kl + vl;
        if (!ok)
          continue;
        copy_bytes(prop_keys[ev->nprops], sizeof prop_keys[0], key);
        copy_bytes(prop_vals[ev->nprops], sizeof prop_vals[0], val);
        ev->props[ev->nprops].key = prop_keys[ev->nprops];
        ev->props[ev->nprops].value = prop_vals[ev->nprops];
        ev->nprops++;
      }
      break;
    case 0x75: /* data */
    case 0x77: /* amqp-value */ {
      pn_bytes_t b;
      if (have_body)
        return false;
      have_body = true;
      if (vlen >= 2 && (v[0] == 0xa0 || (code == 0x77 && v[0] == 0xa1))) {
        b = pn_bytes(v[1], (const char *)v + 2);
      } else if (vlen >= 5 && (v[0] == 0xb0 || (code == 0x77 && v[0] == 0xb1))) {
        b = pn_bytes(be32(v + 1), (const char *)v + 5);
      } else {
        return false;
      }
      ev->body = b.start;
      ev->len = b.size;
      break;
    }
    default:
      return false;
    }
  }
  return true;
}

static void event_in_init(qs_eh_event_in *ev, int partition) {
  memset(ev, 0, offsetof(qs_eh_event_in, props));
  ev->nprops = 0;
  ev->partition = partition;
  ev->sequence = -1;
  ev->enqueued_ms = 0;
}

/* Decodes a delivered message through proton (every shape). */
static bool msg_proton(pn_message_t *m, const char *bytes, size_t len, qs_eh_event_in *ev) {
  pn_message_clear(m);
  if (pn_message_decode(m, bytes, len) != 0)
    return false;
  pn_data_t *ma = pn_message_annotations(m);
  pn_data_rewind(ma);
  if (pn_data_next(ma) && pn_data_type(ma) == PN_MAP && pn_data_enter(ma)) {
    while (pn_data_next(ma)) {
      pn_bytes_t key = data_text(ma);
      if (!pn_data_next(ma))
        break;
      if (key.size == 21 && memcmp(key.start, "x-opt-sequence-number", 21) == 0)
        ev->sequence = annotation_int(ma);
      else if (key.size == 19 && memcmp(key.start, "x-opt-enqueued-time", 19) == 0)
        ev->enqueued_ms = annotation_int(ma);
      else if (key.size == 12 && memcmp(key.start, "x-opt-offset", 12) == 0) {
        if (pn_data_type(ma) == PN_STRING) {
          pn_bytes_t v = pn_data_get_string(ma);
          copy_bytes(ev->offset, sizeof ev->offset, v); /* per event: no snprintf */
        } else {
          qs_set_reason(ev->offset, sizeof ev->offset, "%" PRId64, annotation_int(ma));
        }
      } else if (key.size == 19 && memcmp(key.start, "x-opt-partition-key", 19) == 0 &&
                 pn_data_type(ma) == PN_STRING) {
        pn_bytes_t v = pn_data_get_string(ma);
        copy_bytes(ev->partition_key, sizeof ev->partition_key, v);
      }
    }
    pn_data_exit(ma);
  }
  /* string application properties; the pn_data strings stay valid until the next decode */
  pn_data_t *ap = pn_message_properties(m);
  pn_data_rewind(ap);
  if (pn_data_next(ap) && pn_data_type(ap) == PN_MAP && pn_data_enter(ap)) {
    while (pn_data_next(ap) && ev->nprops < QS_EH_PROPS_MAX) {
      pn_bytes_t key = pn_data_type(ap) == PN_STRING ? pn_data_get_string(ap) : pn_bytes(0, NULL);
      if (!pn_data_next(ap))
        break;
      if (!key.size || pn_data_type(ap) != PN_STRING)
        continue;
      pn_bytes_t v = pn_data_get_string(ap);
      copy_bytes(prop_keys[ev->nprops], sizeof prop_keys[0], key);
      copy_bytes(prop_vals[ev->nprops], sizeof prop_vals[0], v);
      ev->props[ev->nprops].key = prop_keys[ev->nprops];
      ev->props[ev->nprops].value = prop_vals[ev->nprops];
      ev->nprops++;
    }
    pn_data_exit(ap);
  }
  pn_data_t *body = pn_message_body(m);
  pn_data_rewind(body);
  if (pn_data_next(body)) {
    pn_bytes_t b = pn_data_type(body) == PN_BINARY   ? pn_data_get_binary(body)
                   : pn_data_type(body) == PN_STRING ? pn_data_get_string(body)
                                                     : pn_bytes(0, NULL);
    ev->body = b.start;
    ev->len = b.size;
  }
  return true;
}

bool qs_eh_message_decode(const void *msg, size_t len, int partition, bool fast,
                          qs_eh_event_in *ev) {
  static pn_message_t *m;
  event_in_init(ev, partition);
  if (fast)
    return msg_fast(msg, len, ev);
  if (!m)
    m = pn_message();
  return msg_proton(m, msg, len, ev);
}

static void consumer_on_delivery(qs_eh_consumer *k, pn_link_t *l, pn_delivery_t *d) {
  if (!pn_delivery_readable(d) || pn_delivery_partial(d))
    return;
  size_t pend = pn_delivery_pending(d);
  qs_buf_reset(&k->rbuf);
  qs_buf_reserve(&k->rbuf, pend + 1);
  ssize_t got;
  while ((got = pn_link_recv(l, k->rbuf.p + k->rbuf.len, k->rbuf.cap - k->rbuf.len)) > 0) {
    k->rbuf.len += (size_t)got;
    if (k->rbuf.len == k->rbuf.cap)
      qs_buf_reserve(&k->rbuf, k->rbuf.cap);
  }
  if (!pn_delivery_settled(d))
    pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  qs_eh_event_in ev;
  event_in_init(&ev, k->o.partition);
  bool ok = msg_fast((const uint8_t *)k->rbuf.p, k->rbuf.len, &ev);
  if (!ok) {
    event_in_init(&ev, k->o.partition);
    ok = msg_proton(k->msg, k->rbuf.p, k->rbuf.len, &ev);
  }
  if (!ok) {
    consumer_topup(k);
    return;
  }
  if (ev.sequence >= 0)
    k->last_seq = ev.sequence;
  k->lk.failures = 0;
  if (k->o.on_event)
    k->o.on_event(k, &ev, k->o.ud);
  consumer_topup(k);
}

int qs_eh_consumer_open(qs_eh_client *c, const qs_eh_consumer_opts *opts, qs_eh_consumer **out) {
  if (!c || !opts || !opts->hub || !*opts->hub || strlen(opts->hub) > QS_EH_HUB_MAX ||
      opts->partition < 0 || opts->partition >= QS_EH_PARTITIONS_MAX || !opts->on_event ||
      (opts->consumer_group && strlen(opts->consumer_group) > QS_EH_HUB_MAX))
    return QS_ERR_INVALID;
  if (c->closing)
    return QS_ERR_CLOSED;
  qs_eh_consumer *k = qs_xcalloc(1, sizeof *k);
  k->o = *opts;
  qs_set_reason(k->hub, sizeof k->hub, "%s", opts->hub);
  qs_set_reason(k->group, sizeof k->group, "%s",
                opts->consumer_group && *opts->consumer_group ? opts->consumer_group : "$Default");
  k->o.hub = k->hub;
  k->o.consumer_group = k->group;
  if (!k->o.prefetch)
    k->o.prefetch = 300;
  k->last_seq = -1;
  k->msg = pn_message();
  char addr[ADDR_MAX];
  qs_set_reason(addr, sizeof addr, "%s/ConsumerGroups/%s/Partitions/%d", k->hub, k->group,
                opts->partition);
  link_register(c, &k->lk, LK_CONSUMER, addr);
  link_start(&k->lk);
  *out = k;
  return 0;
}

void qs_eh_consumer_pause(qs_eh_consumer *k) { k->paused = true; }

void qs_eh_consumer_resume(qs_eh_consumer *k) {
  k->paused = false;
  consumer_topup(k);
  if (k->lk.c->conn)
    qs_amqp_conn_wake(k->lk.c->conn); /* send the flow now, not at the next tick */
}

int64_t qs_eh_consumer_last_sequence(const qs_eh_consumer *k) { return k->last_seq; }

void qs_eh_consumer_close(qs_eh_consumer *k) {
  if (!k)
    return;
  qs_eh_client *c = k->lk.c;
  link_detach(&k->lk);
  link_unregister(c, &k->lk);
  pn_message_free(k->msg);
  qs_buf_free(&k->rbuf);
  free(k);
}

/* ---- management -------------------------------------------------------------------------- */

static void mreq_finish(eh_mreq *r, int status, pn_message_t *m, const char *reason);

static void mgmt_pump(qs_eh_client *c) {
  eh_link *lk = &c->mgmt;
  if (!c->mreqs)
    return;
  if (!c->mgmt_used) {
    c->mgmt_used = true;
    char addr[ADDR_MAX];
    qs_set_reason(addr, sizeof addr, "%s/$management",
                  c->cs.entity_path[0] ? c->cs.entity_path : c->mreqs->hub);
    link_register(c, lk, LK_MGMT, addr);
    qs_set_reason(lk->address, sizeof lk->address, "$management");
  }
  if (lk->state == LS_IDLE) {
    link_start(lk);
    return;
  }
  if (lk->state != LS_ATTACHED || !lk->link)
    return;
  for (eh_mreq *r = c->mreqs; r; r = r->next) {
    if (r->sent)
      continue;
    if (pn_link_credit(lk->link) <= 0)
      return;
    char aud[ADDR_MAX], token[2048];
    int64_t exp;
    audience_for(c, r->hub, aud, sizeof aud);
    pn_message_t *m = pn_message();
    pn_data_put_string(pn_message_id(m), bstr(r->id));
    pn_message_set_reply_to(m, lk->reply_to);
    pn_data_t *ap = pn_message_properties(m);
    pn_data_put_map(ap);
    pn_data_enter(ap);
    put_str_kv(ap, "operation", "READ");
    put_str_kv(ap, "name", r->hub);
    put_str_kv(ap, "type", r->is_partition ? "com.microsoft:partition" : "com.microsoft:eventhub");
    if (r->is_partition) {
      char pid[16];
      qs_set_reason(pid, sizeof pid, "%d", r->partition);
      put_str_kv(ap, "partition", pid);
    }
    if (token_needed(c) && make_token(c, aud, token, sizeof token, &exp) == 0)
      put_str_kv(ap, "security_token", token);
    pn_data_exit(ap);
    char buf[4096];
    size_t len = sizeof buf;
    int rc = pn_message_encode(m, buf, &len);
    pn_message_free(m);
    if (rc != 0)
      continue;
    pn_delivery(lk->link, pn_dtag(r->id, strlen(r->id)));
    pn_link_send(lk->link, buf, len);
    pn_link_advance(lk->link);
    r->sent = true;
  }
}

static bool map_find(pn_data_t *d, const char *key) {
  pn_data_rewind(d);
  if (!pn_data_next(d) || pn_data_type(d) != PN_MAP || !pn_data_enter(d))
    return false;
  size_t kl = strlen(key);
  while (pn_data_next(d)) {
    pn_bytes_t k = data_text(d);
    if (!pn_data_next(d))
      return false;
    if (k.size == kl && memcmp(k.start, key, kl) == 0)
      return true;
  }
  return false;
}

static void map_str(pn_data_t *d, const char *key, char *out, size_t cap) {
  out[0] = 0;
  if (map_find(d, key) && pn_data_type(d) == PN_STRING) {
    pn_bytes_t b = pn_data_get_string(d);
    qs_set_reason(out, cap, "%.*s", (int)b.size, b.start);
  } else if (map_find(d, key)) {
    qs_set_reason(out, cap, "%" PRId64, annotation_int(d));
  }
}

static int64_t map_int(pn_data_t *d, const char *key, int64_t def) {
  return map_find(d, key) ? annotation_int(d) : def;
}

static void mreq_finish(eh_mreq *r, int status, pn_message_t *m, const char *reason) {
  if (!r->is_partition) {
    qs_eh_hub_props hp;
    memset(&hp, 0, sizeof hp);
    if (status == 0 && m) {
      pn_data_t *b = pn_message_body(m);
      map_str(b, "name", hp.name, sizeof hp.name);
      hp.created_ms = map_int(b, "created_at", 0);
      hp.partition_count = (int)map_int(b, "partition_count", 0);
      if (map_find(b, "partition_ids") &&
          (pn_data_type(b) == PN_ARRAY || pn_data_type(b) == PN_LIST) && pn_data_enter(b)) {
        int n = 0;
        while (pn_data_next(b) && n < QS_EH_PARTITIONS_MAX)
          hp.partition_ids[n++] = (int)annotation_int(b);
        pn_data_exit(b);
        if (!hp.partition_count)
          hp.partition_count = n;
      } else {
        for (int i = 0; i < hp.partition_count && i < QS_EH_PARTITIONS_MAX; i++)
          hp.partition_ids[i] = i;
      }
    }
    r->hub_cb(status, status == 0 ? &hp : NULL, reason, r->ud);
  } else {
    qs_eh_partition_props pp;
    memset(&pp, 0, sizeof pp);
    if (status == 0 && m) {
      pn_data_t *b = pn_message_body(m);
      map_str(b, "name", pp.hub, sizeof pp.hub);
      pp.partition = r->partition;
      pp.begin_sequence = map_int(b, "begin_sequence_number", -1);
      pp.last_sequence = map_int(b, "last_enqueued_sequence_number", -1);
      map_str(b, "last_enqueued_offset", pp.last_offset, sizeof pp.last_offset);
      pp.last_enqueued_ms = map_int(b, "last_enqueued_time_utc", 0);
      pp.is_empty = map_find(b, "is_partition_empty") && pn_data_type(b) == PN_BOOL
                        ? pn_data_get_bool(b)
                        : pp.last_sequence < 0;
    }
    r->part_cb(status, status == 0 ? &pp : NULL, reason, r->ud);
  }
}

static void mgmt_on_reply(qs_eh_client *c, pn_link_t *l, pn_delivery_t *d) {
  qs_buf buf = {0};
  pn_message_t *m = pn_message();
  bool ok = recv_message(l, d, &buf, m);
  pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  qs_buf_free(&buf);
  char cid[64] = "", desc[256] = "";
  int status = 0;
  if (ok) {
    correlation_id(m, cid, sizeof cid);
    read_status(m, &status, desc, sizeof desc);
  }
  eh_mreq *r = NULL;
  for (eh_mreq **pp = &c->mreqs; ok && *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->id, cid) == 0) {
      r = *pp;
      *pp = r->next;
      break;
    }
  if (r) {
    char why[300];
    qs_set_reason(why, sizeof why, "management READ %s: %d %s", r->hub, status, desc);
    if (status >= 200 && status < 300)
      mreq_finish(r, 0, m, NULL);
    else
      mreq_finish(r,
                  status == 404   ? QS_ERR_NOTFOUND
                  : status == 401 ? QS_ERR_AUTH
                                  : QS_ERR_REJECTED,
                  NULL, why);
    free(r);
  }
  pn_message_free(m);
}

static int mreq_add(qs_eh_client *c, eh_mreq *r, uint32_t timeout_ms) {
  if (c->closing) {
    free(r);
    return QS_ERR_CLOSED;
  }
  qs_set_reason(r->id, sizeof r->id, "mgmt-%" PRIu64, ++c->next_id);
  r->deadline_ms = now_ms() + (timeout_ms ? timeout_ms : 30000);
  eh_mreq **pp = &c->mreqs;
  while (*pp)
    pp = &(*pp)->next;
  *pp = r;
  mgmt_pump(c);
  return 0;
}

int qs_eh_get_hub_props(qs_eh_client *c, const char *hub, uint32_t timeout_ms,
                        void (*cb)(int, const qs_eh_hub_props *, const char *, void *), void *ud) {
  if (!c || !hub || !*hub || strlen(hub) > QS_EH_HUB_MAX || !cb)
    return QS_ERR_INVALID;
  eh_mreq *r = qs_xcalloc(1, sizeof *r);
  qs_set_reason(r->hub, sizeof r->hub, "%s", hub);
  r->hub_cb = cb;
  r->ud = ud;
  return mreq_add(c, r, timeout_ms);
}

int qs_eh_get_partition_props(qs_eh_client *c, const char *hub, int partition, uint32_t timeout_ms,
                              void (*cb)(int, const qs_eh_partition_props *, const char *, void *),
                              void *ud) {
  if (!c || !hub || !*hub || strlen(hub) > QS_EH_HUB_MAX || !cb || partition < 0)
    return QS_ERR_INVALID;
  eh_mreq *r = qs_xcalloc(1, sizeof *r);
  qs_set_reason(r->hub, sizeof r->hub, "%s", hub);
  r->is_partition = true;
  r->partition = partition;
  r->part_cb = cb;
  r->ud = ud;
  return mreq_add(c, r, timeout_ms);
}

/* ---- attach / link events ---------------------------------------------------------------- */

static void link_attach(eh_link *lk) {
  qs_eh_client *c = lk->c;
  pn_connection_t *pc = qs_amqp_conn_connection(c->conn);
  char name[ADDR_MAX + 48];
  qs_set_reason(name, sizeof name, "%s-%" PRIu64 "-%s", lk->address, ++c->next_id, c->name);
  lk->state = LS_ATTACHING;
  lk->ssn = pn_session(pc);
  pn_session_open(lk->ssn);
  if (lk->kind == LK_PRODUCER) {
    lk->link = pn_sender(lk->ssn, name);
    pn_terminus_set_address(pn_link_target(lk->link), lk->address);
    pn_terminus_set_address(pn_link_source(lk->link), c->container);
    pn_link_set_snd_settle_mode(lk->link, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(lk->link, PN_RCV_FIRST);
  } else if (lk->kind == LK_CONSUMER) {
    qs_eh_consumer *k = (qs_eh_consumer *)lk;
    lk->link = pn_receiver(lk->ssn, name);
    pn_terminus_set_address(pn_link_source(lk->link), lk->address);
    pn_terminus_set_address(pn_link_target(lk->link), name);
    consumer_filter(k, pn_link_source(lk->link));
    /* Pre-settled deliveries, as the official Java SDK's Event Hubs connection asks for
     * (SenderSettleMode.SETTLED): progress is the checkpoint (offset/sequence), never
     * settlement, so a disposition per event would be work on both ends for nothing; a
     * reconnect resumes after the last sequence received. (A peer that sends them unsettled
     * gets them accepted and settled.) */
    pn_link_set_snd_settle_mode(lk->link, PN_SND_SETTLED);
    pn_link_set_rcv_settle_mode(lk->link, PN_RCV_FIRST);
    if (k->o.owner_level >= 0) {
      pn_data_t *props = pn_link_properties(lk->link);
      pn_data_put_map(props);
      pn_data_enter(props);
      pn_data_put_symbol(props, bstr("com.microsoft:epoch"));
      pn_data_put_long(props, k->o.owner_level);
      pn_data_exit(props);
    }
  } else {
    qs_set_reason(lk->reply_to, sizeof lk->reply_to, "mgmt-reply-%" PRIu64, c->next_id);
    lk->link = pn_sender(lk->ssn, name);
    pn_terminus_set_address(pn_link_target(lk->link), "$management");
    lk->link2 = pn_receiver(lk->ssn, lk->reply_to);
    pn_terminus_set_address(pn_link_source(lk->link2), "$management");
    pn_terminus_set_address(pn_link_target(lk->link2), lk->reply_to);
    pn_link_set_context(lk->link2, lk);
    pn_link_open(lk->link2);
    pn_link_flow(lk->link2, 100);
  }
  pn_link_set_context(lk->link, lk);
  pn_link_open(lk->link);
  if (lk->kind == LK_CONSUMER) {
    qs_eh_consumer *k = (qs_eh_consumer *)lk;
    if (!k->paused)
      pn_link_flow(lk->link, (int)k->o.prefetch);
  }
}

static int condition_code(const char *name) {
  if (!name)
    return 0;
  if (strcmp(name, "amqp:link:stolen") == 0)
    return QS_ERR_STOLEN;
  if (strcmp(name, "amqp:not-found") == 0 || strcmp(name, "com.microsoft:entity-disabled") == 0)
    return QS_ERR_NOTFOUND;
  if (strcmp(name, "amqp:unauthorized-access") == 0 ||
      strcmp(name, "com.microsoft:unauthorized-access") == 0)
    return QS_ERR_AUTH;
  return 0;
}

static void link_failed_final(eh_link *lk, int code, const char *cond, const char *desc) {
  link_detach(lk);
  lk->state = LS_FAILED;
  lk->fail_code = code;
  if (lk->kind == LK_CONSUMER) {
    qs_eh_consumer *k = (qs_eh_consumer *)lk;
    if (k->o.on_error)
      k->o.on_error(k, code, cond, desc, k->o.ud);
  } else if (lk->kind == LK_PRODUCER) {
    producer_fail_all((qs_eh_producer *)lk, code, cond, desc);
  } else {
    qs_eh_client *c = lk->c;
    while (c->mreqs) {
      eh_mreq *r = c->mreqs;
      c->mreqs = r->next;
      mreq_finish(r, code, NULL, desc);
      free(r);
    }
    lk->state = LS_IDLE; /* management may be tried again by a later request */
  }
}

static void link_on_remote_close(eh_link *lk, pn_link_t *l) {
  pn_condition_t *cd = pn_link_remote_condition(l);
  const char *name = pn_condition_is_set(cd) ? pn_condition_get_name(cd) : NULL;
  const char *desc = pn_condition_is_set(cd) ? pn_condition_get_description(cd) : NULL;
  char nm[128], ds[256];
  qs_set_reason(nm, sizeof nm, "%s", name ? name : "");
  qs_set_reason(ds, sizeof ds, "%s", desc ? desc : "");
  if (lk->kind == LK_PRODUCER)
    producer_requeue_inflight((qs_eh_producer *)lk);
  int code = condition_code(name);
  set_reason(lk->c, "link detached", nm, ds);
  if (code == QS_ERR_STOLEN || (code && lk->kind == LK_CONSUMER))
    link_failed_final(lk, code, nm, ds);
  else if (code == QS_ERR_NOTFOUND && lk->kind == LK_PRODUCER)
    link_failed_final(lk, code, nm, ds);
  else
    link_retry_later(lk);
}

/* ---- connection -------------------------------------------------------------------------- */

static void client_schedule_reconnect(qs_eh_client *c) {
  uint32_t b = c->backoff_ms ? c->backoff_ms : c->o.backoff_min_ms;
  c->connect_at_ms = now_ms() + b / 2 + (int64_t)(rng_next(c) % (b / 2 + 1));
  c->backoff_ms = b * 2 > c->o.backoff_max_ms ? c->o.backoff_max_ms : b * 2;
}

static int conn_setup(qs_amqp_conn *conn, void *data) {
  qs_eh_client *c = data;
  pn_transport_t *t = qs_amqp_conn_transport(conn);
  pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  pn_transport_set_max_frame(t, 256 * 1024);
  pn_transport_set_idle_timeout(t, c->o.idle_timeout_ms);
  qs_amqp_conn_use_batch_marking(conn);
  return 0;
}

static void conn_lost(qs_eh_client *c) {
  bool was = c->connected;
  c->conn = NULL;
  c->connected = false;
  c->conn_closing = false;
  c->cbs_ssn = NULL;
  c->cbs_snd = c->cbs_rcv = NULL;
  while (c->cbs_reqs) {
    eh_cbs_req *r = c->cbs_reqs;
    c->cbs_reqs = r->next;
    free(r);
  }
  for (eh_link *lk = c->links; lk; lk = lk->next) {
    if (lk->kind == LK_PRODUCER)
      producer_requeue_inflight((qs_eh_producer *)lk);
    link_reset(lk);
  }
  for (eh_mreq *r = c->mreqs; r; r = r->next)
    r->sent = false;
  if (was)
    c->stats.disconnects++;
  notify_state(c, false, c->reason);
  if (!c->closing)
    client_schedule_reconnect(c);
}

static void conn_on_error(qs_amqp_conn *conn, int code, const char *reason, void *data) {
  (void)conn;
  qs_eh_client *c = data;
  qs_set_reason(c->reason, sizeof c->reason, "connection to %s:%d failed: %s (%s)", c->cs.host,
                c->cs.port, reason ? reason : "", qs_strerror(code));
  if (code == QS_ERR_AUTH) { /* TLS verification: retrying will not help a request waiting now */
    c->stats.auth_failures++;
    while (c->mreqs) {
      eh_mreq *r = c->mreqs;
      c->mreqs = r->next;
      mreq_finish(r, QS_ERR_AUTH, NULL, c->reason);
      free(r);
    }
  }
}

static void conn_on_closed(qs_amqp_conn *conn, void *data) {
  (void)conn;
  conn_lost(data);
}

static void conn_on_event(qs_amqp_conn *conn, pn_event_t *e, void *data) {
  qs_eh_client *c = data;
  switch (pn_event_type(e)) {
  case PN_CONNECTION_INIT: {
    pn_connection_t *pc = pn_event_connection(e);
    pn_connection_set_container(pc, c->container);
    pn_connection_set_hostname(pc, c->cs.host);
    pn_connection_open(pc);
    cbs_open(c, pc);
    break;
  }
  case PN_CONNECTION_REMOTE_OPEN:
    c->connected = true;
    c->stats.connects++;
    c->reason[0] = 0;
    notify_state(c, true, NULL);
    for (eh_link *lk = c->links; lk; lk = lk->next)
      link_start(lk);
    break;
  case PN_CONNECTION_REMOTE_CLOSE: {
    pn_condition_t *cd = pn_connection_remote_condition(pn_event_connection(e));
    if (pn_condition_is_set(cd))
      set_reason(c, "connection closed by peer", pn_condition_get_name(cd),
                 pn_condition_get_description(cd));
    pn_connection_close(pn_event_connection(e));
    break;
  }
  case PN_LINK_FLOW: {
    pn_link_t *l = pn_event_link(e);
    if (l == c->cbs_snd) {
      cbs_pump(c);
      break;
    }
    eh_link *lk = pn_link_get_context(l);
    if (lk && lk->kind == LK_PRODUCER)
      producer_pump((qs_eh_producer *)lk);
    else if (lk && lk->kind == LK_MGMT)
      mgmt_pump(c);
    break;
  }
  case PN_LINK_REMOTE_OPEN: {
    pn_link_t *l = pn_event_link(e);
    eh_link *lk = pn_link_get_context(l);
    if (!lk || lk->state != LS_ATTACHING)
      break;
    /* A refused attach is an attach with a null terminus followed by a detach. */
    if (pn_link_is_sender(l) ? !pn_terminus_get_address(pn_link_remote_target(l))
                             : !pn_terminus_get_address(pn_link_remote_source(l)))
      break;
    if (lk->kind == LK_MGMT && l != lk->link)
      break;
    lk->state = LS_ATTACHED;
    if (lk->kind == LK_PRODUCER) {
      lk->failures = 0;
      producer_pump((qs_eh_producer *)lk);
    } else if (lk->kind == LK_MGMT) {
      mgmt_pump(c);
    }
    break;
  }
  case PN_LINK_REMOTE_CLOSE: {
    pn_link_t *l = pn_event_link(e);
    eh_link *lk = pn_link_get_context(l);
    if (l == c->cbs_snd || l == c->cbs_rcv) {
      set_reason(c, "$cbs link closed by peer", "", "");
      pn_connection_close(qs_amqp_conn_connection(conn));
      break;
    }
    pn_link_close(l);
    if (lk)
      link_on_remote_close(lk, l);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    pn_link_t *l = pn_delivery_link(d);
    if (l == c->cbs_snd) {
      if (pn_delivery_updated(d))
        pn_delivery_settle(d);
      break;
    }
    if (l == c->cbs_rcv) {
      if (pn_delivery_readable(d) && !pn_delivery_partial(d))
        cbs_on_reply(c, l, d);
      if (c->cbs_rcv && pn_link_credit(c->cbs_rcv) < 50)
        pn_link_flow(c->cbs_rcv, 100 - pn_link_credit(c->cbs_rcv));
      break;
    }
    eh_link *lk = pn_link_get_context(l);
    if (!lk) { /* a closed consumer's late delivery */
      if (!pn_delivery_partial(d))
        pn_delivery_settle(d);
      break;
    }
    if (lk->kind == LK_PRODUCER) {
      producer_on_delivery((qs_eh_producer *)lk, d);
    } else if (lk->kind == LK_CONSUMER) {
      consumer_on_delivery((qs_eh_consumer *)lk, l, d);
    } else if (l == lk->link2) {
      if (pn_delivery_readable(d) && !pn_delivery_partial(d))
        mgmt_on_reply(c, l, d);
      if (lk->link2 && pn_link_credit(lk->link2) < 50)
        pn_link_flow(lk->link2, 100 - pn_link_credit(lk->link2));
    } else if (pn_delivery_updated(d)) {
      pn_delivery_settle(d);
    }
    break;
  }
  default:
    break;
  }
}

static void client_connect(qs_eh_client *c) {
  qs_amqp_conn_cbs cbs = {.setup = conn_setup,
                          .on_event = conn_on_event,
                          .on_error = conn_on_error,
                          .on_closed = conn_on_closed};
  c->connect_at_ms = 0;
  int rc = qs_amqp_conn_connect(c->loop, c->cs.host, c->cs.port, c->tls_ready ? &c->tls : NULL,
                                NULL, &cbs, c, &c->conn);
  if (rc != 0) {
    c->conn = NULL;
    qs_set_reason(c->reason, sizeof c->reason, "cannot connect to %s:%d: %s", c->cs.host,
                  c->cs.port, qs_strerror(rc));
    client_schedule_reconnect(c);
  }
}

static void client_free(qs_eh_client *c);

static void client_finish_close(qs_eh_client *c) {
  void (*cb)(void *) = c->close_cb;
  void *ud = c->close_ud;
  c->close_cb = NULL;
  client_free(c);
  if (cb)
    cb(ud);
}

static void on_timer_closed(uv_handle_t *h) { client_finish_close(h->data); }

static bool producers_idle(qs_eh_client *c) {
  for (eh_link *lk = c->links; lk; lk = lk->next)
    if (lk->kind == LK_PRODUCER && qs_eh_producer_pending((qs_eh_producer *)lk) > 0 &&
        lk->state != LS_FAILED)
      return false;
  return true;
}

static void on_tick(uv_timer_t *t) {
  qs_eh_client *c = t->data;
  int64_t now = now_ms();
  if (c->closing) {
    if (c->freed_pending)
      return;
    bool idle = producers_idle(c) || now >= c->close_deadline_ms || !c->connected;
    if (idle && !c->conn_closing) {
      for (eh_link *lk = c->links; lk; lk = lk->next)
        if (lk->kind == LK_PRODUCER)
          producer_fail_all((qs_eh_producer *)lk, QS_ERR_CLOSED, "qs:closed", "client closed");
      while (c->mreqs) {
        eh_mreq *r = c->mreqs;
        c->mreqs = r->next;
        mreq_finish(r, QS_ERR_CLOSED, NULL, "client closed");
        free(r);
      }
      if (c->conn) {
        c->conn_closing = true;
        for (eh_link *lk = c->links; lk; lk = lk->next)
          link_detach(lk);
        pn_connection_close(qs_amqp_conn_connection(c->conn));
        qs_amqp_conn_wake(c->conn);
      }
    }
    if (idle && !c->conn) {
      c->freed_pending = true;
      uv_timer_stop(&c->timer);
      uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    } else if (c->conn && c->conn_closing && now >= c->close_deadline_ms + 5000) {
      qs_amqp_conn_abort(c->conn, "close timed out");
    }
    return;
  }
  if (!c->conn && c->connect_at_ms && now >= c->connect_at_ms)
    client_connect(c);
  /* deadlines */
  for (eh_link *lk = c->links; lk; lk = lk->next) {
    if (lk->kind == LK_PRODUCER) {
      qs_eh_producer *p = (qs_eh_producer *)lk;
      producer_expire(p, now);
      producer_check_drain(p);
    }
  }
  for (eh_mreq **pp = &c->mreqs; *pp;) {
    eh_mreq *r = *pp;
    if (r->deadline_ms <= now) {
      *pp = r->next;
      mreq_finish(r, QS_ERR_TIMEOUT, NULL,
                  c->reason[0] ? c->reason : "management request timed out");
      free(r);
    } else {
      pp = &r->next;
    }
  }
  for (eh_cbs_req **pp = &c->cbs_reqs; *pp;) {
    eh_cbs_req *r = *pp;
    if (r->deadline_ms <= now) {
      *pp = r->next;
      if (r->lk)
        link_retry_later(r->lk);
      free(r);
    } else {
      pp = &r->next;
    }
  }
  if (!c->connected)
    return;
  for (eh_link *lk = c->links; lk; lk = lk->next) {
    if (lk->state == LS_IDLE && (lk->kind != LK_MGMT || c->mreqs))
      link_start(lk);
    /* renew tokens at 80 % of their life */
    if ((lk->state == LS_ATTACHED || lk->state == LS_ATTACHING) && lk->token_expiry_ms &&
        !lk->token_pending && c->cs.key[0]) {
      int64_t life = (int64_t)c->o.token_ttl_s * 1000;
      if (now >= lk->token_expiry_ms - life / 5) {
        bool inflight = false;
        for (eh_cbs_req *r = c->cbs_reqs; r; r = r->next)
          inflight |= r->lk == lk;
        if (!inflight) {
          lk->token_pending = true;
          cbs_pump(c);
        }
      }
    }
  }
  mgmt_pump(c);
  if (c->conn)
    qs_amqp_conn_wake(c->conn);
}

int qs_eh_client_open(qs_eh_client **out, uv_loop_t *loop, const qs_eh_client_opts *opts, char *err,
                      size_t errlen) {
  if (!out || !loop || !opts || !opts->connection_string) {
    qs_set_reason(err, errlen, "no connection string");
    return QS_ERR_INVALID;
  }
  qs_eh_client *c = qs_xcalloc(1, sizeof *c);
  if (qs_ehconn_parse(opts->connection_string, &c->cs, err, errlen) != 0) {
    free(c);
    return QS_ERR_INVALID;
  }
  if (!c->cs.sas[0] && (!c->cs.key_name[0] || !c->cs.key[0])) {
    qs_set_reason(err, errlen,
                  "connection string needs SharedAccessKeyName and SharedAccessKey, or "
                  "SharedAccessSignature");
    free(c);
    return QS_ERR_INVALID;
  }
  c->loop = loop;
  c->o = *opts;
  c->o.connection_string = NULL;
  qs_set_reason(c->name, sizeof c->name, "%s",
                opts->client_name ? opts->client_name : "quakestream");
  c->o.client_name = c->name;
  if (!c->o.idle_timeout_ms)
    c->o.idle_timeout_ms = 60000;
  if (!c->o.backoff_min_ms)
    c->o.backoff_min_ms = 250;
  if (!c->o.backoff_max_ms)
    c->o.backoff_max_ms = 30000;
  if (c->o.backoff_max_ms < c->o.backoff_min_ms)
    c->o.backoff_max_ms = c->o.backoff_min_ms;
  if (!c->o.token_ttl_s)
    c->o.token_ttl_s = 3600;
  c->rng = (uint64_t)uv_hrtime() ^ (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
  qs_set_reason(c->container, sizeof c->container, "%s-%016" PRIx64, c->name, rng_next(c));
  if (c->cs.use_tls) {
    qs_set_reason(c->ca_file, sizeof c->ca_file, "%s", opts->ca_file ? opts->ca_file : "");
    if (qs_tls_ctx_init_client(&c->tls, c->ca_file[0] ? c->ca_file : NULL, err, errlen) != 0) {
      free(c);
      return QS_ERR_INVALID;
    }
    c->tls_ready = true;
  }
  c->o.ca_file = NULL;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_timer_start(&c->timer, on_tick, TICK_MS, TICK_MS);
  qs_set_reason(c->reason, sizeof c->reason, "connecting to %s:%d", c->cs.host, c->cs.port);
  client_connect(c);
  *out = c;
  return 0;
}

const char *qs_eh_client_entity_path(const qs_eh_client *c) { return c->cs.entity_path; }

bool qs_eh_client_ready(const qs_eh_client *c, const char **reason) {
  if (reason)
    *reason = c->reason;
  return c->connected && !c->closing;
}

void qs_eh_client_stats_get(const qs_eh_client *c, qs_eh_client_stats *out) { *out = c->stats; }

void qs_eh_client_close(qs_eh_client *c, uint32_t timeout_ms, void (*cb)(void *ud), void *ud) {
  if (!c || c->closing)
    return;
  c->closing = true;
  c->close_cb = cb;
  c->close_ud = ud;
  c->close_deadline_ms = now_ms() + timeout_ms;
  c->connect_at_ms = 0;
  if (c->conn && !c->connected) /* still handshaking: nothing to flush */
    qs_amqp_conn_abort(c->conn, "client closed");
}

static void client_free(qs_eh_client *c) {
  while (c->links) {
    eh_link *lk = c->links;
    c->links = lk->next;
    if (lk->kind == LK_PRODUCER) {
      qs_eh_producer *p = (qs_eh_producer *)lk;
      free(p->inflight);
      qs_buf_free(&p->enc);
      free(p);
    } else if (lk->kind == LK_CONSUMER) {
      qs_eh_consumer *k = (qs_eh_consumer *)lk;
      pn_message_free(k->msg);
      qs_buf_free(&k->rbuf);
      free(k);
    }
  }
  while (c->cbs_reqs) {
    eh_cbs_req *r = c->cbs_reqs;
    c->cbs_reqs = r->next;
    free(r);
  }
  if (c->tls_ready)
    qs_tls_ctx_close(&c->tls);
  free(c);
}
