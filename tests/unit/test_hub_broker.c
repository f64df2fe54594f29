/* test_hub_broker.c — the broker logic against an in-memory client.
 *
 * Two pn_connection_driver_t (a test client and the broker) pump bytes into
 * each other in memory; time is explicit (f->now); the memory store makes
 * appends durable only when the test calls hub_store_mem_flush().
 * Fake auth: tokens "sig=good;se=<epoch s>;aud=<audience>" verify when sig is
 * good, se is in the future and aud equals the put-token audience.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "broker.h"
#include "evmsg.h"
#include "filter.h"
#include "qs/error.h"
#include "store.h"

#define HUB "earthquake-events"
#define AUD "sb://127.0.0.1:5672/" HUB
#define T0_MS 1764000000000LL
#define MAXRX 4096

typedef struct rx {
  pn_link_t *link;
  uint8_t *bytes;
  size_t len;
} rx;

typedef struct fixture {
  int64_t now;
  hub_store_mem *mem;
  hub_broker *b;
  hub_entity ents[2];
  pn_connection_driver_t srv, cli;
  hub_conn *hc;
  int wakes;
  bool no_settle; /* client leaves received deliveries unsettled */
  rx rxs[MAXRX];
  size_t nrx;
  uint64_t tag;
} fixture;

static const char *const cgs[] = {"analytics"};

static int64_t clock_fn(void *ctx) { return ((fixture *)ctx)->now; }

static const hub_entity *lookup(void *ctx, const char *name) {
  fixture *f = ctx;
  for (int i = 0; i < 2; i++)
    if (strcasecmp(f->ents[i].name, name) == 0)
      return &f->ents[i];
  return NULL;
}

static int verify(void *ctx, const char *token, const char *audience, int64_t now_s,
                  unsigned rights, hub_auth_result *out) {
  (void)ctx;
  (void)rights;
  long long se = 0;
  char sig[16] = "", aud[512] = "";
  if (sscanf(token, "sig=%15[^;];se=%lld;aud=%511s", sig, &se, aud) != 3 ||
      strcmp(sig, "good") != 0) {
    snprintf(out->reason, sizeof out->reason, "bad signature");
    return QS_ERR_AUTH;
  }
  if (strcmp(aud, audience) != 0) {
    snprintf(out->reason, sizeof out->reason, "audience mismatch");
    return QS_ERR_AUTH;
  }
  if (se <= now_s) {
    snprintf(out->reason, sizeof out->reason, "token expired");
    return QS_ERR_EXPIRED;
  }
  out->expires_s = se;
  out->rights = HUB_RIGHT_SEND | HUB_RIGHT_LISTEN | HUB_RIGHT_MANAGE;
  return 0;
}

static void on_wake(void *arg) { ((fixture *)arg)->wakes++; }

/* ---------------- pumping ---------------- */

static size_t move(pn_connection_driver_t *from, pn_connection_driver_t *to) {
  pn_bytes_t wb = pn_connection_driver_write_buffer(from);
  size_t moved = 0;
  if (wb.size) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(to);
    size_t n = wb.size < rb.size ? wb.size : rb.size;
    if (n) {
      memcpy(rb.start, wb.start, n);
      pn_connection_driver_read_done(to, n);
      pn_connection_driver_write_done(from, n);
      moved = n;
    }
  } else if (pn_connection_driver_write_closed(from) && !pn_connection_driver_read_closed(to)) {
    pn_connection_driver_read_close(to);
    moved = 1;
  }
  return moved;
}

static void client_event(fixture *f, pn_event_t *e) {
  if (pn_event_type(e) != PN_DELIVERY)
    return;
  pn_delivery_t *d = pn_event_delivery(e);
  pn_link_t *l = pn_delivery_link(d);
  if (!pn_link_is_receiver(l) || !pn_delivery_readable(d) || pn_delivery_partial(d))
    return;
  size_t n = pn_delivery_pending(d);
  assert_true(f->nrx < MAXRX);
  rx *r = &f->rxs[f->nrx++];
  r->link = l;
  r->bytes = malloc(n ? n : 1);
  r->len = (size_t)pn_link_recv(l, (char *)r->bytes, n);
  pn_link_advance(l);
  if (!f->no_settle) {
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
  }
}

static void pump(fixture *f) {
  for (int i = 0; i < 10000; i++) {
    bool busy = false;
    pn_event_t *e;
    while ((e = pn_connection_driver_next_event(&f->srv))) {
      hub_conn_handle(f->hc, e);
      busy = true;
    }
    while ((e = pn_connection_driver_next_event(&f->cli))) {
      client_event(f, e);
      busy = true;
    }
    if (move(&f->cli, &f->srv))
      busy = true;
    if (move(&f->srv, &f->cli))
      busy = true;
    if (!busy)
      return;
  }
  fail_msg("pump did not settle");
}

/* ---------------- setup ---------------- */

static int setup_with(void **state, bool client_sasl) {
  fixture *f = calloc(1, sizeof *f);
  f->now = T0_MS;
  f->ents[0] = (hub_entity){HUB, 4, T0_MS - 86400000, cgs, 1};
  f->ents[1] = (hub_entity){"weather-events", 2, T0_MS, NULL, 0};
  const char *hubs[] = {HUB, "weather-events"};
  int parts[] = {4, 2};
  f->mem = hub_store_mem_new(hubs, parts, 2);
  hub_store_mem_set_time(f->mem, T0_MS);
  hub_broker_config cfg = {0};
  cfg.container_id = "test-hub";
  cfg.auth_verify = verify;
  cfg.entity_lookup = lookup;
  cfg.entity_ctx = f;
  cfg.store = hub_store_mem_vtable(f->mem);
  cfg.now_ms = clock_fn;
  cfg.clock_ctx = f;
  assert_int_equal(hub_broker_new(&cfg, &f->b), 0);
  assert_int_equal(pn_connection_driver_init(&f->srv, NULL, NULL), 0);
  f->hc = hub_conn_new(f->b, &f->srv, on_wake, f);
  assert_int_equal(pn_connection_driver_bind(&f->srv), 0);
  assert_int_equal(pn_connection_driver_init(&f->cli, NULL, NULL), 0);
  if (client_sasl)
    pn_sasl_allowed_mechs(pn_sasl(f->cli.transport), "ANONYMOUS");
  pn_connection_set_container(f->cli.connection, "test-client");
  pn_connection_set_hostname(f->cli.connection, "127.0.0.1");
  assert_int_equal(pn_connection_driver_bind(&f->cli), 0);
  pn_connection_open(f->cli.connection);
  pump(f);
  *state = f;
  return 0;
}

static int setup(void **state) { return setup_with(state, true); }
static int setup_nosasl(void **state) { return setup_with(state, false); }

