/* metrics.h — Prometheus counters, gauges and histograms, rendered in text format 0.0.4.
 *
 * A registry holds families (name, help, type, fixed label names); a family holds one series per
 * distinct label-value tuple. Hot paths keep the qs_metric pointer of their series and update it
 * without any lookup. Memory is bounded: a family holds at most QS_METRICS_MAX_SERIES series; a
 * lookup beyond that returns a shared sink series that is never rendered, and increments
 * `quakestream_metrics_dropped_series_total`, so input can never grow the registry.
 * Every registry renders process metrics (start time, RSS, CPU, open fds, from /proc/self) and
 * `quakestream_build_info{service,version} 1`. Single-threaded: use from the loop thread.
 */
#ifndef QS_METRICS_H
#define QS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "qs/buf.h"

#define QS_METRICS_MAX_SERIES 1024
#define QS_METRICS_MAX_LABELS 4
#define QS_METRICS_MAX_BUCKETS 32

typedef enum qs_metric_type {
  QS_METRIC_COUNTER,
  QS_METRIC_GAUGE,
  QS_METRIC_HISTOGRAM
} qs_metric_type;

typedef struct qs_metric qs_metric; /* one series */
typedef struct qs_metric_family qs_metric_family;

typedef struct qs_metrics {
  qs_metric_family *families; /* registration order */
  qs_metric_family *last;
  char service[48];
  char version[32];
  double start_time_s;
  qs_metric *dropped; /* quakestream_metrics_dropped_series_total */
  struct qs_metric *sink;
} qs_metrics;

void qs_metrics_init(qs_metrics *m, const char *service, const char *version);
void qs_metrics_free(qs_metrics *m);

/* Register a family. Names must match [a-zA-Z_:][a-zA-Z0-9_:]* (counters end in _total), label
 * names [a-zA-Z_][a-zA-Z0-9_]*; violations and duplicates are programming errors (QS_FATAL).
 * `labels` is a NULL-terminated list (or NULL for none). Histogram bounds strictly increase. */
qs_metric_family *qs_metrics_counter(qs_metrics *m, const char *name, const char *help,
                                     const char *const *labels);
qs_metric_family *qs_metrics_gauge(qs_metrics *m, const char *name, const char *help,
                                   const char *const *labels);
qs_metric_family *qs_metrics_histogram(qs_metrics *m, const char *name, const char *help,
                                       const char *const *labels, const double *bounds,
                                       size_t nbounds);

/* The series for these label values (as many as the family has label names; NULL for none).
 * Never NULL: past the series cap it is the sink. */
qs_metric *qs_metric_get(qs_metric_family *f, const char *const *values);
/* Shorthand for an unlabelled family's only series. */
qs_metric *qs_metric_series(qs_metric_family *f);

void qs_metric_inc(qs_metric *s);
void qs_metric_add(qs_metric *s, double v);     /* counters: v >= 0 */
void qs_metric_set(qs_metric *s, double v);     /* gauges */
void qs_metric_observe(qs_metric *s, double v); /* histograms */
double qs_metric_value(const qs_metric *s);     /* counter/gauge value; histogram count */

/* Render the whole registry in Prometheus text format 0.0.4. */
void qs_metrics_render(qs_metrics *m, qs_buf *out);

/* Exponential bucket bounds: start, start*factor, ... (n of them) into out. */
void qs_metrics_exp_buckets(double *out, double start, double factor, size_t n);

#endif
