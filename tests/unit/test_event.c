/* test_event.c — the event codec: round trips, validation reasons, limits,
 * and a throughput measurement (printed, not asserted: the machine is shared). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "event_corpus.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qs/error.h"
#include "qs/event.h"

/* A realistic ~600-byte event (Ridgecrest aftershock shape). */
static const char sample_json[] =
    "{\"event_id\":\"ci38457511\",\"magnitude\":7.1,\"mag_type\":\"mw\","
    "\"place\":\"2km SW of Searles Valley, CA (Ridgecrest earthquake sequence, M7.1 "
    "mainshock)\",\"time\":1562383193040,"
    "\"updated\":1600469815487,\"longitude\":-117.5993333,\"latitude\":35.7695,"
    "\"depth_km\":8,\"event_type\":\"earthquake\",\"status\":\"reviewed\","
    "\"tsunami_flag\":true,\"alert_level\":\"yellow\",\"net\":\"ci\",\"sig\":1012,"
    "\"region\":\"us-west\",\"source\":\"usgs-summary\",\"ingested_at\":1600469816000,"
    "\"ids\":[\"ci38457511\",\"us70004jyv\",\"at00pu7cxr\"],\"change\":\"revision\","
    "\"extra_member_from_a_newer_producer\":{\"nested\":[1,2,3],\"note\":\"ignored by this "
    "decoder\"}}";

static void fill_sample(qs_event *ev) {
  qs_event_init(ev);
  strcpy(ev->event_id, "ci38457511");
  ev->has_magnitude = true;
  ev->magnitude = 7.1;
  strcpy(ev->mag_type, "mw");
  strcpy(ev->place,
         "2km SW of Searles Valley, CA (Ridgecrest earthquake sequence, M7.1 mainshock)");
  ev->time = 1562383193040;
  ev->updated = 1600469815487;
  ev->longitude = -117.5993333;
  ev->latitude = 35.7695;
  ev->has_depth = true;
  ev->depth_km = 8;
  strcpy(ev->event_type, "earthquake");
  strcpy(ev->status, "reviewed");
  ev->tsunami_flag = true;
  ev->alert_level = QS_ALERT_YELLOW;
  strcpy(ev->net, "ci");
  ev->sig = 1012;
  strcpy(ev->region, "us-west");
  strcpy(ev->source, "usgs-summary");
  ev->ingested_at = 1600469816000;
  assert_int_equal(qs_event_ids_add(ev, "ci38457511", 10), 0);
  assert_int_equal(qs_event_ids_add(ev, "us70004jyv", 10), 0);
  assert_int_equal(qs_event_ids_add(ev, "at00pu7cxr", 10), 0);
  ev->change = QS_EVENT_REVISION;
}

static void test_decode_reads_every_field(void **state) {
  (void)state;
  qs_event ev, want;
  char why[256];
  assert_int_equal(qs_event_from_json(&ev, sample_json, strlen(sample_json), why, sizeof why), 0);
  fill_sample(&want);
  assert_true(qs_event_equal(&ev, &want));
  assert_string_equal(ev.event_id, "ci38457511");
  assert_true(ev.magnitude == 7.1);
  assert_true(ev.longitude == -117.5993333);
  assert_int_equal(qs_event_ids_count(&ev), 3);
  assert_string_equal(qs_event_ids_at(&ev, 1), "us70004jyv");
  assert_null(qs_event_ids_at(&ev, 3));
  assert_true(qs_event_ids_contains(&ev, "at00pu7cxr"));
  assert_false(qs_event_ids_contains(&ev, "at00pu7cx"));
}

