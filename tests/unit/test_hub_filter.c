/* test_hub_filter.c — selector-filter expressions and filter maps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filter.h"
#include "qs/error.h"

static hub_position parse_ok(const char *s) {
  hub_position p;
  char err[128];
  assert_int_equal(hub_filter_parse_expr(s, strlen(s), &p, err, sizeof err), 0);
  return p;
}

static void test_offset_minus_one_means_earliest(void **st) {
  (void)st;
  assert_int_equal(parse_ok("amqp.annotation.x-opt-offset > '-1'").kind, HUB_POS_EARLIEST);
}

static void test_offset_latest_means_latest(void **st) {
  (void)st;
  assert_int_equal(parse_ok("amqp.annotation.x-opt-offset > '@latest'").kind, HUB_POS_LATEST);
}

static void test_offset_and_inclusive_flag(void **st) {
  (void)st;
  hub_position p = parse_ok("amqp.annotation.x-opt-offset >= '36'");
  assert_int_equal(p.kind, HUB_POS_OFFSET);
  assert_true(p.inclusive);
  assert_int_equal(p.value, 36);
  p = parse_ok("AMQP.ANNOTATION.X-OPT-OFFSET>'36'");
  assert_false(p.inclusive);
}

static void test_sequence_and_time_expressions(void **st) {
  (void)st;
  hub_position p = parse_ok("amqp.annotation.x-opt-sequence-number > '1'");
  assert_int_equal(p.kind, HUB_POS_SEQ);
  assert_int_equal(p.value, 1);
  p = parse_ok("amqp.annotation.x-opt-enqueued-time > '1732500000000'");
  assert_int_equal(p.kind, HUB_POS_TIME);
  assert_int_equal(p.value, 1732500000000LL);
}

static void test_malformed_expressions_are_refused(void **st) {
  (void)st;
  const char *bad[] = {"",
                       "amqp.annotation.x-opt-offset",
                       "amqp.annotation.x-opt-offset < '1'",
                       "amqp.annotation.x-opt-offset > 1",
                       "amqp.annotation.x-opt-offset > '1",
                       "amqp.annotation.x-opt-offset > 'abc'",
                       "amqp.annotation.x-opt-sequence-number > '-5'",
                       "amqp.annotation.x-opt-offset > '1' or 1=1",
                       "amqp.annotation.x-opt-foo > '1'"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hub_position p;
    char err[128] = "";
    assert_int_equal(hub_filter_parse_expr(bad[i], strlen(bad[i]), &p, err, sizeof err),
                     QS_ERR_PARSE);
    assert_true(strlen(err) > 0);
  }
}

static void put_filter(pn_data_t *d, bool ulong_desc, const char *expr) {
  pn_data_clear(d);
  pn_data_put_map(d);
  pn_data_enter(d);
  pn_data_put_symbol(d, pn_bytes(strlen(HUB_FILTER_SELECTOR), HUB_FILTER_SELECTOR));
  pn_data_put_described(d);
  pn_data_enter(d);
  if (ulong_desc)
    pn_data_put_ulong(d, HUB_FILTER_SELECTOR_CODE);
  else
    pn_data_put_symbol(d, pn_bytes(strlen(HUB_FILTER_SELECTOR), HUB_FILTER_SELECTOR));
  pn_data_put_string(d, pn_bytes(strlen(expr), expr));
  pn_data_exit(d);
  pn_data_exit(d);
}

static void test_filter_map_with_both_descriptor_kinds(void **st) {
  (void)st;
  pn_data_t *d = pn_data(0);
  hub_position p;
  char err[128];
  put_filter(d, true, "amqp.annotation.x-opt-sequence-number >= '7'");
  assert_int_equal(hub_filter_from_data(d, &p, err, sizeof err), 0);
  assert_int_equal(p.kind, HUB_POS_SEQ);
  assert_true(p.inclusive);
  assert_int_equal(p.value, 7);
  put_filter(d, false, "amqp.annotation.x-opt-offset > '12'");
  assert_int_equal(hub_filter_from_data(d, &p, err, sizeof err), 0);
  assert_int_equal(p.kind, HUB_POS_OFFSET);
  assert_int_equal(p.value, 12);
  pn_data_clear(d);
  assert_int_equal(hub_filter_from_data(d, &p, err, sizeof err), 0);
  assert_int_equal(p.kind, HUB_POS_EARLIEST);
  put_filter(d, true, "amqp.annotation.x-opt-offset >");
  assert_int_equal(hub_filter_from_data(d, &p, err, sizeof err), QS_ERR_PARSE);
  pn_data_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_offset_minus_one_means_earliest),
      cmocka_unit_test(test_offset_latest_means_latest),
      cmocka_unit_test(test_offset_and_inclusive_flag),
      cmocka_unit_test(test_sequence_and_time_expressions),
      cmocka_unit_test(test_malformed_expressions_are_refused),
      cmocka_unit_test(test_filter_map_with_both_descriptor_kinds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
