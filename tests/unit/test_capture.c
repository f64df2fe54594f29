/* test_capture.c — Capture Avro reader/writer: round trips, the real Azure files, damaged
 * input (truncated, bit-flipped, wrong schema, not Avro) and the path helper.
 *
 * Expected values of the real file were read independently with Debian's python3-avro:
 *   /usr/bin/python3 -c 'import avro.datafile,avro.io; r=list(avro.datafile.DataFileReader(
 *     open("eventhub_capture_usql_EHC.avro","rb"), avro.io.DatumReader())); print(len(r), r[0])'
 * eventhub_capture_usql_EHC.avro: codec null, 677 records, SystemProperties always {},
 *   Properties always {GUID: string, RandomInt: long}, no null Body, 7569 body bytes in all,
 *   sum(SequenceNumber) = 3032283, sum(RandomInt) = 335333.
 *   [0]   SequenceNumber 4141, Offset "353424", EnqueuedTimeUtc "12/7/2018 10:22:49 AM",
 *         GUID "2f5f92bc-8cef-45fe-a59e-26a623b0bc53", RandomInt 566, Body "Message 1".
 *   [100] 4241, "366104", "12/7/2018 10:23:01 AM", GUID "bbfc69bf-501d-4029-af75-3376e8904c4c",
 *         RandomInt 1, Body "Message 201".
 *   [676] 4817, "439408", "12/7/2018 10:24:11 AM", RandomInt 685, Body "Message 1353".
 * eventhub_capture_cosh_empty.avro: codec null, 0 records (one empty block).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <avro.h>
#include <cmocka.h>

#include "qs/capture.h"
#include "qs/error.h"

static char tmpdir[256];

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qs_capture_test_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static char *path_in_tmp(const char *name) {
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)n + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static const char *real_file(const char *name) {
  static char p[1024];
  const char *dir = getenv("QS_SHARED_DIR");
  if (!dir)
    return NULL;
  snprintf(p, sizeof p, "%s/data/capture/%s", dir, name);
  return access(p, R_OK) == 0 ? p : NULL;
}

/* Reads a whole buffer; returns the final rc (0 = clean end) and the record count. */
static int read_all_buffer(const uint8_t *b, size_t n, uint64_t *records, char *why) {
  qs_capture_reader r;
  qs_capture_record rec;
  int rc = qs_capture_reader_open_buffer(&r, b, n, NULL);
  if (rc == 0)
    while ((rc = qs_capture_reader_next(&r, &rec)) == 1)
      ;
  *records = r.records;
  if (why)
    snprintf(why, QS_CAPTURE_ERR_MAX, "%s", r.error);
  qs_capture_reader_close(&r);
  return rc;
}

/* ---------------------------------------------------------------- round trips */

static const qs_capture_prop sys_props[] = {
    {.key = "x-opt-sequence-number", .key_len = 21, .type = QS_CAPTURE_LONG, .l = -42},
    {.key = "x-opt-enqueued-time", .key_len = 19, .type = QS_CAPTURE_DOUBLE, .d = 1.5e300},
    {.key = "x-opt-offset",
     .key_len = 12,
     .type = QS_CAPTURE_STRING,
     .data = (const uint8_t *)"99",
     .len = 2},
    {.key = "blob",
     .key_len = 4,
     .type = QS_CAPTURE_BYTES,
     .data = (const uint8_t *)"\0\1\2",
     .len = 3},
};
static const qs_capture_prop user_props[] = {
    {.key = "GUID",
     .key_len = 4,
     .type = QS_CAPTURE_STRING,
     .data = (const uint8_t *)"abc",
     .len = 3},
    {.key = "n", .key_len = 1, .type = QS_CAPTURE_LONG, .l = INT64_MIN},
    {.key = "nothing", .key_len = 7, .type = QS_CAPTURE_NULL},
    {.key = "pi", .key_len = 2, .type = QS_CAPTURE_DOUBLE, .d = -3.25},
};