static void test_encode_then_decode_gives_the_same_struct(void **state) {
  (void)state;
  qs_event ev, back;
  char buf[QS_EVENT_JSON_MAX], why[256];
  fill_sample(&ev);
  /* awkward doubles: need 17 digits, tiny, negative, integral */
  ev.longitude = 0.1 + 0.2;
  ev.latitude = -1e-300;
  ev.depth_km = -9.999999999999998;
  ev.magnitude = 1.0 / 3.0;
  strcpy(ev.place, "Ege Denizi - [76.31 km] Datça (Muğla) \"q\" \\ \t\n\x01 end");
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  assert_true(n < sizeof buf);
  assert_int_equal(strlen(buf), n);
  assert_int_equal(qs_event_from_json(&back, buf, n, why, sizeof why), 0);
  assert_true(qs_event_equal(&ev, &back));
  assert_true(back.longitude == 0.1 + 0.2);
  assert_true(back.magnitude == 1.0 / 3.0);
  /* and the encoding is deterministic */
  char buf2[QS_EVENT_JSON_MAX];
  assert_int_equal(qs_event_to_json(&back, buf2, sizeof buf2), n);
  assert_string_equal(buf, buf2);
}

static void test_encode_uses_shortest_double_and_fixed_member_order(void **state) {
  (void)state;
  qs_event ev;
  char buf[QS_EVENT_JSON_MAX];
  fill_sample(&ev);
  qs_event_to_json(&ev, buf, sizeof buf);
  assert_non_null(strstr(buf, "\"magnitude\":7.1,"));
  assert_non_null(strstr(buf, "\"longitude\":-117.5993333,\"latitude\":35.7695,\"depth_km\":8,"));
  assert_memory_equal(buf, "{\"event_id\":\"ci38457511\",\"magnitude\"", 36);
  assert_non_null(strstr(buf, "\"ids\":[\"ci38457511\",\"us70004jyv\",\"at00pu7cxr\"],"
                              "\"change\":\"revision\"}"));
}

static void test_null_magnitude_depth_and_alert_round_trip(void **state) {
  (void)state;
  qs_event ev, back;
  char buf[QS_EVENT_JSON_MAX], why[256];
  fill_sample(&ev);
  ev.has_magnitude = false;
  ev.has_depth = false;
  ev.alert_level = QS_ALERT_NONE;
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  assert_non_null(strstr(buf, "\"magnitude\":null"));
  assert_non_null(strstr(buf, "\"depth_km\":null"));
  assert_non_null(strstr(buf, "\"alert_level\":null"));
  assert_int_equal(qs_event_from_json(&back, buf, n, why, sizeof why), 0);
  assert_false(back.has_magnitude);
  assert_false(back.has_depth);
  assert_true(qs_event_equal(&ev, &back));
}

static void test_superseded_event_round_trips_with_survivor(void **state) {
  (void)state;
  qs_event ev, back;
  char buf[QS_EVENT_JSON_MAX], why[256];
  fill_sample(&ev);
  ev.change = QS_EVENT_SUPERSEDED;
  strcpy(ev.superseded_by, "us70004jyv");
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  assert_non_null(strstr(buf, "\"change\":\"superseded\",\"superseded_by\":\"us70004jyv\"}"));
  assert_int_equal(qs_event_from_json(&back, buf, n, why, sizeof why), 0);
  assert_true(qs_event_equal(&ev, &back));
  assert_true(qs_event_is_retraction(&back));
}

static void test_change_defaults_to_new(void **state) {
  (void)state;
  qs_event ev;
  char buf[QS_EVENT_JSON_MAX], why[256];
  fill_sample(&ev);
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  char *c = strstr(buf, ",\"change\":\"revision\"");
  assert_non_null(c);
  strcpy(c, "}");
  n = strlen(buf);
  assert_int_equal(qs_event_from_json(&ev, buf, n, why, sizeof why), 0);
  assert_int_equal(ev.change, QS_EVENT_NEW);
  assert_false(qs_event_is_retraction(&ev));
}

