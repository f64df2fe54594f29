/* test_timeutil.c — calendar arithmetic, ISO-8601 and Capture timestamps, windows, durations.
 * Expected epoch values were computed independently with `date -u -d '<time>' +%s`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "qs/timeutil.h"

static void test_iso8601_parses_every_accepted_form(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t ms;
  } ok[] = {
      {"1970-01-01T00:00:00Z", 0},
      {"2026-11-25T06:40:00.123Z", 1795588800123LL},
      {"2026-11-25T06:40:00.1234567Z", 1795588800123LL}, /* any fraction length, truncated */
      {"2026-11-25T06:40:00,5Z", 1795588800500LL},
      {"2026-11-25 06:40:00Z", 1795588800000LL},
      {"2026-11-25T07:40:00+01:00", 1795588800000LL},
      {"2026-11-25T05:10:00-0130", 1795588800000LL},
      {"2026-11-25T06:40Z", 1795588800000LL},
      {"2026-11-25", 1795564800000LL},
      {"2024-02-29T12:00:00Z", 1709208000000LL}, /* leap day */
      {"2000-02-29T00:00:00Z", 951782400000LL},  /* divisible by 400 */
      {"2038-01-19T03:14:08Z", 2147483648000LL}, /* past 32-bit time_t */
      {"1969-12-31T23:59:59.999Z", -1},
      {"1900-03-01T00:00:00Z", -2203891200000LL},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t ms = 42;
    if (qs_time_parse_iso8601(ok[i].s, &ms) != 0 || ms != ok[i].ms)
      fail_msg("%s: got %lld want %lld", ok[i].s, (long long)ms, (long long)ok[i].ms);
  }
}

static void test_iso8601_rejects_garbage_and_impossible_dates(void **state) {
  (void)state;
  static const char *bad[] = {"",
                              "2026-13-01T00:00:00Z",
                              "2026-02-29T00:00:00Z", /* not a leap year */
                              "1900-02-29T00:00:00Z", /* divisible by 100 */
                              "2026-04-31T00:00:00Z",
                              "2026-11-25T24:00:00Z",
                              "2026-11-25T06:60:00Z",
                              "2026-11-25T06:40:00", /* no zone */
                              "2026-11-25T06:40:00ZZ",
                              "2026-11-25T06:40:00.Z",
                              "26-11-25T06:40:00Z",
                              "2026/11/25",
                              "2026-11-25T06:40:00+25:00",
                              "now"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms;
    if (qs_time_parse_iso8601(bad[i], &ms) == 0)
      fail_msg("accepted '%s'", bad[i]);
  }
  int64_t ms;
  assert_int_not_equal(qs_time_parse_iso8601(NULL, &ms), 0);
}

static void test_iso8601_format_round_trips(void **state) {
  (void)state;
  char buf[40];
  qs_time_format_iso8601(1795588800123LL, buf, sizeof buf);
  assert_string_equal(buf, "2026-11-25T06:40:00.123Z");
  qs_time_format_iso8601(-1, buf, sizeof buf);
  assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
  for (int64_t t = -5000000000000LL; t < 5000000000000LL; t += 123456789011LL) {
    int64_t back;
    qs_time_format_iso8601(t, buf, sizeof buf);
    assert_int_equal(qs_time_parse_iso8601(buf, &back), 0);
    assert_int_equal(back, t);
  }
  /* The direct digits agree with the printf form everywhere, years 0..9999 and beyond. */
  for (int64_t t = -70000000000000LL; t < 300000000000000LL; t += 977777777777LL + t % 1000) {
    int64_t day = t >= 0 ? t / 86400000 : -((-t + 86399999) / 86400000);
    int64_t rem = t - day * 86400000;
    int64_t y;
    unsigned mo, d;
    qs_civil_from_days(day, &y, &mo, &d);
    char want[64];
    snprintf(want, sizeof want, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, mo, d,
             (unsigned)(rem / 3600000), (unsigned)(rem / 60000 % 60), (unsigned)(rem / 1000 % 60),
             (unsigned)(rem % 1000));
    assert_int_equal(qs_time_format_iso8601(t, buf, sizeof buf), strlen(want));
    assert_string_equal(buf, want);
  }
}

