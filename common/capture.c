/* capture.c — Event Hubs Capture Avro object container files: reader and writer.
 *
 * Container layout (Avro spec, "Object Container Files"):
 *   "Obj" 0x01, metadata map<bytes> (avro.schema, avro.codec), 16-byte sync marker,
 *   then blocks: long record count, long byte size, the records, the sync marker.
 * Records are binary-encoded EventData: long, string, string, map, map, union [null, bytes].
 *
 * Invariants: see capture.h. In short, the reader never trusts a length, count or index
 * before checking it against the bytes left and the limits; it reports the first problem
 * with where it is and stops. The writer only ever renames a complete, fsync'd temp file.
 */
#include "qs/capture.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "qs/error.h"

static const uint8_t avro_magic[4] = {'O', 'b', 'j', 1};

enum {
  DEFAULT_MAX_HEADER = 64 * 1024,
  DEFAULT_MAX_BLOCK = 64 * 1024 * 1024,
  DEFAULT_MAX_PROPS = 1024,
  DEFAULT_BLOCK_BYTES = 256 * 1024,
  SCHEMA_MAX_DEPTH = 16,
};

/* ---------------------------------------------------------------- reader: errors */

static int rd_fail(qs_capture_reader *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int rd_fail(qs_capture_reader *r, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->failed = code;
  return code;
}

/* ---------------------------------------------------------------- reader: raw input */

/* Reads exactly n bytes at the current position; *p points at them (into the caller's
 * buffer for memory input, into r->raw for files). Returns 0, or 1 on a short read. */
static int src_view(qs_capture_reader *r, size_t n, const uint8_t **p) {
  if (r->mem) {
    if (n > r->mem_len - r->bytes)
      return 1;
    *p = r->mem + r->bytes;
  } else {
    /* Known short: fail before growing the buffer for a length the file cannot hold. */
    if (n > r->mem_len - r->bytes)
      return 1;
    if (n > r->raw_cap) {
      size_t cap = r->raw_cap ? r->raw_cap : 4096;
      while (cap < n)
        cap *= 2;
      r->raw = qs_xrealloc(r->raw, cap);
      r->raw_cap = cap;
    }
    if (fread(r->raw, 1, n, r->fp) != n)
      return 1;
    *p = r->raw;
  }
  r->bytes += n;
  return 0;
}

/* Returns 0 with the byte, 1 at end of input. */
static int src_byte(qs_capture_reader *r, uint8_t *b) {
  if (r->mem) {
    if (r->bytes >= r->mem_len)
      return 1;
    *b = r->mem[r->bytes];
  } else {
    int c = getc(r->fp);
    if (c == EOF)
      return 1;
    *b = (uint8_t)c;
  }
  r->bytes++;
  return 0;
}

/* Zig-zag varint from the stream. 0 ok, 1 clean EOF before the first byte, -1 truncated
 * inside the number, -2 longer than 10 bytes. */
static int src_long(qs_capture_reader *r, int64_t *v) {
  uint64_t u = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    uint8_t b;
    if (src_byte(r, &b))
      return shift == 0 ? 1 : -1;
    u |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
      return 0;
    }
  }
  return -2;
}

/* ---------------------------------------------------------------- reader: decoding */

/* Zig-zag varint from memory. 0 ok, -1 truncated or overlong. */
static inline int dec_long(const uint8_t **pp, const uint8_t *end, int64_t *v) {
  const uint8_t *p = *pp;
  if (p < end && !(*p & 0x80)) { /* the common one-byte case */
    *v = (int64_t)(*p >> 1) ^ -(int64_t)(*p & 1);
    *pp = p + 1;
    return 0;
  }
  uint64_t u = 0;
  for (int shift = 0; shift < 70 && p < end; shift += 7) {
    uint8_t b = *p++;
    u |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
      *pp = p;
      return 0;
    }
  }
  return -1;
}

/* Length-prefixed bytes/string. 0 ok, -1 bad length or truncated. */
static inline int dec_bytes(const uint8_t **pp, const uint8_t *end, const uint8_t **data,
                            size_t *len) {
  int64_t n;
  if (dec_long(pp, end, &n) || n < 0 || (uint64_t)n > (uint64_t)(end - *pp))
    return -1;
  *data = *pp;
  *len = (size_t)n;
  *pp += n;
  return 0;
}

/* Where in the file the record being decoded is, for error messages. */
#define RD_WHERE(r) "record %" PRIu64 " (block %" PRIu64 " at byte %" PRIu64 ")"
#define RD_WHERE_ARGS(r) (r)->records, (r)->block_index, (r)->block_offset

static int dec_string_field(qs_capture_reader *r, const uint8_t **p, char *dst, const char *field) {
  const uint8_t *s;
  size_t n;
  if (dec_bytes(p, r->end, &s, &n))
    return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: bad length or truncated", RD_WHERE_ARGS(r),
                   field);
  if (n > QS_CAPTURE_STR_MAX)
    return rd_fail(r, QS_ERR_TOOBIG, RD_WHERE(r) ": %s: %zu bytes, limit %d", RD_WHERE_ARGS(r),
                   field, n, QS_CAPTURE_STR_MAX);
  if (memchr(s, 0, n))
    return rd_fail(r, QS_ERR_INVALID, RD_WHERE(r) ": %s: contains a NUL byte", RD_WHERE_ARGS(r),
                   field);
  memcpy(dst, s, n);
  dst[n] = 0;
  return 0;
}