/* Replace the value of one member of the sample (or drop it) and decode. */
static int decode_with(const char *member, const char *value, char *why, size_t whylen) {
  char buf[4096];
  const char *at = strstr(sample_json, member);
  assert_non_null(at);
  const char *colon = at + strlen(member);
  assert_true(*colon == ':');
  /* the value ends at the next ',' outside strings, arrays and objects */
  const char *end = colon + 1;
  int depth = 0;
  bool in_str = false;
  for (; *end; end++) {
    if (in_str) {
      if (*end == '\\')
        end++;
      else if (*end == '"')
        in_str = false;
      continue;
    }
    if (*end == '"')
      in_str = true;
    else if (*end == '[' || *end == '{')
      depth++;
    else if (*end == ']' || *end == '}')
      depth--;
    if (depth == 0 && *end == ',')
      break;
  }
  int n;
  if (value)
    n = snprintf(buf, sizeof buf, "%.*s:%s%s", (int)(colon - sample_json), sample_json, value, end);
  else /* drop the member and its trailing comma */
    n = snprintf(buf, sizeof buf, "%.*s%s", (int)(at - sample_json), sample_json, end + 1);
  assert_true(n > 0 && (size_t)n < sizeof buf);
  qs_event ev;
  return qs_event_from_json(&ev, buf, (size_t)n, why, whylen);
}

typedef struct bad_case {
  const char *member; /* as it appears quoted in the sample, e.g. "\"latitude\"" */
  const char *value;  /* NULL: drop the member */
  const char *why;    /* expected reason prefix */
} bad_case;

static void test_invalid_fields_are_rejected_with_a_reason_naming_the_field(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"\"latitude\"", "90.5", "latitude: 90.5 out of range"},
      {"\"latitude\"", "-91", "latitude: -91 out of range"},
      {"\"longitude\"", "180.0001", "longitude: 180.0001 out of range"},
      {"\"longitude\"", "1e999", "longitude: not a finite number"},
      {"\"longitude\"", "\"-117\"", "longitude: must be a number"},
      {"\"depth_km\"", "1000.5", "depth_km: 1000.5 out of range"},
      {"\"depth_km\"", "-10.5", "depth_km: -10.5 out of range"},
      {"\"magnitude\"", "10.6", "magnitude: 10.6 out of range"},
      {"\"magnitude\"", "-2.5", "magnitude: -2.5 out of range"},
      {"\"magnitude\"", "-1e400", "magnitude: not a finite number"},
      {"\"magnitude\"", "true", "magnitude: must be a number or null"},
      {"\"time\"", "0", "time: 0 out of range"},
      {"\"time\"", "-5", "time: -5 out of range"},
      {"\"time\"", "1562383193040.5", "time: must be an integer"},
      {"\"time\"", "null", "time: must be a number"},
      {"\"updated\"", "0", "updated: 0 out of range"},
      {"\"time\"", NULL, "time: missing"},
      {"\"event_id\"", NULL, "event_id: missing"},
      {"\"event_id\"", "\"\"", "event_id: empty"},
      {"\"event_id\"", "\"ci 123\"", "event_id: must be"},
      {"\"event_id\"", "42", "event_id: must be a string"},
      {"\"ids\"", NULL, "ids: missing"},
      {"\"ids\"", "\"ci1,ci2\"", "ids: must be an array"},
      {"\"ids\"", "[\"ci1\",7]", "ids[1]: must be a string"},
      {"\"ids\"", "[\"ci1\",\"\"]", "ids[1]: must be"},
      {"\"change\"", "\"updated\"", "change: must be"},
      {"\"change\"", "\"superseded\"", "superseded_by: required"},
      {"\"alert_level\"", "\"purple\"", "alert_level: must be null"},
      {"\"tsunami_flag\"", "1", "tsunami_flag: must be true or false"},
      {"\"sig\"", "-1", "sig: -1 out of range"},
      {"\"sig\"", "12.5", "sig: must be an integer"},
      {"\"net\"", "null", "net: must be a string"},
      {"\"place\"", "\"\xff\xfe\"", "place: not valid UTF-8"},
      {"\"mag_type\"", "\"0123456789012345678901234567890123456789012345678901234567890123x\"",
       "mag_type: longer than 64 bytes"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char why[256] = "";
    int rc = decode_with(cases[i].member, cases[i].value, why, sizeof why);
    if (rc != QS_ERR_INVALID || strncmp(why, cases[i].why, strlen(cases[i].why)) != 0)
      fail_msg("case %zu (%s=%s): rc %d why \"%s\", want \"%s...\"", i, cases[i].member,
               cases[i].value ? cases[i].value : "(dropped)", rc, why, cases[i].why);
  }
}

