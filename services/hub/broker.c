/* broker.c — connection/session/link state and dispatch for the hub.
 *
 * Link kinds: $cbs and $management request links (client -> broker) and
 * their reply links (broker -> client), event-data sender links from the
 * client (<hub>, <hub>/Partitions/<n>) and consumer links to the client
 * (<hub>/ConsumerGroups/<cg>/Partitions/<n>).
 * Invariants:
 *  - every link the broker opens carries max-message-size, an empty
 *    properties map and a copy of the remote source/target;
 *  - incoming links always hold credit (replenished when half is used);
 *  - an event-data delivery is settled (accepted) only from the store's
 *    append callback; if the link or connection is gone by then, the
 *    callback just frees its record (pending->c / ->d are cleared);
 *  - consumer links send at most pn_link_credit() deliveries and stop while
 *    the session has more than HUB_SESSION_OUT_CAP bytes queued;
 *  - one broker-wide list of consumer links serves wake-ups and epochs.
 */
#include "broker.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "cbs.h"
#include "evmsg.h"
#include "filter.h"
#include "mgmt.h"
#include "qs/error.h"

#define HUB_MAX_GRANTS 64
#define HUB_SESSION_OUT_CAP (4u << 20)
#define HUB_READ_BATCH 64
#define HUB_READ_BYTES (256u << 10)
#define HUB_MAX_LINKS 256      /* per connection */
#define HUB_MAX_UNSETTLED 4096 /* per consumer link; the oldest is settled beyond it */

typedef enum link_kind { L_CBS_IN, L_CBS_OUT, L_MGMT_IN, L_MGMT_OUT, L_SEND, L_RECV } link_kind;

typedef struct hub_link hub_link;
typedef struct pending pending;

struct hub_link {
  link_kind kind;
  hub_conn *c;
  pn_link_t *l;
  hub_link *next; /* in c->links */
  const hub_entity *ent;
  char path[HUB_PATH_MAX]; /* canonical entity path, for token expiry */
  unsigned rights;         /* right the link needs */
  int part;                /* -1: any (hub-level sender) */
  char cg[HUB_NAME_MAX];
  /* incoming message assembly */
  uint8_t *buf;
  size_t len, cap;
  bool oversize;
  /* consumer */
  int64_t next_seq;
  bool has_epoch;
  int64_t epoch;
  uint64_t tag;
  hub_link *rnext, *rprev; /* in b->receivers */
  bool registered;
};

struct pending {
  pending *next; /* in c->pendings */
  hub_conn *c;   /* NULL once the connection is gone */
  hub_link *link;
  pn_delivery_t *d; /* NULL once the link is gone */
};

typedef struct grant {
  hub_cbs_grant g;
} grant;

struct hub_conn {
  hub_broker *b;
  pn_connection_driver_t *d;
  hub_conn_wake_fn wake;
  void *wake_arg;
  hub_conn *next, *prev;
  hub_link *links;
  size_t n_links;
  pending *pendings;
  grant grants[HUB_MAX_GRANTS];
  size_t n_grants;
  bool ever_authorised;
  int64_t started_ms;
  uint64_t reply_tag;
  pn_message_t *req, *reply;
  bool closing;
};

struct hub_broker {
  hub_broker_config cfg;
  hub_conn *conns;
  hub_link *receivers;
  uint32_t rr;
};

static int64_t now_ms(hub_broker *b) { return b->cfg.now_ms(b->cfg.clock_ctx); }

static void wake(hub_conn *c) {
  if (c && c->wake)
    c->wake(c->wake_arg);
}

/* ---------------- addresses ---------------- */

/* Bitwise crc32 (no table: keys are at most 128 bytes, and no mutable
 * static state). */
int hub_partition_for_key(const char *key, size_t len, int count) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++) {
    c ^= (uint8_t)key[i];
    for (int k = 0; k < 8; k++)
      c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  c ^= 0xFFFFFFFFu;
  return count > 0 ? (int)(c % (uint32_t)count) : 0;
}

static int parse_part(const char *s, size_t n) {
  if (n == 0 || n > 4)
    return -1;
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i]))
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v < HUB_MAX_PARTITIONS ? v : -1;
}

static bool word_eq(const char *s, size_t n, const char *w) {
  return n == strlen(w) && strncasecmp(s, w, n) == 0;
}

