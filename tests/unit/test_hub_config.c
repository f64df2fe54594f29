/* test_hub_config.c — the hub config loader: the shipped default, the emulator's own sample,
 * case-insensitive lookups, and one test per kind of error, each checking the JSON path the
 * message names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_config.h"
#include "qs/error.h"

/* The emulator's sample, shape as in Azure/azure-event-hubs-emulator-installer
 * EventHub-Emulator/Config/Config.json (PartitionCount as a string). */
static const char EMULATOR_SAMPLE[] =
    "{\"UserConfig\":{\"NamespaceConfig\":[{\"Type\":\"EventHub\",\"Name\":\"emulatorNs1\","
    "\"Entities\":[{\"Name\":\"eh1\",\"PartitionCount\":\"2\",\"ConsumerGroups\":[{\"Name\":"
    "\"cg1\"}]}]}],\"LoggingConfig\":{\"Type\":\"File\"}}}";

static int parse(hub_config *cfg, const char *json, char *err, size_t errlen) {
  return hub_config_parse(cfg, json, strlen(json), err, errlen);
}

static void test_emulator_sample_loads_with_default_group_and_key(void **state) {
  (void)state;
  hub_config cfg;
  char err[256];
  assert_int_equal(parse(&cfg, EMULATOR_SAMPLE, err, sizeof err), 0);
  assert_string_equal(cfg.namespace_name, "emulatorNs1");
  assert_string_equal(cfg.logging_type, "File");
  assert_int_equal(cfg.n_hubs, 1);
  const hub_config_hub *h = hub_config_find_hub(&cfg, "EH1");
  assert_non_null(h);
  assert_int_equal(h->partition_count, 2);
  assert_int_equal(h->n_groups, 2);
  assert_string_equal(h->groups[0], "$Default");
  assert_string_equal(hub_config_find_group(h, "$default"), "$Default");
  assert_string_equal(hub_config_find_group(h, "CG1"), "cg1");
  assert_null(hub_config_find_group(h, "cg2"));
  assert_int_equal(h->retention_ms, 24LL * 3600 * 1000);
  assert_false(h->capture.enabled);
  const hub_config_policy *p = hub_config_find_policy(&cfg, "rootmanagesharedaccesskey");
  assert_non_null(p);
  assert_string_equal(p->key, "SAS_KEY_VALUE");
  assert_int_equal(p->rights, HUB_RIGHT_SEND | HUB_RIGHT_LISTEN | HUB_RIGHT_MANAGE);
  hub_config_close(&cfg);
  hub_config_close(&cfg); /* idempotent */
}

static void test_default_config_file_has_the_three_hubs(void **state) {
  (void)state;
  const char *src = getenv("QS_SOURCE_DIR");
  if (!src)
    skip();
  char path[1024];
  snprintf(path, sizeof path, "%s/proto/hub-config.json", src);
  hub_config cfg;
  char err[256];
  int rc = hub_config_load(&cfg, path, err, sizeof err);
  if (rc != 0)
    fail_msg("%s", err);
  assert_string_equal(cfg.namespace_name, "quakestream");
  assert_int_equal(cfg.n_hubs, 3);
  const hub_config_hub *eq = hub_config_find_hub(&cfg, "earthquake-events");
  assert_non_null(eq);
  assert_int_equal(eq->partition_count, 4);
  assert_int_equal(eq->retention_ms, 7LL * 24 * 3600 * 1000);
  assert_true(eq->capture.enabled);
  assert_int_equal(eq->capture.interval_s, 300);
  assert_int_equal(eq->capture.size_limit_bytes, 10 * 1024 * 1024);
  assert_non_null(strstr(eq->capture.archive_name_format, "p={PartitionId}"));
  assert_non_null(hub_config_find_group(eq, "SPEED"));
  const hub_config_hub *w = hub_config_find_hub(&cfg, "Weather-Events");
  assert_non_null(w);
  assert_int_equal(w->partition_count, 2);
  assert_int_equal(w->retention_ms, 3LL * 24 * 3600 * 1000);
  assert_false(w->capture.enabled);
  const hub_config_hub *cs = hub_config_find_hub(&cfg, "clickstream-events");
  assert_non_null(cs);
  assert_int_equal(cs->partition_count, 4);
  assert_int_equal(cs->retention_ms, 24LL * 3600 * 1000);
  assert_null(hub_config_find_hub(&cfg, "nope"));
  assert_int_equal(hub_config_find_policy(&cfg, "send")->rights, HUB_RIGHT_SEND);
  assert_int_equal(hub_config_find_policy(&cfg, "LISTEN")->rights, HUB_RIGHT_LISTEN);
  assert_int_equal(hub_config_find_policy(&cfg, "RootManageSharedAccessKey")->rights, 7);
  hub_config_close(&cfg);
}