static void test_duplicate_member_is_rejected(void **state) {
  (void)state;
  char buf[4096], why[256];
  snprintf(buf, sizeof buf, "{\"latitude\":1,%s", sample_json + 1);
  qs_event ev;
  assert_int_equal(qs_event_from_json(&ev, buf, strlen(buf), why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "latitude: duplicate member");
}

static void test_not_json_and_not_object_are_parse_errors(void **state) {
  (void)state;
  qs_event ev;
  char why[256];
  static const char *docs[] = {
      "", "{", "not json", "[1,2]", "\"str\"", "null", "{\"event_id\":\"a\"} trailing"};
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    why[0] = '\0';
    assert_int_equal(qs_event_from_json(&ev, docs[i], strlen(docs[i]), why, sizeof why),
                     QS_ERR_PARSE);
    assert_true(strncmp(why, "event: ", 7) == 0);
  }
}

static void test_input_is_read_only_within_len(void **state) {
  (void)state;
  /* an exact-size heap copy without NUL: ASan catches any over-read */
  size_t n = strlen(sample_json);
  char *copy = malloc(n);
  assert_non_null(copy);
  memcpy(copy, sample_json, n);
  qs_event ev;
  char why[256];
  assert_int_equal(qs_event_from_json(&ev, copy, n, why, sizeof why), 0);
  /* truncated input is a parse error, not an over-read */
  assert_int_equal(qs_event_from_json(&ev, copy, n - 1, why, sizeof why), QS_ERR_PARSE);
  free(copy);
}

static void test_oversized_input_is_rejected_before_parsing(void **state) {
  (void)state;
  size_t n = QS_EVENT_JSON_MAX + 1;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, ' ', n);
  qs_event ev;
  char why[256];
  assert_int_equal(qs_event_from_json(&ev, big, n, why, sizeof why), QS_ERR_TOOBIG);
  assert_non_null(strstr(why, "over the 16384 byte limit"));
  free(big);
}

static void test_validate_rejects_nan_and_inconsistent_superseded_by(void **state) {
  (void)state;
  qs_event ev;
  char why[256];
  fill_sample(&ev);
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), 0);
  ev.latitude = NAN;
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "latitude: not a finite number");
  fill_sample(&ev);
  ev.depth_km = INFINITY;
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "depth_km: not a finite number");
  fill_sample(&ev);
  strcpy(ev.superseded_by, "us1");
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "superseded_by: only allowed when change is superseded");
  ev.change = QS_EVENT_SUPERSEDED;
  strcpy(ev.superseded_by, ev.event_id);
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "superseded_by: equals event_id");
}

static void test_ids_are_bounded_and_deduplicated(void **state) {
  (void)state;
  qs_event ev;
  qs_event_init(&ev);
  assert_int_equal(qs_event_ids_add(&ev, "ci1", 3), 0);
  assert_int_equal(qs_event_ids_add(&ev, "ci1", 3), 0);
  assert_int_equal(qs_event_ids_count(&ev), 1);
  assert_int_equal(qs_event_ids_add(&ev, "ci1,", 4), QS_ERR_INVALID);
  char id[80];
  memset(id, 'a', sizeof id);
  assert_int_equal(qs_event_ids_add(&ev, id, QS_EVENT_ID_MAX + 1), QS_ERR_TOOBIG);
  for (int i = 1; i < QS_EVENT_IDS_MAX; i++) {
    int n = snprintf(id, sizeof id, "us%06d", i);
    assert_int_equal(qs_event_ids_add(&ev, id, (size_t)n), 0);
  }
  assert_int_equal(qs_event_ids_count(&ev), QS_EVENT_IDS_MAX);
  assert_int_equal(qs_event_ids_add(&ev, "one-more", 8), QS_ERR_TOOBIG);
  qs_event_ids_clear(&ev);
  assert_int_equal(qs_event_ids_count(&ev), 0);
  /* the byte arena is bounded too: 64-byte ids fill 1024 bytes after 15 */
  int added = 0;
  for (int i = 0; i < QS_EVENT_IDS_MAX; i++) {
    memset(id, 'b', QS_EVENT_ID_MAX);
    snprintf(id, sizeof id, "%02d", i);
    id[2] = 'x';
    if (qs_event_ids_add(&ev, id, QS_EVENT_ID_MAX) != 0)
      break;
    added++;
  }
  assert_int_equal(added, QS_EVENT_IDS_BYTES / (QS_EVENT_ID_MAX + 1));
}

