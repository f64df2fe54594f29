/* event_corpus.h — the inputs both event-decoder equivalence tests run (test_event: libqs's fast
 * path against the cJSON decoder; test_batch: the batch worker's fold decoder against the codec):
 * numbers in every JSON spelling, valid bodies, and random edits of them. Each test passes its own
 * check. Header-only, for tests.
 */
#ifndef QS_TEST_EVENT_CORPUS_H
#define QS_TEST_EVENT_CORPUS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*event_corpus_check)(const char *json, size_t len, int *accepted);

static const char *const event_corpus_numbers[] = {"0",
                                                   "-0",
                                                   "-0.0",
                                                   "4.9999996",
                                                   "0.1",
                                                   "0.3",
                                                   "7.25",
                                                   "-1.5",
                                                   "123.456789",
                                                   "999999999999999",
                                                   "1e2",
                                                   "2.5E-3",
                                                   "1.7976931348623157e308",
                                                   "5e-324",
                                                   "0.000000000000000000001",
                                                   "1234567890.12345678",
                                                   "10.0000000000000000001",
                                                   "-2",
                                                   "10.5",
                                                   "3.14159265358979",
                                                   "0.30000000000000004"};

/* Every number as magnitude and depth, then as longitude and depth. */
static inline void event_corpus_run_numbers(event_corpus_check check, int *accepted) {
  char j[2048];
  for (size_t i = 0; i < sizeof event_corpus_numbers / sizeof event_corpus_numbers[0]; i++) {
    const char *num = event_corpus_numbers[i];
    for (int field = 0; field < 2; field++) {
      snprintf(j, sizeof j,
               "{\"event_id\":\"n1\",\"magnitude\":%s,\"mag_type\":\"ml\",\"place\":\"x\","
               "\"time\":1764028800000,\"updated\":1764028800001,\"longitude\":%s,"
               "\"latitude\":2,\"depth_km\":%s,\"event_type\":\"earthquake\","
               "\"status\":\"reviewed\",\"tsunami_flag\":false,\"alert_level\":null,"
               "\"net\":\"us\",\"sig\":1,\"region\":\"japan\",\"source\":\"t\","
               "\"ingested_at\":1,\"ids\":[\"n1\"]}",
               field ? "1" : num, field ? num : "1", num);
      check(j, strlen(j), accepted);
    }
  }
}

/* Valid bodies: spaced, with every optional member; and compact as producers write it. */
static const char *const event_corpus_bases[] = {
    "{ \"event_id\": \"us7000abcd\", \"magnitude\": 4.75, \"mag_type\": \"mww\", "
    "\"place\": \"10 km N of Somewhere\", \"time\": 1764028800123, "
    "\"updated\": 1764028900000, \"longitude\": -117.5993333, \"latitude\": 35.7695, "
    "\"depth_km\": 8.25, \"event_type\": \"earthquake\", \"status\": \"reviewed\", "
    "\"tsunami_flag\": true, \"alert_level\": \"green\", \"net\": \"us\", "
    "\"sig\": 312, \"region\": \"us-west\", \"source\": \"usgs\", "
    "\"ingested_at\": 1764028900500, \"ids\": [\"us7000abcd\", \"ci1234\"], "
    "\"change\": \"revision\", \"superseded_by\": null }\n",
    "{\"event_id\":\"ci40000001\",\"magnitude\":-0.5,\"mag_type\":\"ml\",\"place\":\"x\","
    "\"time\":1764028800000,\"updated\":1764028800001,\"longitude\":180,\"latitude\":-90,"
    "\"depth_km\":null,\"event_type\":\"earthquake\",\"status\":\"deleted\","
    "\"tsunami_flag\":false,\"alert_level\":null,\"net\":\"ci\",\"sig\":0,"
    "\"region\":\"japan\",\"source\":\"t\",\"ingested_at\":0,"
    "\"ids\":[\"ci40000001\",\"us1\",\"ci40000001\",\"us1\",\"nc2\"],"
    "\"change\":\"superseded\",\"superseded_by\":\"us1\"}"};

/* rounds random edits (1-3 replacements, deletions or insertions) of base, each checked. */
static inline void event_corpus_mutate(const char *base, uint64_t rng, int rounds,
                                       event_corpus_check check, int *accepted) {
  char j[2048];
  static const char alphabet[] = "0123456789-+.eE\"\\{}[],: \t\nnulltruefalsexyz\xc3\xa9\x01";
  for (int round = 0; round < rounds; round++) {
    size_t len = strlen(base);
    memcpy(j, base, len + 1);
    int edits = 1 + (int)(rng % 3);
    for (int k = 0; k < edits; k++) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      size_t pos = (size_t)(rng % len);
      char ch = alphabet[(rng >> 20) % (sizeof alphabet - 1)];
      switch ((rng >> 40) % 3) {
      case 0: /* replace */
        j[pos] = ch;
        break;
      case 1: /* delete */
        memmove(j + pos, j + pos + 1, len - pos);
        len--;
        break;
      default: /* insert */
        memmove(j + pos + 1, j + pos, len - pos + 1);
        j[pos] = ch;
        len++;
        break;
      }
    }
    check(j, len, accepted);
  }
}

#endif
