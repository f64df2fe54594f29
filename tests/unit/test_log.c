/* test_log.c — JSON log lines: shape, escaping, types, level threshold, truncation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <cmocka.h>

#include "qs/log.h"

#define T0 1795591108123LL /* 2026-11-25T07:18:28.123Z (date -u -d @1795591108) */

static cJSON *format(const qs_log *log, qs_log_level lvl, const char *msg, const qs_log_field *f,
                     size_t n, char *buf, size_t cap) {
  size_t len = qs_log_format(buf, cap, log, T0, lvl, msg, f, n);
  assert_int_equal(buf[len - 1], '\n');
  assert_int_equal(strlen(buf), len);
  cJSON *j = cJSON_ParseWithLength(buf, len);
  assert_non_null(j);
  return j;
}

static void test_line_has_ts_level_service_msg_then_fields(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "hub", QS_LOG_INFO, 2);
  char buf[QS_LOG_LINE_MAX];
  qs_log_field f[] = {QS_LSTR("addr", "127.0.0.1"), QS_LINT("port", 5672), QS_LDBL("ratio", 0.25),
                      QS_LBOOL("tls", true), QS_LJSON("cfg", "{\"a\":1}")};
  size_t len = qs_log_format(buf, sizeof buf, &log, T0, QS_LOG_INFO, "listening", f, 5);
  const char *want = "{\"ts\":\"2026-11-25T07:18:28.123Z\",\"level\":\"info\",\"service\":\"hub\","
                     "\"msg\":\"listening\",\"addr\":\"127.0.0.1\",\"port\":5672,\"ratio\":0.25,"
                     "\"tls\":true,\"cfg\":{\"a\":1}}\n";
  assert_string_equal(buf, want);
  assert_int_equal(len, strlen(want));
}

static void test_strings_are_escaped_and_invalid_utf8_replaced(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "svc\"x", QS_LOG_DEBUG, 2);
  char buf[QS_LOG_LINE_MAX];
  qs_log_field f[] = {QS_LSTR("k\n", "a\"b\\c\td\x01\xff")};
  cJSON *j = format(&log, QS_LOG_WARN, "m\r", f, 1, buf, sizeof buf);
  assert_string_equal(cJSON_GetObjectItem(j, "service")->valuestring, "svc\"x");
  assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, "m\r");
  assert_string_equal(cJSON_GetObjectItem(j, "k\n")->valuestring, "a\"b\\c\td\x01\xef\xbf\xbd");
  assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
  cJSON_Delete(j);
}

static void test_non_finite_doubles_and_null_strings_log_as_null(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_DEBUG, 2);
  char buf[QS_LOG_LINE_MAX];
  qs_log_field f[] = {QS_LDBL("nan", NAN), QS_LDBL("inf", INFINITY), QS_LSTR("s", NULL)};
  cJSON *j = format(&log, QS_LOG_INFO, "x", f, 3, buf, sizeof buf);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nan")));
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "inf")));
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "s")));
  cJSON_Delete(j);
}

static void test_huge_string_field_is_cut_with_a_marker_and_later_fields_kept(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_DEBUG, 2);
  static char big[20000];
  memset(big, 'x', sizeof big - 1);
  char buf[QS_LOG_LINE_MAX];
  qs_log_field f[] = {QS_LSTR("small", "ok"), QS_LSTR("big", big), QS_LINT("after", 1)};
  cJSON *j = format(&log, QS_LOG_INFO, "x", f, 3, buf, sizeof buf);
  assert_string_equal(cJSON_GetObjectItem(j, "small")->valuestring, "ok");
  const char *cut = cJSON_GetObjectItem(j, "big")->valuestring;
  size_t n = strlen(cut), mark = strlen(QS_LOG_CUT_MARK);
  assert_true(n > mark && n < 4096);
  assert_string_equal(cut + n - mark, QS_LOG_CUT_MARK);
  assert_int_equal(strspn(cut, "x"), n - mark);
  assert_int_equal(cJSON_GetObjectItem(j, "after")->valueint, 1);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
  cJSON_Delete(j);
}