static int teardown(void **state) {
  fixture *f = *state;
  pn_connection_close(f->cli.connection);
  pump(f);
  hub_conn_free(f->hc);
  pn_connection_driver_destroy(&f->srv);
  pn_connection_driver_destroy(&f->cli);
  hub_broker_free(f->b);
  hub_store_mem_free(f->mem);
  for (size_t i = 0; i < f->nrx; i++)
    free(f->rxs[i].bytes);
  free(f);
  return 0;
}

/* ---------------- client helpers ---------------- */

static pn_session_t *session(fixture *f) {
  pn_session_t *s = pn_session(f->cli.connection);
  pn_session_open(s);
  return s;
}

static pn_link_t *sender(pn_session_t *s, const char *name, const char *target) {
  pn_link_t *l = pn_sender(s, name);
  pn_terminus_set_address(pn_link_target(l), target);
  pn_link_open(l);
  return l;
}

static pn_link_t *receiver(pn_session_t *s, const char *name, const char *source, int credit) {
  pn_link_t *l = pn_receiver(s, name);
  pn_terminus_set_address(pn_link_source(l), source);
  pn_link_open(l);
  if (credit)
    pn_link_flow(l, credit);
  return l;
}

static pn_delivery_t *send_bytes(fixture *f, pn_link_t *l, const uint8_t *b, size_t n) {
  char tag[16];
  int tl = snprintf(tag, sizeof tag, "%llu", (unsigned long long)f->tag++);
  pn_delivery_t *d = pn_delivery(l, pn_dtag(tag, (size_t)tl));
  pn_link_send(l, (const char *)b, n);
  pn_link_advance(l);
  return d;
}

static pn_delivery_t *send_message(fixture *f, pn_link_t *l, pn_message_t *m) {
  size_t cap = 1 << 21, len = cap;
  uint8_t *buf = malloc(cap);
  assert_int_equal(pn_message_encode(m, (char *)buf, &len), 0);
  pn_delivery_t *d = send_bytes(f, l, buf, len);
  free(buf);
  return d;
}

static void put_prop(pn_data_t *p, const char *k, const char *v) {
  pn_data_put_string(p, pn_bytes(strlen(k), k));
  pn_data_put_string(p, pn_bytes(strlen(v), v));
}

/* Received messages on link l, from index *from on. */
static rx *next_rx(fixture *f, pn_link_t *l, size_t *from) {
  for (size_t i = *from; i < f->nrx; i++)
    if (f->rxs[i].link == l) {
      *from = i + 1;
      return &f->rxs[i];
    }
  return NULL;
}

static size_t count_rx(fixture *f, pn_link_t *l) {
  size_t n = 0;
  for (size_t i = 0; i < f->nrx; i++)
    n += f->rxs[i].link == l;
  return n;
}

static int32_t app_int(pn_message_t *m, const char *key) {
  pn_data_t *p = pn_message_properties(m);
  pn_data_rewind(p);
  pn_data_next(p);
  size_t n = pn_data_get_map(p);
  pn_data_enter(p);
  for (size_t i = 0; i < n; i += 2) {
    pn_data_next(p);
    pn_bytes_t k = pn_data_get_string(p);
    pn_data_next(p);
    if (k.size == strlen(key) && memcmp(k.start, key, k.size) == 0) {
      assert_int_equal(pn_data_type(p), PN_INT);
      int32_t v = pn_data_get_int(p);
      pn_data_exit(p);
      return v;
    }
  }
  pn_data_exit(p);
  fail_msg("no %s", key);
  return 0;
}

typedef struct cbs_pair {
  pn_session_t *s;
  pn_link_t *req, *rsp;
  size_t seen;
} cbs_pair;

static void pair_open(fixture *f, cbs_pair *p, const char *node) {
  p->s = session(f);
  p->req = sender(p->s, "req", node);
  char name[64];
  snprintf(name, sizeof name, "%s-reply", node);
  p->rsp = receiver(p->s, name, node, 100);
  p->seen = 0;
  pump(f);
  assert_true(pn_link_state(p->req) & PN_REMOTE_ACTIVE);
  assert_int_equal(pn_link_credit(p->req), 300);
}

/* Send a request and decode the one reply into *reply. */
static void pair_call(fixture *f, cbs_pair *p, pn_message_t *req, pn_message_t *reply) {
  pn_delivery_t *d = send_message(f, p->req, req);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  pn_delivery_settle(d);
  rx *r = next_rx(f, p->rsp, &p->seen);
  assert_non_null(r);
  assert_int_equal(pn_message_decode(reply, (const char *)r->bytes, r->len), 0);
}

static pn_atom_t str_id(const char *s) {
  pn_atom_t a = {.type = PN_STRING};
  a.u.as_bytes = pn_bytes(strlen(s), s);
  return a;
}

static size_t encode_event(uint8_t *out, size_t cap, const char *pkey, const char *body,
                           const char *msgid);

static pn_atom_t ulong_id(uint64_t v) {
  pn_atom_t a = {.type = PN_ULONG};
  a.u.as_ulong = v;
  return a;
}

static char tokbuf[4][600];

static const char *token(int slot, const char *sig, int64_t se, const char *aud) {
  snprintf(tokbuf[slot], sizeof tokbuf[slot], "sig=%s;se=%lld;aud=%s", sig, (long long)se, aud);
  return tokbuf[slot];
}

static int put_token(fixture *f, cbs_pair *p, const char *aud, const char *tok, pn_atom_t id,
                     bool python, pn_atom_t *corr) {
  pn_message_t *m = pn_message(), *reply = pn_message();
  pn_message_set_id(m, id);
  if (!python) {
    pn_message_set_address(m, "$cbs");
    pn_message_set_reply_to(m, "cbs-reply");
  }
  pn_data_t *pr = pn_message_properties(m);
  pn_data_put_map(pr);
  pn_data_enter(pr);
  put_prop(pr, "operation", "put-token");
  put_prop(pr, "name", aud);
  if (python) {
    put_prop(pr, "type", "jwt");
    pn_data_put_string(pr, pn_bytes(strlen("expiration"), "expiration"));
    pn_data_put_timestamp(pr, f->now + 3600000);
  } else {
    put_prop(pr, "type", "servicebus.windows.net:sastoken");
  }
  pn_data_exit(pr);
  pn_data_put_string(pn_message_body(m), pn_bytes(strlen(tok), tok));
  pair_call(f, p, m, reply);
  int code = app_int(reply, "status-code");
  if (corr) {
    pn_atom_t c = pn_message_get_correlation_id(reply);
    *corr = c;
    if (c.type == PN_STRING) { /* copy out before the message is freed */
      static char keep[128];
      snprintf(keep, sizeof keep, "%.*s", (int)c.u.as_bytes.size, c.u.as_bytes.start);
      corr->u.as_bytes = pn_bytes(strlen(keep), keep);
    }
  }
  pn_message_free(m);
  pn_message_free(reply);
  return code;
}

static void authorise(fixture *f, const char *aud) {
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  assert_int_equal(put_token(f, &p, aud, token(0, "good", f->now / 1000 + 3600, aud),
                             str_id("auth"), false, NULL),
                   202);
}