static void fill_record(qs_capture_record *rec, int i) {
  memset(rec, 0, sizeof *rec);
  rec->sequence_number = (int64_t)i * 1000003 - 7;
  snprintf(rec->offset, sizeof rec->offset, "%d", i * 128);
  snprintf(rec->enqueued_time, sizeof rec->enqueued_time, "2024-05-0%dT10:22:49.123Z", 1 + i % 9);
  if (i % 3 == 0) {
    rec->system_props = sys_props;
    rec->n_system_props = 4;
    rec->props = user_props;
    rec->n_props = 4;
  }
  if (i % 2 == 0) {
    rec->partition_key = "quake-key";
    rec->partition_key_len = 9;
  }
  if (i % 5 != 4) {
    static char body[400];
    int n =
        snprintf(body, sizeof body, "{\"event_id\":\"us%07d\",\"mag\":%d.%d}", i, i % 9, i % 10);
    rec->has_body = 1;
    rec->body = (const uint8_t *)body;
    rec->body_len = (size_t)n;
  }
}

static void assert_prop_equal(const qs_capture_prop *a, const qs_capture_prop *b) {
  assert_int_equal(a->key_len, b->key_len);
  assert_memory_equal(a->key, b->key, a->key_len);
  assert_int_equal(a->type, b->type);
  switch (a->type) {
  case QS_CAPTURE_LONG:
    assert_true(a->l == b->l);
    break;
  case QS_CAPTURE_DOUBLE:
    assert_memory_equal(&a->d, &b->d, sizeof a->d);
    break;
  case QS_CAPTURE_STRING:
  case QS_CAPTURE_BYTES:
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->data, b->data, a->len);
    break;
  case QS_CAPTURE_NULL:
    break;
  }
}

/* Compares what was read with what fill_record(i) wrote. */
static void assert_record_is(const qs_capture_record *got, int i) {
  qs_capture_record want;
  fill_record(&want, i);
  assert_true(got->sequence_number == want.sequence_number);
  assert_string_equal(got->offset, want.offset);
  assert_string_equal(got->enqueued_time, want.enqueued_time);
  size_t want_sys = want.n_system_props + (want.partition_key ? 1 : 0);
  assert_int_equal(got->n_system_props, want_sys);
  for (size_t k = 0; k < want.n_system_props; k++)
    assert_prop_equal(&got->system_props[k], &want.system_props[k]);
  assert_int_equal(got->n_props, want.n_props);
  for (size_t k = 0; k < want.n_props; k++)
    assert_prop_equal(&got->props[k], &want.props[k]);
  if (want.partition_key) {
    assert_non_null(got->partition_key);
    assert_int_equal(got->partition_key_len, want.partition_key_len);
    assert_memory_equal(got->partition_key, want.partition_key, want.partition_key_len);
  } else {
    assert_null(got->partition_key);
  }
  assert_int_equal(got->has_body, want.has_body);
  assert_int_equal(got->body_len, want.body_len);
  if (want.has_body)
    assert_memory_equal(got->body, want.body, want.body_len);
  else
    assert_null(got->body);
}

static void write_sample(const char *path, qs_capture_codec codec, int n, size_t block_bytes) {
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = codec, .block_bytes = block_bytes};
  assert_int_equal(qs_capture_writer_open(&w, path, &o), 0);
  for (int i = 0; i < n; i++) {
    qs_capture_record rec;
    fill_record(&rec, i);
    assert_int_equal(qs_capture_writer_append(&w, &rec), 0);
  }
  assert_int_equal(w.records, (uint64_t)n);
  assert_int_equal(qs_capture_writer_close(&w), 0);
}

static void round_trip(qs_capture_codec codec, int from_file) {
  const char *path =
      path_in_tmp(codec == QS_CAPTURE_CODEC_NULL ? "rt-null.avro" : "rt-deflate.avro");
  const int n = 2000;
  write_sample(path, codec, n, 4096); /* small blocks: many blocks */
  size_t len = 0;
  uint8_t *buf = slurp(path, &len);
  assert_non_null(buf);
  qs_capture_reader r;
  qs_capture_record rec;
  if (from_file)
    assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
  else
    assert_int_equal(qs_capture_reader_open_buffer(&r, buf, len, NULL), 0);
  assert_int_equal(r.codec, codec);
  for (int i = 0; i < n; i++) {
    assert_int_equal(qs_capture_reader_next(&r, &rec), 1);
    assert_record_is(&rec, i);
  }
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  assert_int_equal(r.records, (uint64_t)n);
  assert_int_equal(r.bytes, (uint64_t)len);
  assert_true(r.blocks > 10);
  assert_string_equal(r.error, "");
  qs_capture_reader_close(&r);
  free(buf);
}