static void test_huge_message_is_cut_and_line_stays_valid_json(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_DEBUG, 2);
  static char big[20000];
  memset(big, '"', sizeof big - 1); /* every byte needs an escape */
  char buf[QS_LOG_LINE_MAX];
  qs_log_field f[] = {QS_LINT("port", 80)};
  cJSON *j = format(&log, QS_LOG_INFO, big, f, 1, buf, sizeof buf);
  const char *msg = cJSON_GetObjectItem(j, "msg")->valuestring;
  assert_int_equal(strspn(msg, "\""), strlen(msg) - strlen(QS_LOG_CUT_MARK));
  assert_int_equal(cJSON_GetObjectItem(j, "port")->valueint, 80);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
  cJSON_Delete(j);
}

static void test_fields_beyond_the_line_are_dropped_and_flagged(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_DEBUG, 2);
  static char val[1500], big_json[9000];
  memset(val, 'v', sizeof val - 1);
  memset(big_json, ' ', sizeof big_json - 1);
  big_json[0] = '1';
  qs_log_field f[10];
  char keys[10][8];
  for (int i = 0; i < 9; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    f[i] = QS_LSTR(keys[i], val);
  }
  f[9] = QS_LJSON("raw", big_json); /* raw JSON cannot be cut: dropped whole */
  char buf[QS_LOG_LINE_MAX];
  cJSON *j = format(&log, QS_LOG_INFO, "x", f, 10, buf, sizeof buf);
  assert_non_null(cJSON_GetObjectItem(j, "k0"));
  assert_null(cJSON_GetObjectItem(j, "raw"));
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
  cJSON_Delete(j);
}

static void test_line_within_limits_has_no_truncated_flag(void **state) {
  (void)state;
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_DEBUG, 2);
  static char val[1000];
  memset(val, 'v', sizeof val - 1);
  qs_log_field f[] = {QS_LSTR("a", val), QS_LSTR("b", val)};
  char buf[QS_LOG_LINE_MAX];
  cJSON *j = format(&log, QS_LOG_INFO, val, f, 2, buf, sizeof buf);
  assert_string_equal(cJSON_GetObjectItem(j, "b")->valuestring, val);
  assert_null(cJSON_GetObjectItem(j, "truncated"));
  cJSON_Delete(j);
}

static void test_level_threshold_drops_lower_levels(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  qs_log log;
  qs_log_init(&log, "s", QS_LOG_WARN, fds[1]);
  qs_log_info(&log, "dropped");
  qs_log_debug(&log, "dropped too", QS_LINT("n", 1));
  qs_log_error(&log, "kept", QS_LINT("n", 2));
  close(fds[1]);
  char out[4096] = {0};
  ssize_t n = read(fds[0], out, sizeof out - 1);
  close(fds[0]);
  assert_true(n > 0);
  assert_null(strstr(out, "dropped"));
  assert_non_null(strstr(out, "\"msg\":\"kept\",\"n\":2}\n"));
  assert_int_equal(strchr(out, '\n') - out + 1, n); /* exactly one line */
}

static void test_level_names_parse_case_insensitively(void **state) {
  (void)state;
  qs_log_level l;
  assert_int_equal(qs_log_level_parse("DEBUG", &l), 0);
  assert_int_equal(l, QS_LOG_DEBUG);
  assert_int_equal(qs_log_level_parse("warn", &l), 0);
  assert_int_equal(l, QS_LOG_WARN);
  assert_int_not_equal(qs_log_level_parse("loud", &l), 0);
  assert_int_not_equal(qs_log_level_parse(NULL, &l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_line_has_ts_level_service_msg_then_fields),
      cmocka_unit_test(test_strings_are_escaped_and_invalid_utf8_replaced),
      cmocka_unit_test(test_non_finite_doubles_and_null_strings_log_as_null),
      cmocka_unit_test(test_huge_string_field_is_cut_with_a_marker_and_later_fields_kept),
      cmocka_unit_test(test_huge_message_is_cut_and_line_stays_valid_json),
      cmocka_unit_test(test_fields_beyond_the_line_are_dropped_and_flagged),
      cmocka_unit_test(test_line_within_limits_has_no_truncated_flag),
      cmocka_unit_test(test_level_threshold_drops_lower_levels),
      cmocka_unit_test(test_level_names_parse_case_insensitively),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