static const char *remote_cond(pn_link_t *l) {
  return pn_condition_get_name(pn_link_remote_condition(l));
}

/* ---------------- tests: connection, CBS ---------------- */

static void test_sasl_anonymous_and_open_succeed(void **state) {
  fixture *f = *state;
  assert_true(pn_connection_state(f->cli.connection) & PN_REMOTE_ACTIVE);
  assert_string_equal(pn_connection_remote_container(f->cli.connection), "test-hub");
  assert_int_equal(pn_transport_get_remote_max_frame(f->cli.transport), 65536);
  assert_string_equal(pn_sasl_get_mech(pn_sasl(f->srv.transport)), "ANONYMOUS");
  assert_int_equal(pn_sasl_outcome(pn_sasl(f->cli.transport)), PN_SASL_OK);
  /* proton advertises half its local idle timeout (60 s) to be safe */
  assert_int_equal(pn_transport_get_remote_idle_timeout(f->cli.transport), 30000);
}

static void test_client_without_sasl_can_open_and_authorise(void **state) {
  fixture *f = *state;
  assert_true(pn_connection_state(f->cli.connection) & PN_REMOTE_ACTIVE);
  authorise(f, AUD);
}

static void test_put_token_valid_bad_expired_wrong_audience(void **state) {
  fixture *f = *state;
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  int64_t s = f->now / 1000;
  pn_atom_t corr;
  assert_int_equal(
      put_token(f, &p, AUD, token(0, "good", s + 60, AUD), str_id("id-1"), false, &corr), 202);
  assert_int_equal(corr.type, PN_STRING);
  assert_memory_equal(corr.u.as_bytes.start, "id-1", 4);
  assert_int_equal(put_token(f, &p, AUD, token(0, "bad", s + 60, AUD), str_id("id-2"), false, NULL),
                   401);
  assert_int_equal(put_token(f, &p, AUD, token(0, "good", s - 1, AUD), str_id("id-3"), false, NULL),
                   401);
  assert_int_equal(put_token(f, &p, AUD, token(0, "good", s + 60, "sb://x/weather-events"),
                             str_id("id-4"), false, NULL),
                   401);
  assert_int_equal(put_token(f, &p, "sb://127.0.0.1/nohub",
                             token(0, "good", s + 60, "sb://127.0.0.1/nohub"), str_id("id-5"),
                             false, NULL),
                   404);
}

static void test_put_token_python_shape_echoes_ulong_id(void **state) {
  fixture *f = *state;
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  pn_atom_t corr;
  const char *aud = "sb://127.0.0.1:5671/" HUB;
  assert_int_equal(
      put_token(f, &p, aud, token(0, "good", f->now / 1000 + 60, aud), ulong_id(0), true, &corr),
      202);
  assert_int_equal(corr.type, PN_ULONG);
  assert_int_equal(corr.u.as_ulong, 0);
}

static void test_attach_without_token_is_unauthorized(void **state) {
  fixture *f = *state;
  pn_session_t *s = session(f);
  pn_link_t *l = sender(s, HUB, HUB);
  pn_link_t *r = receiver(s, "r", HUB "/ConsumerGroups/$Default/Partitions/0", 10);
  pump(f);
  assert_true(pn_link_state(l) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(l), "amqp:unauthorized-access");
  assert_true(pn_link_state(r) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(r), "amqp:unauthorized-access");
}

static void test_expired_token_no_longer_authorises(void **state) {
  fixture *f = *state;
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  assert_int_equal(
      put_token(f, &p, AUD, token(0, "good", f->now / 1000 + 10, AUD), str_id("a"), false, NULL),
      202);
  f->now += 11000;
  pn_link_t *l = sender(session(f), HUB, HUB);
  pump(f);
  assert_string_equal(remote_cond(l), "amqp:unauthorized-access");
  /* a refreshed token on the live connection authorises again */
  assert_int_equal(
      put_token(f, &p, AUD, token(0, "good", f->now / 1000 + 60, AUD), str_id("b"), false, NULL),
      202);
  l = sender(session(f), "again", HUB);
  pump(f);
  assert_true(pn_link_state(l) & PN_REMOTE_ACTIVE);
  assert_false(pn_link_state(l) & PN_REMOTE_CLOSED);
}

static void test_tick_detaches_links_whose_token_expired(void **state) {
  fixture *f = *state;
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  int64_t se = f->now / 1000 + 30;
  assert_int_equal(put_token(f, &p, AUD, token(0, "good", se, AUD), str_id("a"), false, NULL), 202);
  pn_link_t *l = sender(session(f), HUB, HUB);
  pump(f);
  assert_int_equal(hub_conn_tick(f->hc, f->now), se * 1000);
  pump(f);
  assert_false(pn_link_state(l) & PN_REMOTE_CLOSED);
  f->now = se * 1000;
  hub_conn_tick(f->hc, f->now);
  pump(f);
  assert_true(pn_link_state(l) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(l), "amqp:unauthorized-access");
  assert_false(pn_connection_state(f->cli.connection) & PN_REMOTE_CLOSED);
}

static void test_unknown_hub_is_not_found(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *l = sender(session(f), "x", "no-such-hub");
  pn_link_t *l2 = sender(session(f), "y", HUB "/Partitions/9");
  pump(f);
  assert_true(pn_link_state(l) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(l), "amqp:not-found");
  assert_string_equal(pn_condition_get_description(pn_link_remote_condition(l)),
                      "The messaging entity 'no-such-hub' could not be found.");
  assert_string_equal(remote_cond(l2), "amqp:not-found");
}

static void test_no_token_within_20s_closes_connection(void **state) {
  fixture *f = *state;
  int64_t next = hub_conn_tick(f->hc, f->now + 19999);
  assert_int_equal(next, T0_MS + 20000);
  pump(f);
  assert_false(pn_connection_state(f->cli.connection) & PN_REMOTE_CLOSED);
  assert_int_equal(hub_conn_tick(f->hc, f->now + 20000), -1);
  pump(f);
  assert_true(pn_connection_state(f->cli.connection) & PN_REMOTE_CLOSED);
  assert_string_equal(pn_condition_get_name(pn_connection_remote_condition(f->cli.connection)),
                      "amqp:unauthorized-access");
}

static void test_token_stops_the_20s_timer(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  assert_int_equal(hub_conn_tick(f->hc, f->now + 60000), -1);
  pump(f);
  assert_false(pn_connection_state(f->cli.connection) & PN_REMOTE_CLOSED);
}

/* ---------------- tests: management ---------------- */