static void test_round_trip_null_codec_preserves_every_field(void **state) {
  (void)state;
  round_trip(QS_CAPTURE_CODEC_NULL, 1);
  round_trip(QS_CAPTURE_CODEC_NULL, 0);
}

static void test_round_trip_deflate_codec_preserves_every_field(void **state) {
  (void)state;
  round_trip(QS_CAPTURE_CODEC_DEFLATE, 1);
  round_trip(QS_CAPTURE_CODEC_DEFLATE, 0);
}

static void test_writer_output_is_byte_identical_for_same_input(void **state) {
  (void)state;
  assert_int_equal(mkdir(path_in_tmp("again"), 0755), 0);
  write_sample(path_in_tmp("same.avro"), QS_CAPTURE_CODEC_DEFLATE, 500, 0);
  write_sample(path_in_tmp("again/same.avro"), QS_CAPTURE_CODEC_DEFLATE, 500, 0);
  size_t a_len, b_len;
  uint8_t *a = slurp(path_in_tmp("same.avro"), &a_len);
  uint8_t *b = slurp(path_in_tmp("again/same.avro"), &b_len);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(a_len, b_len);
  assert_memory_equal(a, b, a_len);
  /* A different file name gets a different sync marker. */
  write_sample(path_in_tmp("other.avro"), QS_CAPTURE_CODEC_DEFLATE, 500, 0);
  size_t c_len;
  uint8_t *c = slurp(path_in_tmp("other.avro"), &c_len);
  assert_int_equal(c_len, a_len);
  assert_memory_not_equal(a, c, a_len);
  free(a);
  free(b);
  free(c);
}

static void test_writer_shows_no_file_until_close_and_abort_removes_temp(void **state) {
  (void)state;
  const char *final = path_in_tmp("atomic.avro");
  const char *tmp = path_in_tmp(".atomic.avro.tmp");
  qs_capture_writer w;
  qs_capture_record rec;
  fill_record(&rec, 0);
  assert_int_equal(qs_capture_writer_open(&w, final, NULL), 0);
  assert_int_equal(qs_capture_writer_append(&w, &rec), 0);
  assert_int_equal(access(final, F_OK), -1);
  assert_int_equal(access(tmp, F_OK), 0);
  qs_capture_writer_abort(&w);
  assert_int_equal(access(final, F_OK), -1);
  assert_int_equal(access(tmp, F_OK), -1);

  assert_int_equal(qs_capture_writer_open(&w, final, NULL), 0);
  assert_int_equal(qs_capture_writer_append(&w, &rec), 0);
  assert_int_equal(qs_capture_writer_close(&w), 0);
  assert_int_equal(access(final, F_OK), 0);
  assert_int_equal(access(tmp, F_OK), -1);

  /* A directory that does not exist fails at open, leaving nothing behind. */
  assert_true(qs_capture_writer_open(&w, path_in_tmp("no/such/dir.avro"), NULL) < 0);
}

static void test_writer_rejects_bad_options_and_records(void **state) {
  (void)state;
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = QS_CAPTURE_CODEC_DEFLATE, .deflate_level = 10};
  assert_int_equal(qs_capture_writer_open(&w, path_in_tmp("bad.avro"), &o), QS_ERR_RANGE);
  o.deflate_level = 0;
  o.codec = (qs_capture_codec)7;
  assert_int_equal(qs_capture_writer_open(&w, path_in_tmp("bad.avro"), &o), QS_ERR_INVALID);
  assert_int_equal(qs_capture_writer_open(&w, path_in_tmp("bad.avro"), NULL), 0);
  qs_capture_record rec;
  fill_record(&rec, 0);
  qs_capture_prop nul = {.key = "k", .key_len = 1, .type = QS_CAPTURE_NULL};
  rec.system_props = &nul; /* SystemProperties' union has no null */
  rec.n_system_props = 1;
  assert_int_equal(qs_capture_writer_append(&w, &rec), QS_ERR_INVALID);
  qs_capture_writer_abort(&w);
  assert_int_equal(access(path_in_tmp(".bad.avro.tmp"), F_OK), -1);
  assert_int_equal(qs_capture_writer_append(&w, &rec), QS_ERR_STATE);
}

