/* gold.h — the batch layer's outputs as files and JSON: gold Avro files (proto/gold-hourly.avsc,
 * proto/gold-daily.avsc) and the daily rows' JSON for Redis.
 *
 * The Avro files are written with libqs's container writer (temp name, fsync, rename; sync marker
 * derived from schema and file name), deflate codec, rows in the order given (bw_fold_finish
 * sorts them), so the same rows always give the same bytes.
 */
#ifndef BW_GOLD_H
#define BW_GOLD_H

#include <stddef.h>

#include "qs/agg.h"
#include "qs/buf.h"

#define BW_GOLD_HOURLY_FILE "hourly.avro"
#define BW_GOLD_DAILY_FILE "daily.avro"

extern const char bw_gold_hourly_schema[];
extern const char bw_gold_daily_schema[];

/* Writes <dir>/hourly.avro and <dir>/daily.avro (dir is created). 0 or a negative code with
 * err set; on failure no final file is left half-written. */
int bw_gold_write(const char *dir, const qs_agg_row *hourly, size_t n_hourly,
                  const qs_agg_row *daily, size_t n_daily, char *err, size_t errlen);

/* Encodes one row as the Avro datum of the hourly / daily schema into b (appended). */
void bw_gold_encode_hourly(qs_buf *b, const qs_agg_row *row);
void bw_gold_encode_daily(qs_buf *b, const qs_agg_row *row);

/* "YYYY-MM-DD" of a day row's start into buf (>= 11 bytes). */
void bw_gold_date(const qs_agg_row *day, char *buf, size_t cap);

/* Daily row JSON (docs/keyspace.md): {"date","region","event_count","avg_magnitude",
 * "max_magnitude","tsunami_events","mag_sum_micro","mag_count","depth_sum_micro","depth_count"},
 * appended to out. */
void bw_gold_daily_json(qs_buf *out, const qs_agg_row *day);

#endif