int hub_addr_parse(const char *addr, size_t len, hub_addr *out) {
  memset(out, 0, sizeof *out);
  out->part = -1;
  const char *p = addr, *end = addr + len;
  const char *sep = NULL;
  for (const char *q = p; q + 2 < end; q++) {
    if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
      sep = q;
      break;
    }
    if (*q == '/')
      break;
  }
  if (sep) { /* scheme://host[:port] */
    p = sep + 3;
    while (p < end && *p != '/')
      p++;
  }
  while (p < end && *p == '/')
    p++;
  while (end > p && end[-1] == '/')
    end--;
  size_t plen = (size_t)(end - p);
  if (plen >= HUB_PATH_MAX)
    return QS_ERR_TOOBIG;
  for (size_t i = 0; i < plen; i++) {
    if ((unsigned char)p[i] < 0x20)
      return QS_ERR_INVALID;
    out->path[i] = (char)tolower((unsigned char)p[i]);
  }
  out->path[plen] = 0;
  if (plen == 0) {
    out->kind = HUB_ADDR_NAMESPACE;
    return 0;
  }
  /* split into at most 5 words */
  const char *w[6];
  size_t wl[6], nw = 0;
  const char *s = p;
  while (s <= end && nw < 6) {
    const char *e = memchr(s, '/', (size_t)(end - s));
    if (!e)
      e = end;
    w[nw] = s;
    wl[nw] = (size_t)(e - s);
    if (wl[nw] == 0)
      return QS_ERR_INVALID;
    nw++;
    s = e + 1;
    if (e == end)
      break;
  }
  if (s < end)
    return QS_ERR_INVALID; /* more than 6 words */
  if (nw == 1 && word_eq(w[0], wl[0], "$cbs")) {
    out->kind = HUB_ADDR_CBS;
    return 0;
  }
  if (nw == 1 && word_eq(w[0], wl[0], "$management")) {
    out->kind = HUB_ADDR_MGMT;
    return 0;
  }
  if (wl[0] >= HUB_NAME_MAX || w[0][0] == '$')
    return QS_ERR_INVALID;
  memcpy(out->hub, w[0], wl[0]);
  out->hub[wl[0]] = 0;
  if (nw == 1) {
    out->kind = HUB_ADDR_HUB;
    return 0;
  }
  if (nw == 2 && word_eq(w[1], wl[1], "$management")) {
    out->kind = HUB_ADDR_MGMT;
    return 0;
  }
  if (nw == 3 && word_eq(w[1], wl[1], "partitions")) {
    out->kind = HUB_ADDR_PARTITION;
    out->part = parse_part(w[2], wl[2]);
    return out->part < 0 ? QS_ERR_INVALID : 0;
  }
  if (nw == 5 && word_eq(w[1], wl[1], "consumergroups") && word_eq(w[3], wl[3], "partitions")) {
    if (wl[2] >= HUB_NAME_MAX)
      return QS_ERR_INVALID;
    out->kind = HUB_ADDR_CG_PARTITION;
    memcpy(out->cg, w[2], wl[2]);
    out->cg[wl[2]] = 0;
    out->part = parse_part(w[4], wl[4]);
    return out->part < 0 ? QS_ERR_INVALID : 0;
  }
  return QS_ERR_INVALID;
}

/* ---------------- grants ---------------- */

static bool path_covers(const char *g, const char *path) {
  size_t gl = strlen(g);
  if (gl == 0)
    return true;
  return strncmp(g, path, gl) == 0 && (path[gl] == 0 || path[gl] == '/');
}

static bool conn_authorised(hub_conn *c, const char *path, unsigned rights) {
  int64_t now_s = now_ms(c->b) / 1000;
  for (size_t i = 0; i < c->n_grants; i++) {
    const hub_cbs_grant *g = &c->grants[i].g;
    if (g->expires_s > now_s && (g->rights & rights) == rights && path_covers(g->path, path))
      return true;
  }
  return false;
}

static void conn_add_grant(hub_conn *c, const hub_cbs_grant *g) {
  int64_t now_s = now_ms(c->b) / 1000;
  size_t j = 0;
  for (size_t i = 0; i < c->n_grants; i++) /* drop expired and replaced grants */
    if (c->grants[i].g.expires_s > now_s && strcmp(c->grants[i].g.path, g->path) != 0)
      c->grants[j++] = c->grants[i];
  c->n_grants = j;
  if (c->n_grants == HUB_MAX_GRANTS) { /* bounded: forget the oldest */
    memmove(&c->grants[0], &c->grants[1], (HUB_MAX_GRANTS - 1) * sizeof(grant));
    c->n_grants--;
  }
  c->grants[c->n_grants++].g = *g;
  c->ever_authorised = true;
}

static bool mgmt_authorised(void *arg, const char *hub) {
  hub_conn *c = arg;
  char path[HUB_PATH_MAX];
  snprintf(path, sizeof path, "%s/$management", hub);
  for (char *q = path; *q; q++)
    *q = (char)tolower((unsigned char)*q);
  return conn_authorised(c, path, 0);
}

/* ---------------- link helpers ---------------- */

static hub_link *link_of(pn_link_t *l) { return l ? pn_link_get_context(l) : NULL; }

static void refuse(pn_link_t *l, const char *cond, const char *desc) {
  pn_link_open(l);
  pn_condition_t *k = pn_link_condition(l);
  pn_condition_set_name(k, cond);
  pn_condition_set_description(k, desc);
  pn_link_close(l);
}

static void unregister_receiver(hub_broker *b, hub_link *hl) {
  if (!hl->registered)
    return;
  if (hl->rprev)
    hl->rprev->rnext = hl->rnext;
  else
    b->receivers = hl->rnext;
  if (hl->rnext)
    hl->rnext->rprev = hl->rprev;
  hl->rnext = hl->rprev = NULL;
  hl->registered = false;
}