static pn_message_t *mgmt_request(pn_atom_t id, const char *type, const char *name,
                                  const char *part, bool python) {
  pn_message_t *m = pn_message();
  pn_message_set_id(m, id);
  if (!python)
    pn_message_set_reply_to(m, "$management-reply");
  pn_data_t *pr = pn_message_properties(m);
  pn_data_put_map(pr);
  pn_data_enter(pr);
  put_prop(pr, "operation", "READ");
  put_prop(pr, "name", name);
  put_prop(pr, "type", type);
  if (part)
    put_prop(pr, "partition", part);
  pn_data_put_string(pr, pn_bytes(strlen("security_token"), "security_token"));
  if (python) { /* Python's odd described value: binary descriptor, int32 value */
    pn_data_put_described(pr);
    pn_data_enter(pr);
    pn_data_put_binary(pr, pn_bytes(5, "token"));
    pn_data_put_int(pr, 1234);
    pn_data_exit(pr);
  } else {
    pn_data_put_string(pr, pn_bytes(5, "token"));
  }
  pn_data_exit(pr);
  if (!python)
    pn_data_put_binary(pn_message_body(m), pn_bytes(2, "[]"));
  return m;
}

/* Find key in the reply body map; leaves the data positioned on the value. */
static pn_data_t *body_at(pn_message_t *m, const char *key) {
  pn_data_t *b = pn_message_body(m);
  pn_data_rewind(b);
  assert_true(pn_data_next(b));
  assert_int_equal(pn_data_type(b), PN_MAP);
  size_t n = pn_data_get_map(b);
  pn_data_enter(b);
  for (size_t i = 0; i < n; i += 2) {
    pn_data_next(b);
    pn_bytes_t k = pn_data_get_string(b);
    pn_data_next(b);
    if (k.size == strlen(key) && memcmp(k.start, key, k.size) == 0)
      return b;
  }
  fail_msg("no key %s", key);
  return NULL;
}

static void test_management_read_eventhub(void **state) {
  fixture *f = *state;
  authorise(f, AUD "/$management");
  cbs_pair p;
  pair_open(f, &p, "$management");
  pn_message_t *req = mgmt_request(str_id("m-1"), "com.microsoft:eventhub", HUB, NULL, false);
  pn_message_t *reply = pn_message();
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 200);
  assert_int_equal(pn_message_get_correlation_id(reply).type, PN_STRING);
  pn_data_t *b = body_at(reply, "partition_count");
  assert_int_equal(pn_data_type(b), PN_INT);
  assert_int_equal(pn_data_get_int(b), 4);
  b = body_at(reply, "created_at");
  assert_int_equal(pn_data_type(b), PN_TIMESTAMP);
  assert_int_equal(pn_data_get_timestamp(b), T0_MS - 86400000);
  b = body_at(reply, "partition_ids");
  assert_int_equal(pn_data_type(b), PN_ARRAY);
  assert_int_equal(pn_data_get_array_type(b), PN_STRING);
  assert_int_equal(pn_data_get_array(b), 4);
  pn_message_free(req);
  /* python-shaped request: ulong id, no reply-to, no body, odd token */
  req = mgmt_request(ulong_id(0), "com.microsoft:eventhub", HUB, NULL, true);
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 200);
  assert_int_equal(pn_message_get_correlation_id(reply).type, PN_ULONG);
  pn_message_free(req);
  /* unknown hub */
  req = mgmt_request(str_id("m-3"), "com.microsoft:eventhub", "nohub", NULL, false);
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 404);
  pn_message_free(req);
  pn_message_free(reply);
}

static void test_management_read_partition_empty_and_filled(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  cbs_pair p;
  pair_open(f, &p, "$management");
  pn_message_t *reply = pn_message();
  pn_message_t *req = mgmt_request(ulong_id(0), "com.microsoft:partition", HUB, "1", true);
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 200);
  pn_data_t *b = body_at(reply, "begin_sequence_number");
  assert_int_equal(pn_data_type(b), PN_LONG);
  assert_int_equal(pn_data_get_long(b), -1);
  b = body_at(reply, "last_enqueued_sequence_number");
  assert_int_equal(pn_data_get_long(b), -1);
  b = body_at(reply, "last_enqueued_offset");
  assert_int_equal(pn_data_type(b), PN_STRING);
  assert_memory_equal(pn_data_get_string(b).start, "-1", 2);
  b = body_at(reply, "last_enqueued_time_utc");
  assert_int_equal(pn_data_type(b), PN_TIMESTAMP);
  assert_int_equal(pn_data_get_timestamp(b), 0);
  b = body_at(reply, "is_partition_empty");
  assert_int_equal(pn_data_type(b), PN_BOOL);
  assert_true(pn_data_get_bool(b));
  pn_message_free(req);
  /* two events in partition 1 */
  pn_link_t *l = sender(session(f), "p1", HUB "/Partitions/1");
  pump(f);
  uint8_t ev[256];
  size_t el = encode_event(ev, sizeof ev, NULL, "x", NULL);
  send_bytes(f, l, ev, el);
  send_bytes(f, l, ev, el);
  pump(f);
  hub_store_mem_set_time(f->mem, T0_MS + 5);
  hub_store_mem_flush(f->mem);
  pump(f);
  req = mgmt_request(str_id("q"), "com.microsoft:partition", HUB, "1", false);
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 200);
  assert_int_equal(pn_message_get_correlation_id(reply).type, PN_STRING);
  assert_int_equal(pn_data_get_long(body_at(reply, "begin_sequence_number")), 0);
  assert_int_equal(pn_data_get_long(body_at(reply, "last_enqueued_sequence_number")), 1);
  assert_int_equal(pn_data_get_timestamp(body_at(reply, "last_enqueued_time_utc")), T0_MS + 5);
  assert_false(pn_data_get_bool(body_at(reply, "is_partition_empty")));
  pn_message_free(req);
  req = mgmt_request(str_id("r"), "com.microsoft:partition", HUB, "4", false);
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 404);
  pn_message_free(req);
  pn_message_free(reply);
}

static void test_management_without_token_is_401(void **state) {
  fixture *f = *state;
  cbs_pair p;
  pair_open(f, &p, "$management");
  pn_message_t *req = mgmt_request(str_id("m-1"), "com.microsoft:eventhub", HUB, NULL, false);
  pn_message_t *reply = pn_message();
  pair_call(f, &p, req, reply);
  assert_int_equal(app_int(reply, "status-code"), 401);
  pn_message_free(req);
  pn_message_free(reply);
}

/* ---------------- tests: send ---------------- */

static size_t encode_event(uint8_t *out, size_t cap, const char *pkey, const char *body,
                           const char *msgid) {
  pn_message_t *m = pn_message();
  pn_data_t *ma = pn_message_annotations(m);
  pn_data_put_map(ma);
  if (pkey) {
    pn_data_enter(ma);
    pn_data_put_symbol(ma, pn_bytes(strlen("x-opt-partition-key"), "x-opt-partition-key"));
    pn_data_put_string(ma, pn_bytes(strlen(pkey), pkey));
    pn_data_exit(ma);
  }
  if (msgid)
    pn_message_set_id(m, str_id(msgid));
  pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
  size_t len = cap;
  assert_int_equal(pn_message_encode(m, (char *)out, &len), 0);
  pn_message_free(m);
  return len;
}