static void test_empty_written_file_has_header_and_no_records(void **state) {
  (void)state;
  const char *path = path_in_tmp("empty-written.avro");
  write_sample(path, QS_CAPTURE_CODEC_DEFLATE, 0, 0);
  qs_capture_reader r;
  qs_capture_record rec;
  assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  assert_int_equal(r.records, 0);
  qs_capture_reader_close(&r);
}

/* avro-c, a third implementation, reads a file we wrote with the same values. */
static void test_avro_c_reads_written_file(void **state) {
  (void)state;
  const char *path = path_in_tmp("for-avro-c.avro");
  const int n = 300;
  write_sample(path, QS_CAPTURE_CODEC_DEFLATE, n, 2048);
  avro_file_reader_t fr;
  assert_int_equal(avro_file_reader(path, &fr), 0);
  avro_schema_t schema = avro_file_reader_get_writer_schema(fr);
  avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
  avro_value_t v;
  assert_int_equal(avro_generic_value_new(iface, &v), 0);
  int i = 0;
  while (avro_file_reader_read_value(fr, &v) == 0) {
    qs_capture_record want;
    fill_record(&want, i);
    avro_value_t f, branch;
    int64_t seq;
    const char *s;
    size_t slen;
    assert_int_equal(avro_value_get_by_name(&v, "SequenceNumber", &f, NULL), 0);
    assert_int_equal(avro_value_get_long(&f, &seq), 0);
    assert_true(seq == want.sequence_number);
    assert_int_equal(avro_value_get_by_name(&v, "EnqueuedTimeUtc", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &slen), 0);
    assert_string_equal(s, want.enqueued_time);
    assert_int_equal(avro_value_get_by_name(&v, "SystemProperties", &f, NULL), 0);
    size_t msize;
    assert_int_equal(avro_value_get_size(&f, &msize), 0);
    assert_int_equal(msize, want.n_system_props + (want.partition_key ? 1 : 0));
    if (want.partition_key) {
      avro_value_t e;
      assert_int_equal(avro_value_get_by_name(&f, QS_CAPTURE_PARTITION_KEY, &e, NULL), 0);
      assert_int_equal(avro_value_get_current_branch(&e, &branch), 0);
      assert_int_equal(avro_value_get_string(&branch, &s, &slen), 0);
      assert_string_equal(s, "quake-key");
    }
    assert_int_equal(avro_value_get_by_name(&v, "Body", &f, NULL), 0);
    int disc;
    assert_int_equal(avro_value_get_discriminant(&f, &disc), 0);
    assert_int_equal(disc, want.has_body);
    if (want.has_body) {
      const void *bp;
      size_t blen;
      assert_int_equal(avro_value_get_current_branch(&f, &branch), 0);
      assert_int_equal(avro_value_get_bytes(&branch, &bp, &blen), 0);
      assert_int_equal(blen, want.body_len);
      assert_memory_equal(bp, want.body, blen);
    }
    i++;
  }
  assert_int_equal(i, n);
  avro_value_decref(&v);
  avro_value_iface_decref(iface);
  avro_schema_decref(schema);
  avro_file_reader_close(fr);
}

/* ---------------------------------------------------------------- the real Azure files */

