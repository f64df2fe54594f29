/* views.h — the serving layer's merged views, computed from rows read out of Redis.
 *
 * Pure functions of their inputs (no I/O, no clock), so the unit tests pin them down:
 * - the merge itself is qs_agg_cutoff_merge_rows (libqs): batch rows authoritative for hours
 *   that end at or before the batch cutoff, speed windows from the cutoff on, exact integer sums,
 *   averages weighted by counts — never reimplemented here;
 * - a region row's data_freshness is the merge's source: batch+realtime, batch-only or
 *   realtime-only;
 * - JSON numbers are written with qs_double_shortest, so equal state gives equal bytes (and so
 *   equal ETags).
 */
#ifndef SERVING_VIEWS_H
#define SERVING_VIEWS_H

#include <stddef.h>
#include <stdint.h>

#include "qs/agg.h"
#include "qs/buf.h"

typedef struct view_rows {
  qs_agg_row *v;
  size_t n, cap;
  size_t rejected; /* rows that did not parse (counted, skipped) */
} view_rows;

/* Parses one stored row (qs_agg_row_from_json) and appends it; a bad row is counted in
 * rejected and skipped. */
void view_rows_add_json(view_rows *r, const char *json, size_t len);
void view_rows_free(view_rows *r);

/* Writes the aggregate's fields (counts, derived values or null, merge sums), no braces. */
void view_agg_fields(qs_buf *b, const qs_agg *a);
/* Appends an ISO-8601 time as a JSON string, or null for INT64_MIN. */
void view_time(qs_buf *b, int64_t ms);

/* GET /summary/regions: {"since","since_ms","batch_cutoff","batch_cutoff_ms","regions":[...],
 * "total":{...}}, regions sorted by name. QS_ERR_INVALID if a row straddles the cutoff. */
int view_summary_json(qs_buf *out, int64_t cutoff_ms, int64_t since_ms, const view_rows *batch,
                      const view_rows *speed);

/* GET /timeseries: one point per bin [t, t+bin) from since (floored to the bin) to until,
 * each the exact cutoff merge of the rows inside it, empty bins included. bin_ms must be a whole
 * number of hours (a batch row is one hour and cannot be split). */
int view_timeseries_json(qs_buf *out, int64_t cutoff_ms, int64_t since_ms, int64_t until_ms,
                         int64_t bin_ms, const char *region, const view_rows *batch,
                         const view_rows *speed);

typedef struct view_baseline {
  char region[QS_AGG_REGION_MAX + 1];
  qs_agg_baseline b;
} view_baseline;

/* Parses {"hours","count_sum","count_sq_sum"} (exact integers within qs_agg's limits). */
int view_baseline_parse(view_baseline *vb, const char *region, const char *json, size_t len);

/* GET /anomalies: the realtime windows whose count is strictly above their region's baseline
 * threshold (qs_agg_baseline_threshold, k_sigma), newest first, each with its baseline; and the
 * baseline of every region. */
int view_anomalies_json(qs_buf *out, int64_t since_ms, double k_sigma, const view_rows *speed,
                        const view_baseline *bl, size_t nbl);

#endif