static size_t encode_batch(uint8_t *out, size_t cap, const char *pkey, const char *const *bodies,
                           size_t n) {
  pn_data_t *d = pn_data(0);
  pn_data_put_described(d);
  pn_data_enter(d);
  pn_data_put_ulong(d, 0x70);
  pn_data_put_list(d);
  pn_data_exit(d);
  pn_data_put_described(d);
  pn_data_enter(d);
  pn_data_put_ulong(d, 0x72);
  pn_data_put_map(d);
  if (pkey) {
    pn_data_enter(d);
    pn_data_put_symbol(d, pn_bytes(strlen("x-opt-partition-key"), "x-opt-partition-key"));
    pn_data_put_string(d, pn_bytes(strlen(pkey), pkey));
    pn_data_exit(d);
  }
  pn_data_exit(d);
  for (size_t i = 0; i < n; i++) {
    uint8_t ev[512];
    size_t el = encode_event(ev, sizeof ev, pkey, bodies[i], NULL);
    pn_data_put_described(d);
    pn_data_enter(d);
    pn_data_put_ulong(d, 0x75);
    pn_data_put_binary(d, pn_bytes(el, (const char *)ev));
    pn_data_exit(d);
  }
  ssize_t r = pn_data_encode(d, (char *)out, cap);
  assert_true(r > 0);
  pn_data_free(d);
  return (size_t)r;
}

static void test_batch_stored_per_data_section_accepted_when_durable(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *l = sender(session(f), HUB, HUB);
  pump(f);
  assert_int_equal(pn_link_credit(l), 300);
  assert_int_equal(pn_link_remote_max_message_size(l), 1u << 20);
  const char *bodies[] = {"{\"mag\":4.2}", "\"plain string body\"", "{\"mag\":1}"};
  uint8_t batch[4096];
  size_t bl = encode_batch(batch, sizeof batch, "quake-ca", bodies, 3);
  pn_delivery_t *d = send_bytes(f, l, batch, bl);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), 0); /* not durable yet: no outcome */
  assert_false(pn_delivery_settled(d));
  assert_int_equal(hub_store_mem_flush(f->mem), 1);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  assert_true(pn_delivery_settled(d));
  int part = hub_partition_for_key("quake-ca", 8, 4);
  assert_int_equal(hub_store_mem_count(f->mem, HUB, part), 3);
  hub_store st = hub_store_mem_vtable(f->mem);
  hub_stored out[4];
  size_t n;
  assert_int_equal(st.read(st.ctx, HUB, part, 0, 4, 1 << 20, out, &n), 0);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(out[i].pkey_len, 8);
    assert_memory_equal(out[i].pkey, "quake-ca", 8);
    uint8_t ev[512];
    size_t el = encode_event(ev, sizeof ev, "quake-ca", bodies[i], NULL);
    assert_int_equal(out[i].len, el);
    assert_memory_equal(out[i].payload, ev, el);
  }
  /* per-key affinity: the same key lands on the same partition again */
  d = send_bytes(f, l, batch, bl);
  pump(f);
  hub_store_mem_flush(f->mem);
  pump(f);
  assert_int_equal(hub_store_mem_count(f->mem, HUB, part), 6);
  pn_delivery_settle(d);
}

static void test_single_message_to_partition_is_one_event(void **state) {
  fixture *f = *state;
  authorise(f, AUD "/Partitions/2");
  pn_link_t *l = sender(session(f), "p2", "amqps://127.0.0.1:5671/" HUB "/partitions/2");
  pump(f);
  assert_false(pn_link_state(l) & PN_REMOTE_CLOSED);
  uint8_t ev[512];
  size_t el = encode_event(ev, sizeof ev, NULL, "hello", "id-1");
  pn_delivery_t *d = send_bytes(f, l, ev, el);
  pump(f);
  hub_store_mem_flush(f->mem);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  assert_int_equal(hub_store_mem_count(f->mem, HUB, 2), 1);
  /* a token for partition 2 does not cover partition 1 */
  pn_link_t *l1 = sender(session(f), "p1", HUB "/Partitions/1");
  pump(f);
  assert_string_equal(remote_cond(l1), "amqp:unauthorized-access");
}

static void test_multi_frame_event_is_reassembled(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *l = sender(session(f), HUB, HUB);
  pump(f);
  size_t n = 200000;
  char *body = malloc(n + 1);
  memset(body, 'q', n);
  body[n] = 0;
  uint8_t *ev = malloc(n + 256);
  size_t el = encode_event(ev, n + 256, "big", body, NULL);
  pn_delivery_t *d = send_bytes(f, l, ev, el);
  pump(f);
  hub_store_mem_flush(f->mem);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  int part = hub_partition_for_key("big", 3, 4);
  hub_store st = hub_store_mem_vtable(f->mem);
  hub_stored out[1];
  size_t got_n;
  assert_int_equal(st.read(st.ctx, HUB, part, 0, 1, 1 << 20, out, &got_n), 0);
  assert_int_equal(got_n, 1);
  assert_int_equal(out[0].len, el);
  assert_memory_equal(out[0].payload, ev, el);
  free(ev);
  free(body);
}

static void test_oversize_message_rejected_with_size_exceeded(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *l = sender(session(f), HUB, HUB);
  pump(f);
  size_t n = (1u << 20) + 100;
  uint8_t *big = calloc(1, n);
  pn_delivery_t *d = send_bytes(f, l, big, n);
  free(big);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_REJECTED);
  assert_string_equal(pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(d))),
                      "amqp:link:message-size-exceeded");
  assert_int_equal(hub_store_mem_count(f->mem, HUB, 0) + hub_store_mem_count(f->mem, HUB, 1) +
                       hub_store_mem_count(f->mem, HUB, 2) + hub_store_mem_count(f->mem, HUB, 3),
                   0);
  /* the link still works afterwards */
  uint8_t ev[256];
  size_t el = encode_event(ev, sizeof ev, "k", "ok", NULL);
  d = send_bytes(f, l, ev, el);
  pump(f);
  hub_store_mem_flush(f->mem);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
}

/* ---------------- tests: receive ---------------- */

/* Store n events (bodies "e<i>") in partition 0 via the broker, each append
 * at time T0 + i seconds. */
static void produce(fixture *f, int n) {
  pn_link_t *l = sender(session(f), "prod", HUB "/Partitions/0");
  pump(f);
  for (int i = 0; i < n; i++) {
    char body[32];
    snprintf(body, sizeof body, "e%d", i);
    uint8_t ev[256];
    size_t el = encode_event(ev, sizeof ev, i % 2 ? "key" : NULL, body, NULL);
    hub_store_mem_set_time(f->mem, T0_MS + i * 1000);
    pn_delivery_t *d = send_bytes(f, l, ev, el);
    pump(f);
    hub_store_mem_flush(f->mem);
    pump(f);
    assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  }
}

