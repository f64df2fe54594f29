/* feed.c — feed entries (parsed, classified, encoded events) and the ingestor's metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/usgs.h"

#include <uv.h>

#include "ingest.h"

void feed_list_free(feed_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].json);
    free(l->v[i].ids);
  }
  free(l->v);
  memset(l, 0, sizeof *l);
}

int feed_list_add_event(feed_list *l, qs_event *ev, const qs_regions *regions, const char *source,
                        int64_t ingested_at) {
  const char *region = qs_regions_classify(regions, ev->latitude, ev->longitude);
  qs_event_set_str(ev->region, sizeof ev->region, region, strlen(region));
  qs_event_set_str(ev->source, sizeof ev->source, source, strlen(source));
  ev->ingested_at = ingested_at;
  char buf[QS_EVENT_JSON_MAX];
  size_t n = qs_event_to_json(ev, buf, sizeof buf);
  if (n >= sizeof buf)
    return QS_ERR_TOOBIG;
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 64;
    l->v = qs_xrealloc(l->v, l->cap * sizeof *l->v);
  }
  feed_entry *e = &l->v[l->n++];
  memset(e, 0, sizeof *e);
  /* both fit: the event's arrays have the same bounds (no snprintf on this hot path) */
  memcpy(e->id, ev->event_id, strlen(ev->event_id) + 1);
  memcpy(e->region, ev->region, strlen(ev->region) + 1);
  e->time = ev->time;
  e->updated = ev->updated;
  e->json = qs_xmalloc(n + 1);
  memcpy(e->json, buf, n + 1);
  e->len = n;
  e->deleted = ev->change == QS_EVENT_DELETED || strcmp(ev->status, "deleted") == 0;
  feed_entry_set_ids(e, ev);
  return 0;
}

void feed_entry_set_ids(feed_entry *e, const qs_event *ev) {
  free(e->ids);
  e->ids = NULL;
  e->nids = 0;
  size_t n = qs_event_ids_count(ev), bytes = 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(qs_event_ids_at(ev, i), ev->event_id) != 0)
      bytes += strlen(qs_event_ids_at(ev, i)) + 1;
  if (!bytes)
    return;
  e->ids = qs_xmalloc(bytes);
  char *w = e->ids;
  for (size_t i = 0; i < n; i++) {
    const char *id = qs_event_ids_at(ev, i);
    if (strcmp(id, ev->event_id) == 0)
      continue;
    size_t k = strlen(id) + 1;
    memcpy(w, id, k);
    w += k;
    e->nids++;
  }
}

const char *feed_entry_id_at(const feed_entry *e, size_t i) {
  const char *p = e->ids;
  for (; i > 0; i--)
    p += strlen(p) + 1;
  return p;
}

int feed_entry_rewrite(feed_entry *e, void (*edit)(qs_event *ev, void *ud), void *ud) {
  qs_event ev;
  int rc = qs_event_from_json(&ev, e->json, e->len, NULL, 0);
  if (rc != 0)
    return rc;
  edit(&ev, ud);
  char buf[QS_EVENT_JSON_MAX];
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  if (n >= sizeof buf)
    return QS_ERR_TOOBIG;
  free(e->json);
  e->json = qs_xmalloc(n + 1);
  memcpy(e->json, buf, n + 1);
  e->len = n;
  e->time = ev.time;
  e->updated = ev.updated;
  memcpy(e->id, ev.event_id, strlen(ev.event_id) + 1);
  memcpy(e->region, ev.region, strlen(ev.region) + 1);
  e->deleted = ev.change == QS_EVENT_DELETED || strcmp(ev.status, "deleted") == 0;
  feed_entry_set_ids(e, &ev);
  return 0;
}

typedef struct parse_ctx {
  feed_list *l;
  const qs_regions *regions;
  const char *source;
  int64_t at;
} parse_ctx;

static int on_feature(const qs_event *ev, void *data) {
  parse_ctx *p = data;
  qs_event copy = *ev;
  if (feed_list_add_event(p->l, &copy, p->regions, p->source, p->at) == 0) /* too big: dropped */
    p->l->v[p->l->n - 1].pos = p->l->n - 1; /* (positions of skipped features unknown here) */
  return 0;
}