static void link_free(hub_link *hl) {
  hub_conn *c = hl->c;
  unregister_receiver(c->b, hl);
  for (pending *p = c->pendings; p; p = p->next)
    if (p->link == hl) {
      p->link = NULL;
      p->d = NULL;
    }
  for (hub_link **pp = &c->links; *pp; pp = &(*pp)->next)
    if (*pp == hl) {
      *pp = hl->next;
      c->n_links--;
      break;
    }
  if (hl->l)
    pn_link_set_context(hl->l, NULL);
  free(hl->buf);
  free(hl);
}

static hub_link *link_new(hub_conn *c, pn_link_t *l, link_kind k) {
  hub_link *hl = qs_xcalloc(1, sizeof *hl);
  hl->kind = k;
  hl->c = c;
  hl->l = l;
  hl->part = -1;
  hl->next = c->links;
  c->links = hl;
  c->n_links++;
  pn_link_set_context(l, hl);
  return hl;
}

static void top_up_credit(hub_conn *c, pn_link_t *l) {
  int want = (int)c->b->cfg.link_credit;
  int have = pn_link_credit(l);
  if (have <= want / 2)
    pn_link_flow(l, want - have);
}

static const char *terminus_address(pn_terminus_t *t, size_t *len) {
  const char *a = pn_terminus_get_address(t);
  *len = a ? strlen(a) : 0;
  return a;
}

/* ---------------- consumers ---------------- */

static void deliver(hub_link *hl);

static bool cg_known(const hub_entity *e, const char *cg) {
  if (strcasecmp(cg, "$default") == 0)
    return true;
  for (size_t i = 0; i < e->n_consumer_groups; i++)
    if (strcasecmp(e->consumer_groups[i], cg) == 0)
      return true;
  return false;
}

static bool read_epoch(pn_link_t *l, int64_t *epoch) {
  pn_data_t *p = pn_link_remote_properties(l);
  bool found = false;
  if (!p)
    return false;
  pn_data_rewind(p);
  if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
    return false;
  size_t n = pn_data_get_map(p);
  pn_data_enter(p);
  for (size_t i = 0; i < n; i += 2) {
    if (!pn_data_next(p))
      break;
    bool is_epoch = pn_data_type(p) == PN_SYMBOL &&
                    pn_data_get_symbol(p).size == strlen("com.microsoft:epoch") &&
                    memcmp(pn_data_get_symbol(p).start, "com.microsoft:epoch",
                           strlen("com.microsoft:epoch")) == 0;
    if (!pn_data_next(p))
      break;
    if (!is_epoch)
      continue;
    switch (pn_data_type(p)) {
    case PN_LONG:
      *epoch = pn_data_get_long(p);
      found = true;
      break;
    case PN_INT:
      *epoch = pn_data_get_int(p);
      found = true;
      break;
    case PN_ULONG:
      *epoch = (int64_t)pn_data_get_ulong(p);
      found = true;
      break;
    case PN_UINT:
      *epoch = pn_data_get_uint(p);
      found = true;
      break;
    default:
      break;
    }
  }
  pn_data_exit(p);
  return found;
}

static void steal(hub_link *old, const char *desc) {
  hub_conn *oc = old->c;
  unregister_receiver(oc->b, old);
  pn_condition_t *k = pn_link_condition(old->l);
  pn_condition_set_name(k, "amqp:link:stolen");
  pn_condition_set_description(k, desc);
  pn_link_close(old->l);
  wake(oc);
}

/* Apply owner-level rules. Returns false when the new link must be refused. */
static bool epoch_admit(hub_broker *b, hub_link *nl) {
  for (hub_link *o = b->receivers; o; o = o->rnext) {
    if (o->ent != nl->ent || o->part != nl->part || strcasecmp(o->cg, nl->cg) != 0)
      continue;
    if (o->has_epoch && (!nl->has_epoch || o->epoch > nl->epoch))
      return false;
  }
  if (!nl->has_epoch)
    return true;
  char desc[160];
  snprintf(desc, sizeof desc,
           "New receiver with higher epoch of '%lld' is created hence current receiver is "
           "disconnected.",
           (long long)nl->epoch);
  for (hub_link *o = b->receivers, *nx; o; o = nx) {
    nx = o->rnext;
    if (o->ent == nl->ent && o->part == nl->part && strcasecmp(o->cg, nl->cg) == 0)
      steal(o, desc);
  }
  return true;
}