static pn_link_t *consumer(fixture *f, const char *name, const char *expr, bool ulong_desc,
                           int credit, bool has_epoch, int64_t epoch) {
  pn_session_t *s = session(f);
  pn_link_t *l = pn_receiver(s, name);
  pn_terminus_t *src = pn_link_source(l);
  pn_terminus_set_address(src, HUB "/ConsumerGroups/$Default/Partitions/0");
  if (expr) {
    pn_data_t *fd = pn_terminus_filter(src);
    pn_data_put_map(fd);
    pn_data_enter(fd);
    pn_data_put_symbol(fd, pn_bytes(strlen(HUB_FILTER_SELECTOR), HUB_FILTER_SELECTOR));
    pn_data_put_described(fd);
    pn_data_enter(fd);
    if (ulong_desc)
      pn_data_put_ulong(fd, HUB_FILTER_SELECTOR_CODE);
    else
      pn_data_put_symbol(fd, pn_bytes(strlen(HUB_FILTER_SELECTOR), HUB_FILTER_SELECTOR));
    pn_data_put_string(fd, pn_bytes(strlen(expr), expr));
    pn_data_exit(fd);
    pn_data_exit(fd);
  }
  if (has_epoch) {
    pn_data_t *pr = pn_link_properties(l);
    pn_data_put_map(pr);
    pn_data_enter(pr);
    pn_data_put_symbol(pr, pn_bytes(strlen("com.microsoft:epoch"), "com.microsoft:epoch"));
    pn_data_put_long(pr, epoch);
    pn_data_exit(pr);
  }
  pn_link_open(l);
  if (credit)
    pn_link_flow(l, credit);
  pump(f);
  return l;
}

typedef struct got {
  int64_t seq, enq;
  char offset[32];
  char body[64];
  bool has_pkey;
  int64_t last_seq;
} got;

static void decode_event(rx *r, got *g) {
  pn_message_t *m = pn_message();
  assert_int_equal(pn_message_decode(m, (const char *)r->bytes, r->len), 0);
  memset(g, 0, sizeof *g);
  g->seq = -100;
  pn_data_t *ma = pn_message_annotations(m);
  pn_data_rewind(ma);
  assert_true(pn_data_next(ma));
  size_t n = pn_data_get_map(ma);
  pn_data_enter(ma);
  for (size_t i = 0; i < n; i += 2) {
    pn_data_next(ma);
    pn_bytes_t k = pn_data_get_symbol(ma);
    pn_data_next(ma);
    if (k.size == 21 && !memcmp(k.start, "x-opt-sequence-number", 21)) {
      assert_int_equal(pn_data_type(ma), PN_LONG);
      g->seq = pn_data_get_long(ma);
    } else if (k.size == 12 && !memcmp(k.start, "x-opt-offset", 12)) {
      assert_int_equal(pn_data_type(ma), PN_STRING);
      pn_bytes_t v = pn_data_get_string(ma);
      snprintf(g->offset, sizeof g->offset, "%.*s", (int)v.size, v.start);
    } else if (k.size == 19 && !memcmp(k.start, "x-opt-enqueued-time", 19)) {
      assert_int_equal(pn_data_type(ma), PN_TIMESTAMP);
      g->enq = pn_data_get_timestamp(ma);
    } else if (k.size == 19 && !memcmp(k.start, "x-opt-partition-key", 19)) {
      assert_int_equal(pn_data_type(ma), PN_STRING);
      g->has_pkey = true;
    }
  }
  pn_data_exit(ma);
  pn_data_t *da = pn_message_instructions(m);
  pn_data_rewind(da);
  assert_true(pn_data_next(da));
  n = pn_data_get_map(da);
  pn_data_enter(da);
  int seen = 0;
  for (size_t i = 0; i < n; i += 2) {
    pn_data_next(da);
    pn_bytes_t k = pn_data_get_symbol(da);
    pn_data_next(da);
    if (k.size == 29 && !memcmp(k.start, "last_enqueued_sequence_number", 29)) {
      assert_int_equal(pn_data_type(da), PN_LONG);
      g->last_seq = pn_data_get_long(da);
      seen++;
    } else if (k.size == 20 && !memcmp(k.start, "last_enqueued_offset", 20)) {
      assert_int_equal(pn_data_type(da), PN_STRING);
      seen++;
    } else if ((k.size == 22 && !memcmp(k.start, "last_enqueued_time_utc", 22)) ||
               (k.size == 31 && !memcmp(k.start, "runtime_info_retrieval_time_utc", 31))) {
      assert_int_equal(pn_data_type(da), PN_TIMESTAMP);
      seen++;
    }
  }
  assert_int_equal(seen, 4);
  pn_data_t *b = pn_message_body(m);
  pn_data_rewind(b);
  assert_true(pn_data_next(b));
  pn_bytes_t bb = pn_data_get_binary(b);
  snprintf(g->body, sizeof g->body, "%.*s", (int)bb.size, bb.start);
  pn_message_free(m);
}

static void expect_seqs(fixture *f, pn_link_t *l, int64_t first, size_t n) {
  assert_int_equal(count_rx(f, l), n);
  size_t it = 0;
  for (size_t i = 0; i < n; i++) {
    got g;
    decode_event(next_rx(f, l, &it), &g);
    assert_int_equal(g.seq, first + (int64_t)i);
    char body[32];
    snprintf(body, sizeof body, "e%lld", (long long)(first + (int64_t)i));
    assert_string_equal(g.body, body);
  }
}

static void test_receive_from_earliest_with_typed_annotations(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 5);
  pn_link_t *r = consumer(f, "c", "amqp.annotation.x-opt-offset > '-1'", true, 100, false, 0);
  assert_false(pn_link_state(r) & PN_REMOTE_CLOSED);
  expect_seqs(f, r, 0, 5);
  size_t it = 0;
  got g;
  decode_event(next_rx(f, r, &it), &g);
  assert_string_equal(g.offset, "0");
  assert_int_equal(g.enq, T0_MS);
  assert_false(g.has_pkey);
  assert_int_equal(g.last_seq, 4);
  decode_event(next_rx(f, r, &it), &g);
  assert_true(g.has_pkey);
  assert_int_equal(g.enq, T0_MS + 1000);
}

static void test_receive_without_filter_starts_at_earliest(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 3);
  pn_link_t *r = consumer(f, "c", NULL, true, 10, false, 0);
  expect_seqs(f, r, 0, 3);
}

static pn_link_t *server_link(fixture *f, const char *name) {
  for (pn_link_t *l = pn_link_head(f->srv.connection, 0); l; l = pn_link_next(l, 0))
    if (pn_link_is_sender(l) && strcmp(pn_link_name(l), name) == 0)
      return l;
  return NULL;
}

static void test_receive_never_exceeds_credit(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 10);
  pn_link_t *r = consumer(f, "c", "amqp.annotation.x-opt-offset > '-1'", false, 3, false, 0);
  expect_seqs(f, r, 0, 3);
  pump(f);
  assert_int_equal(count_rx(f, r), 3);
  /* nothing queued beyond credit on the broker side either */
  assert_int_equal(pn_link_queued(server_link(f, "c")), 0);
  pn_link_flow(r, 4);
  pump(f);
  expect_seqs(f, r, 0, 7);
}

