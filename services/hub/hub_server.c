/* hub_server.c — listeners + broker + partition logs + SAS auth, on one libuv loop.
 *
 * Invariants:
 * - every accepted connection has one struct hconn from setup to on_closed; hub_conn_free runs in
 *   on_closed, before the transport destroys the proton driver (as broker.h requires);
 * - the broker is freed only after the last connection, and the partition logs are closed only
 *   after the broker: no append can arrive at a closed log;
 * - the store adapter copies nothing itself: hub_plog_append buffers the records it is given.
 */
#include "hub_server.h"

#include "qs/amqp_transport.h"
#include "qs/ehconn.h"
#include "qs/error.h"
#include "qs/fsutil.h"
#include "qs/timeutil.h"
#include "qs/tls.h"

#include "broker.h"
#include "capture_sched.h"
#include "hub_config.h"

#include <errno.h>
#include <inttypes.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

extern const char qs_hub_config_default_json[];
extern const unsigned long qs_hub_config_default_json_len;

struct hub_server;

typedef struct hpart {
  struct hub_server *srv;
  const char *hub; /* canonical name, owned by the config */
  int part;
  hub_plog *log;
  hub_capture *cap; /* NULL when the hub has no Capture */
  bool open;
  qs_metric *in_events, *in_bytes, *out_events;
} hpart;

typedef struct hhub {
  hub_entity entity;
  hpart *parts;
} hhub;

typedef struct hconn {
  struct hub_server *srv;
  qs_amqp_conn *conn;
  hub_conn *hc;
  int64_t links; /* links of this connection not yet final */
  struct hconn *prev, *next;
} hconn;

typedef struct append_req {
  hub_plog_append_req req;
  hub_append_cb cb;
  void *arg;
} append_req;

struct hub_server {
  uv_loop_t *loop;
  hub_server_options opt;
  hub_config cfg;
  hhub *hubs;
  size_t n_hubs;
  hub_broker *broker;
  hub_newdata_cb newdata;
  void *newdata_arg;
  qs_tls_ctx tls;
  bool tls_on;
  qs_amqp_listener plain, secure;
  bool plain_inited, secure_inited;
  int listeners_open;
  hconn *conns;
  size_t n_conns;
  uv_timer_t tick;  /* CBS deadlines and token expiry of every connection; retention */
  uv_timer_t grace; /* shutdown: abort connections that do not close */
  int64_t last_retain_ms;
  size_t logs_open;
  size_t caps_open;
  bool stopping, teardown;
  hub_server_stopped_cb stopped_cb;
  void *stopped_arg;
  int handles_open; /* tick + grace timers */
  qs_metric *m_connections, *m_rejected, *m_auth_failures;
  qs_metric *m_fsync, *m_capture_errors, *m_links;
  int64_t links;
};

void hub_server_options_init(hub_server_options *o) {
  memset(o, 0, sizeof *o);
  o->amqp_host = "127.0.0.1";
  o->amqp_port = 5672;
  o->amqps_port = 5671;
  o->data_dir = "var/hub";
  o->capture_dir = "var/capture";
  o->fsync_policy = HUB_PLOG_FSYNC_GROUP;
  o->commit_interval_ms = 5;
  o->max_connections = 1000;
  o->shutdown_grace_ms = 2000;
}

/* ---- lookups ------------------------------------------------------------------------------ */

static hhub *find_hub(hub_server *s, const char *name) {
  for (size_t i = 0; i < s->n_hubs; i++)
    if (strcasecmp(s->hubs[i].entity.name, name) == 0)
      return &s->hubs[i];
  return NULL;
}

static hpart *find_part(hub_server *s, const char *hub, int part) {
  hhub *h = find_hub(s, hub);
  if (!h || part < 0 || part >= h->entity.partition_count)
    return NULL;
  hpart *p = &h->parts[part];
  return p->open ? p : NULL;
}

static const hub_entity *entity_lookup(void *ctx, const char *name) {
  hhub *h = find_hub(ctx, name);
  return h ? &h->entity : NULL;
}

