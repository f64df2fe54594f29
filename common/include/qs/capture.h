/* capture.h — Event Hubs Capture Avro files: reader, writer and path helper.
 *
 * The files are Avro object container files (Avro 1.x spec) whose writer schema is the Event
 * Hubs Capture schema (record Microsoft.ServiceBus.Messaging.EventData, see proto/capture.avsc
 * and QS_CAPTURE_SCHEMA_JSON). The codec is "null" or "deflate" (raw RFC 1951).
 *
 * The container format is implemented here, not through avro-c's datafile API, because avro-c
 * (1.11) asserts/aborts on some malformed input, allocates block sizes read from the file
 * without a limit, decodes through generic values (too slow for the batch layer's 1 M events/s)
 * and draws its sync marker from rand() seeded with time() (so no byte-identical re-runs).
 *
 * Reader invariants: every length, count and union index read from the input is checked
 * against the remaining bytes and the configured limits before use; any malformed input ends
 * in a negative return and a reason (what, which record/block, which byte offset), never in
 * an abort. Memory is bounded by qs_capture_limits. No per-record allocation: pointers in a
 * record point into the reader's block buffer and stay valid until the next read or close.
 *
 * Writer invariants: output goes to "<dir>/.<name>.tmp" and is fsync'd and renamed onto the
 * final path only by a successful close, so readers never see a partial file; any failure
 * removes the temp file. The output bytes depend only on the schema, the final file name,
 * the options and the appended records (the sync marker is derived from schema and name).
 */
#ifndef QS_CAPTURE_H
#define QS_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The exact schema string Azure Event Hubs Capture embeds in its files. */
#define QS_CAPTURE_SCHEMA_JSON                                                                     \
  "{\"type\":\"record\",\"name\":\"EventData\",\"namespace\":\"Microsoft.ServiceBus.Messaging\","  \
  "\"fields\":[{\"name\":\"SequenceNumber\",\"type\":\"long\"},{\"name\":\"Offset\",\"type\":"     \
  "\"string\"},{\"name\":\"EnqueuedTimeUtc\",\"type\":\"string\"},{\"name\":\"SystemProperties\"," \
  "\"type\":{\"type\":\"map\",\"values\":[\"long\",\"double\",\"string\",\"bytes\"]}},{\"name\":"  \
  "\"Properties\",\"type\":{\"type\":\"map\",\"values\":[\"long\",\"double\",\"string\","          \
  "\"bytes\",\"null\"]}},{\"name\":\"Body\",\"type\":[\"null\",\"bytes\"]}]}"

#define QS_CAPTURE_PARTITION_KEY "x-opt-partition-key"
/* Longest Offset / EnqueuedTimeUtc string accepted (Azure writes ≤ 22 chars). */
#define QS_CAPTURE_STR_MAX 63
#define QS_CAPTURE_ERR_MAX 256

typedef enum qs_capture_codec {
  QS_CAPTURE_CODEC_NULL = 0,
  QS_CAPTURE_CODEC_DEFLATE = 1,
} qs_capture_codec;

/* Branch of the property-value unions; the order is the schema's union order. */
typedef enum qs_capture_type {
  QS_CAPTURE_LONG = 0,
  QS_CAPTURE_DOUBLE = 1,
  QS_CAPTURE_STRING = 2,
  QS_CAPTURE_BYTES = 3,
  QS_CAPTURE_NULL = 4, /* Properties only */
} qs_capture_type;

/* One map entry of SystemProperties or Properties. Strings are NOT NUL-terminated. */
typedef struct qs_capture_prop {
  const char *key;
  size_t key_len;
  qs_capture_type type;
  int64_t l;           /* QS_CAPTURE_LONG */
  double d;            /* QS_CAPTURE_DOUBLE */
  const uint8_t *data; /* QS_CAPTURE_STRING / QS_CAPTURE_BYTES */
  size_t len;
} qs_capture_prop;

/* One captured event. Filled by qs_capture_reader_next (pointers valid until the next read);
 * read by qs_capture_writer_append (pointers only need to live for the call). */
typedef struct qs_capture_record {
  int64_t sequence_number;
  char offset[QS_CAPTURE_STR_MAX + 1];        /* NUL-terminated */
  char enqueued_time[QS_CAPTURE_STR_MAX + 1]; /* NUL-terminated, as written ("12/7/2018 ...") */
  const qs_capture_prop *system_props;
  size_t n_system_props;
  const qs_capture_prop *props;
  size_t n_props;
  /* SystemProperties' x-opt-partition-key string, NULL when absent. On write, added to the
   * system properties unless they already hold that key. */
  const char *partition_key;
  size_t partition_key_len;
  int has_body; /* 0: Body is null */
  const uint8_t *body;
  size_t body_len;
} qs_capture_record;

typedef struct qs_capture_limits {
  size_t max_header_bytes; /* file header incl. schema; default 64 KiB */
  size_t max_block_bytes;  /* one block, compressed and decompressed; default 64 MiB */
  size_t max_props;        /* entries per map in one record; default 1024 */
} qs_capture_limits;

