/* usgs.h — parse a USGS GeoJSON summary feed into qs_event values.
 *
 * A document that is not JSON, over the size limit, or not a FeatureCollection
 * with a features array is an error. Inside a good document, a malformed
 * feature (no id, no coordinates, wrong types, out-of-range values) is skipped
 * and counted with its index and reason, never fatal; the first
 * QS_USGS_SKIPS_KEPT reasons are kept for logs. Events come out with region
 * empty (the ingestor enriches), source set from the options, status lower-
 * cased, and change DELETED when the status is "deleted" (NEW otherwise).
 */
#ifndef QS_USGS_H
#define QS_USGS_H

#include <stddef.h>
#include <stdint.h>

#include "qs/event.h"

#define QS_USGS_SKIPS_KEPT 8
#define QS_USGS_REASON_MAX 160
#define QS_USGS_DEFAULT_MAX_BYTES (64u * 1024u * 1024u)

typedef struct qs_usgs_skip {
  size_t index; /* position of the feature in the features array */
  char reason[QS_USGS_REASON_MAX];
} qs_usgs_skip;

typedef struct qs_usgs_stats {
  size_t features;   /* entries in the features array */
  size_t parsed;     /* delivered to the callback */
  size_t skipped;    /* malformed features */
  int64_t generated; /* metadata.generated (epoch ms), 0 if absent */
  size_t skips_kept; /* entries of first_skips in use */
  qs_usgs_skip first_skips[QS_USGS_SKIPS_KEPT];
} qs_usgs_stats;

typedef struct qs_usgs_opts {
  size_t max_bytes;    /* documents longer than this are refused (QS_ERR_TOOBIG) */
  const char *source;  /* copied into every event's source; NULL -> "usgs" */
  int64_t ingested_at; /* copied into every event (epoch ms; 0 = unset) */
} qs_usgs_opts;

/* Called once per well-formed feature, in document order. ev is valid only
 * during the call. Return 0 to continue; a negative value stops parsing and is
 * returned by qs_usgs_parse_feed. */
typedef int (*qs_usgs_event_cb)(const qs_event *ev, void *data);

/* Defaults: max_bytes QS_USGS_DEFAULT_MAX_BYTES, source "usgs", ingested_at 0. */
void qs_usgs_opts_init(qs_usgs_opts *opts);

/* Parses doc[0..len) (need not be NUL-terminated). opts may be NULL
 * (defaults). stats is always filled (zeroed first). Returns 0, QS_ERR_TOOBIG,
 * QS_ERR_PARSE (with a reason in why), or the callback's negative value. */
int qs_usgs_parse_feed(const char *doc, size_t len, const qs_usgs_opts *opts, qs_usgs_event_cb cb,
                       void *data, qs_usgs_stats *stats, char *why, size_t whylen);

/* Fills ev from one GeoJSON Feature object given as JSON text (e.g. an FDSN
 * detail document). 0 or QS_ERR_PARSE / QS_ERR_INVALID with a reason. */
int qs_usgs_parse_feature(const char *json, size_t len, const qs_usgs_opts *opts, qs_event *ev,
                          char *why, size_t whylen);

#endif