static void open_consumer(hub_conn *c, pn_link_t *l, const hub_addr *a) {
  hub_broker *b = c->b;
  char desc[HUB_PATH_MAX + 96];
  const hub_entity *ent = b->cfg.entity_lookup(b->cfg.entity_ctx, a->hub);
  if (!ent || a->part >= ent->partition_count || !cg_known(ent, a->cg)) {
    snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.",
             pn_terminus_get_address(pn_link_remote_source(l)));
    refuse(l, "amqp:not-found", desc);
    return;
  }
  if (!conn_authorised(c, a->path, HUB_RIGHT_LISTEN)) {
    refuse(l, "amqp:unauthorized-access",
           "Unauthorized access. 'Listen' claim(s) are required "
           "to perform this operation; put a token on $cbs first.");
    return;
  }
  hub_position pos;
  char err[160];
  if (hub_filter_from_data(pn_terminus_filter(pn_link_remote_source(l)), &pos, err, sizeof err) <
      0) {
    refuse(l, "amqp:invalid-field", err);
    return;
  }
  const hub_store *st = &b->cfg.store;
  int64_t seq = 0;
  int rc = 0;
  hub_part_info info;
  switch (pos.kind) {
  case HUB_POS_EARLIEST:
    rc = st->info(st->ctx, ent->name, a->part, &info);
    seq = info.empty ? info.last_seq + 1 : info.begin_seq;
    if (info.empty && seq < 0)
      seq = 0;
    break;
  case HUB_POS_LATEST:
    rc = st->info(st->ctx, ent->name, a->part, &info);
    seq = info.empty ? (info.last_seq < 0 ? 0 : info.last_seq + 1) : info.last_seq + 1;
    break;
  case HUB_POS_OFFSET:
    rc = st->seek_offset(st->ctx, ent->name, a->part, pos.value, pos.inclusive, &seq);
    break;
  case HUB_POS_SEQ:
    rc = st->seek_seq(st->ctx, ent->name, a->part, pos.value, pos.inclusive, &seq);
    break;
  case HUB_POS_TIME:
    /* seek_time is exclusive; ">=" starts one millisecond earlier */
    rc =
        st->seek_time(st->ctx, ent->name, a->part, pos.inclusive ? pos.value - 1 : pos.value, &seq);
    break;
  }
  if (rc < 0) {
    refuse(l, "amqp:internal-error", "The partition could not be read.");
    return;
  }
  hub_link *hl = link_new(c, l, L_RECV);
  hl->ent = ent;
  snprintf(hl->path, sizeof hl->path, "%s", a->path);
  hl->rights = HUB_RIGHT_LISTEN;
  hl->part = a->part;
  snprintf(hl->cg, sizeof hl->cg, "%s", a->cg);
  hl->next_seq = seq;
  hl->has_epoch = read_epoch(l, &hl->epoch);
  if (!epoch_admit(b, hl)) {
    snprintf(desc, sizeof desc,
             "Receiver with a higher epoch already exists on this partition; epoch %lld refused.",
             (long long)hl->epoch);
    pn_link_set_context(l, NULL);
    link_free(hl);
    refuse(l, "amqp:link:stolen", desc);
    return;
  }
  hl->rnext = b->receivers;
  if (b->receivers)
    b->receivers->rprev = hl;
  b->receivers = hl;
  hl->registered = true;
  pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
  pn_link_set_rcv_settle_mode(l, pn_link_remote_rcv_settle_mode(l));
  pn_link_open(l);
  deliver(hl);
}

static void deliver(hub_link *hl) {
  pn_link_t *l = hl->l;
  hub_broker *b = hl->c->b;
  const hub_store *st = &b->cfg.store;
  if (!hl->registered || pn_link_state(l) & PN_LOCAL_CLOSED)
    return;
  hub_stored recs[HUB_READ_BATCH];
  while (pn_link_credit(l) > 0 &&
         pn_session_outgoing_bytes(pn_link_session(l)) < HUB_SESSION_OUT_CAP) {
    size_t want = (size_t)pn_link_credit(l), n = 0;
    if (want > HUB_READ_BATCH)
      want = HUB_READ_BATCH;
    hub_part_info info;
    if (st->info(st->ctx, hl->ent->name, hl->part, &info) < 0)
      return;
    if (info.empty || hl->next_seq > info.last_seq)
      return; /* at the tail: the new-data listener wakes us */
    if (hl->next_seq < info.begin_seq)
      hl->next_seq = info.begin_seq; /* trimmed by retention */
    if (st->read(st->ctx, hl->ent->name, hl->part, hl->next_seq, want, HUB_READ_BYTES, recs, &n) <
            0 ||
        n == 0)
      return;
    int64_t now = now_ms(b);
    for (size_t i = 0; i < n && pn_link_credit(l) > 0; i++) {
      hub_evmsg_annot a = {recs[i].seq,      recs[i].offset,        recs[i].enqueued_ms,
                           recs[i].pkey,     recs[i].pkey_len,      info.last_seq,
                           info.last_offset, info.last_enqueued_ms, now};
      size_t olen = 0;
      int err = 0;
      uint8_t *out = hub_evmsg_annotate(recs[i].payload, recs[i].len, &a, &olen, &err);
      uint8_t tag[8];
      uint64_t t = hl->tag++;
      for (int k = 0; k < 8; k++)
        tag[k] = (uint8_t)(t >> (56 - 8 * k));
      pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)tag, sizeof tag));
      if (out)
        pn_link_send(l, (const char *)out, olen);
      else /* not a parsable message: pass it through untouched */
        pn_link_send(l, (const char *)recs[i].payload, recs[i].len);
      free(out);
      pn_link_advance(l);
      if (pn_link_snd_settle_mode(l) == PN_SND_SETTLED)
        pn_delivery_settle(d);
      else if (pn_link_unsettled(l) > HUB_MAX_UNSETTLED) /* clients that never settle */
        pn_delivery_settle(pn_unsettled_head(l));
      hl->next_seq = recs[i].seq + 1;
    }
  }
}