static int64_t clock_ms(void *ctx) {
  (void)ctx;
  return qs_time_now_ms();
}

/* ---- SAS authorisation against the config's policies ------------------------------------- */

static int auth_verify(void *ctx, const char *token, const char *audience, int64_t now_s,
                       unsigned rights_needed, hub_auth_result *out) {
  hub_server *s = ctx;
  qs_sas_token tok;
  memset(out, 0, sizeof *out);
  int rc = qs_sas_token_parse(token, &tok, out->reason, sizeof out->reason);
  if (rc != 0) {
    qs_metric_inc(s->m_auth_failures);
    return QS_ERR_AUTH;
  }
  const hub_config_policy *pol = hub_config_find_policy(&s->cfg, tok.key_name);
  if (!pol) {
    qs_set_reason(out->reason, sizeof out->reason, "no shared access policy named '%.64s'",
                  tok.key_name);
    qs_metric_inc(s->m_auth_failures);
    return QS_ERR_AUTH;
  }
  rc = qs_sas_token_verify(&tok, pol->key, audience, now_s, out->reason, sizeof out->reason);
  if (rc == 0 && (pol->rights & rights_needed) != rights_needed) {
    qs_set_reason(out->reason, sizeof out->reason, "policy '%.64s' lacks the needed rights",
                  pol->name);
    rc = QS_ERR_AUTH;
  }
  if (rc != 0) {
    qs_metric_inc(s->m_auth_failures);
    return rc;
  }
  out->expires_s = tok.expiry_s;
  out->rights = pol->rights;
  return 0;
}

/* ---- store adapter: partition logs behind broker/store.h --------------------------------- */

static void on_appended(hub_plog_append_req *r, int status) {
  append_req *a = (append_req *)r;
  hub_append_cb cb = a->cb;
  void *arg = a->arg;
  int64_t first = r->first_seq;
  free(a);
  cb(arg, status, first);
}

static int st_append(void *ctx, const char *hub, int part, const hub_record *recs, size_t n,
                     hub_append_cb cb, void *arg) {
  hpart *p = find_part(ctx, hub, part);
  if (!p)
    return QS_ERR_NOTFOUND;
  hub_plog_entry stack[64], *e = n <= 64 ? stack : qs_xcalloc(n, sizeof *e);
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    e[i] = (hub_plog_entry){recs[i].pkey, recs[i].pkey_len, recs[i].payload, recs[i].len};
    bytes += recs[i].len;
  }
  append_req *a = qs_xcalloc(1, sizeof *a);
  a->cb = cb;
  a->arg = arg;
  int rc = hub_plog_append(p->log, &a->req, e, n, on_appended);
  if (e != stack)
    free(e);
  if (rc != 0) {
    free(a);
    return rc;
  }
  qs_metric_add(p->in_events, (double)n);
  qs_metric_add(p->in_bytes, (double)bytes);
  return 0;
}

static int st_read(void *ctx, const char *hub, int part, int64_t from_seq, size_t max_n,
                   size_t max_bytes, hub_stored *out, size_t *n_out) {
  hpart *p = find_part(ctx, hub, part);
  if (!p)
    return QS_ERR_NOTFOUND;
  hub_plog_record recs[256];
  if (max_n > 256)
    max_n = 256;
  size_t n = 0;
  int rc = hub_plog_read(p->log, from_seq, max_n, max_bytes, recs, &n);
  if (rc != 0)
    return rc;
  qs_metric_add(p->out_events, (double)n);
  for (size_t i = 0; i < n; i++)
    out[i] = (hub_stored){recs[i].seq,         recs[i].offset,
                          recs[i].enqueued_ms, recs[i].key_len ? (const char *)recs[i].key : NULL,
                          recs[i].key_len,     recs[i].payload,
                          recs[i].payload_len};
  *n_out = n;
  return 0;
}

static int st_seek(void *ctx, const char *hub, int part, hub_plog_find_by by, int64_t v,
                   bool inclusive, int64_t *seq_out) {
  hpart *p = find_part(ctx, hub, part);
  return p ? hub_plog_find(p->log, by, v, inclusive, seq_out) : QS_ERR_NOTFOUND;
}

