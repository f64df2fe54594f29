/* agg.h — window and aggregate arithmetic shared by the speed, batch and serving layers.
 *
 * Written once so the three layers cannot disagree (docs/aggregates.md has the full rationale):
 * - A *contribution* (qs_contrib) is what one event adds to an aggregate. Magnitude and depth are
 *   rounded ONCE, when the contribution is built, to int64 micro-units (llround(v * 1e6)).
 * - An *aggregate* (qs_agg) holds only integers: counts, micro-unit sums, micro-unit min/max.
 *   Integer addition is associative and commutative, so adding, retracting and merging in any
 *   order gives bit-identical state; averages are derived at the end from integers with one
 *   formula, (double)sum / (double)count / 1e6, so equal state gives equal doubles.
 * - Windows are tumbling, epoch-aligned, half-open [start, end): a time exactly on a boundary
 *   belongs to the window that starts there (Spark window(), Kusto bin()).
 *
 * Bounds (validated on every entry, QS_ERR_RANGE otherwise): magnitude in [-2, 10.5], depth in
 * [-10, 1000] km, event time in years 0000..9999 UTC, at most QS_AGG_MAX_COUNT events per
 * aggregate. With these, no int64 sum can overflow: |depth sum| <= 9e9 * 1e9 = 9e18 < 2^63-1.
 *
 * Return convention: 0 or a negative qs_err; the only positive value is QS_AGG_MINMAX_STALE
 * from qs_agg_retract. A call that fails leaves its output unchanged.
 */
#ifndef QS_AGG_H
#define QS_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Micro-units per unit of magnitude or kilometre of depth. */
#define QS_AGG_MICRO 1000000

#define QS_AGG_MAG_MIN (-2.0)
#define QS_AGG_MAG_MAX 10.5
#define QS_AGG_DEPTH_MIN_KM (-10.0)
#define QS_AGG_DEPTH_MAX_KM 1000.0
#define QS_AGG_SIGNIFICANT_DEFAULT 5.0

/* Largest event_count (and so any other count) of one aggregate. */
#define QS_AGG_MAX_COUNT INT64_C(9000000000)

/* Event and window times: 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define QS_AGG_TIME_MIN_MS INT64_C(-62167219200000)
#define QS_AGG_TIME_MAX_MS INT64_C(253402300799999)

#define QS_AGG_MINUTE_MS INT64_C(60000)
#define QS_AGG_WINDOW_5MIN_MS INT64_C(300000)
#define QS_AGG_HOUR_MS INT64_C(3600000)
#define QS_AGG_DAY_MS INT64_C(86400000)
/* Longest tumbling window qs_agg_window_of accepts (366 days). */
#define QS_AGG_WINDOW_MAX_MS (366 * QS_AGG_DAY_MS)

/* Region names in rows: 1..QS_AGG_REGION_MAX bytes of [A-Za-z0-9._:-]. */
#define QS_AGG_REGION_MAX 63
/* Largest JSON row qs_agg_row_from_json accepts. */
#define QS_AGG_JSON_MAX 4096
/* JSON integers are kept within the exactly representable double range (I-JSON, RFC 7493). */
#define QS_AGG_JSON_INT_MAX INT64_C(9007199254740991)

/* Positive return of qs_agg_retract: min/max must be recomputed from the remaining members. */
#define QS_AGG_MINMAX_STALE 1

/* What one event adds to an aggregate. Build it with qs_contrib_init. */
typedef struct qs_contrib {
  int64_t time_ms;     /* event (origin) time, epoch ms */
  int64_t mag_micro;   /* magnitude in micro-units; 0 when !has_mag */
  int64_t depth_micro; /* depth in micro-km; 0 when !has_depth */
  bool has_mag;
  bool has_depth;
  bool tsunami;
  bool significant; /* has_mag && mag_micro >= threshold in micro-units */
} qs_contrib;

/* Builds a contribution. magnitude / depth_km NAN mean null. significant_threshold is compared
 * after rounding both sides to micro-units. QS_ERR_RANGE for a value outside the bounds above
 * (infinities included). */
int qs_contrib_init(qs_contrib *c, int64_t time_ms, double magnitude, double depth_km, bool tsunami,
                    double significant_threshold);

/* Integer-only aggregate state. Fields are readable; change them only through the functions. */
typedef struct qs_agg {
  int64_t event_count;
  int64_t mag_count; /* non-null magnitudes */
  int64_t mag_sum_micro;
  int64_t mag_min_micro; /* valid iff mag_count > 0 && !minmax_stale; else 0 */
  int64_t mag_max_micro;
  int64_t depth_count; /* non-null depths */
  int64_t depth_sum_micro;
  int64_t significant_count;
  int64_t tsunami_count;
  bool minmax_stale; /* a retraction removed a min or max; see qs_agg_recompute_minmax */
} qs_agg;