static void test_real_capture_file_has_677_records_with_known_values(void **state) {
  (void)state;
  const char *path = real_file("eventhub_capture_usql_EHC.avro");
  if (!path)
    skip();
  qs_capture_reader r;
  qs_capture_record rec;
  assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
  assert_int_equal(r.codec, QS_CAPTURE_CODEC_NULL);
  uint64_t body_bytes = 0;
  int64_t seq_sum = 0, rand_sum = 0;
  int i = 0, rc;
  while ((rc = qs_capture_reader_next(&r, &rec)) == 1) {
    assert_int_equal(rec.n_system_props, 0);
    assert_null(rec.partition_key);
    assert_int_equal(rec.n_props, 2);
    assert_int_equal(rec.props[0].key_len, 4);
    assert_memory_equal(rec.props[0].key, "GUID", 4);
    assert_int_equal(rec.props[0].type, QS_CAPTURE_STRING);
    assert_memory_equal(rec.props[1].key, "RandomInt", 9);
    assert_int_equal(rec.props[1].type, QS_CAPTURE_LONG);
    assert_true(rec.has_body);
    body_bytes += rec.body_len;
    seq_sum += rec.sequence_number;
    rand_sum += rec.props[1].l;
    if (i == 0 || i == 100) {
      assert_int_equal(rec.sequence_number, i == 0 ? 4141 : 4241);
      assert_string_equal(rec.offset, i == 0 ? "353424" : "366104");
      assert_string_equal(rec.enqueued_time,
                          i == 0 ? "12/7/2018 10:22:49 AM" : "12/7/2018 10:23:01 AM");
      const char *guid =
          i == 0 ? "2f5f92bc-8cef-45fe-a59e-26a623b0bc53" : "bbfc69bf-501d-4029-af75-3376e8904c4c";
      assert_int_equal(rec.props[0].len, 36);
      assert_memory_equal(rec.props[0].data, guid, 36);
      assert_int_equal(rec.props[1].l, i == 0 ? 566 : 1);
      const char *body = i == 0 ? "Message 1" : "Message 201";
      assert_int_equal(rec.body_len, strlen(body));
      assert_memory_equal(rec.body, body, rec.body_len);
    }
    if (i == 676) {
      assert_int_equal(rec.sequence_number, 4817);
      assert_string_equal(rec.offset, "439408");
      assert_string_equal(rec.enqueued_time, "12/7/2018 10:24:11 AM");
      assert_int_equal(rec.props[1].l, 685);
      assert_int_equal(rec.body_len, 12);
      assert_memory_equal(rec.body, "Message 1353", 12);
    }
    i++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(i, 677);
  assert_int_equal(r.records, 677);
  assert_int_equal(body_bytes, 7569);
  assert_int_equal(seq_sum, 3032283);
  assert_int_equal(rand_sum, 335333);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(r.bytes, (uint64_t)st.st_size);
  qs_capture_reader_close(&r);
}

static void test_real_empty_capture_file_yields_no_records(void **state) {
  (void)state;
  const char *path = real_file("eventhub_capture_cosh_empty.avro");
  if (!path)
    skip();
  qs_capture_reader r;
  qs_capture_record rec;
  assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  assert_int_equal(r.records, 0);
  assert_int_equal(r.bytes, 508);
  qs_capture_reader_close(&r);
}

static void test_zero_byte_file_yields_no_records(void **state) {
  (void)state;
  const char *path = path_in_tmp("zero.avro");
  spit(path, "", 0);
  qs_capture_reader r;
  qs_capture_record rec;
  assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  qs_capture_reader_close(&r);
  assert_int_equal(qs_capture_reader_open_buffer(&r, NULL, 0, NULL), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), 0);
  qs_capture_reader_close(&r);
}

/* Every cut in the header and every 37th cut after it: an error with a reason, or (cut just
 * after a block's sync marker, which Avro cannot tell from a shorter file) fewer records. */
static void test_truncated_real_file_is_reported_without_crashing(void **state) {
  (void)state;
  const char *path = real_file("eventhub_capture_usql_EHC.avro");
  if (!path)
    skip();
  size_t len;
  uint8_t *full = slurp(path, &len);
  const uint8_t *sync = full + len - 16;
  int errors = 0, clean = 0;
  for (size_t cut = 1; cut < len; cut += cut < 700 ? 1 : 37) {
    uint8_t *b = malloc(cut); /* exact size, so ASan sees any over-read */
    memcpy(b, full, cut);
    uint64_t n;
    char why[QS_CAPTURE_ERR_MAX];
    int rc = read_all_buffer(b, cut, &n, why);
    if (rc < 0) {
      errors++;
      assert_true(strlen(why) > 0);
    } else {
      clean++;
      assert_true(cut >= 16 && memcmp(b + cut - 16, sync, 16) == 0);
      assert_true(n < 677);
    }
    free(b);
  }
  assert_true(errors > 2000);
  /* And through the FILE* path: a copy cut inside the last block. */
  const char *cutp = path_in_tmp("cut.avro");
  spit(cutp, full, len - 5);
  qs_capture_reader r;
  qs_capture_record rec;
  int rc;
  assert_int_equal(qs_capture_reader_open_file(&r, cutp, NULL), 0);
  while ((rc = qs_capture_reader_next(&r, &rec)) == 1)
    ;
  assert_int_equal(rc, QS_ERR_PARSE);
  assert_non_null(strstr(r.error, "truncated"));
  assert_int_equal(qs_capture_reader_next(&r, &rec), QS_ERR_PARSE);
  qs_capture_reader_close(&r);
  free(full);
}