static int st_seek_offset(void *ctx, const char *hub, int part, int64_t off, bool inclusive,
                          int64_t *seq_out) {
  return st_seek(ctx, hub, part, HUB_PLOG_BY_OFFSET, off, inclusive, seq_out);
}

static int st_seek_seq(void *ctx, const char *hub, int part, int64_t seq, bool inclusive,
                       int64_t *seq_out) {
  return st_seek(ctx, hub, part, HUB_PLOG_BY_SEQ, seq, inclusive, seq_out);
}

static int st_seek_time(void *ctx, const char *hub, int part, int64_t ms, int64_t *seq_out) {
  return st_seek(ctx, hub, part, HUB_PLOG_BY_ENQUEUED, ms, false, seq_out); /* exclusive */
}

static int st_info(void *ctx, const char *hub, int part, hub_part_info *out) {
  hpart *p = find_part(ctx, hub, part);
  if (!p)
    return QS_ERR_NOTFOUND;
  hub_plog_info i;
  hub_plog_get_info(p->log, &i);
  if (i.empty)
    *out = (hub_part_info){-1, -1, -1, 0, true};
  else
    *out = (hub_part_info){i.begin_seq, i.last_seq, i.last_offset, i.last_enqueued_ms, false};
  return 0;
}

static void st_set_listener(void *ctx, hub_newdata_cb cb, void *arg) {
  hub_server *s = ctx;
  s->newdata = cb;
  s->newdata_arg = arg;
}

static void on_durable(void *arg, int64_t last_seq) {
  (void)last_seq;
  hpart *p = arg;
  if (p->cap)
    hub_capture_poke(p->cap);
  if (p->srv->newdata)
    p->srv->newdata(p->srv->newdata_arg, p->hub, p->part);
}

static void on_commit(void *arg, uint64_t fsync_ns, size_t records, size_t bytes) {
  (void)records;
  (void)bytes;
  hpart *p = arg;
  if (fsync_ns)
    qs_metric_observe(p->srv->m_fsync, (double)fsync_ns / 1e9);
}

/* ---- connections ------------------------------------------------------------------------- */

static void wake_conn(void *arg) { qs_amqp_conn_wake(((hconn *)arg)->conn); }

static int conn_setup(qs_amqp_conn *conn, void *data) {
  hub_server *s = data;
  if (s->stopping || s->n_conns >= s->opt.max_connections) {
    qs_metric_inc(s->m_rejected);
    return QS_ERR_FULL;
  }
  hconn *c = qs_xcalloc(1, sizeof *c);
  c->srv = s;
  c->conn = conn;
  c->hc = hub_conn_new(s->broker, qs_amqp_conn_driver(conn), wake_conn, c);
  if (!c->hc) {
    free(c);
    return QS_ERR_NOMEM;
  }
  qs_amqp_conn_use_frame_padding(conn); /* pyamqp reads performative fields by position */
  qs_amqp_conn_set_data(conn, c);
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
  qs_metric_set(s->m_connections, (double)s->n_conns);
  return 0;
}

static void conn_event(qs_amqp_conn *conn, pn_event_t *ev, void *data) {
  (void)conn;
  hconn *c = data;
  switch (pn_event_type(ev)) { /* every link, $cbs and $management included, init to final */
  case PN_LINK_INIT:
    c->links++;
    qs_metric_set(c->srv->m_links, (double)++c->srv->links);
    break;
  case PN_LINK_FINAL:
    c->links--;
    qs_metric_set(c->srv->m_links, (double)--c->srv->links);
    break;
  default:
    break;
  }
  hub_conn_handle(c->hc, ev);
}

static void conn_written(qs_amqp_conn *conn, void *data) {
  (void)conn;
  hub_conn_flush(((hconn *)data)->hc);
}