/* Wraps one entity (as JSON text) in a valid namespace. */
static char *with_entities(const char *entities, const char *extra_top) {
  static char buf[8192];
  snprintf(buf, sizeof buf,
           "{\"UserConfig\":{\"NamespaceConfig\":[{\"Type\":\"EventHub\",\"Name\":\"testns1\","
           "\"Entities\":[%s]}]}%s}",
           entities, extra_top ? extra_top : "");
  return buf;
}

static void expect_error(const char *json, int code, const char *message) {
  hub_config cfg;
  char err[512];
  int rc = parse(&cfg, json, err, sizeof err);
  if (rc != code || strcmp(err, message) != 0)
    fail_msg("got %d \"%s\", want %d \"%s\"", rc, err, code, message);
  assert_null(cfg.hubs);
  assert_null(cfg.namespace_name);
}

#define ENT0 "UserConfig.NamespaceConfig[0].Entities"

static void test_partition_count_out_of_range_names_its_path(void **state) {
  (void)state;
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":2},"
                             "{\"Name\":\"b\",\"PartitionCount\":\"33\"}",
                             NULL),
               QS_ERR_RANGE, ENT0 "[1].PartitionCount: must be 1..32");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":0}", NULL), QS_ERR_RANGE,
               ENT0 "[0].PartitionCount: must be 1..32");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":\"two\"}", NULL), QS_ERR_INVALID,
               ENT0 "[0].PartitionCount: must be a whole number");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1.5}", NULL), QS_ERR_INVALID,
               ENT0 "[0].PartitionCount: must be a whole number");
  expect_error(with_entities("{\"Name\":\"a\"}", NULL), QS_ERR_INVALID,
               ENT0 "[0].PartitionCount: is required");
}

static void test_bad_names_are_rejected(void **state) {
  (void)state;
  const char *msg = ENT0 "[0].Name: must be 1..256 letters, digits, '.', '-' or '_', starting "
                         "and ending with a letter or digit";
  expect_error(with_entities("{\"Name\":\"bad/name\",\"PartitionCount\":1}", NULL), QS_ERR_INVALID,
               msg);
  expect_error(with_entities("{\"Name\":\"-lead\",\"PartitionCount\":1}", NULL), QS_ERR_INVALID,
               msg);
  expect_error(with_entities("{\"Name\":\"\",\"PartitionCount\":1}", NULL), QS_ERR_INVALID, msg);
  char long_name[300];
  memset(long_name, 'a', 257);
  long_name[257] = '\0';
  char ent[400];
  snprintf(ent, sizeof ent, "{\"Name\":\"%s\",\"PartitionCount\":1}", long_name);
  expect_error(with_entities(ent, NULL), QS_ERR_INVALID, msg);
  long_name[256] = '\0'; /* exactly 256 is fine */
  snprintf(ent, sizeof ent, "{\"Name\":\"%s\",\"PartitionCount\":1}", long_name);
  hub_config cfg;
  assert_int_equal(parse(&cfg, with_entities(ent, NULL), NULL, 0), 0);
  hub_config_close(&cfg);
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1},"
                             "{\"Name\":\"A\",\"PartitionCount\":1}",
                             NULL),
               QS_ERR_INVALID, ENT0 "[1].Name: duplicate event hub \"A\"");
  expect_error("{\"UserConfig\":{\"NamespaceConfig\":[{\"Type\":\"EventHub\",\"Name\":\"ns\","
               "\"Entities\":[]}]}}",
               QS_ERR_INVALID,
               "UserConfig.NamespaceConfig[0].Name: must be 6..50 letters, digits or '-', "
               "starting with a letter and not ending with '-'");
}