/* Decodes one map of property values into *arr (grown up to the limit). The union branch
 * count is 4 for SystemProperties (no null) and 5 for Properties. */
static int dec_map(qs_capture_reader *r, const uint8_t **p, qs_capture_prop **arr, size_t *cap,
                   size_t *count, int branches, const char *field) {
  size_t n = 0;
  for (;;) {
    int64_t blk;
    if (dec_long(p, r->end, &blk))
      return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: truncated map block count",
                     RD_WHERE_ARGS(r), field);
    if (blk == 0)
      break;
    if (blk < 0) {
      int64_t size;
      if (blk == INT64_MIN || dec_long(p, r->end, &size))
        return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: bad map block", RD_WHERE_ARGS(r), field);
      blk = -blk;
    }
    if ((uint64_t)blk > r->lim.max_props - n)
      return rd_fail(r, QS_ERR_TOOBIG, RD_WHERE(r) ": %s: more than %zu entries", RD_WHERE_ARGS(r),
                     field, r->lim.max_props);
    if (n + (size_t)blk > *cap) {
      size_t c = *cap ? *cap : 8;
      while (c < n + (size_t)blk)
        c *= 2;
      *arr = qs_xrealloc(*arr, c * sizeof **arr);
      *cap = c;
    }
    for (int64_t i = 0; i < blk; i++, n++) {
      qs_capture_prop *e = &(*arr)[n];
      const uint8_t *k;
      int64_t branch;
      if (dec_bytes(p, r->end, &k, &e->key_len))
        return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: entry %zu: bad key length or truncated",
                       RD_WHERE_ARGS(r), field, n);
      e->key = (const char *)k;
      if (dec_long(p, r->end, &branch))
        return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: entry %zu: truncated union index",
                       RD_WHERE_ARGS(r), field, n);
      if (branch < 0 || branch >= branches)
        return rd_fail(r, QS_ERR_PARSE,
                       RD_WHERE(r) ": %s: entry %zu: union index %" PRId64 " out of range 0..%d",
                       RD_WHERE_ARGS(r), field, n, branch, branches - 1);
      e->type = (qs_capture_type)branch;
      e->data = NULL;
      e->len = 0;
      int bad = 0;
      switch (e->type) {
      case QS_CAPTURE_LONG:
        bad = dec_long(p, r->end, &e->l);
        break;
      case QS_CAPTURE_DOUBLE:
        if (r->end - *p < 8) {
          bad = 1;
        } else {
          uint64_t u = 0;
          for (int j = 7; j >= 0; j--)
            u = (u << 8) | (*p)[j];
          memcpy(&e->d, &u, 8);
          *p += 8;
        }
        break;
      case QS_CAPTURE_STRING:
      case QS_CAPTURE_BYTES:
        bad = dec_bytes(p, r->end, &e->data, &e->len);
        break;
      case QS_CAPTURE_NULL:
        break;
      }
      if (bad)
        return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": %s: entry %zu: truncated value",
                       RD_WHERE_ARGS(r), field, n);
    }
  }
  *count = n;
  return 0;
}

static int dec_record(qs_capture_reader *r, qs_capture_record *rec) {
  const uint8_t *p = r->cur;
  int rc;
  if (dec_long(&p, r->end, &rec->sequence_number))
    return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": SequenceNumber: truncated", RD_WHERE_ARGS(r));
  if ((rc = dec_string_field(r, &p, rec->offset, "Offset")))
    return rc;
  if ((rc = dec_string_field(r, &p, rec->enqueued_time, "EnqueuedTimeUtc")))
    return rc;
  if ((rc = dec_map(r, &p, &r->sysp, &r->sysp_cap, &rec->n_system_props, 4, "SystemProperties")))
    return rc;
  if ((rc = dec_map(r, &p, &r->prop, &r->prop_cap, &rec->n_props, 5, "Properties")))
    return rc;
  rec->system_props = r->sysp;
  rec->props = r->prop;
  rec->partition_key = NULL;
  rec->partition_key_len = 0;
  for (size_t i = 0; i < rec->n_system_props; i++) {
    const qs_capture_prop *e = &r->sysp[i];
    if (e->type == QS_CAPTURE_STRING && e->key_len == sizeof QS_CAPTURE_PARTITION_KEY - 1 &&
        !memcmp(e->key, QS_CAPTURE_PARTITION_KEY, e->key_len)) {
      rec->partition_key = (const char *)e->data;
      rec->partition_key_len = e->len;
    }
  }
  int64_t branch;
  if (dec_long(&p, r->end, &branch))
    return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": Body: truncated union index", RD_WHERE_ARGS(r));
  if (branch == 0) {
    rec->has_body = 0;
    rec->body = NULL;
    rec->body_len = 0;
  } else if (branch == 1) {
    rec->has_body = 1;
    if (dec_bytes(&p, r->end, &rec->body, &rec->body_len))
      return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": Body: bad length or truncated",
                     RD_WHERE_ARGS(r));
  } else {
    return rd_fail(r, QS_ERR_PARSE, RD_WHERE(r) ": Body: union index %" PRId64 " out of range 0..1",
                   RD_WHERE_ARGS(r), branch);
  }
  r->cur = p;
  return 0;
}