static void test_bit_flipped_real_file_is_reported_without_crashing(void **state) {
  (void)state;
  const char *path = real_file("eventhub_capture_usql_EHC.avro");
  if (!path)
    skip();
  size_t len;
  uint8_t *b = slurp(path, &len);
  int errors = 0;
  for (size_t at = 0; at < len; at += (at < 700 ? 3 : 61)) {
    uint8_t bit = (uint8_t)(1u << (at % 8));
    b[at] ^= bit;
    uint64_t n;
    char why[QS_CAPTURE_ERR_MAX];
    int rc = read_all_buffer(b, len, &n, why);
    if (rc < 0) {
      errors++;
      assert_true(strlen(why) > 0);
    } else {
      assert_int_equal(n, 677); /* the flip hit data that stays well-formed */
    }
    b[at] ^= bit;
  }
  assert_true(errors > 100);
  /* A flip in the last sync marker is named as such, with its byte offset. */
  b[len - 3] ^= 0x10;
  uint64_t n;
  char why[QS_CAPTURE_ERR_MAX], want[64];
  assert_int_equal(read_all_buffer(b, len, &n, why), QS_ERR_PARSE);
  snprintf(want, sizeof want, "sync marker mismatch at byte %zu", len - 16);
  assert_non_null(strstr(why, want));
  free(b);
}

/* Random garbage after a valid header, many seeds: never a crash. */
static void test_garbage_blocks_are_reported_without_crashing(void **state) {
  (void)state;
  const char *path = path_in_tmp("hdr.avro");
  write_sample(path, QS_CAPTURE_CODEC_NULL, 0, 0);
  size_t hlen;
  uint8_t *hdr = slurp(path, &hlen);
  uint32_t x = 12345;
  for (int seed = 0; seed < 2000; seed++) {
    size_t n = hlen + 1 + (size_t)(seed % 300);
    uint8_t *b = malloc(n);
    memcpy(b, hdr, hlen);
    for (size_t i = hlen; i < n; i++) {
      x = x * 1103515245u + 12345u;
      b[i] = (uint8_t)(x >> 16);
    }
    if (seed % 2)
      b[hlen] = 2 * (uint8_t)(seed % 5); /* a small plausible record count */
    uint64_t recs;
    int rc = read_all_buffer(b, n, &recs, NULL);
    assert_true(rc <= 0);
    free(b);
  }
  free(hdr);
}

static void write_with_schema(const char *path, const char *schema) {
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = QS_CAPTURE_CODEC_NULL};
  assert_int_equal(qs_capture_writer_open_schema(&w, path, schema, &o), 0);
  qs_capture_buf d = {0};
  qs_capture_buf_put_long(&d, 1);
  assert_int_equal(qs_capture_writer_append_datum(&w, d.data, d.len), 0);
  qs_capture_buf_free(&d);
  assert_int_equal(qs_capture_writer_close(&w), 0);
}

static void expect_open_error(const char *path, int code, const char *reason) {
  qs_capture_reader r;
  int rc = qs_capture_reader_open_file(&r, path, NULL);
  if (rc != code || !strstr(r.error, reason))
    fail_msg("open %s: rc %d (%s), reason '%s'; wanted %d with '%s'", path, rc, qs_strerror(rc),
             r.error, code, reason);
  qs_capture_reader_close(&r);
}