static void test_receive_from_latest_gets_only_new_events(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 3);
  pn_link_t *r = consumer(f, "c", "amqp.annotation.x-opt-offset > '@latest'", true, 50, false, 0);
  assert_int_equal(count_rx(f, r), 0);
  produce(f, 5); /* bodies e0..e4 again, seqs 3..7: woken at the tail */
  assert_int_equal(count_rx(f, r), 5);
  size_t it = 0;
  got g;
  decode_event(next_rx(f, r, &it), &g);
  assert_int_equal(g.seq, 3);
  assert_true(f->wakes > 0);
}

static void test_receive_from_sequence_exclusive_and_inclusive(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 6);
  pn_link_t *a =
      consumer(f, "a", "amqp.annotation.x-opt-sequence-number > '2'", true, 50, false, 0);
  expect_seqs(f, a, 3, 3);
  pn_link_t *b =
      consumer(f, "b", "amqp.annotation.x-opt-sequence-number >= '2'", false, 50, false, 0);
  expect_seqs(f, b, 2, 4);
}

static void test_receive_from_offset(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 4);
  /* find event 1's offset, then start after it and at it */
  pn_link_t *all = consumer(f, "all", NULL, true, 50, false, 0);
  size_t it = 0;
  got g0, g1;
  decode_event(next_rx(f, all, &it), &g0);
  decode_event(next_rx(f, all, &it), &g1);
  char expr[128];
  snprintf(expr, sizeof expr, "amqp.annotation.x-opt-offset > '%s'", g1.offset);
  pn_link_t *a = consumer(f, "a", expr, true, 50, false, 0);
  expect_seqs(f, a, 2, 2);
  snprintf(expr, sizeof expr, "amqp.annotation.x-opt-offset >= '%s'", g1.offset);
  pn_link_t *b = consumer(f, "b", expr, false, 50, false, 0);
  expect_seqs(f, b, 1, 3);
}

static void test_receive_from_enqueued_time(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 5); /* enqueued at T0 + i s */
  char expr[128];
  snprintf(expr, sizeof expr, "amqp.annotation.x-opt-enqueued-time > '%lld'",
           (long long)(T0_MS + 2000));
  pn_link_t *r = consumer(f, "t", expr, false, 50, false, 0);
  expect_seqs(f, r, 3, 2);
  snprintf(expr, sizeof expr, "amqp.annotation.x-opt-enqueued-time >= '%lld'",
           (long long)(T0_MS + 2000));
  pn_link_t *r2 = consumer(f, "t2", expr, true, 50, false, 0);
  expect_seqs(f, r2, 2, 3);
}

static void test_malformed_filter_detaches_with_error(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *r = consumer(f, "bad", "amqp.annotation.x-opt-offset ~ 'x'", true, 10, false, 0);
  assert_true(pn_link_state(r) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(r), "amqp:invalid-field");
}

static void test_unsettled_consumer_gets_settled_by_ranged_disposition(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  produce(f, 4);
  f->no_settle = true;
  pn_link_t *r = consumer(f, "c", NULL, true, 10, false, 0);
  assert_int_equal(count_rx(f, r), 4);
  assert_int_equal(pn_link_unsettled(r), 4);
  /* settle all four in one go: proton sends one ranged disposition */
  for (pn_delivery_t *d = pn_unsettled_head(r), *nx; d; d = nx) {
    nx = pn_unsettled_next(d);
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
  }
  pump(f);
  /* the broker's sender side has nothing left unsettled */
  pn_link_t *sl = server_link(f, "c");
  assert_non_null(sl);
  assert_int_equal(pn_link_unsettled(sl), 0);
}

static void test_higher_epoch_steals_lower_is_refused(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_link_t *a = consumer(f, "a", NULL, true, 10, true, 5);
  assert_false(pn_link_state(a) & PN_REMOTE_CLOSED);
  pn_link_t *b = consumer(f, "b", NULL, true, 10, true, 7);
  assert_true(pn_link_state(a) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(a), "amqp:link:stolen");
  assert_false(pn_link_state(b) & PN_REMOTE_CLOSED);
  pn_link_t *c = consumer(f, "c", NULL, true, 10, true, 6);
  assert_true(pn_link_state(c) & PN_REMOTE_CLOSED);
  assert_string_equal(remote_cond(c), "amqp:link:stolen");
  pn_link_t *d = consumer(f, "d", NULL, true, 10, false, 0);
  assert_string_equal(remote_cond(d), "amqp:link:stolen");
  assert_false(pn_link_state(b) & PN_REMOTE_CLOSED);
}

static void test_close_echoes_detach_and_end(void **state) {
  fixture *f = *state;
  authorise(f, AUD);
  pn_session_t *s = session(f);
  pn_link_t *l = sender(s, HUB, HUB);
  pump(f);
  pn_link_close(l);
  pump(f);
  assert_true(pn_link_state(l) & PN_REMOTE_CLOSED);
  pn_session_close(s);
  pump(f);
  assert_true(pn_session_state(s) & PN_REMOTE_CLOSED);
}

/* ---------------- tests: pure helpers ---------------- */

static void test_partition_hash_is_zlib_crc32_mod_count(void **state) {
  (void)state;
  /* zlib.crc32(b"quake-ca") == 3737817184 */
  assert_int_equal(hub_partition_for_key("quake-ca", 8, 4), (int)(3737817184u % 4));
  assert_int_equal(hub_partition_for_key("quake-ca", 8, 7), (int)(3737817184u % 7));
  assert_int_equal(hub_partition_for_key("quake-ca", 8, 1000), (int)(3737817184u % 1000));
}