/* ---------------------------------------------------------------- reader: schema check */

/* Canonical compact text of an Avro type as far as the Capture schema needs it:
 * primitives by name, maps as map<values>, unions as [a,b]. Anything else is "?". */
static void type_text(const cJSON *t, char *out, size_t cap, int depth) {
  if (cap == 0)
    return;
  out[0] = 0;
  if (depth > SCHEMA_MAX_DEPTH) {
    snprintf(out, cap, "?");
  } else if (cJSON_IsString(t)) {
    snprintf(out, cap, "%s", t->valuestring);
  } else if (cJSON_IsArray(t)) {
    size_t n = (size_t)snprintf(out, cap, "[");
    const cJSON *b;
    int first = 1;
    cJSON_ArrayForEach(b, t) {
      if (n >= cap)
        return;
      char sub[128];
      type_text(b, sub, sizeof sub, depth + 1);
      n += (size_t)snprintf(out + n, cap - n, "%s%s", first ? "" : ",", sub);
      first = 0;
    }
    if (n < cap)
      snprintf(out + n, cap - n, "]");
  } else if (cJSON_IsObject(t)) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type");
    if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "map")) {
      char sub[128];
      type_text(cJSON_GetObjectItemCaseSensitive(t, "values"), sub, sizeof sub, depth + 1);
      snprintf(out, cap, "map<%s>", sub);
    } else if (cJSON_IsString(ty) && cJSON_GetArraySize(t) == 1) {
      snprintf(out, cap, "%s", ty->valuestring); /* {"type":"long"} */
    } else {
      snprintf(out, cap, "?");
    }
  } else {
    snprintf(out, cap, "?");
  }
}

static int check_schema(qs_capture_reader *r, const uint8_t *json, size_t len) {
  static const struct {
    const char *name, *type;
  } want[] = {
      {"SequenceNumber", "long"},
      {"Offset", "string"},
      {"EnqueuedTimeUtc", "string"},
      {"SystemProperties", "map<[long,double,string,bytes]>"},
      {"Properties", "map<[long,double,string,bytes,null]>"},
      {"Body", "[null,bytes]"},
  };
  cJSON *s = cJSON_ParseWithLength((const char *)json, len);
  int rc = 0;
  if (!s)
    return rd_fail(r, QS_ERR_PARSE, "header: avro.schema is not valid JSON");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
  const cJSON *ns = cJSON_GetObjectItemCaseSensitive(s, "namespace");
  const cJSON *fields = cJSON_GetObjectItemCaseSensitive(s, "fields");
  int name_ok = cJSON_IsString(name) &&
                (!strcmp(name->valuestring, "Microsoft.ServiceBus.Messaging.EventData") ||
                 (!strcmp(name->valuestring, "EventData") && cJSON_IsString(ns) &&
                  !strcmp(ns->valuestring, "Microsoft.ServiceBus.Messaging")));
  if (!cJSON_IsString(type) || strcmp(type->valuestring, "record") || !name_ok) {
    rc = rd_fail(r, QS_ERR_INVALID,
                 "header: writer schema is not record Microsoft.ServiceBus.Messaging.EventData "
                 "(type %s, name %s)",
                 cJSON_IsString(type) ? type->valuestring : "?",
                 cJSON_IsString(name) ? name->valuestring : "?");
    goto out;
  }
  int nf = cJSON_IsArray(fields) ? cJSON_GetArraySize(fields) : -1;
  if (nf != 6) {
    rc =
        rd_fail(r, QS_ERR_INVALID, "header: writer schema has %d fields, the Capture schema 6", nf);
    goto out;
  }
  for (int i = 0; i < 6; i++) {
    const cJSON *f = cJSON_GetArrayItem(fields, i);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(f, "name");
    char got[256];
    type_text(cJSON_GetObjectItemCaseSensitive(f, "type"), got, sizeof got, 0);
    if (!cJSON_IsString(fn) || strcmp(fn->valuestring, want[i].name)) {
      rc = rd_fail(r, QS_ERR_INVALID, "header: writer schema field %d is '%s', expected '%s'", i,
                   cJSON_IsString(fn) ? fn->valuestring : "?", want[i].name);
      goto out;
    }
    if (strcmp(got, want[i].type)) {
      rc =
          rd_fail(r, QS_ERR_INVALID, "header: writer schema field %d '%s' has type %s, expected %s",
                  i, want[i].name, got, want[i].type);
      goto out;
    }
  }
out:
  cJSON_Delete(s);
  return rc;
}

/* ---------------------------------------------------------------- reader: header */