static void test_file_with_other_schema_is_rejected_with_reason(void **state) {
  (void)state;
  write_with_schema(path_in_tmp("gold.avro"),
                    "{\"type\":\"record\",\"name\":\"Hourly\",\"fields\":[{\"name\":\"n\",\"type\":"
                    "\"long\"}]}");
  expect_open_error(path_in_tmp("gold.avro"), QS_ERR_INVALID, "name Hourly");

  /* The right record, but Properties' union lacks null. */
  char s[1024];
  snprintf(s, sizeof s, "%s", QS_CAPTURE_SCHEMA_JSON);
  char *at = strstr(s, ",\"null\"]}}");
  assert_non_null(at);
  memmove(at, at + 7, strlen(at + 7) + 1);
  write_with_schema(path_in_tmp("nonull.avro"), s);
  expect_open_error(path_in_tmp("nonull.avro"), QS_ERR_INVALID,
                    "field 4 'Properties' has type map<[long,double,string,bytes]>");

  /* A renamed field. */
  snprintf(s, sizeof s, "%s", QS_CAPTURE_SCHEMA_JSON);
  at = strstr(s, "\"Offset\"");
  memcpy(at, "\"Offzet\"", 8);
  write_with_schema(path_in_tmp("renamed.avro"), s);
  expect_open_error(path_in_tmp("renamed.avro"), QS_ERR_INVALID, "field 1 is 'Offzet'");

  /* Whitespace and a fully qualified name are the same schema. */
  write_with_schema(
      path_in_tmp("spaced.avro"),
      "{ \"type\" : \"record\", \"name\" : \"Microsoft.ServiceBus.Messaging.EventData\","
      " \"fields\" : [ {\"name\":\"SequenceNumber\",\"type\":{\"type\":\"long\"}},"
      "{\"name\":\"Offset\",\"type\":\"string\"},{\"name\":\"EnqueuedTimeUtc\",\"type\":"
      "\"string\"},{\"name\":\"SystemProperties\",\"type\":{\"type\":\"map\",\"values\":"
      "[\"long\",\"double\",\"string\",\"bytes\"]}},{\"name\":\"Properties\",\"type\":{"
      "\"type\":\"map\",\"values\":[\"long\",\"double\",\"string\",\"bytes\",\"null\"]}},"
      "{\"name\":\"Body\",\"type\":[\"null\",\"bytes\"]} ] }");
  qs_capture_reader r;
  assert_int_equal(qs_capture_reader_open_file(&r, path_in_tmp("spaced.avro"), NULL), 0);
  qs_capture_reader_close(&r);
}

static void test_non_avro_file_is_rejected(void **state) {
  (void)state;
  const char *path = path_in_tmp("not.avro");
  spit(path, "{\"event_id\":\"us1\"}\n", 19);
  expect_open_error(path, QS_ERR_PARSE, "bad magic");
  spit(path, "Obj", 3);
  expect_open_error(path, QS_ERR_PARSE, "bad magic");
  expect_open_error(path_in_tmp("missing.avro"), QS_ERR_NOTFOUND, "missing.avro");
}

static void test_unsupported_codec_and_missing_schema_are_rejected(void **state) {
  (void)state;
  qs_capture_buf h = {0};
  qs_capture_buf_put_raw(&h, "Obj\1", 4);
  qs_capture_buf_put_long(&h, 2);
  qs_capture_buf_put_bytes(&h, "avro.codec", 10);
  qs_capture_buf_put_bytes(&h, "snappy", 6);
  qs_capture_buf_put_bytes(&h, "avro.schema", 11);
  qs_capture_buf_put_bytes(&h, QS_CAPTURE_SCHEMA_JSON, strlen(QS_CAPTURE_SCHEMA_JSON));
  qs_capture_buf_put_long(&h, 0);
  qs_capture_buf_put_raw(&h, "0123456789abcdef", 16);
  spit(path_in_tmp("snappy.avro"), h.data, h.len);
  expect_open_error(path_in_tmp("snappy.avro"), QS_ERR_UNSUPPORTED, "codec 'snappy'");
  h.len = 0;
  qs_capture_buf_put_raw(&h, "Obj\1", 4);
  qs_capture_buf_put_long(&h, 0);
  qs_capture_buf_put_raw(&h, "0123456789abcdef", 16);
  spit(path_in_tmp("noschema.avro"), h.data, h.len);
  expect_open_error(path_in_tmp("noschema.avro"), QS_ERR_INVALID, "no avro.schema");
  /* Endless one-entry metadata blocks stop at the header limit. */
  h.len = 0;
  qs_capture_buf_put_raw(&h, "Obj\1", 4);
  for (int i = 0; i < 20000; i++) {
    qs_capture_buf_put_long(&h, 1);
    qs_capture_buf_put_bytes(&h, "user.x", 6);
    qs_capture_buf_put_bytes(&h, "y", 1);
  }
  spit(path_in_tmp("bigheader.avro"), h.data, h.len);
  expect_open_error(path_in_tmp("bigheader.avro"), QS_ERR_TOOBIG, "header: longer than");
  qs_capture_buf_free(&h);
}

