/* test_config.c — table-driven settings: every type, defaults, each kind of invalid value and its
 * message, required and secret variables, --help listing every variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "qs/config.h"

static const qs_cfg_spec table[] = {
    {"NAME", QS_CFG_STR, "quake", 0, 8, NULL, "a short name", 0},
    {"COUNT", QS_CFG_INT, "10", 1, 100, NULL, "how many", 0},
    {"RATIO", QS_CFG_DOUBLE, "0.5", 0, 1, NULL, "a fraction", 0},
    {"FLAG", QS_CFG_BOOL, "false", 0, 0, NULL, "on or off", 0},
    {"WAIT", QS_CFG_DURATION, "30s", 0, 3600000, NULL, "how long", 0},
    {"MODE", QS_CFG_ENUM, "group", 0, 0, "group|always|never", "fsync policy", 0},
    {"PORT", QS_CFG_PORT, "5672", 0, 65535, NULL, "a port", 0},
    {"KEY", QS_CFG_STR, NULL, 0, 0, NULL, "a secret key", QS_CFG_SECRET},
    {NULL},
};
static const qs_cfg_spec required_table[] = {
    {"MUST", QS_CFG_STR, NULL, 0, 0, NULL, "needed", QS_CFG_REQUIRED},
    {NULL},
};

typedef struct env {
  const char *k[8], *v[8];
  int n;
} env;

static const char *get(const char *name, void *arg) {
  env *e = arg;
  for (int i = 0; i < e->n; i++)
    if (strcmp(e->k[i], name) == 0)
      return e->v[i];
  return NULL;
}

static int load1(qs_config *c, const char *k, const char *v, char *err, size_t errlen) {
  env e = {{k}, {v}, k ? 1 : 0};
  const qs_cfg_spec *tables[] = {table, NULL};
  return qs_config_load(c, tables, get, &e, err, errlen);
}

static void test_defaults_apply_when_nothing_is_set(void **state) {
  (void)state;
  qs_config c;
  char err[256];
  assert_int_equal(load1(&c, NULL, NULL, err, sizeof err), 0);
  assert_string_equal(qs_config_str(&c, "NAME"), "quake");
  assert_int_equal(qs_config_int(&c, "COUNT"), 10);
  assert_true(qs_config_double(&c, "RATIO") == 0.5);
  assert_false(qs_config_bool(&c, "FLAG"));
  assert_int_equal(qs_config_ms(&c, "WAIT"), 30000);
  assert_string_equal(qs_config_str(&c, "MODE"), "group");
  assert_int_equal(qs_config_int(&c, "PORT"), 5672);
  assert_false(qs_config_is_set(&c, "KEY"));
  assert_string_equal(qs_config_str(&c, "KEY"), "");
  qs_config_free(&c);
}

static void test_environment_overrides_defaults_for_every_type(void **state) {
  (void)state;
  env e = {{"NAME", "COUNT", "RATIO", "FLAG", "WAIT", "MODE", "PORT", "KEY"},
           {"abc", "100", "1", "YES", "250ms", "never", "0", "s3cr3t"},
           8};
  const qs_cfg_spec *tables[] = {table, NULL};
  qs_config c;
  char err[256];
  assert_int_equal(qs_config_load(&c, tables, get, &e, err, sizeof err), 0);
  assert_string_equal(qs_config_str(&c, "NAME"), "abc");
  assert_int_equal(qs_config_int(&c, "COUNT"), 100);
  assert_true(qs_config_double(&c, "RATIO") == 1.0);
  assert_true(qs_config_bool(&c, "FLAG"));
  assert_int_equal(qs_config_ms(&c, "WAIT"), 250);
  assert_string_equal(qs_config_str(&c, "MODE"), "never");
  assert_int_equal(qs_config_int(&c, "PORT"), 0);
  char json[1024];
  assert_true(qs_config_to_json(&c, json, sizeof json) > 0);
  assert_null(strstr(json, "s3cr3t"));
  assert_non_null(strstr(json, "\"KEY\":\"***\""));
  qs_config_free(&c);
}

static void test_each_invalid_value_names_variable_value_and_what_is_allowed(void **state) {
  (void)state;
  static const struct {
    const char *k, *v, *msg;
  } cases[] = {
      {"COUNT", "abc", "COUNT=\"abc\": not an integer: allowed an integer 1..100"},
      {"COUNT", "101", "COUNT=\"101\": out of range: allowed an integer 1..100"},
      {"COUNT", "0", "COUNT=\"0\": out of range: allowed an integer 1..100"},
      {"COUNT", "5x", "COUNT=\"5x\": not an integer: allowed an integer 1..100"},
      {"COUNT", "\t5", "COUNT=\"\t5\": not an integer: allowed an integer 1..100"},
      {"RATIO", " 0.5", "RATIO=\" 0.5\": not a number: allowed a number 0..1"},
      {"RATIO", "1.5", "RATIO=\"1.5\": out of range: allowed a number 0..1"},
      {"RATIO", "nan", "RATIO=\"nan\": not a number: allowed a number 0..1"},
      {"FLAG", "maybe", "FLAG=\"maybe\": not a bool: allowed true|false|1|0|yes|no|on|off"},
      {"WAIT", "5 minutes", "WAIT=\"5 minutes\": not a duration"},
      {"WAIT", "2h", "WAIT=\"2h\": out of range: allowed 0..3600000 ms"},
      {"MODE", "sometimes", "MODE=\"sometimes\": not allowed: allowed one of group|always|never"},
      {"PORT", "70000", "PORT=\"70000\": out of range: allowed an integer 0..65535"},
      {"NAME", "far-too-long", "NAME=\"far-too-long\": too long: allowed at most 8 characters"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qs_config c;
    char err[256] = "";
    assert_int_not_equal(load1(&c, cases[i].k, cases[i].v, err, sizeof err), 0);
    if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
      fail_msg("case %zu: got '%s', want prefix '%s'", i, err, cases[i].msg);
    qs_config_free(&c);
  }
}

static void test_ip_accepts_v4_and_v6_literals_and_rejects_host_names(void **state) {
  (void)state;
  static const qs_cfg_spec ip_table[] = {
      {"BIND", QS_CFG_IP, "127.0.0.1", 0, 0, NULL, "listen address", 0}, {NULL}};
  const qs_cfg_spec *tables[] = {ip_table, NULL};
  static const char *const good[] = {"0.0.0.0", "10.1.2.3", "::", "::1", "fe80::1"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    env e = {{"BIND"}, {good[i]}, 1};
    qs_config c;
    char err[256] = "";
    if (qs_config_load(&c, tables, get, &e, err, sizeof err) != 0)
      fail_msg("%s rejected: %s", good[i], err);
    assert_string_equal(qs_config_str(&c, "BIND"), good[i]);
    qs_config_free(&c);
  }
  static const char *const bad[] = {"localhost", "256.0.0.1", "1.2.3", " 127.0.0.1", "::g"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    env e = {{"BIND"}, {bad[i]}, 1};
    qs_config c;
    char err[256] = "", want[64];
    if (qs_config_load(&c, tables, get, &e, err, sizeof err) == 0)
      fail_msg("%s accepted", bad[i]);
    snprintf(want, sizeof want, "BIND=\"%s\": not an IP address: allowed an IPv4 or IPv6", bad[i]);
    if (strncmp(err, want, strlen(want)) != 0)
      fail_msg("got '%s', want prefix '%s'", err, want);
  }
}

static void test_invalid_secret_value_is_not_echoed(void **state) {
  (void)state;
  static const qs_cfg_spec secret_int[] = {
      {"PIN", QS_CFG_INT, NULL, 0, 9, NULL, "a secret pin", QS_CFG_SECRET}, {NULL}};
  env e = {{"PIN"}, {"12345"}, 1};
  const qs_cfg_spec *tables[] = {secret_int, NULL};
  qs_config c;
  char err[256];
  assert_int_not_equal(qs_config_load(&c, tables, get, &e, err, sizeof err), 0);
  assert_null(strstr(err, "12345"));
  assert_non_null(strstr(err, "PIN=\"***\""));
}

static void test_required_variable_missing_fails_with_its_name(void **state) {
  (void)state;
  env e = {{0}, {0}, 0};
  const qs_cfg_spec *tables[] = {table, required_table, NULL};
  qs_config c;
  char err[256];
  assert_int_not_equal(qs_config_load(&c, tables, get, &e, err, sizeof err), 0);
  assert_non_null(strstr(err, "MUST is required"));
}

static void test_help_lists_every_variable_of_every_table_once(void **state) {
  (void)state;
  const qs_cfg_spec *tables[] = {table, required_table, NULL};
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  qs_config_print_help(tables, f);
  fclose(f);
  int lines = 0;
  for (char *p = text; (p = strchr(p, '\n')); p++)
    lines++;
  assert_int_equal(lines, 9);
  assert_non_null(strstr(text, "  COUNT  integer[1..100]  default: 10  how many\n"));
  assert_non_null(strstr(text, "  MODE  group|always|never  default: group  fsync policy\n"));
  assert_non_null(strstr(text, "  KEY  string  default: (unset)  a secret key\n"));
  assert_non_null(strstr(text, "  MUST  string  default: (unset)  needed (required)\n"));
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_apply_when_nothing_is_set),
      cmocka_unit_test(test_environment_overrides_defaults_for_every_type),
      cmocka_unit_test(test_each_invalid_value_names_variable_value_and_what_is_allowed),
      cmocka_unit_test(test_ip_accepts_v4_and_v6_literals_and_rejects_host_names),
      cmocka_unit_test(test_invalid_secret_value_is_not_echoed),
      cmocka_unit_test(test_required_variable_missing_fails_with_its_name),
      cmocka_unit_test(test_help_lists_every_variable_of_every_table_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
