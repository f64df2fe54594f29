/* test_error.c — qs_strerror covers every qs_err and libuv codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "qs/error.h"

static void test_every_qs_err_has_a_distinct_name(void **state) {
  (void)state;
  for (int c = QS_ERR_INVALID; c > QS_ERR_LAST; c--) {
    const char *name = qs_strerror(c);
    assert_non_null(name);
    assert_string_not_equal(name, "unknown error");
    for (int d = c - 1; d > QS_ERR_LAST; d--)
      assert_string_not_equal(name, qs_strerror(d));
  }
}

static void test_libuv_codes_are_named_by_libuv(void **state) {
  (void)state;
  assert_string_equal(qs_strerror(UV_ECONNREFUSED), uv_strerror(UV_ECONNREFUSED));
  assert_string_equal(qs_strerror(0), "ok");
  assert_string_equal(qs_strerror(12345), "unknown error");
}

static void test_xstrdup_copies(void **state) {
  (void)state;
  char *s = qs_xstrdup("quake");
  assert_string_equal(s, "quake");
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_qs_err_has_a_distinct_name),
      cmocka_unit_test(test_libuv_codes_are_named_by_libuv),
      cmocka_unit_test(test_xstrdup_copies),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