static void store_newdata(void *arg, const char *hub, int part) {
  hub_broker *b = arg;
  for (hub_link *hl = b->receivers, *nx; hl; hl = nx) {
    nx = hl->rnext;
    if (hl->part == part && strcasecmp(hl->ent->name, hub) == 0) {
      deliver(hl);
      wake(hl->c);
    }
  }
}

/* ---------------- producers ---------------- */

static void open_producer(hub_conn *c, pn_link_t *l, const hub_addr *a) {
  hub_broker *b = c->b;
  char desc[HUB_PATH_MAX + 96];
  const hub_entity *ent = b->cfg.entity_lookup(b->cfg.entity_ctx, a->hub);
  if (!ent || a->part >= ent->partition_count) {
    snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.",
             pn_terminus_get_address(pn_link_remote_target(l)));
    refuse(l, "amqp:not-found", desc);
    return;
  }
  if (!conn_authorised(c, a->path, HUB_RIGHT_SEND)) {
    refuse(l, "amqp:unauthorized-access",
           "Unauthorized access. 'Send' claim(s) are required "
           "to perform this operation; put a token on $cbs first.");
    return;
  }
  hub_link *hl = link_new(c, l, L_SEND);
  hl->ent = ent;
  snprintf(hl->path, sizeof hl->path, "%s", a->path);
  hl->rights = HUB_RIGHT_SEND;
  hl->part = a->part;
  pn_link_open(l);
  top_up_credit(c, l);
}

static void append_done(void *arg, int status, int64_t first_seq) {
  pending *p = arg;
  (void)first_seq;
  hub_conn *c = p->c;
  if (c) {
    if (p->d) {
      if (status == 0) {
        pn_delivery_update(p->d, PN_ACCEPTED);
      } else {
        pn_condition_t *k = pn_disposition_condition(pn_delivery_local(p->d));
        pn_condition_set_name(k, "amqp:internal-error");
        pn_condition_set_description(k, qs_strerror(status));
        pn_delivery_update(p->d, PN_REJECTED);
      }
      pn_delivery_settle(p->d);
    }
    for (pending **pp = &c->pendings; *pp; pp = &(*pp)->next)
      if (*pp == p) {
        *pp = p->next;
        break;
      }
    wake(c);
  }
  free(p);
}

static void reject(pn_delivery_t *d, const char *cond, const char *desc) {
  pn_condition_t *k = pn_disposition_condition(pn_delivery_local(d));
  pn_condition_set_name(k, cond);
  pn_condition_set_description(k, desc);
  pn_delivery_update(d, PN_REJECTED);
  pn_delivery_settle(d);
}

static void on_event_data(hub_link *hl, pn_delivery_t *d) {
  hub_conn *c = hl->c;
  hub_broker *b = c->b;
  hub_evmsg_info info;
  int rc = hub_evmsg_inspect(hl->buf, hl->len, &info);
  if (rc < 0) {
    reject(d, rc == QS_ERR_TOOBIG ? "amqp:invalid-field" : "amqp:decode-error",
           rc == QS_ERR_TOOBIG ? "The partition key is longer than 128 characters."
                               : "The message is not a valid AMQP message.");
    return;
  }
  size_t n = info.n_events;
  hub_record *recs = qs_xcalloc(n, sizeof *recs);
  if (info.is_batch) {
    size_t pos = info.body_pos, i = 0;
    const uint8_t *ev;
    size_t evl;
    while (i < n && hub_evmsg_batch_next(hl->buf, hl->len, &pos, &ev, &evl) == 1) {
      recs[i].payload = ev;
      recs[i].len = evl;
      i++;
    }
    n = i;
  } else {
    recs[0].payload = hl->buf;
    recs[0].len = hl->len;
  }
  for (size_t i = 0; i < n; i++) {
    recs[i].pkey = info.pkey;
    recs[i].pkey_len = info.pkey_len;
  }
  int part = hl->part;
  if (part < 0)
    part = info.pkey ? hub_partition_for_key(info.pkey, info.pkey_len, hl->ent->partition_count)
                     : (int)(b->rr++ % (uint32_t)hl->ent->partition_count);
  pending *p = qs_xcalloc(1, sizeof *p);
  p->c = c;
  p->link = hl;
  p->d = d;
  rc = n ? b->cfg.store.append(b->cfg.store.ctx, hl->ent->name, part, recs, n, append_done, p)
         : QS_ERR_PARSE;
  free(recs);
  if (rc < 0) {
    free(p);
    reject(d, "amqp:internal-error", "The event could not be stored.");
    return;
  }
  p->next = c->pendings;
  c->pendings = p;
}

/* ---------------- $cbs / $management ---------------- */