static int read_header(qs_capture_reader *r) {
  const uint8_t *p;
  int have_schema = 0;
  int64_t n;
  int rc;
  r->codec = QS_CAPTURE_CODEC_NULL;
  /* A 0-byte file is an empty capture, not an error. */
  if (r->mem && r->mem_len == 0) {
    r->done = 1;
    return 0;
  }
  if (!r->mem) {
    int c = getc(r->fp);
    if (c == EOF) {
      if (ferror(r->fp))
        return rd_fail(r, QS_ERR_IO, "read error at byte 0");
      r->done = 1;
      return 0;
    }
    ungetc(c, r->fp);
  }
  if (src_view(r, 4, &p) || memcmp(p, avro_magic, 4))
    return rd_fail(r, QS_ERR_PARSE, "header: not an Avro object container file (bad magic)");
  for (;;) {
    if (r->bytes > r->lim.max_header_bytes)
      return rd_fail(r, QS_ERR_TOOBIG, "header: longer than the %zu-byte limit",
                     r->lim.max_header_bytes);
    if ((rc = src_long(r, &n)) != 0)
      return rd_fail(r, QS_ERR_PARSE, "header: truncated metadata at byte %" PRIu64, r->bytes);
    if (n == 0)
      break;
    if (n < 0) {
      int64_t size;
      if (n == INT64_MIN || src_long(r, &size))
        return rd_fail(r, QS_ERR_PARSE, "header: bad metadata block at byte %" PRIu64, r->bytes);
      n = -n;
    }
    if (n > 64)
      return rd_fail(r, QS_ERR_TOOBIG, "header: %" PRId64 " metadata entries, limit 64", n);
    for (int64_t i = 0; i < n; i++) {
      int64_t klen, vlen;
      char key[256];
      if (src_long(r, &klen) || klen < 0)
        return rd_fail(r, QS_ERR_PARSE, "header: bad metadata key at byte %" PRIu64, r->bytes);
      if ((uint64_t)klen >= sizeof key)
        return rd_fail(r, QS_ERR_TOOBIG, "header: metadata key of %" PRId64 " bytes", klen);
      if (src_view(r, (size_t)klen, &p))
        return rd_fail(r, QS_ERR_PARSE, "header: truncated metadata key at byte %" PRIu64,
                       r->bytes);
      memcpy(key, p, (size_t)klen);
      key[klen] = 0;
      if (src_long(r, &vlen) || vlen < 0)
        return rd_fail(r, QS_ERR_PARSE, "header: bad metadata value length for '%s'", key);
      if (r->bytes + (uint64_t)vlen > r->lim.max_header_bytes)
        return rd_fail(r, QS_ERR_TOOBIG, "header: longer than the %zu-byte limit (at '%s')",
                       r->lim.max_header_bytes, key);
      if (src_view(r, (size_t)vlen, &p))
        return rd_fail(r, QS_ERR_PARSE, "header: truncated metadata value '%s'", key);
      if (!strcmp(key, "avro.codec")) {
        if (vlen == 4 && !memcmp(p, "null", 4))
          r->codec = QS_CAPTURE_CODEC_NULL;
        else if (vlen == 7 && !memcmp(p, "deflate", 7))
          r->codec = QS_CAPTURE_CODEC_DEFLATE;
        else
          return rd_fail(r, QS_ERR_UNSUPPORTED, "header: codec '%.*s' is not supported",
                         (int)(vlen > 32 ? 32 : vlen), (const char *)p);
      } else if (!strcmp(key, "avro.schema")) {
        if ((rc = check_schema(r, p, (size_t)vlen)))
          return rc;
        have_schema = 1;
      }
    }
  }
  if (!have_schema)
    return rd_fail(r, QS_ERR_INVALID, "header: no avro.schema");
  if (src_view(r, 16, &p))
    return rd_fail(r, QS_ERR_PARSE, "header: truncated sync marker at byte %" PRIu64, r->bytes);
  memcpy(r->sync, p, 16);
  return 0;
}

static int reader_open(qs_capture_reader *r, const qs_capture_limits *limits) {
  r->lim.max_header_bytes = DEFAULT_MAX_HEADER;
  r->lim.max_block_bytes = DEFAULT_MAX_BLOCK;
  r->lim.max_props = DEFAULT_MAX_PROPS;
  if (limits) {
    if (limits->max_header_bytes)
      r->lim.max_header_bytes = limits->max_header_bytes;
    if (limits->max_block_bytes)
      r->lim.max_block_bytes = limits->max_block_bytes;
    if (limits->max_props)
      r->lim.max_props = limits->max_props;
  }
  return read_header(r);
}

int qs_capture_reader_open_file(qs_capture_reader *r, const char *path,
                                const qs_capture_limits *limits) {
  memset(r, 0, sizeof *r);
  r->fp = fopen(path, "rb");
  if (!r->fp) {
    int e = errno;
    return rd_fail(r, e == ENOENT ? QS_ERR_NOTFOUND : QS_ERR_IO, "%s: %s", path, strerror(e));
  }
  struct stat st;
  if (fstat(fileno(r->fp), &st) != 0 || !S_ISREG(st.st_mode))
    return rd_fail(r, QS_ERR_IO, "%s: not a regular file", path);
  r->mem_len = (size_t)st.st_size; /* for files: the size, to spot truncation early */
  return reader_open(r, limits);
}

int qs_capture_reader_open_buffer(qs_capture_reader *r, const void *buf, size_t len,
                                  const qs_capture_limits *limits) {
  static const uint8_t empty;
  memset(r, 0, sizeof *r);
  r->mem = buf && len ? buf : &empty;
  r->mem_len = buf ? len : 0;
  return reader_open(r, limits);
}