void qs_agg_init(qs_agg *a);

/* Adds one contribution. QS_ERR_RANGE if a count would pass QS_AGG_MAX_COUNT. */
int qs_agg_add(qs_agg *a, const qs_contrib *c);

/* Exact inverse of qs_agg_add for counts and sums. QS_ERR_STATE if c cannot be a member (a count
 * would go negative, or its magnitude lies outside [min, max]). Returns QS_AGG_MINMAX_STALE when
 * the retracted magnitude was the current min or max and other magnitudes remain: the aggregate
 * is then marked stale until qs_agg_recompute_minmax is called with the remaining members. */
int qs_agg_retract(qs_agg *a, const qs_contrib *c);

/* Recomputes min/max from the complete remaining member list and clears the stale mark.
 * QS_ERR_INVALID (nothing changed) if the members' counts and sums do not equal a's. */
int qs_agg_recompute_minmax(qs_agg *a, const qs_contrib *members, size_t n);

/* dst += src: sums and counts added, min of mins, max of maxes, stale if either is stale.
 * QS_ERR_RANGE (dst unchanged) if a count would pass QS_AGG_MAX_COUNT. */
int qs_agg_merge(qs_agg *dst, const qs_agg *src);

/* Structural equality of every field (the property tests' EXACT equality). */
bool qs_agg_equal(const qs_agg *a, const qs_agg *b);

/* The one conversion from micro-units to a double: (double)m / 1e6. */
double qs_agg_micro_to_double(int64_t micro);

/* Derived values. QS_ERR_NOTFOUND when the value is null (no non-null input);
 * min/max give QS_ERR_STATE while the aggregate is stale. */
int qs_agg_avg_magnitude(const qs_agg *a, double *out);
int qs_agg_avg_depth_km(const qs_agg *a, double *out);
int qs_agg_min_magnitude(const qs_agg *a, double *out);
int qs_agg_max_magnitude(const qs_agg *a, double *out);

/* Window assignment: the epoch-aligned tumbling window [start, end) of length len_ms that holds
 * t_ms (floor division, correct for negative t). QS_ERR_RANGE if t_ms is outside the time bounds
 * or len_ms is not in [1, QS_AGG_WINDOW_MAX_MS]. Hourly and daily bins are the same call with
 * QS_AGG_HOUR_MS and QS_AGG_DAY_MS (UTC days). */
int qs_agg_window_of(int64_t t_ms, int64_t len_ms, int64_t *start_ms, int64_t *end_ms);

/* One row: an aggregate of one region over [window_start_ms, window_end_ms). */
typedef struct qs_agg_row {
  int64_t window_start_ms;
  int64_t window_end_ms;
  char region[QS_AGG_REGION_MAX + 1];
  qs_agg agg;
} qs_agg_row;

/* Empty row. QS_ERR_INVALID for a bad region name, QS_ERR_RANGE unless
 * QS_AGG_TIME_MIN_MS <= start < end <= QS_AGG_TIME_MAX_MS. */
int qs_agg_row_init(qs_agg_row *row, const char *region, int64_t window_start_ms,
                    int64_t window_end_ms);

/* Adds c to the row; QS_ERR_RANGE if c->time_ms is outside [start, end). */
int qs_agg_row_add(qs_agg_row *row, const qs_contrib *c);

/* Rolls src (e.g. a 5-minute window) up into dst (e.g. its hour): merges src's aggregate into
 * dst's. QS_ERR_INVALID (dst unchanged) unless both have the same region and src's window lies
 * inside dst's. */
int qs_agg_row_rollup(qs_agg_row *dst, const qs_agg_row *src);

/* Formats epoch ms as ISO-8601 UTC with milliseconds, "2026-11-25T06:25:00.000Z" (as
 * JavaScript's toISOString). buf needs 25 bytes. QS_ERR_RANGE outside the time bounds. */
int qs_agg_format_iso8601(int64_t t_ms, char *buf, size_t size);

/* Deterministic JSON of a row, fields in this fixed order:
 * window_start, window_end (ISO-8601 strings), window_start_ms, window_end_ms (epoch ms), region,
 * event_count, avg_magnitude, min_magnitude, max_magnitude, avg_depth_km, significant_count,
 * tsunami_count, tsunami_alerts (same value), mag_sum_micro, mag_count, depth_sum_micro,
 * depth_count. Derived values are null when their count is 0. *out is NUL-terminated, allocated
 * with malloc, freed by the caller with free(). QS_ERR_STATE if min/max are stale, QS_ERR_RANGE if
 * a sum exceeds QS_AGG_JSON_INT_MAX in magnitude, QS_ERR_INVALID for a bad region or window. */