static void conn_error(qs_amqp_conn *conn, int code, const char *reason, void *data) {
  (void)conn;
  hconn *c = data;
  if (code != QS_ERR_CLOSED)
    qs_log_debug(c->srv->opt.log, "connection ended", QS_LSTR("reason", reason),
                 QS_LSTR("error", qs_strerror(code)));
}

static void maybe_finish_stop(hub_server *s);

static void conn_closed(qs_amqp_conn *conn, void *data) {
  (void)conn;
  hconn *c = data;
  hub_server *s = c->srv;
  hub_conn_free(c->hc);
  s->links -= c->links; /* proton frees the rest with the driver, after this callback */
  qs_metric_set(s->m_links, (double)s->links);
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->n_conns--;
  qs_metric_set(s->m_connections, (double)s->n_conns);
  free(c);
  maybe_finish_stop(s);
}

static const qs_amqp_conn_cbs conn_cbs = {
    .setup = conn_setup,
    .on_event = conn_event,
    .on_error = conn_error,
    .on_closed = conn_closed,
    .on_written = conn_written,
};

static void on_tick(uv_timer_t *t) {
  hub_server *s = t->data;
  int64_t now = qs_time_now_ms();
  for (hconn *c = s->conns; c; c = c->next)
    hub_conn_tick(c->hc, now);
  if (now - s->last_retain_ms >= 60000) { /* retention: whole old segments, once a minute */
    s->last_retain_ms = now;
    for (size_t i = 0; i < s->n_hubs; i++)
      for (int p = 0; p < s->hubs[i].entity.partition_count; p++)
        if (s->hubs[i].parts[p].open)
          hub_plog_retain(s->hubs[i].parts[p].log, now);
  }
}

/* ---- start -------------------------------------------------------------------------------- */

/* created_at of a hub: written once beside its partitions, so it survives restarts. */
static int64_t hub_created_at(const char *data_dir, const char *hub) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/created_at", data_dir, hub);
  FILE *f = fopen(path, "r");
  long long v = 0;
  if (f) {
    if (fscanf(f, "%lld", &v) != 1)
      v = 0;
    fclose(f);
    if (v > 0)
      return v;
  }
  v = qs_time_now_ms();
  f = fopen(path, "w");
  if (f) {
    fprintf(f, "%lld\n", v);
    fclose(f);
  }
  return v;
}