typedef struct qs_capture_reader {
  /* Read-only for the caller. */
  uint64_t records; /* records returned so far */
  uint64_t bytes;   /* input bytes consumed so far (header + blocks) */
  uint64_t blocks;  /* complete blocks read so far */
  qs_capture_codec codec;
  char error[QS_CAPTURE_ERR_MAX]; /* reason of the last failure, "" if none */
  /* Private. */
  qs_capture_limits lim;
  FILE *fp;
  const uint8_t *mem; /* buffer input, NULL for files */
  size_t mem_len;     /* buffer length, or the file's size */
  int failed;
  int done;
  uint8_t sync[16];
  uint64_t block_index;
  uint64_t block_offset; /* byte offset of the current block header */
  int64_t block_left;    /* records left in the current block */
  const uint8_t *cur, *end;
  uint8_t *raw; /* file blocks are read here */
  size_t raw_cap;
  uint8_t *out; /* deflate blocks are inflated here */
  size_t out_cap;
  void *zs; /* z_stream, created on the first deflate block */
  qs_capture_prop *sysp, *prop;
  size_t sysp_cap, prop_cap;
} qs_capture_reader;

/* Open a Capture file / an in-memory copy (which must outlive the reader). limits may be NULL
 * for the defaults. Checks magic, metadata, codec and that the writer schema is the Capture
 * schema. On failure returns a negative qs_err with r->error set; close is still allowed. */
int qs_capture_reader_open_file(qs_capture_reader *r, const char *path,
                                const qs_capture_limits *limits);
int qs_capture_reader_open_buffer(qs_capture_reader *r, const void *buf, size_t len,
                                  const qs_capture_limits *limits);
/* Read the next record: 1 = rec filled, 0 = end of file, < 0 = error (r->error says why;
 * further calls return the same error). */
int qs_capture_reader_next(qs_capture_reader *r, qs_capture_record *rec);
void qs_capture_reader_close(qs_capture_reader *r);

typedef struct qs_capture_writer_opts {
  qs_capture_codec codec; /* default deflate */
  int deflate_level;      /* 1..9, 0 = default 1 */
  size_t block_bytes;     /* flush a block when its encoding reaches this; 0 = 256 KiB */
} qs_capture_writer_opts;

/* A growable byte buffer for Avro binary encoding. */
typedef struct qs_capture_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} qs_capture_buf;

void qs_capture_buf_put_long(qs_capture_buf *b, int64_t v);
void qs_capture_buf_put_double(qs_capture_buf *b, double v);
void qs_capture_buf_put_bytes(qs_capture_buf *b, const void *p, size_t n); /* also strings */
void qs_capture_buf_put_raw(qs_capture_buf *b, const void *p, size_t n);
void qs_capture_buf_free(qs_capture_buf *b);

typedef struct qs_capture_writer {
  /* Read-only for the caller. */
  uint64_t records;
  uint64_t bytes; /* bytes written so far */
  /* Private. */
  qs_capture_writer_opts opts;
  int fd;
  char *final_path;
  char *tmp_path;
  uint8_t sync[16];
  int64_t block_count;
  qs_capture_buf block; /* encoded records of the open block */
  qs_capture_buf datum; /* scratch for one record */
  qs_capture_buf out;   /* block as written */
  void *zs;             /* z_stream for deflate */
} qs_capture_writer;

/* Start a Capture file that will appear at final_path on close. opts may be NULL. */
int qs_capture_writer_open(qs_capture_writer *w, const char *final_path,
                           const qs_capture_writer_opts *opts);
/* Same container writer for any schema (e.g. the batch layer's gold files); the caller
 * appends datums it encoded with qs_capture_buf_put_*. */
int qs_capture_writer_open_schema(qs_capture_writer *w, const char *final_path,
                                  const char *schema_json, const qs_capture_writer_opts *opts);
int qs_capture_writer_append(qs_capture_writer *w, const qs_capture_record *rec);
int qs_capture_writer_append_datum(qs_capture_writer *w, const void *datum, size_t len);
/* Flush, fsync, rename onto the final path, fsync the directory. On any failure the temp
 * file is removed and the final path is untouched. Frees everything either way. */
int qs_capture_writer_close(qs_capture_writer *w);
/* Remove the temp file and free everything; the final path is untouched. */
void qs_capture_writer_abort(qs_capture_writer *w);

/* Components of the standard Capture blob path. */
typedef struct qs_capture_path_parts {
  const char *namespace_name;
  const char *event_hub;
  const char *partition_id;
  int year, month, day, hour, minute, second; /* UTC; month 1..12 */
} qs_capture_path_parts;

/* "{Namespace}/{EventHub}/p={PartitionId}/{YYYY}/{MM}/{DD}/{hh}/{mm}/{ss}.avro" (all date
 * parts zero-padded to 2 digits, year to 4, as Azure does). Names must be non-empty, without
 * '/', and not "." or "..". Returns the length, QS_ERR_INVALID or QS_ERR_TOOBIG. */
int qs_capture_path_build(char *out, size_t cap, const qs_capture_path_parts *parts);

#endif