static void test_worst_case_event_fits_the_json_limit(void **state) {
  (void)state;
  qs_event ev;
  char why[256];
  fill_sample(&ev);
  /* every text byte a control character (6 bytes escaped) */
  memset(ev.place, '\x01', QS_EVENT_PLACE_MAX);
  ev.place[QS_EVENT_PLACE_MAX] = '\0';
  char *fields[] = {ev.mag_type, ev.event_type, ev.status, ev.net, ev.region, ev.source};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    memset(fields[i], '\x02', QS_EVENT_SHORT_MAX);
    fields[i][QS_EVENT_SHORT_MAX] = '\0';
  }
  qs_event_ids_clear(&ev);
  char id[QS_EVENT_ID_MAX];
  for (int i = 0; i < 15; i++) {
    memset(id, 'c', sizeof id);
    id[0] = (char)('a' + i);
    assert_int_equal(qs_event_ids_add(&ev, id, sizeof id), 0);
  }
  memset(ev.event_id, 'e', QS_EVENT_ID_MAX);
  ev.event_id[QS_EVENT_ID_MAX] = '\0';
  ev.change = QS_EVENT_SUPERSEDED;
  memset(ev.superseded_by, 's', QS_EVENT_ID_MAX);
  ev.superseded_by[QS_EVENT_ID_MAX] = '\0';
  ev.magnitude = -1.2345678901234567;
  ev.longitude = -179.12345678901234;
  ev.latitude = -89.123456789012345;
  assert_int_equal(qs_event_validate(&ev, why, sizeof why), 0);
  size_t need = qs_event_to_json(&ev, NULL, 0);
  assert_true(need < QS_EVENT_JSON_MAX);
  char *buf = malloc(need + 1);
  assert_non_null(buf);
  assert_int_equal(qs_event_to_json(&ev, buf, need + 1), need);
  qs_event back;
  assert_int_equal(qs_event_from_json(&back, buf, need, why, sizeof why), 0);
  assert_true(qs_event_equal(&ev, &back));
  free(buf);
}