static int open_logs(hub_server *s, char *err, size_t errlen) {
  s->n_hubs = s->cfg.n_hubs;
  s->hubs = qs_xcalloc(s->n_hubs, sizeof *s->hubs);
  static const char *const part_labels[] = {"hub", "partition", NULL};
  qs_metric_family *fin =
      qs_metrics_counter(s->opt.metrics, "hub_events_in_total",
                         "Events accepted for appending, per partition", part_labels);
  qs_metric_family *fbytes = qs_metrics_counter(s->opt.metrics, "hub_bytes_in_total",
                                                "Event bytes accepted, per partition", part_labels);
  qs_metric_family *fout =
      qs_metrics_counter(s->opt.metrics, "hub_events_out_total",
                         "Events read for delivery to consumers, per partition", part_labels);
  qs_metric_family *cfiles =
      qs_metrics_counter(s->opt.metrics, "hub_capture_files_total",
                         "Capture files written, per partition", part_labels);
  qs_metric_family *cevents = qs_metrics_counter(s->opt.metrics, "hub_capture_events_total",
                                                 "Events written to Capture files", part_labels);
  s->m_capture_errors = qs_metric_series(qs_metrics_counter(
      s->opt.metrics, "hub_capture_errors_total", "Capture files that failed (retried)", NULL));
  for (size_t i = 0; i < s->n_hubs; i++) {
    const hub_config_hub *ch = &s->cfg.hubs[i];
    hhub *h = &s->hubs[i];
    h->entity.name = ch->name;
    h->entity.partition_count = ch->partition_count;
    h->entity.consumer_groups = (const char *const *)ch->groups;
    h->entity.n_consumer_groups = ch->n_groups;
    h->parts = qs_xcalloc((size_t)ch->partition_count, sizeof *h->parts);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", s->opt.data_dir, ch->name);
    int rc = qs_mkdir_p(dir);
    if (rc != 0) {
      qs_set_reason(err, errlen, "cannot create %s: %s", dir, strerror(-rc));
      return rc;
    }
    h->entity.created_at_ms = hub_created_at(s->opt.data_dir, ch->name);
    for (int p = 0; p < ch->partition_count; p++) {
      hpart *hp = &h->parts[p];
      hp->srv = s;
      hp->hub = ch->name;
      hp->part = p;
      hub_plog_options po;
      hub_plog_options_init(&po);
      po.fsync_policy = s->opt.fsync_policy;
      po.commit_interval_ms = s->opt.commit_interval_ms;
      po.retention_ms = (uint64_t)ch->retention_ms;
      po.on_durable = on_durable;
      po.on_durable_arg = hp;
      po.on_commit = on_commit;
      po.on_commit_arg = hp;
      char ps[16];
      snprintf(ps, sizeof ps, "%d", p);
      hp->log = hub_plog_new();
      hub_plog_set_data(hp->log, hp);
      rc = hub_plog_open(hp->log, s->loop, s->opt.data_dir, ch->name, p, &po);
      if (rc != 0) {
        qs_set_reason(err, errlen, "cannot open partition log %s/%d under %s: %s", ch->name, p,
                      s->opt.data_dir, qs_strerror(rc));
        return rc;
      }
      hp->open = true;
      s->logs_open++;
      hp->in_events = qs_metric_get(fin, (const char *[]){ch->name, ps});
      hp->in_bytes = qs_metric_get(fbytes, (const char *[]){ch->name, ps});
      hp->out_events = qs_metric_get(fout, (const char *[]){ch->name, ps});
      if (ch->capture.enabled) {
        hub_capture_options co = {
            .capture_dir = s->opt.capture_dir,
            .data_dir = s->opt.data_dir,
            .namespace_name = s->cfg.namespace_name,
            .hub = ch->name,
            .partition = p,
            .interval_s = ch->capture.interval_s,
            .size_limit_bytes = ch->capture.size_limit_bytes,
            .skip_empty = ch->capture.skip_empty_archives,
            .log = hp->log,
            .qlog = s->opt.log,
            .files = qs_metric_get(cfiles, (const char *[]){ch->name, ps}),
            .events = qs_metric_get(cevents, (const char *[]){ch->name, ps}),
            .errors = s->m_capture_errors,
        };
        rc = hub_capture_start(&hp->cap, s->loop, &co, err, errlen);
        if (rc != 0)
          return rc;
        s->caps_open++;
      }
      const hub_plog_stats *st = hub_plog_get_stats(hp->log);
      if (st->recovered_truncated_bytes || st->corrupt_segments)
        qs_log_warn(s->opt.log, "partition log recovered", QS_LSTR("hub", ch->name),
                    QS_LINT("partition", p),
                    QS_LINT("truncated_bytes", (int64_t)st->recovered_truncated_bytes),
                    QS_LINT("corrupt_segments", (int64_t)st->corrupt_segments));
    }
  }
  return 0;
}

static int listen_on(hub_server *s, qs_amqp_listener *l, int port, qs_tls_ctx *tls, char *err,
                     size_t errlen) {
  int rc = qs_amqp_listener_init(l, s->loop, s->opt.amqp_host, port, tls, &conn_cbs, s);
  s->listeners_open++;
  if (rc != 0)
    qs_set_reason(err, errlen, "cannot listen for AMQP%s on %s:%d: %s", tls ? "S" : "",
                  s->opt.amqp_host, port, qs_strerror(rc));
  return rc;
}

