/* timeutil.h — time without time zones: epoch ms <-> ISO-8601 UTC and Capture's US form,
 * epoch-aligned windows, durations.
 *
 * All conversions are pure arithmetic on the proleptic Gregorian calendar (days-from-civil), so
 * results never depend on TZ or the C library's locale. Windows are half-open [start, end).
 */
#ifndef QS_TIMEUTIL_H
#define QS_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#define QS_MS_PER_SEC 1000LL
#define QS_MS_PER_MIN 60000LL
#define QS_MS_PER_HOUR 3600000LL
#define QS_MS_PER_DAY 86400000LL

/* Wall clock, epoch ms. */
int64_t qs_time_now_ms(void);

/* Days since 1970-01-01 of a civil date, and back. */
int64_t qs_days_from_civil(int64_t y, unsigned m, unsigned d);
void qs_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

/* "2026-11-25T06:40:00.123Z" (always milliseconds, always Z) into buf (>= 32 bytes); returns
 * length. Years outside 0000..9999 are clamped by the caller's validation, not here. */
size_t qs_time_format_iso8601(int64_t ms, char *buf, size_t cap);

/* ISO-8601 date-time: YYYY-MM-DD('T'|' ')hh:mm[:ss[.fraction]](Z|±hh:mm|±hhmm); also a bare date
 * YYYY-MM-DD (midnight UTC). Fraction of any length (truncated to ms). -QS_ERR_PARSE on anything
 * else, including out-of-range fields (month 13, Feb 30, hour 24). */
int qs_time_parse_iso8601(const char *s, int64_t *ms);

/* Event Hubs Capture's EnqueuedTimeUtc form "M/D/YYYY h:mm:ss AM|PM" (e.g. "12/7/2018 10:22:49 AM";
 * 12:xx AM is just after midnight, 12:xx PM just after noon). */
int qs_time_parse_capture(const char *s, int64_t *ms);
size_t qs_time_format_capture(int64_t ms, char *buf, size_t cap);

/* Either form above. */
int qs_time_parse_any(const char *s, int64_t *ms);

/* Epoch-aligned floor: the start of the window of length len_ms holding t (correct for t < 0). */
int64_t qs_window_start(int64_t t_ms, int64_t len_ms);

/* "250ms", "90s", "30m", "1h", "7d"; a bare integer means seconds. Non-negative, no overflow.
 * -QS_ERR_PARSE otherwise. */
int qs_duration_parse_ms(const char *s, int64_t *ms);

#endif