static hub_link *find_reply_link(hub_conn *c, pn_session_t *s, link_kind k, const char *reply_to) {
  if (reply_to)
    for (hub_link *hl = c->links; hl; hl = hl->next) {
      if (hl->kind != k)
        continue;
      const char *ta = pn_terminus_get_address(pn_link_remote_target(hl->l));
      if (strcmp(pn_link_name(hl->l), reply_to) == 0 || (ta && strcmp(ta, reply_to) == 0))
        return hl;
    }
  for (hub_link *hl = c->links; hl; hl = hl->next)
    if (hl->kind == k && pn_link_session(hl->l) == s)
      return hl;
  return NULL;
}

static void send_reply(hub_conn *c, hub_link *out, pn_message_t *m) {
  if (!out)
    return; /* nowhere to answer: the request is still accepted */
  char stackbuf[4096];
  char *buf = stackbuf;
  size_t cap = sizeof stackbuf, len = cap;
  while (pn_message_encode(m, buf, &len) == PN_OVERFLOW && cap < (1u << 20)) {
    if (buf != stackbuf)
      free(buf);
    cap *= 4;
    buf = qs_xmalloc(cap);
    len = cap;
  }
  uint8_t tag[8];
  uint64_t t = c->reply_tag++;
  for (int k = 0; k < 8; k++)
    tag[k] = (uint8_t)(t >> (56 - 8 * k));
  pn_delivery_t *d = pn_delivery(out->l, pn_dtag((const char *)tag, sizeof tag));
  pn_link_send(out->l, buf, len);
  pn_link_advance(out->l);
  if (pn_link_snd_settle_mode(out->l) == PN_SND_SETTLED)
    pn_delivery_settle(d);
  else if (pn_link_unsettled(out->l) > HUB_MAX_UNSETTLED)
    pn_delivery_settle(pn_unsettled_head(out->l));
  if (buf != stackbuf)
    free(buf);
}

static void on_request(hub_link *hl, pn_delivery_t *d) {
  hub_conn *c = hl->c;
  pn_message_clear(c->req);
  if (pn_message_decode(c->req, (const char *)hl->buf, hl->len) != 0) {
    reject(d, "amqp:decode-error", "The request is not a valid AMQP message.");
    return;
  }
  pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  const char *reply_to = pn_message_get_reply_to(c->req);
  pn_session_t *s = pn_link_session(hl->l);
  if (hl->kind == L_CBS_IN) {
    hub_cbs_grant g;
    if (hub_cbs_put_token(&c->b->cfg, c->req, now_ms(c->b), c->reply, &g) == 202)
      conn_add_grant(c, &g);
    /* reply-to is unreliable for $cbs: use the session's $cbs reply link */
    send_reply(c, find_reply_link(c, s, L_CBS_OUT, NULL), c->reply);
  } else {
    hub_mgmt_handle(&c->b->cfg, c->req, c->reply, mgmt_authorised, c);
    send_reply(c, find_reply_link(c, s, L_MGMT_OUT, reply_to), c->reply);
  }
}

/* ---------------- dispatch ---------------- */

static void on_link_remote_open(hub_conn *c, pn_link_t *l) {
  if (pn_link_state(l) & PN_LOCAL_ACTIVE)
    return;
  hub_broker *b = c->b;
  pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
  pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
  pn_link_set_max_message_size(l, b->cfg.max_message_size);
  pn_data_t *props = pn_link_properties(l);
  pn_data_clear(props);
  pn_data_put_map(props);
  bool incoming = pn_link_is_receiver(l); /* the client sends on it */
  size_t alen;
  const char *addr =
      terminus_address(incoming ? pn_link_remote_target(l) : pn_link_remote_source(l), &alen);
  hub_addr a;
  char desc[HUB_PATH_MAX + 64];
  if (!addr || hub_addr_parse(addr, alen, &a) < 0 || a.kind == HUB_ADDR_NAMESPACE) {
    snprintf(desc, sizeof desc, "The messaging entity '%.*s' could not be found.",
             (int)(alen > HUB_PATH_MAX ? HUB_PATH_MAX : alen), addr ? addr : "");
    refuse(l, "amqp:not-found", desc);
    return;
  }
  if (c->n_links >= HUB_MAX_LINKS) {
    refuse(l, "amqp:resource-limit-exceeded", "Too many links on this connection.");
    return;
  }
  if (a.kind == HUB_ADDR_CBS || a.kind == HUB_ADDR_MGMT) {
    if (a.kind == HUB_ADDR_MGMT && a.hub[0] && !b->cfg.entity_lookup(b->cfg.entity_ctx, a.hub)) {
      snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.", addr);
      refuse(l, "amqp:not-found", desc);
      return;
    }
    link_kind k = a.kind == HUB_ADDR_CBS ? (incoming ? L_CBS_IN : L_CBS_OUT)
                                         : (incoming ? L_MGMT_IN : L_MGMT_OUT);
    link_new(c, l, k);
    pn_link_open(l);
    if (incoming)
      top_up_credit(c, l);
    return;
  }
  if (incoming && (a.kind == HUB_ADDR_HUB || a.kind == HUB_ADDR_PARTITION)) {
    open_producer(c, l, &a);
    return;
  }
  if (!incoming && a.kind == HUB_ADDR_CG_PARTITION) {
    open_consumer(c, l, &a);
    return;
  }
  snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.", addr);
  refuse(l, "amqp:not-found", desc);
}

