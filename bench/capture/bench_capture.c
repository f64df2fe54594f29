/* bench_capture.c — records/s of the Capture reader (and writer) on a 1,000,000-record file.
 *
 *   bench_capture [dir] [records] [body_bytes] [deflate_level]   (defaults: /tmp 1000000 300 1)
 *
 * Writes one null-codec and one deflate file of earthquake-like JSON bodies, reads each
 * three times from the file (page cache warm) and reports the best run, then deletes them.
 * One thread: the figure is per core.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qs/capture.h"
#include "qs/error.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int make_body(char *b, size_t cap, size_t want, long i) {
  int n =
      snprintf(b, cap,
               "{\"event_id\":\"us7000%06ld\",\"revision\":%ld,\"time\":\"2024-05-0%ldT%02ld:%02ld:"
               "%02ld.%03ldZ\",\"lat\":%.4f,\"lon\":%.4f,\"depth_km\":%.2f,\"mag\":%.1f,"
               "\"mag_type\":\"ml\",\"place\":\"%ld km NNE of Somewhere, CA\",\"tsunami\":%ld,"
               "\"status\":\"reviewed\",\"region\":\"us-west\"",
               i, i % 3, 1 + i % 9, i / 3600 % 24, i / 60 % 60, i % 60, i % 1000,
               30.0 + (double)(i % 2000) / 97.0, -120.0 - (double)(i % 3000) / 89.0,
               (double)(i % 700) / 10.0, (double)(i % 80) / 10.0, i % 97, i % 50 == 0 ? 1L : 0L);
  /* Pad with a pseudo-random hex "detail" id, so deflate sees realistic entropy. */
  static const char hexd[] = "0123456789abcdef";
  uint32_t x = (uint32_t)i * 2654435761u + 1;
  n += snprintf(b + n, cap - (size_t)n, ",\"detail\":\"");
  while ((size_t)n + 3 < want && (size_t)n + 3 < cap) {
    x = x * 1103515245u + 12345u;
    b[n++] = hexd[(x >> 16) & 15];
  }
  b[n++] = '"';
  b[n++] = '}';
  b[n] = 0;
  return n;
}

static int bench_one(const char *dir, qs_capture_codec codec, long n, size_t body_bytes,
                     int level) {
  char path[512];
  snprintf(path, sizeof path, "%s/bench-%s.avro", dir, codec ? "deflate" : "null");
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = codec, .deflate_level = level};
  char body[4096];
  double t0 = now();
  int rc = qs_capture_writer_open(&w, path, &o);
  for (long i = 0; rc == 0 && i < n; i++) {
    qs_capture_record rec = {.sequence_number = i, .has_body = 1};
    snprintf(rec.offset, sizeof rec.offset, "%ld", i * 400);
    snprintf(rec.enqueued_time, sizeof rec.enqueued_time, "12/7/2018 10:22:49 AM");
    rec.partition_key = "us-west";
    rec.partition_key_len = 7;
    rec.body = (const uint8_t *)body;
    rec.body_len = (size_t)make_body(body, sizeof body, body_bytes, i);
    rc = qs_capture_writer_append(&w, &rec);
  }
  if (rc == 0)
    rc = qs_capture_writer_close(&w);
  if (rc) {
    fprintf(stderr, "write %s: %s\n", path, qs_strerror(rc));
    return 1;
  }
  double t_write = now() - t0;
  struct stat st;
  stat(path, &st);
  double best = 1e9;
  for (int run = 0; run < 3; run++) {
    qs_capture_reader r;
    qs_capture_record rec;
    uint64_t sum = 0;
    t0 = now();
    rc = qs_capture_reader_open_file(&r, path, NULL);
    if (rc == 0)
      while ((rc = qs_capture_reader_next(&r, &rec)) == 1)
        sum += rec.body_len + (uint64_t)rec.sequence_number + rec.partition_key_len;
    double t = now() - t0;
    if (rc < 0 || r.records != (uint64_t)n) {
      fprintf(stderr, "read %s: %s\n", path, r.error);
      qs_capture_reader_close(&r);
      return 1;
    }
    qs_capture_reader_close(&r);
    if (t < best)
      best = t;
    if (sum == 0)
      fprintf(stderr, "impossible\n");
  }
  printf("%-7s level=%d records=%ld body=%zuB file=%.1fMB write=%.2fs (%.0f rec/s) read=%.3fs "
         "(%.0f rec/s, %.0f MB/s of file)\n",
         codec ? "deflate" : "null", level, n, body_bytes, (double)st.st_size / 1e6, t_write,
         (double)n / t_write, best, (double)n / best, (double)st.st_size / 1e6 / best);
  unlink(path);
  return 0;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/tmp";
  long n = argc > 2 ? atol(argv[2]) : 1000000;
  size_t body = argc > 3 ? (size_t)atol(argv[3]) : 300;
  int level = argc > 4 ? atoi(argv[4]) : 1;
  if (n <= 0 || body < 64 || body > 4000 || level < 1 || level > 9) {
    fprintf(stderr, "usage: bench_capture [dir] [records>0] [body_bytes 64..4000] [level 1..9]\n");
    return 2;
  }
  return bench_one(dir, QS_CAPTURE_CODEC_NULL, n, body, level) ||
         bench_one(dir, QS_CAPTURE_CODEC_DEFLATE, n, body, level);
}
