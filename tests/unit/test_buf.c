/* test_buf.c — the growable buffer keeps length, NUL termination and JSON escaping right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "qs/buf.h"

static void test_append_grows_and_stays_nul_terminated(void **state) {
  (void)state;
  qs_buf b = QS_BUF_INIT;
  for (int i = 0; i < 1000; i++)
    qs_buf_printf(&b, "%d,", i);
  assert_int_equal(b.len, strlen(b.p));
  assert_memory_equal(b.p, "0,1,2,", 6);
  assert_memory_equal(b.p + b.len - 4, "999,", 4);
  qs_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.p, "");
  qs_buf_free(&b);
  assert_null(b.p);
}

static void test_printf_longer_than_the_small_buffer(void **state) {
  (void)state;
  qs_buf b = QS_BUF_INIT;
  char big[1000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  qs_buf_printf(&b, "<%s>", big);
  assert_int_equal(b.len, 1001);
  assert_int_equal(b.p[0], '<');
  assert_int_equal(b.p[1000], '>');
  qs_buf_free(&b);
}

static void test_binary_content_keeps_its_length(void **state) {
  (void)state;
  qs_buf b = QS_BUF_INIT;
  qs_buf_append(&b, "a\0b", 3);
  assert_int_equal(b.len, 3);
  assert_memory_equal(b.p, "a\0b", 3);
  qs_buf_free(&b);
}

static void test_json_str_escapes_quotes_controls_and_bad_utf8(void **state) {
  (void)state;
  qs_buf b = QS_BUF_INIT;
  const char in[] = "a\"b\\c\n\x01\xff\xc3\xa9";
  qs_buf_json_str(&b, in, sizeof in - 1);
  assert_string_equal(b.p, "a\\\"b\\\\c\\n\\u0001\xef\xbf\xbd\xc3\xa9");
  qs_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_grows_and_stays_nul_terminated),
      cmocka_unit_test(test_printf_longer_than_the_small_buffer),
      cmocka_unit_test(test_binary_content_keeps_its_length),
      cmocka_unit_test(test_json_str_escapes_quotes_controls_and_bad_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