int hub_server_start(hub_server **out, uv_loop_t *loop, const hub_server_options *o, char *err,
                     size_t errlen) {
  hub_server *s = qs_xcalloc(1, sizeof *s);
  s->loop = loop;
  s->opt = *o;
  hub_config_init(&s->cfg);
  uv_timer_init(loop, &s->tick);
  uv_timer_init(loop, &s->grace);
  s->tick.data = s->grace.data = s;
  s->handles_open = 2;
  *out = s;
  int rc = (o->config_path && *o->config_path)
               ? hub_config_load(&s->cfg, o->config_path, err, errlen)
               : hub_config_parse(&s->cfg, qs_hub_config_default_json,
                                  qs_hub_config_default_json_len, err, errlen);
  s->m_connections = qs_metric_series(
      qs_metrics_gauge(o->metrics, "hub_connections", "Open AMQP connections", NULL));
  s->m_links = qs_metric_series(qs_metrics_gauge(
      o->metrics, "hub_links", "Open AMQP links ($cbs and $management included)", NULL));
  s->m_rejected =
      qs_metric_series(qs_metrics_counter(o->metrics, "hub_connections_rejected_total",
                                          "Connections refused (limit or stopping)", NULL));
  s->m_auth_failures = qs_metric_series(
      qs_metrics_counter(o->metrics, "hub_auth_failures_total", "SAS tokens refused", NULL));
  double bounds[14];
  qs_metrics_exp_buckets(bounds, 0.0001, 2, 14);
  s->m_fsync = qs_metric_series(qs_metrics_histogram(
      o->metrics, "hub_fsync_seconds", "Partition log fdatasync latency", NULL, bounds, 14));
  if (rc == 0)
    rc = open_logs(s, err, errlen);
  if (rc == 0 && o->tls_cert && *o->tls_cert) {
    rc = qs_tls_ctx_init_server(&s->tls, o->tls_cert, o->tls_key, err, errlen);
    s->tls_on = rc == 0;
  }
  if (rc == 0) {
    hub_broker_config bc = {
        .auth_verify = auth_verify,
        .auth_ctx = s,
        .entity_lookup = entity_lookup,
        .entity_ctx = s,
        .store = {s, st_append, st_read, st_seek_offset, st_seek_seq, st_seek_time, st_info,
                  st_set_listener},
        .now_ms = clock_ms,
    };
    rc = hub_broker_new(&bc, &s->broker);
    if (rc != 0)
      qs_set_reason(err, errlen, "broker: %s", qs_strerror(rc));
  }
  if (rc == 0) {
    rc = listen_on(s, &s->plain, o->amqp_port, NULL, err, errlen);
    s->plain_inited = true;
  }
  if (rc == 0 && s->tls_on) {
    rc = listen_on(s, &s->secure, o->amqps_port, &s->tls, err, errlen);
    s->secure_inited = true;
  }
  if (rc != 0)
    return rc; /* the caller stops s, which releases what was opened */
  uv_timer_start(&s->tick, on_tick, 1000, 1000);
  s->last_retain_ms = 0;
  qs_log_info(o->log, "hub listening", QS_LSTR("host", o->amqp_host),
              QS_LINT("amqp_port", hub_server_amqp_port(s)),
              QS_LINT("amqps_port", hub_server_amqps_port(s)), QS_LINT("hubs", (int64_t)s->n_hubs),
              QS_LINT("partitions", (int64_t)s->logs_open), QS_LSTR("data_dir", o->data_dir));
  if (!s->tls_on)
    qs_log_info(o->log, "TLS listener off: set TLS_CERT and TLS_KEY to enable it");
  return 0;
}

int hub_server_amqp_port(const hub_server *s) { return qs_amqp_listener_port(&s->plain); }
int hub_server_amqps_port(const hub_server *s) {
  return s->tls_on ? qs_amqp_listener_port(&s->secure) : 0;
}

bool hub_server_ready(void *arg, char *reason, size_t cap) {
  hub_server *s = arg;
  size_t want = 0;
  for (size_t i = 0; i < s->n_hubs; i++)
    want += (size_t)s->hubs[i].entity.partition_count;
  if (s->stopping) {
    qs_set_reason(reason, cap, "stopping");
    return false;
  }
  if (s->logs_open != want) {
    qs_set_reason(reason, cap, "%zu of %zu partition logs open", s->logs_open, want);
    return false;
  }
  return true;
}

