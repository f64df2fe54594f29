/* ingest.h — the ingestor's parts: a feed entry (one event as it will go to the hub), the
 * shared sender, the pollers (USGS feed, weather.gov alerts), the clickstream simulator and
 * the replay command. main.c wires them to the service runtime. */
#ifndef INGEST_H
#define INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qs/eh.h"
#include "qs/event.h"
#include "qs/http_client.h"
#include "qs/log.h"
#include "qs/metrics.h"
#include "qs/redis.h"
#include "qs/regions.h"

/* One event ready to send: its identity for dedupe and its encoded JSON. */
typedef struct feed_entry {
  char id[QS_EVENT_ID_MAX + 1];
  char region[QS_EVENT_SHORT_MAX + 1];
  int64_t time, updated;
  char *json; /* malloc'd; NULL once handed to a message */
  size_t len;
  bool deleted;  /* USGS status "deleted" */
  uint16_t nids; /* other ids of the event (its `ids` without id itself) */
  char *ids;     /* malloc'd: nids NUL-terminated strings, back to back; NULL when nids == 0 */
  size_t pos;    /* 0-based position in its document (feature index; NDJSON: line number) */
} feed_entry;

typedef struct feed_list {
  feed_entry *v;
  size_t n, cap;
  bool ndjson; /* parsed from NDJSON (a change log, in publication order) */
} feed_list;

/* Sets e's other ids from ev's `ids`. */
void feed_entry_set_ids(feed_entry *e, const qs_event *ev);
/* The i-th other id of e (i < e->nids). */
const char *feed_entry_id_at(const feed_entry *e, size_t i);

void feed_list_free(feed_list *l);
/* Classifies, stamps source/ingested_at and encodes ev into a new entry. */
int feed_list_add_event(feed_list *l, qs_event *ev, const qs_regions *regions, const char *source,
                        int64_t ingested_at);
/* Parses a GeoJSON FeatureCollection, or NDJSON with one feature per line; malformed features
 * are counted in *skipped (their first reasons logged by the caller via why). */
int feed_list_parse(feed_list *l, const char *doc, size_t len, const qs_regions *regions,
                    const char *source, int64_t ingested_at, size_t *skipped, char *why,
                    size_t whylen);
/* Decodes e's event, lets edit change it, and re-encodes it into e (time/updated follow). Returns
 * 0, or an error with e unchanged. */
int feed_entry_rewrite(feed_entry *e, void (*edit)(qs_event *ev, void *ud), void *ud);
/* Sorts by event time (stable on file order). */
void feed_list_sort_by_time(feed_list *l);

typedef struct ingest_metrics {
  qs_metric_family *polls, *events, *sent, *send_failed, *malformed, *poll_seconds, *queue,
      *backoff, *dropped, *watermark;
} ingest_metrics;

void ingest_metrics_init(ingest_metrics *m, qs_metrics *reg);

/* Everything the sources share. */
typedef struct ingest_ctx {
  uv_loop_t *loop;
  qs_log *log;
  ingest_metrics *m;
  qs_eh_client *eh;
  qs_redis *redis; /* NULL when no source needs dedupe */
  qs_http *http;
  qs_regions *regions;
  int64_t dedupe_ttl_s;
  uint32_t http_timeout_ms;
  uint32_t backoff_max_ms;
  size_t queue_max;
  bool stopping;
  /* the USGS feed poll and the FDSN sweep share the per-id state: one classifies at a time */
  void *state_owner, *state_waiter;
} ingest_ctx;

/* ---- USGS poller ---- */
typedef struct usgs_source usgs_source;
/* The FDSN event-service sweep (docs/changes.md); interval_ms 0 disables it. */
typedef struct usgs_sweep_opts {
  const char *base_url; /* e.g. https://earthquake.usgs.gov */
  uint32_t interval_ms;
  int64_t backfill_ms, overlap_ms;
  uint32_t page_size;
} usgs_sweep_opts;
int usgs_source_start(usgs_source **out, ingest_ctx *ctx, const char *url, const char *hub,
                      uint32_t interval_ms, const usgs_sweep_opts *sweep);
/* Stops polling (sends in flight are flushed by the hub client when it closes). */
void usgs_source_stop(usgs_source *s);
void usgs_source_free(usgs_source *s);

/* ---- weather.gov alerts ---- */
typedef struct weather_source weather_source;
int weather_source_start(weather_source **out, ingest_ctx *ctx, const char *url, const char *area,
                         const char *hub, uint32_t interval_ms);
void weather_source_stop(weather_source *s);
void weather_source_free(weather_source *s);
/* Parses an NWS alerts document into JSON messages (exposed for tests). */
int weather_parse(const char *doc, size_t len, feed_list *out, int64_t ingested_at, size_t *skipped,
                  char *why, size_t whylen);

/* ---- clickstream simulator ---- */
typedef struct click_source click_source;
int click_source_start(click_source **out, ingest_ctx *ctx, const char *hub, double rate);
void click_source_stop(click_source *s);
void click_source_free(click_source *s);

/* ---- replay ---- */
typedef struct replay_opts {
  const char *path;
  const char *hub;
  double speed; /* 0: as fast as possible */
  bool shift_to_now;
  bool progress; /* a progress line on stderr (a terminal) */
} replay_opts;
/* Runs the replay on ctx's loop; done(rc) fires when every event is acknowledged or failed. */
int replay_start(ingest_ctx *ctx, const replay_opts *o, void (*done)(int rc, void *ud), void *ud);

#endif