static void test_addresses_parse_with_prefixes_and_any_case(void **state) {
  (void)state;
  hub_addr a;
  const char *s = "amqps://127.0.0.1:5671/Earthquake-Events/ConsumerGroups/$Default/Partitions/3";
  assert_int_equal(hub_addr_parse(s, strlen(s), &a), 0);
  assert_int_equal(a.kind, HUB_ADDR_CG_PARTITION);
  assert_string_equal(a.hub, "Earthquake-Events");
  assert_string_equal(a.cg, "$Default");
  assert_int_equal(a.part, 3);
  assert_string_equal(a.path, "earthquake-events/consumergroups/$default/partitions/3");
  s = "earthquake-events/PARTITIONS/2";
  assert_int_equal(hub_addr_parse(s, strlen(s), &a), 0);
  assert_int_equal(a.kind, HUB_ADDR_PARTITION);
  assert_int_equal(a.part, 2);
  s = "sb://127.0.0.1:5672/earthquake-events/$management";
  assert_int_equal(hub_addr_parse(s, strlen(s), &a), 0);
  assert_int_equal(a.kind, HUB_ADDR_MGMT);
  s = "sb://ns.servicebus.windows.net/";
  assert_int_equal(hub_addr_parse(s, strlen(s), &a), 0);
  assert_int_equal(a.kind, HUB_ADDR_NAMESPACE);
  assert_int_equal(hub_addr_parse("$cbs", 4, &a), 0);
  assert_int_equal(a.kind, HUB_ADDR_CBS);
  const char *bad[] = {"hub/Partitions/x",
                       "hub/Partitions/-1",
                       "hub/Partitions/99999",
                       "hub//Partitions/1",
                       "hub/ConsumerGroups/cg",
                       "hub/a/b/c/d/e/f",
                       "$other",
                       "hub/Partitions/1/extra"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_true(hub_addr_parse(bad[i], strlen(bad[i]), &a) < 0);
  char longp[600];
  memset(longp, 'a', sizeof longp);
  assert_int_equal(hub_addr_parse(longp, sizeof longp, &a), QS_ERR_TOOBIG);
}

/* ---------------- tests: real SDK bytes from the wire traces ---------------- */

/* The payload of the first transfer in traces/<file> whose line contains
 * needle and "(<n>) ": unescaped from proton's \xNN trace format. Returns a
 * malloc'd buffer of exactly n bytes, or NULL (trace absent or truncated). */
static uint8_t *trace_payload(const char *file, const char *needle, size_t n) {
  const char *dir = getenv("QS_SHARED_DIR");
  char path[1024], mark[32];
  snprintf(path, sizeof path, "%s/wire/traces/%s", dir ? dir : "../shared", file);
  snprintf(mark, sizeof mark, "(%zu) ", n);
  FILE *fp = fopen(path, "r");
  if (!fp)
    return NULL;
  static char line[1 << 18];
  uint8_t *out = NULL;
  while (fgets(line, sizeof line, fp)) {
    char *m = strstr(line, mark);
    if (!m || !strstr(line, needle) || strstr(line, "(truncated)"))
      continue;
    out = malloc(n);
    size_t k = 0;
    for (char *q = m + strlen(mark); *q && *q != '\n' && k < n;) {
      unsigned v;
      if (q[0] == '\\' && q[1] == 'x' && sscanf(q + 2, "%2x", &v) == 1) {
        out[k++] = (uint8_t)v;
        q += 4;
      } else {
        out[k++] = (uint8_t)*q++;
      }
    }
    if (k != n) {
      free(out);
      out = NULL;
    }
    break;
  }
  fclose(fp);
  return out;
}

static void test_js_trace_batch_to_partition_stores_inner_message(void **state) {
  fixture *f = *state;
  uint8_t *b = trace_payload("produce.frm", "FRAME:2 <- @transfer", 61);
  if (!b)
    skip();
  authorise(f, AUD "/Partitions/2");
  pn_link_t *l = sender(session(f), HUB "/Partitions/2", HUB "/Partitions/2");
  pump(f);
  pn_delivery_t *d = send_bytes(f, l, b, 61);
  pump(f);
  hub_store_mem_flush(f->mem);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  assert_int_equal(hub_store_mem_count(f->mem, HUB, 2), 1);
  hub_store st = hub_store_mem_vtable(f->mem);
  hub_stored out[2];
  size_t n;
  assert_int_equal(st.read(st.ctx, HUB, 2, 0, 2, 1 << 20, out, &n), 0);
  /* the data section is "\x00Su\xa0$" + 36 bytes at the end of the batch */
  assert_int_equal(out[0].len, 36);
  assert_memory_equal(out[0].payload, b + 61 - 36, 36);
  free(b);
}

static void test_python_trace_cbs_and_management_requests_decode(void **state) {
  fixture *f = *state;
  uint8_t *cbs = trace_payload("py_shim3.frm", "handle=0x1, delivery-id=0x0", 300);
  uint8_t *mg = trace_payload("py_shim3.frm", "com.microsoft:eventhub", 298);
  if (!cbs || !mg) {
    free(cbs);
    free(mg);
    skip();
  }
  cbs_pair p;
  pair_open(f, &p, "$cbs");
  pn_delivery_t *d = send_bytes(f, p.req, cbs, 300);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  pn_message_t *reply = pn_message();
  rx *r = next_rx(f, p.rsp, &p.seen);
  assert_non_null(r);
  assert_int_equal(pn_message_decode(reply, (const char *)r->bytes, r->len), 0);
  /* real SAS signature: the fake verifier says 401, the shape is what counts */
  assert_int_equal(app_int(reply, "status-code"), 401);
  assert_int_equal(pn_message_get_correlation_id(reply).type, PN_ULONG);
  authorise(f, AUD);
  cbs_pair m;
  pair_open(f, &m, "$management");
  d = send_bytes(f, m.req, mg, 298);
  pump(f);
  assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
  r = next_rx(f, m.rsp, &m.seen);
  assert_non_null(r);
  assert_int_equal(pn_message_decode(reply, (const char *)r->bytes, r->len), 0);
  assert_int_equal(app_int(reply, "status-code"), 200);
  assert_int_equal(pn_message_get_correlation_id(reply).type, PN_ULONG);
  pn_message_free(reply);
  free(cbs);
  free(mg);
}

int main(void) {
#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_partition_hash_is_zlib_crc32_mod_count),
      cmocka_unit_test(test_addresses_parse_with_prefixes_and_any_case),
      T(test_sasl_anonymous_and_open_succeed),
      cmocka_unit_test_setup_teardown(test_client_without_sasl_can_open_and_authorise, setup_nosasl,
                                      teardown),
      T(test_put_token_valid_bad_expired_wrong_audience),
      T(test_put_token_python_shape_echoes_ulong_id),
      T(test_attach_without_token_is_unauthorized),
      T(test_expired_token_no_longer_authorises),
      T(test_tick_detaches_links_whose_token_expired),
      T(test_unknown_hub_is_not_found),
      T(test_no_token_within_20s_closes_connection),
      T(test_token_stops_the_20s_timer),
      T(test_management_read_eventhub),
      T(test_management_read_partition_empty_and_filled),
      T(test_management_without_token_is_401),
      T(test_batch_stored_per_data_section_accepted_when_durable),
      T(test_single_message_to_partition_is_one_event),
      T(test_multi_frame_event_is_reassembled),
      T(test_oversize_message_rejected_with_size_exceeded),
      T(test_receive_from_earliest_with_typed_annotations),
      T(test_receive_without_filter_starts_at_earliest),
      T(test_receive_never_exceeds_credit),
      T(test_receive_from_latest_gets_only_new_events),
      T(test_receive_from_sequence_exclusive_and_inclusive),
      T(test_receive_from_offset),
      T(test_receive_from_enqueued_time),
      T(test_malformed_filter_detaches_with_error),
      T(test_unsettled_consumer_gets_settled_by_ranged_disposition),
      T(test_higher_epoch_steals_lower_is_refused),
      T(test_close_echoes_detach_and_end),
      T(test_js_trace_batch_to_partition_stores_inner_message),
      T(test_python_trace_cbs_and_management_requests_decode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