static void test_short_buffer_is_truncated_and_terminated(void **state) {
  (void)state;
  qs_event ev;
  fill_sample(&ev);
  char full[QS_EVENT_JSON_MAX], small[32];
  size_t n = qs_event_to_json(&ev, full, sizeof full);
  memset(small, 'Z', sizeof small);
  assert_int_equal(qs_event_to_json(&ev, small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, full, sizeof small - 1);
}

static void test_names_parse_back(void **state) {
  (void)state;
  for (int c = QS_EVENT_NEW; c <= QS_EVENT_CHANGE_LAST; c++) {
    qs_event_change back;
    assert_int_equal(qs_event_change_parse(qs_event_change_name((qs_event_change)c), &back), 0);
    assert_int_equal(back, c);
  }
  for (int a = QS_ALERT_GREEN; a <= QS_ALERT_RED; a++) {
    qs_alert_level back;
    assert_int_equal(qs_alert_level_parse(qs_alert_level_name((qs_alert_level)a), &back), 0);
    assert_int_equal(back, a);
  }
  assert_null(qs_alert_level_name(QS_ALERT_NONE));
  qs_alert_level al;
  assert_int_equal(qs_alert_level_parse("Green", &al), QS_ERR_INVALID);
  char dst[4];
  assert_int_equal(qs_event_set_str(dst, sizeof dst, "abc", 3), 0);
  assert_string_equal(dst, "abc");
  assert_int_equal(qs_event_set_str(dst, sizeof dst, "abcd", 4), QS_ERR_TOOBIG);
  assert_string_equal(dst, "");
}

/* Deterministic mutation smoke test (a fuzzer stand-in that runs in CI):
 * flipped, inserted and deleted bytes and truncations never crash the decoder
 * (ASan build), and whatever it accepts is valid and round-trips. */
static void test_mutated_inputs_never_crash_and_accepted_ones_round_trip(void **state) {
  (void)state;
  uint32_t seed = 12345;
  size_t base = strlen(sample_json);
  static const char alphabet[] = "{}[]\",:0123456789.eE-+ntfu\\\x01\xc3\xff a";
  size_t accepted = 0;
  for (int iter = 0; iter < 20000; iter++) {
    char buf[1024];
    memcpy(buf, sample_json, base);
    size_t n = base;
    int edits = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 4;
    for (int e = 0; e < edits && n > 1; e++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 8) % n;
      char c = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
      switch ((seed >> 28) % 4) {
      case 0:
        buf[at] = c;
        break;
      case 1:
        if (n < sizeof buf - 1) {
          memmove(buf + at + 1, buf + at, n - at);
          buf[at] = c;
          n++;
        }
        break;
      case 2:
        memmove(buf + at, buf + at + 1, n - at - 1);
        n--;
        break;
      default:
        n = at + 1;
        break;
      }
    }
    char *exact = malloc(n);
    assert_non_null(exact);
    memcpy(exact, buf, n);
    qs_event ev, back;
    char why[256], out[QS_EVENT_JSON_MAX];
    if (qs_event_from_json(&ev, exact, n, why, sizeof why) == 0) {
      accepted++;
      assert_int_equal(qs_event_validate(&ev, why, sizeof why), 0);
      size_t m = qs_event_to_json(&ev, out, sizeof out);
      assert_true(m < sizeof out);
      assert_int_equal(qs_event_from_json(&back, out, m, why, sizeof why), 0);
      assert_true(qs_event_equal(&ev, &back));
    } else {
      assert_true(why[0] != '\0');
    }
    free(exact);
  }
  assert_true(accepted > 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_measure_decode_and_encode_rate(void **state) {
  (void)state;
  const int n = 50000;
  qs_event ev;
  char why[256], buf[QS_EVENT_JSON_MAX];
  size_t len = strlen(sample_json);
  double t0 = now_s();
  for (int i = 0; i < n; i++)
    assert_int_equal(qs_event_from_json(&ev, sample_json, len, why, sizeof why), 0);
  double t1 = now_s();
  size_t total = 0;
  for (int i = 0; i < n; i++)
    total += qs_event_to_json(&ev, buf, sizeof buf);
  double t2 = now_s();
  assert_true(total > 0);
  size_t plain = qs_event_to_json(&ev, buf, sizeof buf); /* no unknown member: the fast path */
  for (int i = 0; i < n; i++)
    assert_int_equal(qs_event_from_json(&ev, buf, plain, why, sizeof why), 0);
  double t3 = now_s();
  printf("# event codec: %zu-byte event, decode+validate %.0f/s (cJSON path; plain shape %.0f/s), "
         "encode %.0f/s\n",
         len, n / (t1 - t0), n / (t3 - t2), n / (t2 - t1));
}

/* The fast path accepts only what the codec decodes to the same event (doubles bit for bit). */
static void check_same_as_codec(const char *json, size_t len, int *accepted) {
  static qs_event a, b;
  int fast = qs_event_from_json_fast(&a, json, len);
  int rc = qs_event_from_json_tree(&b, json, len, NULL, 0);
  if (!fast)
    return;
  (*accepted)++;
  if (rc != 0 || !qs_event_equal(&a, &b) || memcmp(&a.magnitude, &b.magnitude, 8) ||
      memcmp(&a.depth_km, &b.depth_km, 8) || memcmp(&a.longitude, &b.longitude, 8) ||
      memcmp(&a.latitude, &b.latitude, 8))
    fail_msg("fast path disagrees with the cJSON decoder on: %.*s", (int)len, json);
}

static void test_fast_decoder_agrees_with_the_codec_on_numbers(void **state) {
  (void)state;
  int accepted = 0;
  event_corpus_run_numbers(check_same_as_codec, &accepted);
  assert_true(accepted > 10);
}

static void test_fast_decoder_agrees_with_the_codec_on_mutated_bodies(void **state) {
  (void)state;
  const char *base = event_corpus_bases[0];
  int accepted = 0;
  check_same_as_codec(base, strlen(base), &accepted);
  assert_int_equal(accepted, 1);
  event_corpus_mutate(base, 88172645463325252ull, 20000, check_same_as_codec, &accepted);
  assert_true(accepted > 100); /* many harmless edits (digits in numbers, whitespace) pass */
}

/* What qs_event_to_json writes (UTF-8 place included) is decoded by the allocation-free path, to
 * the same event; invalid UTF-8 is left to the cJSON decoder and its reason. */
static void test_encoder_output_takes_the_fast_path_utf8_included(void **state) {
  (void)state;
  static qs_event ev, a, b;
  char buf[QS_EVENT_JSON_MAX], why[256];
  fill_sample(&ev);
  strcpy(ev.place, "12 km SSE of Puerto Ayora, Gal\xc3\xa1pagos \xe6\x9d\xb1\xe4\xba\xac");
  size_t n = qs_event_to_json(&ev, buf, sizeof buf);
  assert_true(n < sizeof buf);
  assert_int_equal(qs_event_from_json_fast(&a, buf, n), 1);
  assert_int_equal(qs_event_from_json_tree(&b, buf, n, NULL, 0), 0);
  assert_true(qs_event_equal(&a, &ev));
  assert_true(qs_event_equal(&b, &ev));
  char *p = strstr(buf, "Gal");
  assert_non_null(p);
  p[3] = (char)0xff; /* not UTF-8 */
  assert_int_equal(qs_event_from_json_fast(&a, buf, n), 0);
  assert_int_equal(qs_event_from_json(&a, buf, n, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "place: not valid UTF-8");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_reads_every_field),
      cmocka_unit_test(test_encode_then_decode_gives_the_same_struct),
      cmocka_unit_test(test_encode_uses_shortest_double_and_fixed_member_order),
      cmocka_unit_test(test_null_magnitude_depth_and_alert_round_trip),
      cmocka_unit_test(test_superseded_event_round_trips_with_survivor),
      cmocka_unit_test(test_change_defaults_to_new),
      cmocka_unit_test(test_invalid_fields_are_rejected_with_a_reason_naming_the_field),
      cmocka_unit_test(test_duplicate_member_is_rejected),
      cmocka_unit_test(test_not_json_and_not_object_are_parse_errors),
      cmocka_unit_test(test_input_is_read_only_within_len),
      cmocka_unit_test(test_oversized_input_is_rejected_before_parsing),
      cmocka_unit_test(test_validate_rejects_nan_and_inconsistent_superseded_by),
      cmocka_unit_test(test_ids_are_bounded_and_deduplicated),
      cmocka_unit_test(test_worst_case_event_fits_the_json_limit),
      cmocka_unit_test(test_short_buffer_is_truncated_and_terminated),
      cmocka_unit_test(test_names_parse_back),
      cmocka_unit_test(test_mutated_inputs_never_crash_and_accepted_ones_round_trip),
      cmocka_unit_test(test_fast_decoder_agrees_with_the_codec_on_numbers),
      cmocka_unit_test(test_fast_decoder_agrees_with_the_codec_on_mutated_bodies),
      cmocka_unit_test(test_encoder_output_takes_the_fast_path_utf8_included),
      cmocka_unit_test(test_measure_decode_and_encode_rate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