static int inflate_block(qs_capture_reader *r, const uint8_t *src, size_t len, size_t *out_len) {
  z_stream *z = r->zs;
  if (!z) {
    z = qs_xcalloc(1, sizeof *z);
    if (inflateInit2(z, -15) != Z_OK) {
      free(z);
      return rd_fail(r, QS_ERR_NOMEM, "inflateInit2 failed");
    }
    r->zs = z;
  } else {
    inflateReset(z);
  }
  if (!r->out_cap) {
    r->out_cap = 256 * 1024 < r->lim.max_block_bytes ? 256 * 1024 : r->lim.max_block_bytes;
    r->out = qs_xmalloc(r->out_cap);
  }
  z->next_in = (Bytef *)src;
  z->avail_in = (uInt)len;
  size_t have = 0;
  for (;;) {
    z->next_out = r->out + have;
    z->avail_out = (uInt)(r->out_cap - have);
    int zr = inflate(z, Z_FINISH);
    have = r->out_cap - z->avail_out;
    if (zr == Z_STREAM_END)
      break;
    if ((zr == Z_BUF_ERROR || zr == Z_OK) && z->avail_in == 0 && z->avail_out != 0)
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": truncated deflate data",
                     r->block_index, r->block_offset);
    if (zr != Z_BUF_ERROR && zr != Z_OK)
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": bad deflate data (%s)", r->block_index,
                     r->block_offset, z->msg ? z->msg : "zlib error");
    if (r->out_cap >= r->lim.max_block_bytes)
      return rd_fail(r, QS_ERR_TOOBIG,
                     "block %" PRIu64 " at byte %" PRIu64 ": inflates to more than %zu bytes",
                     r->block_index, r->block_offset, r->lim.max_block_bytes);
    size_t cap = r->out_cap * 2 < r->lim.max_block_bytes ? r->out_cap * 2 : r->lim.max_block_bytes;
    r->out = qs_xrealloc(r->out, cap);
    r->out_cap = cap;
  }
  /* Bytes after the end of the deflate stream are ignored, as the Java and avro-c readers
   * do: python3-avro writes zlib.compress(data)[2:-1], leaving 3 bytes of the Adler-32. */
  *out_len = have;
  return 0;
}

/* Reads the next block header and body. 0 with a block ready, 1 at a clean end of file. */
static int next_block(qs_capture_reader *r) {
  int64_t count, size;
  const uint8_t *p;
  r->block_index = r->blocks;
  r->block_offset = r->bytes;
  int rc = src_long(r, &count);
  if (rc == 1) {
    if (!r->mem && ferror(r->fp))
      return rd_fail(r, QS_ERR_IO, "read error at byte %" PRIu64, r->bytes);
    return 1;
  }
  if (rc || src_long(r, &size))
    return rd_fail(r, QS_ERR_PARSE, "block %" PRIu64 " at byte %" PRIu64 ": truncated block header",
                   r->block_index, r->block_offset);
  if (count < 0 || size < 0)
    return rd_fail(r, QS_ERR_PARSE,
                   "block %" PRIu64 " at byte %" PRIu64 ": negative count %" PRId64
                   " or size %" PRId64,
                   r->block_index, r->block_offset, count, size);
  if ((uint64_t)size > r->lim.max_block_bytes)
    return rd_fail(r, QS_ERR_TOOBIG,
                   "block %" PRIu64 " at byte %" PRIu64 ": %" PRId64 " bytes, limit %zu",
                   r->block_index, r->block_offset, size, r->lim.max_block_bytes);
  /* Every record takes at least 6 bytes (long, 2 strings, 2 maps, union): a count that
   * cannot fit the data is rejected before any work. */
  if (r->codec == QS_CAPTURE_CODEC_NULL && (uint64_t)count > (uint64_t)size / 6)
    return rd_fail(r, QS_ERR_PARSE,
                   "block %" PRIu64 " at byte %" PRIu64 ": %" PRId64 " records cannot fit %" PRId64
                   " bytes",
                   r->block_index, r->block_offset, count, size);
  if (src_view(r, (size_t)size, &p))
    return rd_fail(r, QS_ERR_PARSE,
                   "block %" PRIu64 " at byte %" PRIu64 ": truncated (%" PRId64 " bytes declared)",
                   r->block_index, r->block_offset, size);
  size_t len = (size_t)size;
  if (r->codec == QS_CAPTURE_CODEC_DEFLATE && size > 0) {
    if ((rc = inflate_block(r, p, len, &len)))
      return rc;
    p = r->out;
    if ((uint64_t)count > len / 6)
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": %" PRId64
                     " records cannot fit %zu bytes",
                     r->block_index, r->block_offset, count, len);
  } else if (r->codec == QS_CAPTURE_CODEC_DEFLATE && count > 0) {
    return rd_fail(r, QS_ERR_PARSE,
                   "block %" PRIu64 " at byte %" PRIu64 ": no data for %" PRId64 " records",
                   r->block_index, r->block_offset, count);
  }
  r->cur = p;
  r->end = p + len;
  r->block_left = count;
  /* For file input the block bytes live in r->raw: read the sync marker beside them. */
  uint8_t sync[16];
  if (r->mem) {
    const uint8_t *s;
    if (src_view(r, 16, &s))
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": truncated sync marker", r->block_index,
                     r->block_offset);
    memcpy(sync, s, 16);
  } else {
    if (fread(sync, 1, 16, r->fp) != 16)
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": truncated sync marker", r->block_index,
                     r->block_offset);
    r->bytes += 16;
  }
  if (memcmp(sync, r->sync, 16))
    return rd_fail(r, QS_ERR_PARSE,
                   "block %" PRIu64 " at byte %" PRIu64 ": sync marker mismatch at byte %" PRIu64,
                   r->block_index, r->block_offset, r->bytes - 16);
  r->blocks++;
  return 0;
}

