/* feed.c — feed entries (parsed, classified, encoded events) and the ingestor's metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/usgs.h"

#include "ingest.h"

void feed_list_free(feed_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i].json);
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
  snprintf(e->id, sizeof e->id, "%s", ev->event_id);
  snprintf(e->region, sizeof e->region, "%s", ev->region);
  e->time = ev->time;
  e->updated = ev->updated;
  e->json = qs_xmalloc(n + 1);
  memcpy(e->json, buf, n + 1);
  e->len = n;
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
  return feed_list_add_event(p->l, &copy, p->regions, p->source, p->at) == 0 ? 0 : 0;
}

int feed_list_parse(feed_list *l, const char *doc, size_t len, const qs_regions *regions,
                    const char *source, int64_t ingested_at, size_t *skipped, char *why,
                    size_t whylen) {
  parse_ctx p = {l, regions, source, ingested_at};
  qs_usgs_opts o;
  qs_usgs_opts_init(&o);
  o.source = source;
  o.ingested_at = ingested_at;
  *skipped = 0;
  size_t i = 0;
  while (i < len && (doc[i] == ' ' || doc[i] == '\n' || doc[i] == '\r' || doc[i] == '\t'))
    i++;
  /* NDJSON: one feature per line (a change log); a FeatureCollection otherwise */
  const char *nl = memchr(doc + i, '\n', len - i);
  bool ndjson = nl && i < len && doc[i] == '{' &&
                memmem(doc + i, (size_t)(nl - doc - i), "\"Feature\"", 9) &&
                !memmem(doc + i, (size_t)(nl - doc - i), "FeatureCollection", 17);
  if (!ndjson) {
    qs_usgs_stats st;
    int rc = qs_usgs_parse_feed(doc, len, &o, on_feature, &p, &st, why, whylen);
    *skipped = st.skipped;
    if (rc == 0 && st.skips_kept)
      qs_set_reason(why, whylen, "feature %zu: %s", st.first_skips[0].index,
                    st.first_skips[0].reason);
    return rc;
  }
  size_t lineno = 0;
  for (const char *s = doc, *end = doc + len; s < end;) {
    const char *e = memchr(s, '\n', (size_t)(end - s));
    if (!e)
      e = end;
    lineno++;
    size_t n = (size_t)(e - s);
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' '))
      n--;
    if (n) {
      qs_event ev;
      char w[160];
      if (qs_usgs_parse_feature(s, n, &o, &ev, w, sizeof w) == 0) {
        feed_list_add_event(l, &ev, regions, source, ingested_at);
      } else {
        if (*skipped == 0)
          qs_set_reason(why, whylen, "line %zu: %s", lineno, w);
        (*skipped)++;
      }
    }
    s = e + 1;
  }
  return 0;
}

void feed_list_sort_by_time(feed_list *l) {
  /* a bottom-up merge sort: stable, so equal times keep their file order */
  if (l->n < 2)
    return;
  feed_entry *tmp = qs_xmalloc(l->n * sizeof *tmp);
  for (size_t w = 1; w < l->n; w *= 2) {
    for (size_t lo = 0; lo < l->n; lo += 2 * w) {
      size_t mid = lo + w < l->n ? lo + w : l->n, hi = lo + 2 * w < l->n ? lo + 2 * w : l->n;
      size_t a = lo, b = mid, k = lo;
      while (a < mid && b < hi)
        tmp[k++] = l->v[b].time < l->v[a].time ? l->v[b++] : l->v[a++];
      while (a < mid)
        tmp[k++] = l->v[a++];
      while (b < hi)
        tmp[k++] = l->v[b++];
    }
    memcpy(l->v, tmp, l->n * sizeof *tmp);
  }
  free(tmp);
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
                                 "duplicate)",
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
  m->backoff = qs_metrics_gauge(reg, "quakestream_ingest_backoff_seconds",
                                "current delay before the next poll after errors (0: none)", src);
}
