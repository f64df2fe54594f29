/* capture-tool.c — write a deterministic sample Capture file, or dump one as JSON lines.
 *
 *   capture-tool write <path> <null|deflate> <count>
 *   capture-tool dump <path>
 *
 * "write" makes record i from a fixed formula (mirrored in
 * tests/integration/test_capture_avro.py) so other Avro implementations can check it.
 * "dump" prints one JSON object per record: seq, offset, time, sys, props (key -> [type,
 * value], bytes as hex, doubles exact), partition_key, body (hex or null); exits 1 with the
 * reader's reason on stderr when the file is damaged.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/capture.h"
#include "qs/error.h"

static void sample_record(int i, qs_capture_record *rec, qs_capture_prop *sys, qs_capture_prop *p,
                          char *strs, size_t strs_len) {
  memset(rec, 0, sizeof *rec);
  rec->sequence_number = 1000 + i;
  snprintf(rec->offset, sizeof rec->offset, "%d", i * 300);
  snprintf(rec->enqueued_time, sizeof rec->enqueued_time, "12/7/2018 10:%02d:%02d AM", i / 60 % 60,
           i % 60);
  size_t ns = 0, np = 0;
  int k = snprintf(strs, strs_len, "key-%d", i % 7);
  char *guid = strs + k + 1;
  int g = snprintf(guid, strs_len - (size_t)k - 1, "g-%d", i);
  char *body = guid + g + 1;
  int b = snprintf(body, strs_len - (size_t)(k + g + 2), "Message %d \xc3\xa9", i);
  static uint8_t raw[3];
  raw[0] = 0;
  raw[1] = 0xff;
  raw[2] = (uint8_t)i;
  if (i % 2 == 0) {
    rec->partition_key = strs;
    rec->partition_key_len = (size_t)k;
  }
  if (i % 3 == 0) {
    sys[ns++] = (qs_capture_prop){
        .key = "x-opt-sequence-number", .key_len = 21, .type = QS_CAPTURE_LONG, .l = 1000 + i};
    sys[ns++] = (qs_capture_prop){
        .key = "x-opt-weight", .key_len = 12, .type = QS_CAPTURE_DOUBLE, .d = i * 0.5};
  }
  p[np++] = (qs_capture_prop){.key = "GUID",
                              .key_len = 4,
                              .type = QS_CAPTURE_STRING,
                              .data = (const uint8_t *)guid,
                              .len = (size_t)g};
  p[np++] = (qs_capture_prop){
      .key = "RandomInt", .key_len = 9, .type = QS_CAPTURE_LONG, .l = (int64_t)i * 7 - 50};
  if (i % 4 == 0)
    p[np++] = (qs_capture_prop){.key = "Null", .key_len = 4, .type = QS_CAPTURE_NULL};
  if (i % 5 == 0)
    p[np++] = (qs_capture_prop){
        .key = "Raw", .key_len = 3, .type = QS_CAPTURE_BYTES, .data = raw, .len = 3};
  p[np++] =
      (qs_capture_prop){.key = "Ratio", .key_len = 5, .type = QS_CAPTURE_DOUBLE, .d = i / 8.0};
  rec->system_props = sys;
  rec->n_system_props = ns;
  rec->props = p;
  rec->n_props = np;
  if (i % 10 != 9) {
    rec->has_body = 1;
    rec->body = (const uint8_t *)body;
    rec->body_len = (size_t)b;
  }
}

static int cmd_write(const char *path, const char *codec, int n) {
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = strcmp(codec, "null") ? QS_CAPTURE_CODEC_DEFLATE
                                                             : QS_CAPTURE_CODEC_NULL};
  int rc = qs_capture_writer_open(&w, path, &o);
  if (rc) {
    fprintf(stderr, "capture-tool: %s: %s\n", path, qs_strerror(rc));
    return 1;
  }
  for (int i = 0; i < n; i++) {
    qs_capture_record rec;
    qs_capture_prop sys[4], p[8];
    char strs[128];
    sample_record(i, &rec, sys, p, strs, sizeof strs);
    if ((rc = qs_capture_writer_append(&w, &rec))) {
      fprintf(stderr, "capture-tool: record %d: %s\n", i, qs_strerror(rc));
      return 1;
    }
  }
  if ((rc = qs_capture_writer_close(&w))) {
    fprintf(stderr, "capture-tool: close: %s\n", qs_strerror(rc));
    return 1;
  }
  return 0;
}

static cJSON *hex(const uint8_t *p, size_t n) {
  char *s = qs_xmalloc(2 * n + 1);
  for (size_t i = 0; i < n; i++)
    snprintf(s + 2 * i, 3, "%02x", p[i]);
  s[2 * n] = 0;
  cJSON *j = cJSON_CreateString(s);
  free(s);
  return j;
}

static cJSON *props_json(const qs_capture_prop *p, size_t n) {
  static const char *const names[] = {"long", "double", "string", "bytes", "null"};
  cJSON *o = cJSON_CreateObject();
  for (size_t i = 0; i < n; i++) {
    cJSON *pair = cJSON_CreateArray();
    cJSON_AddItemToArray(pair, cJSON_CreateString(names[p[i].type]));
    char num[40];
    switch (p[i].type) {
    case QS_CAPTURE_LONG:
      snprintf(num, sizeof num, "%lld", (long long)p[i].l);
      cJSON_AddItemToArray(pair, cJSON_CreateRaw(num));
      break;
    case QS_CAPTURE_DOUBLE:
      snprintf(num, sizeof num, "%.17g", p[i].d);
      cJSON_AddItemToArray(pair, cJSON_CreateRaw(num));
      break;
    case QS_CAPTURE_STRING:
    case QS_CAPTURE_BYTES:
      cJSON_AddItemToArray(pair, hex(p[i].data, p[i].len));
      break;
    case QS_CAPTURE_NULL:
      cJSON_AddItemToArray(pair, cJSON_CreateNull());
      break;
    }
    char key[300];
    snprintf(key, sizeof key, "%.*s", (int)(p[i].key_len > 256 ? 256 : p[i].key_len), p[i].key);
    cJSON_AddItemToObject(o, key, pair);
  }
  return o;
}

static int cmd_dump(const char *path) {
  qs_capture_reader r;
  qs_capture_record rec;
  int rc = qs_capture_reader_open_file(&r, path, NULL);
  if (rc == 0) {
    while ((rc = qs_capture_reader_next(&r, &rec)) == 1) {
      cJSON *o = cJSON_CreateObject();
      char num[32];
      snprintf(num, sizeof num, "%lld", (long long)rec.sequence_number);
      cJSON_AddItemToObject(o, "seq", cJSON_CreateRaw(num));
      cJSON_AddStringToObject(o, "offset", rec.offset);
      cJSON_AddStringToObject(o, "time", rec.enqueued_time);
      cJSON_AddItemToObject(o, "sys", props_json(rec.system_props, rec.n_system_props));
      cJSON_AddItemToObject(o, "props", props_json(rec.props, rec.n_props));
      cJSON_AddItemToObject(o, "partition_key",
                            rec.partition_key
                                ? hex((const uint8_t *)rec.partition_key, rec.partition_key_len)
                                : cJSON_CreateNull());
      cJSON_AddItemToObject(o, "body",
                            rec.has_body ? hex(rec.body, rec.body_len) : cJSON_CreateNull());
      char *s = cJSON_PrintUnformatted(o);
      puts(s);
      free(s);
      cJSON_Delete(o);
    }
  }
  if (rc < 0)
    fprintf(stderr, "capture-tool: %s: %s: %s\n", path, qs_strerror(rc), r.error);
  qs_capture_reader_close(&r);
  return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "write"))
    return cmd_write(argv[2], argv[3], atoi(argv[4]));
  if (argc == 3 && !strcmp(argv[1], "dump"))
    return cmd_dump(argv[2]);
  fprintf(stderr, "usage: capture-tool write <path> <null|deflate> <count>\n"
                  "       capture-tool dump <path>\n");
  return 2;
}