int qs_capture_reader_next(qs_capture_reader *r, qs_capture_record *rec) {
  if (r->failed)
    return r->failed;
  if (r->done)
    return 0;
  while (r->block_left == 0) {
    if (r->cur != r->end)
      return rd_fail(r, QS_ERR_PARSE,
                     "block %" PRIu64 " at byte %" PRIu64 ": %zu bytes left after its records",
                     r->block_index, r->block_offset, (size_t)(r->end - r->cur));
    int rc = next_block(r);
    if (rc == 1) {
      r->done = 1;
      return 0;
    }
    if (rc)
      return rc;
  }
  int rc = dec_record(r, rec);
  if (rc)
    return rc;
  r->block_left--;
  r->records++;
  return 1;
}

void qs_capture_reader_close(qs_capture_reader *r) {
  if (r->fp)
    fclose(r->fp);
  r->fp = NULL;
  if (r->zs) {
    inflateEnd(r->zs);
    free(r->zs);
    r->zs = NULL;
  }
  free(r->raw);
  free(r->out);
  free(r->sysp);
  free(r->prop);
  r->raw = r->out = NULL;
  r->sysp = r->prop = NULL;
  r->raw_cap = r->out_cap = r->sysp_cap = r->prop_cap = 0;
  r->cur = r->end = NULL;
  r->done = 1;
}

/* ---------------------------------------------------------------- encoding */

static void buf_reserve(qs_capture_buf *b, size_t extra) {
  if (extra <= b->cap - b->len)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  b->data = qs_xrealloc(b->data, cap);
  b->cap = cap;
}

void qs_capture_buf_put_long(qs_capture_buf *b, int64_t v) {
  uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
  buf_reserve(b, 10);
  while (u >= 0x80) {
    b->data[b->len++] = (uint8_t)(u | 0x80);
    u >>= 7;
  }
  b->data[b->len++] = (uint8_t)u;
}

void qs_capture_buf_put_double(qs_capture_buf *b, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  buf_reserve(b, 8);
  for (int i = 0; i < 8; i++)
    b->data[b->len++] = (uint8_t)(u >> (8 * i));
}

