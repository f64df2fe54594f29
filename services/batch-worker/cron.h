/* cron.h — five-field cron expressions (minute hour day-of-month month day-of-week), in UTC.
 *
 * Fields take `*`, numbers, ranges `a-b`, steps `*\/n` and `a-b/n`, and comma lists; day-of-week
 * 0-7 (0 and 7 are Sunday). As in Vixie cron, when both day fields are restricted a day matches
 * either. Also `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
 */
#ifndef BW_CRON_H
#define BW_CRON_H

#include <stddef.h>
#include <stdint.h>

typedef struct bw_cron {
  uint64_t minute; /* bit per value */
  uint32_t hour;
  uint32_t dom;   /* bits 1..31 */
  uint32_t month; /* bits 1..12 */
  uint32_t dow;   /* bits 0..6 */
  int dom_star, dow_star;
} bw_cron;

/* 0 or QS_ERR_INVALID with err naming the field. */
int bw_cron_parse(bw_cron *c, const char *expr, char *err, size_t errlen);
/* The first matching minute strictly after after_ms (epoch ms, UTC); -1 if none within 5 years. */
int64_t bw_cron_next(const bw_cron *c, int64_t after_ms);

#endif