static void test_consumer_group_limits(void **state) {
  (void)state;
  char ent[4096];
  int n = snprintf(ent, sizeof ent, "{\"Name\":\"a\",\"PartitionCount\":1,\"ConsumerGroups\":[");
  for (int i = 0; i < 20; i++)
    n += snprintf(ent + n, sizeof ent - (size_t)n, "%s{\"Name\":\"g%d\"}", i ? "," : "", i);
  snprintf(ent + n, sizeof ent - (size_t)n, "]}");
  /* 20 named + $Default = 21 */
  expect_error(with_entities(ent, NULL), QS_ERR_RANGE,
               ENT0 "[0].ConsumerGroups[19]: at most 20 consumer groups (with $Default)");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,\"ConsumerGroups\":"
                             "[{\"Name\":\"x\"},{\"Name\":\"X\"}]}",
                             NULL),
               QS_ERR_INVALID, ENT0 "[0].ConsumerGroups[1].Name: duplicate consumer group \"X\"");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,\"ConsumerGroups\":"
                             "[{\"Nam\":\"x\"}]}",
                             NULL),
               QS_ERR_INVALID, ENT0 "[0].ConsumerGroups[0].Nam: unknown key");
}

static void test_retention_and_capture_are_validated(void **state) {
  (void)state;
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,"
                             "\"MessageRetentionInDays\":91}",
                             NULL),
               QS_ERR_RANGE, ENT0 "[0].MessageRetentionInDays: must be 1..90");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,"
                             "\"MessageRetentionInDays\":1,\"MessageRetentionInHours\":5}",
                             NULL),
               QS_ERR_INVALID,
               ENT0 "[0].MessageRetentionInHours: give MessageRetentionInDays or "
                    "MessageRetentionInHours, not both");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,"
                             "\"Capture\":{\"Enabled\":true,\"IntervalInSeconds\":901}}",
                             NULL),
               QS_ERR_RANGE, ENT0 "[0].Capture.IntervalInSeconds: must be 1..900");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,"
                             "\"Capture\":{\"Enabled\":\"yes\"}}",
                             NULL),
               QS_ERR_INVALID, ENT0 "[0].Capture.Enabled: must be true or false");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,"
                             "\"Capture\":{\"ArchiveNameFormat\":\"{Namespace}/{EventHub}\"}}",
                             NULL),
               QS_ERR_INVALID, ENT0 "[0].Capture.ArchiveNameFormat: must contain {PartitionId}");
  hub_config cfg;
  char err[256];
  assert_int_equal(parse(&cfg,
                         with_entities("{\"Name\":\"a\",\"PartitionCount\":\"3\","
                                       "\"MessageRetentionInHours\":\"6\",\"Capture\":{"
                                       "\"Enabled\":true,\"SizeLimitInBytes\":\"2048\"}}",
                                       NULL),
                         err, sizeof err),
                   0);
  assert_int_equal(cfg.hubs[0].retention_ms, 6LL * 3600 * 1000);
  assert_int_equal(cfg.hubs[0].capture.size_limit_bytes, 2048);
  assert_int_equal(cfg.hubs[0].capture.interval_s, 300);
  hub_config_close(&cfg);
}