void qs_capture_buf_put_raw(qs_capture_buf *b, const void *p, size_t n) {
  if (!n)
    return;
  buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void qs_capture_buf_put_bytes(qs_capture_buf *b, const void *p, size_t n) {
  qs_capture_buf_put_long(b, (int64_t)n);
  qs_capture_buf_put_raw(b, p, n);
}

void qs_capture_buf_free(qs_capture_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- writer */

static int write_all(qs_capture_writer *w, const void *p, size_t n) {
  const uint8_t *c = p;
  while (n) {
    ssize_t k = write(w->fd, c, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return QS_ERR_IO;
    c += k;
    n -= (size_t)k;
    w->bytes += (uint64_t)k;
  }
  return 0;
}

static void writer_free(qs_capture_writer *w) {
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  if (w->zs) {
    deflateEnd(w->zs);
    free(w->zs);
    w->zs = NULL;
  }
  free(w->final_path);
  free(w->tmp_path);
  w->final_path = w->tmp_path = NULL;
  qs_capture_buf_free(&w->block);
  qs_capture_buf_free(&w->datum);
  qs_capture_buf_free(&w->out);
}

void qs_capture_writer_abort(qs_capture_writer *w) {
  if (w->tmp_path)
    unlink(w->tmp_path);
  writer_free(w);
}

int qs_capture_writer_open_schema(qs_capture_writer *w, const char *final_path,
                                  const char *schema_json, const qs_capture_writer_opts *opts) {
  memset(w, 0, sizeof *w);
  w->fd = -1;
  w->opts.codec = QS_CAPTURE_CODEC_DEFLATE;
  w->opts.deflate_level = 1; /* 4x cheaper than 6 for ~17% larger files (bench/capture) */
  w->opts.block_bytes = DEFAULT_BLOCK_BYTES;
  if (opts) {
    if (opts->codec != QS_CAPTURE_CODEC_NULL && opts->codec != QS_CAPTURE_CODEC_DEFLATE)
      return QS_ERR_INVALID;
    w->opts.codec = opts->codec;
    if (opts->deflate_level) {
      if (opts->deflate_level < 1 || opts->deflate_level > 9)
        return QS_ERR_RANGE;
      w->opts.deflate_level = opts->deflate_level;
    }
    if (opts->block_bytes) {
      if (opts->block_bytes > DEFAULT_MAX_BLOCK / 2)
        return QS_ERR_RANGE;
      w->opts.block_bytes = opts->block_bytes;
    }
  }
  const char *slash = strrchr(final_path, '/');
  const char *base = slash ? slash + 1 : final_path;
  size_t dirlen = slash ? (size_t)(slash - final_path) + 1 : 0;
  if (!*base)
    return QS_ERR_INVALID;
  w->final_path = qs_xstrdup(final_path);
  w->tmp_path = qs_xmalloc(strlen(final_path) + 7);
  sprintf(w->tmp_path, "%.*s.%s.tmp", (int)dirlen, final_path, base);

  /* Sync marker: SHA-256 of the schema and the file name, so equal input gives equal bytes. */
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
      !EVP_DigestUpdate(md, "quakestream-avro-sync", 22) ||
      !EVP_DigestUpdate(md, schema_json, strlen(schema_json) + 1) ||
      !EVP_DigestUpdate(md, base, strlen(base)) || !EVP_DigestFinal_ex(md, digest, &dlen) ||
      dlen < 16) {
    EVP_MD_CTX_free(md);
    writer_free(w);
    return QS_ERR_NOMEM;
  }
  EVP_MD_CTX_free(md);
  memcpy(w->sync, digest, 16);

  if (w->opts.codec == QS_CAPTURE_CODEC_DEFLATE) {
    w->zs = qs_xcalloc(1, sizeof(z_stream));
    if (deflateInit2(w->zs, w->opts.deflate_level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
      free(w->zs);
      w->zs = NULL;
      writer_free(w);
      return QS_ERR_NOMEM;
    }
  }
  w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    int e = errno;
    writer_free(w);
    return -e;
  }
  qs_capture_buf h = {0};
  const char *codec = w->opts.codec == QS_CAPTURE_CODEC_DEFLATE ? "deflate" : "null";
  qs_capture_buf_put_raw(&h, avro_magic, 4);
  qs_capture_buf_put_long(&h, 2);
  qs_capture_buf_put_bytes(&h, "avro.codec", 10);
  qs_capture_buf_put_bytes(&h, codec, strlen(codec));
  qs_capture_buf_put_bytes(&h, "avro.schema", 11);
  qs_capture_buf_put_bytes(&h, schema_json, strlen(schema_json));
  qs_capture_buf_put_long(&h, 0);
  qs_capture_buf_put_raw(&h, w->sync, 16);
  int rc = write_all(w, h.data, h.len);
  qs_capture_buf_free(&h);
  if (rc) {
    qs_capture_writer_abort(w);
    return rc;
  }
  return 0;
}

int qs_capture_writer_open(qs_capture_writer *w, const char *final_path,
                           const qs_capture_writer_opts *opts) {
  return qs_capture_writer_open_schema(w, final_path, QS_CAPTURE_SCHEMA_JSON, opts);
}

static int flush_block(qs_capture_writer *w) {
  if (w->block_count == 0)
    return 0;
  const uint8_t *data = w->block.data;
  size_t len = w->block.len;
  if (w->zs) {
    z_stream *z = w->zs;
    deflateReset(z);
    size_t bound = deflateBound(z, (uLong)len);
    w->out.len = 0;
    buf_reserve(&w->out, bound);
    z->next_in = (Bytef *)data;
    z->avail_in = (uInt)len;
    z->next_out = w->out.data;
    z->avail_out = (uInt)bound;
    if (deflate(z, Z_FINISH) != Z_STREAM_END)
      return QS_ERR_IO;
    data = w->out.data;
    len = bound - z->avail_out;
  }
  uint8_t hdr[20];
  qs_capture_buf hb = {hdr, 0, sizeof hdr};
  qs_capture_buf_put_long(&hb, w->block_count);
  qs_capture_buf_put_long(&hb, (int64_t)len);
  int rc = write_all(w, hdr, hb.len);
  if (!rc)
    rc = write_all(w, data, len);
  if (!rc)
    rc = write_all(w, w->sync, 16);
  w->block.len = 0;
  w->block_count = 0;
  return rc;
}

int qs_capture_writer_append_datum(qs_capture_writer *w, const void *datum, size_t len) {
  if (w->fd < 0)
    return QS_ERR_STATE;
  if (len > DEFAULT_MAX_BLOCK / 2)
    return QS_ERR_TOOBIG;
  if (w->block.len && w->block.len + len > w->opts.block_bytes) {
    int rc = flush_block(w);
    if (rc) {
      qs_capture_writer_abort(w);
      return rc;
    }
  }
  qs_capture_buf_put_raw(&w->block, datum, len);
  w->block_count++;
  w->records++;
  return 0;
}

static void put_props(qs_capture_buf *b, const qs_capture_prop *p, size_t n, int extra_key,
                      const char *pk, size_t pk_len) {
  if (n + (size_t)extra_key) {
    qs_capture_buf_put_long(b, (int64_t)(n + (size_t)extra_key));
    for (size_t i = 0; i < n; i++) {
      qs_capture_buf_put_bytes(b, p[i].key, p[i].key_len);
      qs_capture_buf_put_long(b, p[i].type);
      switch (p[i].type) {
      case QS_CAPTURE_LONG:
        qs_capture_buf_put_long(b, p[i].l);
        break;
      case QS_CAPTURE_DOUBLE:
        qs_capture_buf_put_double(b, p[i].d);
        break;
      case QS_CAPTURE_STRING:
      case QS_CAPTURE_BYTES:
        qs_capture_buf_put_bytes(b, p[i].data, p[i].len);
        break;
      case QS_CAPTURE_NULL:
        break;
      }
    }
    if (extra_key) {
      qs_capture_buf_put_bytes(b, QS_CAPTURE_PARTITION_KEY, sizeof QS_CAPTURE_PARTITION_KEY - 1);
      qs_capture_buf_put_long(b, QS_CAPTURE_STRING);
      qs_capture_buf_put_bytes(b, pk, pk_len);
    }
  }
  qs_capture_buf_put_long(b, 0);
}

int qs_capture_writer_append(qs_capture_writer *w, const qs_capture_record *rec) {
  if (w->fd < 0)
    return QS_ERR_STATE;
  size_t off_len = strnlen(rec->offset, sizeof rec->offset);
  size_t time_len = strnlen(rec->enqueued_time, sizeof rec->enqueued_time);
  if (off_len > QS_CAPTURE_STR_MAX || time_len > QS_CAPTURE_STR_MAX)
    return QS_ERR_INVALID;
  int add_pk = rec->partition_key != NULL;
  /* Never write what our own reader (default limits) would refuse. */
  if (rec->n_system_props + 1 > DEFAULT_MAX_PROPS || rec->n_props > DEFAULT_MAX_PROPS)
    return QS_ERR_TOOBIG;
  for (size_t i = 0; i < rec->n_system_props; i++) {
    if (rec->system_props[i].type > QS_CAPTURE_BYTES)
      return QS_ERR_INVALID; /* SystemProperties' union has no null */
    if (rec->system_props[i].key_len == sizeof QS_CAPTURE_PARTITION_KEY - 1 &&
        !memcmp(rec->system_props[i].key, QS_CAPTURE_PARTITION_KEY,
                sizeof QS_CAPTURE_PARTITION_KEY - 1))
      add_pk = 0;
  }
  for (size_t i = 0; i < rec->n_props; i++)
    if (rec->props[i].type > QS_CAPTURE_NULL)
      return QS_ERR_INVALID;
  qs_capture_buf *b = &w->datum;
  b->len = 0;
  qs_capture_buf_put_long(b, rec->sequence_number);
  qs_capture_buf_put_bytes(b, rec->offset, off_len);
  qs_capture_buf_put_bytes(b, rec->enqueued_time, time_len);
  put_props(b, rec->system_props, rec->n_system_props, add_pk, rec->partition_key,
            rec->partition_key_len);
  put_props(b, rec->props, rec->n_props, 0, NULL, 0);
  if (rec->has_body) {
    qs_capture_buf_put_long(b, 1);
    qs_capture_buf_put_bytes(b, rec->body, rec->body_len);
  } else {
    qs_capture_buf_put_long(b, 0);
  }
  return qs_capture_writer_append_datum(w, b->data, b->len);
}

int qs_capture_writer_close(qs_capture_writer *w) {
  if (w->fd < 0) {
    writer_free(w);
    return QS_ERR_STATE;
  }
  int rc = flush_block(w);
  if (!rc && fsync(w->fd) != 0)
    rc = QS_ERR_IO;
  if (!rc) {
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
      rc = QS_ERR_IO;
  }
  if (!rc && rename(w->tmp_path, w->final_path) != 0)
    rc = QS_ERR_IO;
  if (rc) {
    qs_capture_writer_abort(w);
    return rc;
  }
  /* Make the rename durable: fsync the directory holding the file. */
  char *slash = strrchr(w->final_path, '/');
  if (slash)
    *slash = 0;
  int dfd = open(slash ? (*w->final_path ? w->final_path : "/") : ".", O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    if (fsync(dfd) != 0)
      rc = QS_ERR_IO;
    close(dfd);
  }
  writer_free(w);
  return rc;
}

/* ---------------------------------------------------------------- path */

static int path_name_ok(const char *s) {
  return s && *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

int qs_capture_path_build(char *out, size_t cap, const qs_capture_path_parts *pp) {
  if (!path_name_ok(pp->namespace_name) || !path_name_ok(pp->event_hub) ||
      !path_name_ok(pp->partition_id))
    return QS_ERR_INVALID;
  if (pp->year < 1 || pp->year > 9999 || pp->month < 1 || pp->month > 12 || pp->day < 1 ||
      pp->day > 31 || pp->hour < 0 || pp->hour > 23 || pp->minute < 0 || pp->minute > 59 ||
      pp->second < 0 || pp->second > 60)
    return QS_ERR_RANGE;
  int n = snprintf(out, cap, "%s/%s/p=%s/%04d/%02d/%02d/%02d/%02d/%02d.avro", pp->namespace_name,
                   pp->event_hub, pp->partition_id, pp->year, pp->month, pp->day, pp->hour,
                   pp->minute, pp->second);
  if (n < 0 || (size_t)n >= cap)
    return QS_ERR_TOOBIG;
  return n;
}