int qs_agg_row_to_json(const qs_agg_row *row, char **out, size_t *out_len);
/* The same into buf[cap] (NUL-terminated; QS_AGG_JSON_MAX always suffices), no allocation;
 * QS_ERR_TOOBIG if it does not fit. */
int qs_agg_row_to_json_buf(const qs_agg_row *row, char *buf, size_t cap, size_t *out_len);

/* Parses and validates a row written by qs_agg_row_to_json (unknown fields are ignored; the
 * derived averages are recomputed from the sums, only their null-ness is checked). QS_ERR_TOOBIG
 * over QS_AGG_JSON_MAX bytes, QS_ERR_PARSE for malformed JSON, QS_ERR_INVALID for a missing or
 * inconsistent field. */
int qs_agg_row_from_json(qs_agg_row *row, const char *json, size_t len);

/* Which layers a merged row drew on (the serving layer's `source` field). */
typedef enum qs_agg_source {
  QS_AGG_SOURCE_NONE = 0,
  QS_AGG_SOURCE_BATCH_ONLY,
  QS_AGG_SOURCE_REALTIME_ONLY,
  QS_AGG_SOURCE_BATCH_REALTIME,
} qs_agg_source;

/* "none", "batch-only", "realtime-only", "batch+realtime". */
const char *qs_agg_source_name(qs_agg_source s);

typedef struct qs_agg_cutoff_merge {
  qs_agg agg;                  /* the merged aggregate */
  int64_t effective_cutoff_ms; /* cutoff floored to the hour */
  size_t batch_used;           /* batch rows with window_end <= cutoff */
  size_t batch_skipped;        /* batch rows at or after the cutoff (speed covers them) */
  size_t speed_used;           /* speed rows with window_start >= cutoff */
  size_t speed_skipped;        /* speed rows before the cutoff (batch covers them) */
  qs_agg_source source;
} qs_agg_cutoff_merge;

/* The serving layer's exact merge: batch is authoritative before the cutoff, speed from it on.
 * The cutoff is floored to an hour boundary first (it is one by construction; a cutoff inside an
 * hour would otherwise drop that hour's first part from both sides). A batch row is included iff
 * window_end <= cutoff, a speed row iff window_start >= cutoff; rows of another region are ignored
 * when region is not NULL. QS_ERR_INVALID (res untouched) if any row straddles the cutoff
 * (start < cutoff < end), because then the merge could not be exact. */
int qs_agg_cutoff_merge_rows(qs_agg_cutoff_merge *res, int64_t cutoff_ms, const char *region,
                             const qs_agg_row *batch, size_t n_batch, const qs_agg_row *speed,
                             size_t n_speed);

/* ANOMALY baseline: hourly event counts of one region, kept as exact integers. Hours without a
 * batch row are hours with 0 events and must be counted (qs_agg_baseline_add_empty_hours). */
typedef struct qs_agg_baseline {
  int64_t hours;        /* observed hours, empty ones included */
  int64_t count_sum;    /* sum of hourly counts */
  int64_t count_sq_sum; /* sum of squared hourly counts */
} qs_agg_baseline;

/* Limits that keep the integer sums exact. */
#define QS_AGG_BASELINE_MAX_HOURS INT64_C(1000000)
#define QS_AGG_BASELINE_MAX_HOURLY INT64_C(1000000)

void qs_agg_baseline_init(qs_agg_baseline *b);
/* One observed hour with `count` events (QS_ERR_RANGE beyond the limits). */
int qs_agg_baseline_add_hour(qs_agg_baseline *b, int64_t count);
/* n observed hours with no events. */
int qs_agg_baseline_add_empty_hours(qs_agg_baseline *b, int64_t n);
/* Mean and SAMPLE standard deviation (n - 1 denominator) of the hourly counts.
 * QS_ERR_NOTFOUND with fewer than 2 hours. */
int qs_agg_baseline_hourly(const qs_agg_baseline *b, double *mean, double *stddev);
/* ANOMALY threshold for a window of window_len_ms: with r = window_len_ms / 1 h,
 * mean * r + k_sigma * stddev * sqrt(r) (counts of a process with independent increments: the
 * variance scales linearly with the window, so sigma with its square root). A window is
 * anomalous iff its count is strictly greater than the threshold. QS_ERR_NOTFOUND with fewer
 * than 2 hours; QS_ERR_RANGE for window_len_ms outside [1, QS_AGG_WINDOW_MAX_MS] or k_sigma
 * negative or not finite. */
int qs_agg_baseline_threshold(const qs_agg_baseline *b, int64_t window_len_ms, double k_sigma,
                              double *threshold);

#endif