static void on_incoming_delivery(hub_link *hl, pn_delivery_t *d) {
  hub_conn *c = hl->c;
  pn_link_t *l = hl->l;
  if (!pn_delivery_readable(d))
    return; /* an update of a delivery already handled */
  uint64_t max = c->b->cfg.max_message_size;
  char chunk[16384];
  ssize_t r;
  while ((r = pn_link_recv(l, chunk, sizeof chunk)) > 0) {
    if (hl->oversize || hl->len + (size_t)r > max) {
      hl->oversize = true;
      continue;
    }
    if (hl->len + (size_t)r > hl->cap) {
      hl->cap = (hl->len + (size_t)r) * 2;
      if (hl->cap > max)
        hl->cap = max;
      hl->buf = qs_xrealloc(hl->buf, hl->cap);
    }
    memcpy(hl->buf + hl->len, chunk, (size_t)r);
    hl->len += (size_t)r;
  }
  if (pn_delivery_aborted(d)) {
    pn_delivery_settle(d);
    hl->len = 0;
    hl->oversize = false;
    top_up_credit(c, l);
    return;
  }
  if (pn_delivery_partial(d))
    return;
  pn_link_advance(l);
  if (hl->oversize) {
    char desc[128];
    snprintf(desc, sizeof desc, "The received message exceeds the limit of %llu bytes.",
             (unsigned long long)max);
    reject(d, "amqp:link:message-size-exceeded", desc);
  } else if (hl->kind == L_SEND) {
    on_event_data(hl, d);
  } else if (hl->kind == L_CBS_IN || hl->kind == L_MGMT_IN) {
    on_request(hl, d);
  } else {
    reject(d, "amqp:not-allowed", "This link does not accept messages.");
  }
  /* event buffers are copied by the store; request buffers are decoded */
  hl->len = 0;
  hl->oversize = false;
  if (hl->cap > 65536) {
    free(hl->buf);
    hl->buf = NULL;
    hl->cap = 0;
  }
  top_up_credit(c, l);
}

static void on_link_closed(pn_link_t *l, bool detach_only) {
  hub_link *hl = link_of(l);
  if (hl)
    link_free(hl);
  if (!(pn_link_state(l) & PN_LOCAL_CLOSED)) {
    if (detach_only)
      pn_link_detach(l);
    else
      pn_link_close(l);
  }
}

void hub_conn_handle(hub_conn *c, pn_event_t *e) {
  switch (pn_event_type(e)) {
  case PN_CONNECTION_REMOTE_OPEN: {
    pn_connection_t *cn = pn_event_connection(e);
    if (!(pn_connection_state(cn) & PN_LOCAL_ACTIVE))
      pn_connection_open(cn);
    break;
  }
  case PN_SESSION_REMOTE_OPEN: {
    pn_session_t *s = pn_event_session(e);
    if (!(pn_session_state(s) & PN_LOCAL_ACTIVE))
      pn_session_open(s);
    break;
  }
  case PN_LINK_REMOTE_OPEN:
    on_link_remote_open(c, pn_event_link(e));
    break;
  case PN_LINK_FLOW: {
    hub_link *hl = link_of(pn_event_link(e));
    if (hl && hl->kind == L_RECV)
      deliver(hl);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    hub_link *hl = link_of(pn_delivery_link(d));
    if (!hl)
      break;
    if (pn_link_is_receiver(hl->l)) {
      on_incoming_delivery(hl, d);
    } else {
      if (pn_delivery_remote_state(d) || pn_delivery_settled(d))
        pn_delivery_settle(d);
      if (hl->kind == L_RECV)
        deliver(hl);
    }
    break;
  }
  case PN_LINK_REMOTE_CLOSE:
    on_link_closed(pn_event_link(e), false);
    break;
  case PN_LINK_REMOTE_DETACH:
    on_link_closed(pn_event_link(e), true);
    break;
  case PN_SESSION_REMOTE_CLOSE: {
    pn_session_t *s = pn_event_session(e);
    for (hub_link *hl = c->links, *nx; hl; hl = nx) {
      nx = hl->next;
      if (pn_link_session(hl->l) == s)
        link_free(hl);
    }
    if (!(pn_session_state(s) & PN_LOCAL_CLOSED))
      pn_session_close(s);
    break;
  }
  case PN_CONNECTION_REMOTE_CLOSE: {
    pn_connection_t *cn = pn_event_connection(e);
    if (!(pn_connection_state(cn) & PN_LOCAL_CLOSED))
      pn_connection_close(cn);
    break;
  }
  case PN_TRANSPORT:
    hub_conn_flush(c);
    break;
  case PN_TRANSPORT_CLOSED:
    while (c->links)
      link_free(c->links);
    break;
  default:
    break;
  }
}