/* ---- a streaming split of a large FeatureCollection ----------------------------------------
 * One cJSON tree of a 150 MB document costs millions of small allocations and most of the parse
 * time (measured: 60 % in malloc/free). For large documents the top-level object is scanned
 * instead (strings and nesting tracked, nothing allocated) and each element of `features` is
 * parsed on its own with qs_usgs_parse_feature: small trees, freed at once. */

static size_t skip_ws(const char *d, size_t i, size_t n) {
  while (i < n && (d[i] == ' ' || d[i] == '\n' || d[i] == '\r' || d[i] == '\t'))
    i++;
  return i;
}

/* End of the string starting at d[i] == '"' (index after the closing quote), or 0. */
static size_t skip_string(const char *d, size_t i, size_t n) {
  for (i++; i < n; i++) {
    if (d[i] == '\\')
      i++;
    else if (d[i] == '"')
      return i + 1;
  }
  return 0;
}

/* End of the JSON value starting at d[i], or 0 when it is cut short. */
static size_t skip_value(const char *d, size_t i, size_t n) {
  if (i >= n)
    return 0;
  if (d[i] == '"')
    return skip_string(d, i, n);
  if (d[i] == '{' || d[i] == '[') {
    size_t depth = 0;
    for (; i < n; i++) {
      char c = d[i];
      if (c == '"') {
        size_t e = skip_string(d, i, n);
        if (!e)
          return 0;
        i = e - 1;
      } else if (c == '{' || c == '[') {
        depth++;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
    }
    return 0;
  }
  while (i < n && d[i] != ',' && d[i] != '}' && d[i] != ']' && d[i] != ' ' && d[i] != '\n' &&
         d[i] != '\r' && d[i] != '\t')
    i++;
  return i;
}

typedef int (*feature_fn)(const char *json, size_t len, size_t index, void *ud);

/* Calls fn for each element of the top-level "features" array. -1 when the document is not a
 * well-formed FeatureCollection object (the caller then uses the full parser, which says why). */
static int split_features(const char *d, size_t n, feature_fn fn, void *ud) {
  size_t i = skip_ws(d, 0, n);
  bool typed = false, had_features = false;
  if (i >= n || d[i] != '{')
    return -1;
  i = skip_ws(d, i + 1, n);
  while (i < n && d[i] != '}') {
    if (d[i] != '"')
      return -1;
    size_t ke = skip_string(d, i, n);
    if (!ke)
      return -1;
    const char *key = d + i + 1;
    size_t klen = ke - i - 2;
    i = skip_ws(d, ke, n);
    if (i >= n || d[i] != ':')
      return -1;
    i = skip_ws(d, i + 1, n);
    if (klen == 8 && memcmp(key, "features", 8) == 0) {
      if (i >= n || d[i] != '[')
        return -1;
      had_features = true;
      i = skip_ws(d, i + 1, n);
      for (size_t idx = 0; i < n && d[i] != ']'; idx++) {
        size_t e = skip_value(d, i, n);
        if (!e)
          return -1;
        if (fn(d + i, e - i, idx, ud) != 0)
          return -1;
        i = skip_ws(d, e, n);
        if (i < n && d[i] == ',')
          i = skip_ws(d, i + 1, n);
      }
      if (i >= n)
        return -1;
      i++;
    } else {
      size_t e = skip_value(d, i, n);
      if (!e)
        return -1;
      if (klen == 4 && memcmp(key, "type", 4) == 0)
        typed = e - i == 19 && memcmp(d + i, "\"FeatureCollection\"", 19) == 0;
      i = e;
    }
    i = skip_ws(d, i, n);
    if (i < n && d[i] == ',')
      i = skip_ws(d, i + 1, n);
  }
  return typed && had_features && i < n ? 0 : -1;
}

typedef struct span {
  const char *p;
  size_t n;
  size_t pos; /* feature index or line number, for the reason of a skip */
} span;

typedef struct span_list {
  span *v;
  size_t n, cap;
} span_list;

static int on_span(const char *json, size_t len, size_t index, void *ud) {
  span_list *s = ud;
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->v = qs_xrealloc(s->v, s->cap * sizeof *s->v);
  }
  s->v[s->n++] = (span){json, len, index};
  return 0;
}