static void test_capture_timestamps_parse_and_format_with_am_pm(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t ms;
  } cases[] = {
      {"12/7/2018 10:22:49 AM", 1544178169000LL}, /* the real capture file's form */
      {"1/1/2020 12:00:00 AM", 1577836800000LL},  /* midnight */
      {"1/1/2020 12:30:00 PM", 1577881800000LL},  /* just after noon */
      {"2/29/2024 11:59:59 PM", 1709251199000LL}, {"11/25/2026 6:40:00 AM", 1795588800000LL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t ms;
    char buf[40];
    assert_int_equal(qs_time_parse_capture(cases[i].s, &ms), 0);
    assert_int_equal(ms, cases[i].ms);
    assert_int_equal(qs_time_parse_any(cases[i].s, &ms), 0);
    assert_int_equal(ms, cases[i].ms);
    qs_time_format_capture(cases[i].ms, buf, sizeof buf);
    assert_string_equal(buf, cases[i].s);
  }
  static const char *bad[] = {"13/1/2020 1:00:00 AM", "1/1/2020 13:00:00 PM",
                              "1/1/2020 0:00:00 AM",  "2/30/2020 1:00:00 AM",
                              "1/1/2020 1:00:00",     "1/1/2020 1:00:00 am"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms;
    if (qs_time_parse_capture(bad[i], &ms) == 0)
      fail_msg("accepted '%s'", bad[i]);
  }
}

static void test_window_start_is_epoch_aligned_and_half_open(void **state) {
  (void)state;
  const int64_t w = 5 * QS_MS_PER_MIN;
  assert_int_equal(qs_window_start(0, w), 0);
  assert_int_equal(qs_window_start(w - 1, w), 0);
  assert_int_equal(qs_window_start(w, w), w); /* the boundary starts the next window */
  assert_int_equal(qs_window_start(-1, w), -w);
  assert_int_equal(qs_window_start(-w, w), -w);
  assert_int_equal(qs_window_start(1795588800123LL, QS_MS_PER_HOUR), 1795586400000LL);
  assert_int_equal(qs_window_start(1795588800123LL, QS_MS_PER_DAY), 1795564800000LL);
}

static void test_durations_parse_with_units(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t ms;
  } ok[] = {{"250ms", 250},    {"90s", 90000},  {"30m", 1800000}, {"1h", 3600000},
            {"7d", 604800000}, {"300", 300000}, {"0", 0}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t ms;
    assert_int_equal(qs_duration_parse_ms(ok[i].s, &ms), 0);
    assert_int_equal(ms, ok[i].ms);
  }
  static const char *bad[] = {
      "", "-1s", "1.5h", "1 h", "1w", "h", "99999999999999999999d", "9223372036854775807d"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms;
    if (qs_duration_parse_ms(bad[i], &ms) == 0)
      fail_msg("accepted '%s'", bad[i]);
  }
}

static void test_days_from_civil_round_trips_over_centuries(void **state) {
  (void)state;
  for (int64_t z = -800000; z < 800000; z += 37) {
    int64_t y;
    unsigned m, d;
    qs_civil_from_days(z, &y, &m, &d);
    assert_int_equal(qs_days_from_civil(y, m, d), z);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_iso8601_parses_every_accepted_form),
      cmocka_unit_test(test_iso8601_rejects_garbage_and_impossible_dates),
      cmocka_unit_test(test_iso8601_format_round_trips),
      cmocka_unit_test(test_capture_timestamps_parse_and_format_with_am_pm),
      cmocka_unit_test(test_window_start_is_epoch_aligned_and_half_open),
      cmocka_unit_test(test_durations_parse_with_units),
      cmocka_unit_test(test_days_from_civil_round_trips_over_centuries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