static void test_policies_are_validated(void **state) {
  (void)state;
  const char *ent = "{\"Name\":\"a\",\"PartitionCount\":1}";
  expect_error(with_entities(ent, ",\"SharedAccessPolicies\":[{\"Name\":\"p\",\"Key\":\"k\","
                                  "\"Rights\":[\"Read\"]}]"),
               QS_ERR_INVALID,
               "SharedAccessPolicies[0].Rights[0]: must be \"Send\", \"Listen\" or \"Manage\"");
  expect_error(with_entities(ent, ",\"SharedAccessPolicies\":[{\"Name\":\"p\",\"Key\":\"k\","
                                  "\"Rights\":[\"Manage\"]}]"),
               QS_ERR_INVALID,
               "SharedAccessPolicies[0].Rights: \"Manage\" requires \"Send\" and \"Listen\" (as "
               "in Azure)");
  expect_error(with_entities(ent, ",\"SharedAccessPolicies\":[{\"Name\":\"p\",\"Key\":\"a b\","
                                  "\"Rights\":[\"Send\"]}]"),
               QS_ERR_INVALID,
               "SharedAccessPolicies[0].Key: must be 1..256 printable ASCII characters, no "
               "spaces");
  expect_error(with_entities(ent, ",\"SharedAccessPolicies\":[{\"Name\":\"p\",\"Key\":\"k\","
                                  "\"Rights\":[\"Send\"]},{\"Name\":\"P\",\"Key\":\"k\","
                                  "\"Rights\":[\"Send\"]}]"),
               QS_ERR_INVALID, "SharedAccessPolicies[1].Name: duplicate policy \"P\"");
  expect_error(with_entities(ent, ",\"SharedAccessPolicies\":[]"), QS_ERR_RANGE,
               "SharedAccessPolicies: must list 1..12 policies");
}

static void test_structure_errors(void **state) {
  (void)state;
  expect_error("{\"UserConfig\":", QS_ERR_PARSE, "(root): not valid JSON (near byte 13)");
  expect_error("[]", QS_ERR_INVALID, "(root): must be an object");
  expect_error("{}", QS_ERR_INVALID, "UserConfig: is required");
  expect_error("{\"UserConfig\":{},\"Extra\":1}", QS_ERR_INVALID, "Extra: unknown key");
  expect_error("{\"UserConfig\":{\"NamespaceConfig\":[]}}", QS_ERR_RANGE,
               "UserConfig.NamespaceConfig: must be an array of exactly one namespace");
  expect_error("{\"UserConfig\":{\"NamespaceConfig\":[{\"Type\":\"ServiceBus\",\"Name\":"
               "\"emulatorNs1\",\"Entities\":[]}]}}",
               QS_ERR_UNSUPPORTED, "UserConfig.NamespaceConfig[0].Type: must be \"EventHub\"");
  expect_error(with_entities("", NULL), QS_ERR_RANGE,
               "UserConfig.NamespaceConfig[0].Entities: must list 1..100 event hubs");
  expect_error(with_entities("{\"Name\":\"a\",\"PartitionCount\":1,\"Partitions\":2}", NULL),
               QS_ERR_INVALID, ENT0 "[0].Partitions: unknown key");
  expect_error("{\"UserConfig\":{\"NamespaceConfig\":[{\"Type\":\"EventHub\",\"Name\":"
               "\"emulatorNs1\",\"Entities\":[{\"Name\":\"a\",\"PartitionCount\":1}]}],"
               "\"LoggingConfig\":{\"Type\":\"Syslog\"}}}",
               QS_ERR_INVALID, "UserConfig.LoggingConfig.Type: must be \"File\" or \"Console\"");
}

static void test_missing_file_is_an_io_error(void **state) {
  (void)state;
  hub_config cfg;
  char err[256];
  assert_int_equal(hub_config_load(&cfg, "/nonexistent/hub-config.json", err, sizeof err),
                   QS_ERR_IO);
  assert_non_null(strstr(err, "/nonexistent/hub-config.json"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_emulator_sample_loads_with_default_group_and_key),
      cmocka_unit_test(test_default_config_file_has_the_three_hubs),
      cmocka_unit_test(test_partition_count_out_of_range_names_its_path),
      cmocka_unit_test(test_bad_names_are_rejected),
      cmocka_unit_test(test_consumer_group_limits),
      cmocka_unit_test(test_retention_and_capture_are_validated),
      cmocka_unit_test(test_policies_are_validated),
      cmocka_unit_test(test_structure_errors),
      cmocka_unit_test(test_missing_file_is_an_io_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