/* One parser thread's share of the features: [lo, hi) into its own list. */
typedef struct parse_job {
  const span *spans;
  size_t lo, hi;
  const char *unit; /* "feature" or "line" */
  const qs_usgs_opts *o;
  const qs_regions *regions;
  const char *source;
  int64_t at;
  feed_list out;
  size_t skipped;
  char why[200];
} parse_job;

static void parse_job_run(void *arg) {
  parse_job *j = arg;
  for (size_t i = j->lo; i < j->hi; i++) {
    qs_event ev;
    char w[160];
    if (qs_usgs_parse_feature(j->spans[i].p, j->spans[i].n, j->o, &ev, w, sizeof w) == 0) {
      if (feed_list_add_event(&j->out, &ev, j->regions, j->source, j->at) == 0)
        j->out.v[j->out.n - 1].pos = j->spans[i].pos;
    } else {
      if (j->skipped == 0)
        qs_set_reason(j->why, sizeof j->why, "%s %zu: %s", j->unit, j->spans[i].pos, w);
      j->skipped++;
    }
  }
}

#define PARSE_THREADS 2
#define PARALLEL_MIN_FEATURES 4096

/* Parses one feature per span into l, on PARSE_THREADS threads when there are many (the events
 * stay in input order). */
static void parse_spans(feed_list *l, const span_list *spans, const char *unit,
                        const qs_usgs_opts *o, const qs_regions *regions, const char *source,
                        int64_t at, size_t *skipped, char *why, size_t whylen) {
  size_t nt = spans->n >= PARALLEL_MIN_FEATURES ? PARSE_THREADS : 1;
  parse_job jobs[PARSE_THREADS];
  uv_thread_t th[PARSE_THREADS];
  bool threaded[PARSE_THREADS] = {false};
  for (size_t t = 0; t < nt; t++) {
    jobs[t] = (parse_job){.spans = spans->v,
                          .lo = spans->n * t / nt,
                          .hi = spans->n * (t + 1) / nt,
                          .unit = unit,
                          .o = o,
                          .regions = regions,
                          .source = source,
                          .at = at};
    if (t > 0)
      threaded[t] = uv_thread_create(&th[t], parse_job_run, &jobs[t]) == 0;
  }
  for (size_t t = 0; t < nt; t++) /* this thread's share, and any a thread could not take */
    if (!threaded[t])
      parse_job_run(&jobs[t]);
  for (size_t t = 1; t < nt; t++)
    if (threaded[t])
      uv_thread_join(&th[t]);
  for (size_t t = 0; t < nt; t++) {
    if (*skipped == 0 && jobs[t].skipped)
      qs_set_reason(why, whylen, "%s", jobs[t].why);
    *skipped += jobs[t].skipped;
    if (l->n + jobs[t].out.n > l->cap) {
      l->cap = l->n + jobs[t].out.n;
      l->v = qs_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    if (jobs[t].out.n) /* (an empty list has no array to copy from or to) */
      memcpy(l->v + l->n, jobs[t].out.v, jobs[t].out.n * sizeof *l->v);
    l->n += jobs[t].out.n;
    free(jobs[t].out.v);
  }
}

int feed_list_parse(feed_list *l, const char *doc, size_t len, const qs_regions *regions,
                    const char *source, int64_t ingested_at, size_t *skipped, char *why,
                    size_t whylen) {
  parse_ctx p = {l, regions, source, ingested_at};
  qs_usgs_opts o;
  qs_usgs_opts_init(&o);
  o.source = source;
  o.ingested_at = ingested_at;
  o.max_bytes =
      len + 1; /* callers bound their input: HTTP responses are capped, replay reads a file */
  *skipped = 0;
  size_t i = 0;
  while (i < len && (doc[i] == ' ' || doc[i] == '\n' || doc[i] == '\r' || doc[i] == '\t'))
    i++;
  /* NDJSON: one feature per line (a change log); a FeatureCollection otherwise */
  const char *nl = memchr(doc + i, '\n', len - i);
  bool ndjson = nl && i < len && doc[i] == '{' &&
                memmem(doc + i, (size_t)(nl - doc - i), "\"Feature\"", 9) &&
                !memmem(doc + i, (size_t)(nl - doc - i), "FeatureCollection", 17);
  l->ndjson = ndjson;
  span_list spans = {0};
  /* a FeatureCollection is split into its features first (each feature's position is kept: the
   * sweep pages by it); a document that does not split goes to the full parser, which says why */
  if (!ndjson && split_features(doc, len, on_span, &spans) == 0) {
    parse_spans(l, &spans, "feature", &o, regions, source, ingested_at, skipped, why, whylen);
    free(spans.v);
    return 0;
  }
  free(spans.v); /* not a FeatureCollection after all: the full parser says why */
  if (!ndjson) {
    qs_usgs_stats st;
    int rc = qs_usgs_parse_feed(doc, len, &o, on_feature, &p, &st, why, whylen);
    *skipped = st.skipped;
    if (rc == 0 && st.skips_kept)
      qs_set_reason(why, whylen, "feature %zu: %s", st.first_skips[0].index,
                    st.first_skips[0].reason);
    return rc;
  }
  spans = (span_list){0};
  size_t lineno = 0;
  for (const char *q = doc, *end = doc + len; q < end;) {
    const char *e = memchr(q, '\n', (size_t)(end - q));
    if (!e)
      e = end;
    size_t n = (size_t)(e - q);
    while (n && (q[n - 1] == '\r' || q[n - 1] == ' '))
      n--;
    if (n)
      on_span(q, n, lineno + 1, &spans);
    lineno++;
    q = e + 1;
  }
  parse_spans(l, &spans, "line", &o, regions, source, ingested_at, skipped, why, whylen);
  free(spans.v);
  return 0;
}

typedef struct sort_key {
  int64_t time;
  size_t idx;
} sort_key;

static int cmp_sort_key(const void *a, const void *b) {
  const sort_key *x = a, *y = b;
  if (x->time != y->time)
    return x->time < y->time ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx; /* equal times keep their file order */
}

void feed_list_sort_by_time(feed_list *l) {
  if (l->n < 2)
    return;
  sort_key *k = qs_xmalloc(l->n * sizeof *k);
  for (size_t i = 0; i < l->n; i++)
    k[i] = (sort_key){l->v[i].time, i};
  qsort(k, l->n, sizeof *k, cmp_sort_key);
  feed_entry *v = qs_xmalloc(l->cap * sizeof *v);
  for (size_t i = 0; i < l->n; i++)
    v[i] = l->v[k[i].idx];
  free(l->v);
  l->v = v;
  free(k);
}

void ingest_metrics_init(ingest_metrics *m, qs_metrics *reg) {
  static const char *const src[] = {"source", NULL};
  static const char *const src_result[] = {"source", "result", NULL};
  static const char *const src_kind[] = {"source", "kind", NULL};
  static const double secs[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  m->polls = qs_metrics_counter(reg, "quakestream_ingest_polls_total",
                                "polls of a source by result (ok, not_modified, http_error, "
                                "timeout, network_error, malformed, redis_unavailable)",
                                src_result);
  m->events = qs_metrics_counter(reg, "quakestream_ingest_events_total",
                                 "events seen in polled documents by kind (new, revision, "
                                 "deleted, superseded, moved, folded, duplicate)",
                                 src_kind);
  m->sent =
      qs_metrics_counter(reg, "quakestream_ingest_sent_total", "events the hub acknowledged", src);
  m->send_failed = qs_metrics_counter(reg, "quakestream_ingest_send_failed_total",
                                      "events the hub refused or that timed out", src);
  m->malformed = qs_metrics_counter(reg, "quakestream_ingest_malformed_total",
                                    "malformed documents and features, skipped", src_kind);
  m->poll_seconds =
      qs_metrics_histogram(reg, "quakestream_ingest_poll_seconds", "HTTP latency of a poll", src,
                           secs, sizeof secs / sizeof secs[0]);
  m->queue = qs_metrics_gauge(reg, "quakestream_ingest_pending_events",
                              "events queued or in flight to the hub", src);
  m->dropped =
      qs_metrics_counter(reg, "quakestream_ingest_dropped_total",
                         "simulated events not generated because the hub pushed back", src);
  m->watermark =
      qs_metrics_gauge(reg, "quakestream_ingest_sweep_watermark_seconds",
                       "largest `updated` of the last complete FDSN sweep (epoch s)", NULL);
  m->backoff = qs_metrics_gauge(reg, "quakestream_ingest_backoff_seconds",
                                "current delay before the next poll after errors (0: none)", src);
}