void hub_conn_flush(hub_conn *c) {
  for (hub_link *hl = c->links; hl; hl = hl->next)
    if (hl->kind == L_RECV)
      deliver(hl);
}

/* Detach entity links whose token lapsed; returns the next grant expiry (ms)
 * that still covers a live link, or -1. */
static int64_t expire_links(hub_conn *c) {
  int64_t next = -1;
  for (hub_link *hl = c->links, *nx; hl; hl = nx) {
    nx = hl->next;
    if (hl->kind != L_SEND && hl->kind != L_RECV)
      continue;
    if (!conn_authorised(c, hl->path, hl->rights)) {
      pn_link_t *l = hl->l;
      link_free(hl);
      pn_condition_t *k = pn_link_condition(l);
      pn_condition_set_name(k, "amqp:unauthorized-access");
      pn_condition_set_description(k, "The token for this entity expired; put a new one on $cbs.");
      pn_link_close(l);
      wake(c);
      continue;
    }
    for (size_t i = 0; i < c->n_grants; i++) {
      const hub_cbs_grant *g = &c->grants[i].g;
      if (path_covers(g->path, hl->path) && (next < 0 || g->expires_s * 1000 < next))
        next = g->expires_s * 1000;
    }
  }
  return next;
}

int64_t hub_conn_tick(hub_conn *c, int64_t now) {
  if (c->closing)
    return -1;
  if (c->ever_authorised)
    return expire_links(c);
  int64_t deadline = c->started_ms + c->b->cfg.cbs_timeout_ms;
  if (now < deadline)
    return deadline;
  c->closing = true;
  pn_connection_t *cn = c->d->connection;
  pn_condition_t *k = pn_connection_condition(cn);
  pn_condition_set_name(k, "amqp:unauthorized-access");
  pn_condition_set_description(k, "No security token was put on $cbs in time.");
  if (!(pn_connection_state(cn) & PN_LOCAL_ACTIVE))
    pn_connection_open(cn);
  pn_connection_close(cn);
  wake(c);
  return -1;
}

hub_conn *hub_conn_new(hub_broker *b, pn_connection_driver_t *d, hub_conn_wake_fn wakefn,
                       void *wake_arg) {
  hub_conn *c = qs_xcalloc(1, sizeof *c);
  c->b = b;
  c->d = d;
  c->wake = wakefn;
  c->wake_arg = wake_arg;
  c->started_ms = now_ms(b);
  c->req = pn_message();
  c->reply = pn_message();
  if (!c->req || !c->reply)
    QS_FATAL("pn_message: out of memory");
  pn_transport_t *t = d->transport;
  pn_transport_set_server(t);
  pn_sasl_t *sasl = pn_sasl(t);
  pn_sasl_allowed_mechs(sasl, "ANONYMOUS");
  pn_transport_require_auth(t, false);
  pn_transport_set_max_frame(t, b->cfg.max_frame);
  pn_transport_set_idle_timeout(t, b->cfg.idle_timeout_ms);
  pn_connection_set_container(d->connection, b->cfg.container_id);
  c->next = b->conns;
  if (b->conns)
    b->conns->prev = c;
  b->conns = c;
  return c;
}

void hub_conn_free(hub_conn *c) {
  if (!c)
    return;
  while (c->links)
    link_free(c->links);
  for (pending *p = c->pendings; p; p = p->next) /* freed by append_done later */
    p->c = NULL;
  hub_broker *b = c->b;
  if (c->prev)
    c->prev->next = c->next;
  else
    b->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  pn_message_free(c->req);
  pn_message_free(c->reply);
  free(c);
}

static int64_t default_clock(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hub_broker_new(const hub_broker_config *cfg, hub_broker **out) {
  if (!cfg || !out || !cfg->auth_verify || !cfg->entity_lookup || !cfg->store.append ||
      !cfg->store.read || !cfg->store.info || !cfg->store.seek_offset || !cfg->store.seek_seq ||
      !cfg->store.seek_time || !cfg->store.set_listener)
    return QS_ERR_INVALID;
  hub_broker *b = qs_xcalloc(1, sizeof *b);
  b->cfg = *cfg;
  if (!b->cfg.container_id)
    b->cfg.container_id = "quakestream-hub";
  if (!b->cfg.now_ms)
    b->cfg.now_ms = default_clock;
  if (!b->cfg.link_credit)
    b->cfg.link_credit = 300;
  if (!b->cfg.max_message_size)
    b->cfg.max_message_size = 1u << 20;
  if (!b->cfg.max_frame)
    b->cfg.max_frame = 65536;
  if (!b->cfg.idle_timeout_ms)
    b->cfg.idle_timeout_ms = 60000;
  if (!b->cfg.cbs_timeout_ms)
    b->cfg.cbs_timeout_ms = 20000;
  b->cfg.store.set_listener(b->cfg.store.ctx, store_newdata, b);
  *out = b;
  return 0;
}

void hub_broker_free(hub_broker *b) {
  if (!b)
    return;
  if (b->conns)
    QS_FATAL("hub_broker_free with live connections");
  b->cfg.store.set_listener(b->cfg.store.ctx, NULL, NULL);
  free(b);
}
