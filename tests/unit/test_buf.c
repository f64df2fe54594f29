/* test_buf.c — the growable buffer keeps length, NUL termination and JSON escaping right. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The printf definition of qs_double_shortest, the reference for its direct decimal form. */
static size_t ref_shortest(char *out, size_t cap, double v) {
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(out, cap, "%.*g", prec, v);
    if (prec == 17 || strtod(out, NULL) == v)
      break;
  }
  return (size_t)n;
}

static void check_shortest(double v) {
  char a[64], b[64];
  size_t na = qs_double_shortest(a, sizeof a, v), nb = ref_shortest(b, sizeof b, v);
  if (na != nb || strcmp(a, b) != 0)
    fail_msg("%.17g: \"%s\" != \"%s\"", v, a, b);
  char small[5], smallref[5]; /* snprintf's truncation, return value included */
  assert_int_equal(qs_double_shortest(small, sizeof small, v), ref_shortest(smallref, 5, v));
  assert_string_equal(small, smallref);
}

static void test_double_shortest_matches_the_printf_form(void **state) {
  (void)state;
  const double edge[] = {0.0,
                         -0.0,
                         1e-4,
                         -1e-4,
                         9.9e-5,
                         1e9,
                         999999999.5,
                         7.1,
                         -117.5993,
                         35.7695,
                         0.1,
                         0.3,
                         10.5,
                         -2,
                         1e-7,
                         123456.789012,
                         5e-324,
                         1.7976931348623157e308,
                         3.14159265358979};
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
    check_shortest(edge[i]);
  uint64_t r = 88172645463325252ull;
  for (int i = 0; i < 200000; i++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    int64_t m = (int64_t)(r % 2000000000000ull) - 1000000000000;
    double scale = i % 3 == 0 ? 1e6 : i % 3 == 1 ? 1e3 : 1e7;
    check_shortest((double)m / scale);
    double d;
    memcpy(&d, &r, sizeof d);
    if (d == d)
      check_shortest(d);
  }
}

static void test_i64_str_matches_printf(void **state) {
  (void)state;
  char a[32], b[32];
  int64_t edge[] = {0, 1, -1, 9, 10, 99, 100, -100, 999, 1000, 123456789, INT64_MAX, INT64_MIN};
  for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) {
    snprintf(b, sizeof b, "%" PRId64, edge[i]);
    assert_int_equal(qs_i64_str(edge[i], a), strlen(b));
    assert_string_equal(a, b);
  }
  uint64_t x = 88172645463325252ULL; /* xorshift: values of every length and sign */
  for (int i = 0; i < 100000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int64_t v = (int64_t)(x >> (x % 64));
    if (x & 1)
      v = -v;
    snprintf(b, sizeof b, "%" PRId64, v);
    assert_int_equal(qs_i64_str(v, a), strlen(b));
    assert_string_equal(a, b);
  }
}

static void test_micro_str_is_the_shortest_decimal(void **state) {
  (void)state;
  char a[40], b[40];
  struct {
    int64_t m;
    const char *want;
  } cases[] = {{0, "0"},           {1, "0.000001"}, {-1, "-0.000001"}, {6250000, "6.25"},
               {-1500000, "-1.5"}, {1000000, "1"},  {-500000, "-0.5"}, {123456789, "123.456789"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    assert_int_equal(qs_micro_str(cases[i].m, a), strlen(cases[i].want));
    assert_string_equal(a, cases[i].want);
  }
  /* For every m / 10^6 in the magnitude/depth range: equal to %.15g of the double. */
  for (int64_t m = -3000000; m <= 1000000000; m += 997) {
    double d = (double)m / 1e6;
    if (d == 0 || fabs(d) < 1e-4)
      continue;
    snprintf(b, sizeof b, "%.15g", d);
    qs_micro_str(m, a);
    assert_string_equal(a, b);
  }
}

/* cJSON 1.7's print_number, through printf and strtod: the reference qs_cjson_number must equal. */
static void cjson_reference(double d, char *out) {
  if (isnan(d) || isinf(d)) {
    strcpy(out, "null");
    return;
  }
  int vi = d >= (double)INT32_MAX ? INT32_MAX : d <= (double)INT32_MIN ? INT32_MIN : (int)d;
  if (d == (double)vi) {
    snprintf(out, 40, "%d", vi);
    return;
  }
  snprintf(out, 40, "%1.15g", d);
  double test = strtod(out, NULL);
  double max = fabs(test) > fabs(d) ? fabs(test) : fabs(d);
  if (!(fabs(test - d) <= max * DBL_EPSILON))
    snprintf(out, 40, "%1.17g", d);
}

static void check_cjson(double d) {
  char want[48], got[48];
  cjson_reference(d, want);
  size_t n = qs_cjson_number(d, got);
  if (strcmp(want, got) != 0 || n != strlen(want))
    fail_msg("%.17g: want %s, got %s", d, want, got);
}

static void test_cjson_number_equals_printf_and_strtod(void **state) {
  (void)state;
  double edge[] = {0.0,
                   -0.0,
                   1.5,
                   -1.5,
                   0.1,
                   0.3,
                   1e-4,
                   9.99e-5,
                   1e14,
                   99999999999999.9,
                   123456789012.345,
                   2147483647.0,
                   2147483648.5,
                   -2147483649.0,
                   4.35,
                   1.0 / 3,
                   2.0 / 3,
                   1e-5,
                   NAN,
                   INFINITY,
                   -INFINITY,
                   5e-324,
                   1e300,
                   0.5,
                   0.25};
  for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
    check_cjson(edge[i]);
  uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (int i = 0; i < 600000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double d;
    switch (i % 5) {
    case 0: /* an average of micro-unit values, as the rows print */
      d = (double)(int64_t)(x % 100000000000ULL) / (double)(1 + (x >> 40) % 5000) / 1e6;
      break;
    case 1: /* any double of the fast range's magnitudes */
      d = ldexp((double)(x >> 11) / 9007199254740992.0 + 0.5, (int)((x >> 3) % 62) - 15);
      break;
    case 2: /* near a power of ten */
      d = nextafter(pow(10, (int)(x % 19) - 5), (x & 1) ? 1e300 : 0) * ((x & 2) ? -1 : 1);
      break;
    case 3: { /* any bit pattern */
      memcpy(&d, &x, sizeof d);
      break;
    }
    default: /* a short decimal, and its neighbours (ties at the 15th/17th digit) */
      d = (double)(x % 1000000000000000ULL) / pow(10, (int)((x >> 50) % 18));
      d = (x & 4) ? nextafter(d, 1e300) : (x & 8) ? nextafter(d, 0) : d;
      break;
    }
    check_cjson(d);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_grows_and_stays_nul_terminated),
      cmocka_unit_test(test_printf_longer_than_the_small_buffer),
      cmocka_unit_test(test_binary_content_keeps_its_length),
      cmocka_unit_test(test_double_shortest_matches_the_printf_form),
      cmocka_unit_test(test_i64_str_matches_printf),
      cmocka_unit_test(test_micro_str_is_the_shortest_decimal),
      cmocka_unit_test(test_cjson_number_equals_printf_and_strtod),
      cmocka_unit_test(test_json_str_escapes_quotes_controls_and_bad_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