/* ---- stop --------------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h) {
  hub_server *s = h->data;
  s->handles_open--;
  maybe_finish_stop(s);
}

static void listener_closed(qs_amqp_listener *l) {
  hub_server *s = l->data;
  s->listeners_open--;
  maybe_finish_stop(s);
}

static void log_closed(hub_plog *log) {
  hpart *p = hub_plog_get_data(log);
  hub_server *s = p->srv;
  hub_plog_free(log);
  p->log = NULL;
  s->logs_open--;
  maybe_finish_stop(s);
}

static void release(hub_server *s) {
  for (size_t i = 0; i < s->n_hubs; i++)
    free(s->hubs[i].parts);
  free(s->hubs);
  if (s->tls_on)
    qs_tls_ctx_close(&s->tls);
  hub_config_close(&s->cfg);
}

static void close_logs(hub_server *s) {
  for (size_t i = 0; i < s->n_hubs; i++)
    for (int p = 0; s->hubs[i].parts && p < s->hubs[i].entity.partition_count; p++) {
      hpart *hp = &s->hubs[i].parts[p];
      if (hp->log && hp->open) {
        hp->open = false;
        hub_plog_close(hp->log, log_closed); /* commits what is pending */
      } else if (hp->log) {
        hub_plog_free(hp->log); /* its open failed */
        hp->log = NULL;
      }
    }
}

static void capture_stopped(void *arg) {
  hpart *hp = arg;
  hub_server *s = hp->srv;
  hp->cap = NULL;
  if (--s->caps_open == 0)
    close_logs(s);
}

static void maybe_finish_stop(hub_server *s) {
  if (!s->stopping || s->n_conns > 0 || s->listeners_open > 0)
    return;
  if (!s->teardown) { /* connections are gone: the broker can go, then the logs and timers */
    s->teardown = true;
    if (s->broker)
      hub_broker_free(s->broker);
    s->broker = NULL;
    uv_close((uv_handle_t *)&s->tick, handle_closed);
    uv_close((uv_handle_t *)&s->grace, handle_closed);
    if (s->caps_open == 0)
      close_logs(s);
    for (size_t i = 0; i < s->n_hubs; i++) /* captures first: they read the logs */
      for (int p = 0; s->hubs[i].parts && p < s->hubs[i].entity.partition_count; p++)
        if (s->hubs[i].parts[p].cap)
          hub_capture_stop(s->hubs[i].parts[p].cap, capture_stopped, &s->hubs[i].parts[p]);
    return;
  }
  if (s->caps_open > 0 || s->logs_open > 0 || s->handles_open > 0 || !s->stopped_cb)
    return;
  hub_server_stopped_cb cb = s->stopped_cb;
  void *arg = s->stopped_arg;
  s->stopped_cb = NULL;
  release(s);
  free(s);
  cb(NULL, arg);
}

static void on_grace(uv_timer_t *t) {
  hub_server *s = t->data;
  for (hconn *c = s->conns; c; c = c->next)
    qs_amqp_conn_abort(c->conn, "hub shutting down");
}

void hub_server_stop(hub_server *s, hub_server_stopped_cb cb, void *arg) {
  if (s->stopping)
    QS_FATAL("hub_server_stop called twice");
  s->stopping = true;
  s->stopped_cb = cb;
  s->stopped_arg = arg;
  uv_timer_stop(&s->tick);
  if (s->plain_inited)
    qs_amqp_listener_close(&s->plain, listener_closed);
  if (s->secure_inited)
    qs_amqp_listener_close(&s->secure, listener_closed);
  for (hconn *c = s->conns; c; c = c->next) {
    pn_connection_t *pc = qs_amqp_conn_connection(c->conn);
    pn_condition_t *cond = pn_connection_condition(pc);
    pn_condition_set_name(cond, "amqp:connection:forced");
    pn_condition_set_description(cond, "the hub is shutting down");
    pn_connection_close(pc);
    qs_amqp_conn_wake(c->conn);
  }
  if (s->n_conns > 0)
    uv_timer_start(&s->grace, on_grace, s->opt.shutdown_grace_ms, 0);
  maybe_finish_stop(s);
}