static void test_more_properties_than_the_limit_is_too_big(void **state) {
  (void)state;
  const char *path = path_in_tmp("props.avro");
  write_sample(path, QS_CAPTURE_CODEC_DEFLATE, 10, 0);
  qs_capture_limits lim = {.max_props = 3};
  qs_capture_reader r;
  qs_capture_record rec;
  assert_int_equal(qs_capture_reader_open_file(&r, path, &lim), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), QS_ERR_TOOBIG);
  assert_non_null(strstr(r.error, "record 0 (block 0 at byte"));
  assert_non_null(strstr(r.error, "SystemProperties: more than 3 entries"));
  qs_capture_reader_close(&r);

  qs_capture_limits small = {.max_block_bytes = 1000};
  assert_int_equal(qs_capture_reader_open_file(&r, path, &small), 0);
  assert_int_equal(qs_capture_reader_next(&r, &rec), QS_ERR_TOOBIG);
  assert_non_null(strstr(r.error, "inflates to more than 1000 bytes"));
  qs_capture_reader_close(&r);
}

/* ---------------------------------------------------------------- path helper */

static void test_path_is_zero_padded_like_azure(void **state) {
  (void)state;
  char p[256];
  qs_capture_path_parts parts = {.namespace_name = "quakestream",
                                 .event_hub = "earthquake-events",
                                 .partition_id = "3",
                                 .year = 2018,
                                 .month = 12,
                                 .day = 7,
                                 .hour = 10,
                                 .minute = 2,
                                 .second = 9};
  int n = qs_capture_path_build(p, sizeof p, &parts);
  assert_string_equal(p, "quakestream/earthquake-events/p=3/2018/12/07/10/02/09.avro");
  assert_int_equal(n, (int)strlen(p));
  parts.month = 1;
  parts.hour = 0;
  assert_true(qs_capture_path_build(p, sizeof p, &parts) > 0);
  assert_string_equal(p, "quakestream/earthquake-events/p=3/2018/01/07/00/02/09.avro");
  assert_int_equal(qs_capture_path_build(p, 20, &parts), QS_ERR_TOOBIG);
  parts.month = 13;
  assert_int_equal(qs_capture_path_build(p, sizeof p, &parts), QS_ERR_RANGE);
  parts.month = 1;
  parts.event_hub = "../etc";
  assert_int_equal(qs_capture_path_build(p, sizeof p, &parts), QS_ERR_INVALID);
  parts.event_hub = "";
  assert_int_equal(qs_capture_path_build(p, sizeof p, &parts), QS_ERR_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_null_codec_preserves_every_field),
      cmocka_unit_test(test_round_trip_deflate_codec_preserves_every_field),
      cmocka_unit_test(test_writer_output_is_byte_identical_for_same_input),
      cmocka_unit_test(test_writer_shows_no_file_until_close_and_abort_removes_temp),
      cmocka_unit_test(test_writer_rejects_bad_options_and_records),
      cmocka_unit_test(test_empty_written_file_has_header_and_no_records),
      cmocka_unit_test(test_avro_c_reads_written_file),
      cmocka_unit_test(test_real_capture_file_has_677_records_with_known_values),
      cmocka_unit_test(test_real_empty_capture_file_yields_no_records),
      cmocka_unit_test(test_zero_byte_file_yields_no_records),
      cmocka_unit_test(test_truncated_real_file_is_reported_without_crashing),
      cmocka_unit_test(test_bit_flipped_real_file_is_reported_without_crashing),
      cmocka_unit_test(test_garbage_blocks_are_reported_without_crashing),
      cmocka_unit_test(test_file_with_other_schema_is_rejected_with_reason),
      cmocka_unit_test(test_non_avro_file_is_rejected),
      cmocka_unit_test(test_unsupported_codec_and_missing_schema_are_rejected),
      cmocka_unit_test(test_more_properties_than_the_limit_is_too_big),
      cmocka_unit_test(test_path_is_zero_padded_like_azure),
  };
  return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
