/* partition_log.c — segmented append-only partition log with group commit.
 *
 * On disk, per partition directory:
 *   <base_seq:020>.log    segment: 24-byte header {magic "QSPLOG01", base_seq, base_offset}
 *                         followed by records (little-endian):
 *                           u32 len (whole record), u32 crc32c (over len and bytes 8..len),
 *                           i64 seq, i64 offset, i64 enqueued_ms, u16 key_len, u16 0,
 *                           key, payload
 *   <base_seq:020>.index  sparse index of a SEALED segment: 56-byte header {magic
 *                         "QSPIDX01", base_seq, base_offset, last_seq, last_enq, size, count,
 *                         crc32c} and count entries {seq, enqueued_ms, file position}.
 * A record's offset is base_offset + (file position - 24): the count of record bytes before it
 * in the partition, so offsets survive segment rolls and deletions.
 *
 * Threads: everything runs on the loop thread except plog_commit_work, which writes the
 * in-flight group. While a group is in flight the worker owns: the group, the fd of the active
 * segment (for pwrite; loop-thread preads of durable bytes of the same fd are safe) and any
 * files it creates. The loop thread never mutates what the worker reads until after_work.
 *
 * Invariants: segs[] is sorted and dense (segs[i+1].base_seq == segs[i].last_seq + 1 unless
 * reported corrupt); only bytes below segs[i].size are durable and readable; the active
 * segment is segs[nsegs-1]; at most one commit in flight.
 */
#include "partition_log.h"

#include "qs/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qs/error.h"

#define SEG_HDR 24u
#define REC_HDR 36u
#define IDX_HDR 56u
#define IDX_ENTRY 24u
#define MAX_REC (REC_HDR + HUB_PLOG_MAX_KEY + HUB_PLOG_MAX_PAYLOAD)
#define READ_CHUNK (64u * 1024u)
#define MAX_READ_BYTES (16u * 1024u * 1024u)
/* group buffers index records with uint32_t positions */
#define MAX_PENDING_LIMIT (1024u * 1024u * 1024u)

static const char SEG_MAGIC[8] = {'Q', 'S', 'P', 'L', 'O', 'G', '0', '1'};
static const char IDX_MAGIC[8] = {'Q', 'S', 'P', 'I', 'D', 'X', '0', '1'};

typedef struct plog_ientry {
  int64_t seq;
  int64_t enq;
  uint64_t pos;
} plog_ientry;

typedef struct plog_segment {
  int64_t base_seq, base_offset;
  int64_t last_seq; /* base_seq - 1 when empty */
  int64_t last_offset, first_enq, last_enq;
  uint64_t size; /* durable bytes, header included */
  int fd;
  bool corrupt;
  plog_ientry *idx;
  size_t nidx, capidx;
} plog_segment;

/* A run of a group's buffer that goes to one segment. */
typedef struct plog_span {
  size_t buf_start, buf_end;
  uint64_t file_pos;
  int64_t base_seq, base_offset;
  int64_t last_enq, last_offset, first_enq;
  bool is_new;
  int new_fd;         /* set by the worker for a new segment */
  uint8_t *seal_blob; /* index file of the segment this span's roll seals */
  size_t seal_len;
  int64_t seal_base_seq;
} plog_span;

typedef struct plog_pidx {
  size_t span;
  plog_ientry e;
} plog_pidx;

typedef struct plog_group {
  uv_work_t work;
  hub_plog *log;
  uint8_t *buf;
  size_t len, cap;
  uint32_t *recpos;
  size_t nrec, caprec;
  int64_t first_seq;
  plog_span *spans;
  size_t nspans, capspans;
  plog_pidx *pidx;
  size_t npidx, cappidx;
  hub_plog_append_req *head, *tail;
  int start_fd;
  /* worker results */
  int status;
  uint64_t fsync_ns;
  uint64_t nsyncs;
} plog_group;

typedef struct plog_chunk {
  struct plog_chunk *prev, *next;
  int64_t first_seq;
  size_t nrec;
  uint8_t *buf;
  size_t len;
  uint32_t *recpos;
} plog_chunk;

struct hub_plog {
  uv_loop_t *loop;
  uv_timer_t timer;
  hub_plog_options opt;
  hub_plog_stats stats;
  void *data;
  char *dir;
  bool opened, closing, timer_armed, commit_due;
  int failed;
  hub_plog_close_cb close_cb;

  plog_segment *segs;
  size_t nsegs, capsegs;
  int64_t d_next_seq, d_last_offset, d_last_enq; /* durable state */

  /* assignment cursor: includes pending and in-flight records */
  int64_t a_seq, a_offset, a_enq;
  int64_t a_seg_base_seq, a_seg_base_offset, a_seg_first_enq;
  uint64_t a_seg_size, a_last_idx_pos;
  size_t a_seg_nrec;

  plog_group *pend, *flight;

  plog_chunk *cache_head, *cache_tail;
  size_t cache_bytes;

  uint8_t *rbuf;
  size_t rcap;
};

/* ---- little-endian helpers and CRC32C ---- */

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static void put_i64(uint8_t *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(u >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static int64_t get_i64(const uint8_t *p) {
  uint64_t u = 0;
  for (int i = 7; i >= 0; i--)
    u = (u << 8) | p[i];
  return (int64_t)u;
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *p, size_t len) {
  while (len--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len--)
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
#endif

uint32_t hub_plog_crc32c(uint32_t crc, const void *buf, size_t len) {
  crc = ~crc;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2"))
    return ~crc32c_hw(crc, buf, len);
#endif
  return ~crc32c_soft(crc, buf, len);
}

static uint32_t record_crc(const uint8_t *rec, size_t len) {
  uint32_t c = hub_plog_crc32c(0, rec, 4);
  return hub_plog_crc32c(c, rec + 8, len - 8);
}

/* ---- small utilities ---- */

static int64_t now_ms(const hub_plog *log) {
  if (log->opt.clock_ms)
    return log->opt.clock_ms(log->opt.clock_arg);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return p;
  size_t c = *cap ? *cap : 16;
  while (c < need)
    c *= 2;
  *cap = c;
  return qs_xrealloc(p, c * elem);
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t pos) {
  while (len > 0) {
    ssize_t w = pwrite(fd, p, len, (off_t)pos);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return QS_ERR_IO;
    }
    p += w;
    len -= (size_t)w;
    pos += (uint64_t)w;
  }
  return 0;
}

/* Reads up to len bytes; returns bytes read (short only at end of file) or QS_ERR_IO. */
static ssize_t pread_full(int fd, uint8_t *p, size_t len, uint64_t pos) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(fd, p + got, len - got, (off_t)(pos + got));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return QS_ERR_IO;
    }
    if (r == 0)
      break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static char *seg_path(const hub_plog *log, int64_t base, const char *ext) {
  size_t n = strlen(log->dir) + 40;
  char *p = qs_xmalloc(n);
  snprintf(p, n, "%s/%020" PRId64 "%s", log->dir, base, ext);
  return p;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return QS_ERR_IO;
  int rc = fsync(fd) == 0 ? 0 : QS_ERR_IO;
  close(fd);
  return rc;
}

static void seg_push_idx(plog_segment *s, plog_ientry e) {
  s->idx = grow(s->idx, &s->capidx, s->nidx + 1, sizeof *s->idx);
  s->idx[s->nidx++] = e;
}

static void seg_free(plog_segment *s) {
  if (s->fd >= 0)
    close(s->fd);
  free(s->idx);
  s->idx = NULL;
  s->fd = -1;
}

/* ---- record parsing ---- */

typedef struct plog_rec_hdr {
  uint32_t len;
  int64_t seq, offset, enq;
  uint16_t key_len;
} plog_rec_hdr;

/* Validates the record at p (avail bytes available). 1 = complete and valid, 0 = incomplete
 * (need more bytes), negative = corrupt. */
static int parse_record(const uint8_t *p, size_t avail, bool verify_crc, plog_rec_hdr *h) {
  if (avail < REC_HDR)
    return 0;
  h->len = get_u32(p);
  if (h->len < REC_HDR || h->len > MAX_REC)
    return QS_ERR_PARSE;
  h->seq = get_i64(p + 8);
  h->offset = get_i64(p + 16);
  h->enq = get_i64(p + 24);
  h->key_len = get_u16(p + 32);
  if (h->key_len > HUB_PLOG_MAX_KEY || h->key_len > h->len - REC_HDR || get_u16(p + 34) != 0)
    return QS_ERR_PARSE;
  if (avail < h->len)
    return 0;
  if (verify_crc && record_crc(p, h->len) != get_u32(p + 4))
    return QS_ERR_PARSE;
  return 1;
}

/* Scans a segment from its header, verifying each record, filling seg's index and durable
 * state. Stops at the first bad or incomplete record; *bad_at is its position or 0 if the
 * whole file (file_size) is good. */
static int scan_segment(hub_plog *log, plog_segment *s, uint64_t file_size, int64_t prev_enq,
                        uint64_t *bad_at) {
  size_t cap = MAX_REC + READ_CHUNK;
  uint8_t *buf = qs_xmalloc(cap);
  uint64_t pos = SEG_HDR, last_idx = 0;
  int64_t expect = s->base_seq, enq_floor = prev_enq;
  s->nidx = 0;
  *bad_at = 0;
  int rc = 0;
  while (pos < file_size) {
    size_t want = (size_t)((file_size - pos) < cap ? (file_size - pos) : cap);
    ssize_t got = pread_full(s->fd, buf, want, pos);
    if (got < 0) {
      rc = (int)got;
      break;
    }
    if (got == 0) {
      *bad_at = pos;
      break;
    }
    bool at_eof = pos + (uint64_t)got >= file_size;
    size_t off = 0;
    while (off < (size_t)got) {
      plog_rec_hdr h;
      int pr = parse_record(buf + off, (size_t)got - off, true, &h);
      if (pr == 0 && !at_eof && off > 0)
        break; /* continues past this chunk: re-read from its start */
      int64_t rec_offset = s->base_offset + (int64_t)(pos + off - SEG_HDR);
      if (pr <= 0 || h.seq != expect || h.offset != rec_offset || h.enq < enq_floor) {
        *bad_at = pos + off;
        goto done;
      }
      uint64_t rpos = pos + off;
      if (s->nidx == 0 || rpos - last_idx >= log->opt.index_interval) {
        seg_push_idx(s, (plog_ientry){h.seq, h.enq, rpos});
        last_idx = rpos;
      }
      if (expect == s->base_seq)
        s->first_enq = h.enq;
      s->last_seq = h.seq;
      s->last_offset = rec_offset;
      s->last_enq = h.enq;
      enq_floor = h.enq;
      expect++;
      off += h.len;
    }
    pos += off;
  }
done:
  s->size = *bad_at ? *bad_at : (rc == 0 ? file_size : SEG_HDR);
  free(buf);
  return rc;
}

/* ---- open / recovery ---- */

static bool valid_hub_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 256 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '-' || c == '_'))
      return false;
  }
  return true;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int list_segments(hub_plog *log, int64_t **out, size_t *n_out) {
  DIR *d = opendir(log->dir);
  if (!d)
    return QS_ERR_IO;
  int64_t *v = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *nm = de->d_name;
    size_t l = strlen(nm);
    if (l > 4 && strcmp(nm + l - 4, ".tmp") == 0) {
      unlinkat(dirfd(d), nm, 0);
      continue;
    }
    if (l != 24 || strcmp(nm + 20, ".log") != 0)
      continue;
    bool digits = true;
    for (int i = 0; i < 20; i++)
      digits = digits && nm[i] >= '0' && nm[i] <= '9';
    if (!digits)
      continue;
    v = grow(v, &cap, n + 1, sizeof *v);
    v[n++] = strtoll(nm, NULL, 10);
  }
  closedir(d);
  if (n > 1)
    qsort(v, n, sizeof *v, cmp_i64);
  *out = v;
  *n_out = n;
  return 0;
}

static int read_seg_header(int fd, int64_t base_seq, int64_t *base_offset) {
  uint8_t h[SEG_HDR];
  if (pread_full(fd, h, SEG_HDR, 0) != (ssize_t)SEG_HDR)
    return QS_ERR_PARSE;
  if (memcmp(h, SEG_MAGIC, 8) != 0 || get_i64(h + 8) != base_seq || get_i64(h + 16) < 0)
    return QS_ERR_PARSE;
  *base_offset = get_i64(h + 16);
  return 0;
}

static void encode_seg_header(uint8_t *h, int64_t base_seq, int64_t base_offset) {
  memcpy(h, SEG_MAGIC, 8);
  put_i64(h + 8, base_seq);
  put_i64(h + 16, base_offset);
}

/* Builds the index file bytes of a sealed segment. */
static uint8_t *encode_index(int64_t base_seq, int64_t base_offset, int64_t last_seq,
                             int64_t last_enq, uint64_t size, const plog_ientry *a, size_t na,
                             const plog_pidx *b, size_t nb, size_t span, size_t *len_out) {
  size_t count = na;
  for (size_t i = 0; i < nb; i++)
    count += b[i].span == span;
  size_t len = IDX_HDR + count * IDX_ENTRY;
  uint8_t *p = qs_xmalloc(len), *q = p + IDX_HDR;
  memcpy(p, IDX_MAGIC, 8);
  put_i64(p + 8, base_seq);
  put_i64(p + 16, base_offset);
  put_i64(p + 24, last_seq);
  put_i64(p + 32, last_enq);
  put_i64(p + 40, (int64_t)size);
  put_u32(p + 48, (uint32_t)count);
  for (size_t i = 0; i < na; i++, q += IDX_ENTRY) {
    put_i64(q, a[i].seq);
    put_i64(q + 8, a[i].enq);
    put_i64(q + 16, (int64_t)a[i].pos);
  }
  for (size_t i = 0; i < nb; i++) {
    if (b[i].span != span)
      continue;
    put_i64(q, b[i].e.seq);
    put_i64(q + 8, b[i].e.enq);
    put_i64(q + 16, (int64_t)b[i].e.pos);
    q += IDX_ENTRY;
  }
  uint32_t c = hub_plog_crc32c(0, p, 52);
  put_u32(p + 52, hub_plog_crc32c(c, p + IDX_HDR, len - IDX_HDR));
  *len_out = len;
  return p;
}

/* Loads a sealed segment's index file; 0 when it is consistent with the segment file. */
static int load_index(hub_plog *log, plog_segment *s, uint64_t file_size) {
  char *path = seg_path(log, s->base_seq, ".index");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  free(path);
  if (fd < 0)
    return QS_ERR_NOTFOUND;
  struct stat st;
  uint8_t h[IDX_HDR];
  int rc = QS_ERR_PARSE;
  uint8_t *body = NULL;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)IDX_HDR ||
      pread_full(fd, h, IDX_HDR, 0) != (ssize_t)IDX_HDR || memcmp(h, IDX_MAGIC, 8) != 0)
    goto out;
  uint32_t count = get_u32(h + 48);
  size_t blen = (size_t)count * IDX_ENTRY;
  if ((uint64_t)st.st_size != IDX_HDR + (uint64_t)blen || count == 0)
    goto out;
  body = qs_xmalloc(blen);
  if (pread_full(fd, body, blen, IDX_HDR) != (ssize_t)blen)
    goto out;
  uint32_t c = hub_plog_crc32c(0, h, 52);
  if (hub_plog_crc32c(c, body, blen) != get_u32(h + 52) || get_i64(h + 8) != s->base_seq ||
      get_i64(h + 16) != s->base_offset || (uint64_t)get_i64(h + 40) != file_size)
    goto out;
  s->nidx = 0;
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *q = body + (size_t)i * IDX_ENTRY;
    seg_push_idx(s, (plog_ientry){get_i64(q), get_i64(q + 8), (uint64_t)get_i64(q + 16)});
  }
  s->last_seq = get_i64(h + 24);
  s->last_enq = get_i64(h + 32);
  s->size = file_size;
  s->first_enq = s->idx[0].enq;
  /* the last record's offset needs its header: read it from the last index entry on */
  rc = 0;
  {
    uint64_t pos = s->idx[s->nidx - 1].pos;
    int64_t seq = s->idx[s->nidx - 1].seq;
    uint8_t rh[REC_HDR];
    while (pos < file_size) {
      if (pread_full(s->fd, rh, REC_HDR, pos) != (ssize_t)REC_HDR) {
        rc = QS_ERR_IO;
        break;
      }
      uint32_t len = get_u32(rh);
      if (len < REC_HDR || len > MAX_REC || get_i64(rh + 8) != seq) {
        rc = QS_ERR_PARSE;
        break;
      }
      s->last_offset = s->base_offset + (int64_t)(pos - SEG_HDR);
      pos += len;
      seq++;
    }
    if (rc == 0 && (pos != file_size || seq != s->last_seq + 1))
      rc = QS_ERR_PARSE;
  }
out:
  free(body);
  close(fd);
  return rc;
}

static int write_file_durable(const char *path, const uint8_t *p, size_t len) {
  size_t n = strlen(path) + 8;
  char *tmp = qs_xmalloc(n);
  snprintf(tmp, n, "%s.tmp", path);
  int rc = QS_ERR_IO;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (pwrite_all(fd, p, len, 0) == 0 && fsync(fd) == 0)
      rc = 0;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
      rc = QS_ERR_IO;
    if (rc != 0)
      unlink(tmp);
  }
  free(tmp);
  return rc;
}

static plog_segment *push_segment(hub_plog *log, int64_t base_seq, int64_t base_offset, int fd) {
  log->segs = grow(log->segs, &log->capsegs, log->nsegs + 1, sizeof *log->segs);
  plog_segment *s = &log->segs[log->nsegs++];
  memset(s, 0, sizeof *s);
  s->base_seq = base_seq;
  s->base_offset = base_offset;
  s->last_seq = base_seq - 1;
  s->last_offset = base_offset - 1;
  s->size = SEG_HDR;
  s->fd = fd;
  return s;
}

static int create_segment_file(const char *path, int64_t base_seq, int64_t base_offset,
                               int *fd_out) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return QS_ERR_IO;
  uint8_t h[SEG_HDR];
  encode_seg_header(h, base_seq, base_offset);
  if (pwrite_all(fd, h, SEG_HDR, 0) != 0) {
    close(fd);
    return QS_ERR_IO;
  }
  *fd_out = fd;
  return 0;
}

static int recover(hub_plog *log) {
  int64_t *bases = NULL;
  size_t nb = 0;
  int rc = list_segments(log, &bases, &nb);
  if (rc != 0)
    return rc;
  int64_t prev_enq = INT64_MIN;
  for (size_t i = 0; i < nb && rc == 0; i++) {
    bool active = i + 1 == nb;
    char *path = seg_path(log, bases[i], ".log");
    int fd = open(path, (active ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    free(path);
    if (fd < 0) {
      rc = QS_ERR_IO;
      break;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
      close(fd);
      rc = QS_ERR_IO;
      break;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    int64_t base_offset = 0;
    bool hdr_ok = read_seg_header(fd, bases[i], &base_offset) == 0;
    const plog_segment *prev = log->nsegs ? &log->segs[log->nsegs - 1] : NULL;
    if (!hdr_ok) {
      /* Only the active segment may have a torn header (crash while creating it). */
      if (!active || fsize > SEG_HDR) {
        close(fd);
        rc = QS_ERR_IO;
        log->stats.corrupt_segments++;
        break;
      }
      if (prev)
        base_offset = prev->base_offset + (int64_t)(prev->size - SEG_HDR);
      else if (bases[i] != 0) {
        close(fd);
        rc = QS_ERR_IO;
        log->stats.corrupt_segments++;
        break;
      }
      uint8_t h[SEG_HDR];
      encode_seg_header(h, bases[i], base_offset);
      if (pwrite_all(fd, h, SEG_HDR, 0) != 0 || ftruncate(fd, SEG_HDR) != 0 || fdatasync(fd) != 0) {
        close(fd);
        rc = QS_ERR_IO;
        break;
      }
      log->stats.recovered_truncated_bytes += fsize;
      fsize = SEG_HDR;
    }
    plog_segment *s = push_segment(log, bases[i], base_offset, fd);
    prev = log->nsegs > 1 ? &log->segs[log->nsegs - 2] : NULL;
    if (prev && (prev->last_seq + 1 != s->base_seq ||
                 prev->base_offset + (int64_t)(prev->size - SEG_HDR) != s->base_offset)) {
      /* a gap: report the earlier segment; reads that reach the gap fail */
      if (!prev->corrupt)
        log->stats.corrupt_segments++;
      log->segs[log->nsegs - 2].corrupt = true;
    }
    uint64_t bad_at = 0;
    if (!active && load_index(log, s, fsize) == 0) {
      prev_enq = s->last_enq;
      continue;
    }
    rc = scan_segment(log, s, fsize, prev_enq, &bad_at);
    if (rc != 0)
      break;
    if (s->nidx)
      prev_enq = s->last_enq;
    if (!active) {
      if (bad_at || s->nidx == 0) {
        s->corrupt = true;
        log->stats.corrupt_segments++;
      } else {
        size_t len;
        uint8_t *blob = encode_index(s->base_seq, s->base_offset, s->last_seq, s->last_enq, s->size,
                                     s->idx, s->nidx, NULL, 0, 0, &len);
        char *ip = seg_path(log, s->base_seq, ".index");
        rc = write_file_durable(ip, blob, len);
        free(ip);
        free(blob);
      }
      continue;
    }
    /* active: cut off a torn or corrupt tail, drop a stale index */
    if (bad_at) {
      if (ftruncate(fd, (off_t)bad_at) != 0 || fdatasync(fd) != 0) {
        rc = QS_ERR_IO;
        break;
      }
      log->stats.recovered_truncated_bytes += fsize - bad_at;
    }
    char *ip = seg_path(log, s->base_seq, ".index");
    unlink(ip);
    free(ip);
  }
  free(bases);
  if (rc != 0)
    return rc;
  if (log->nsegs == 0) {
    char *path = seg_path(log, 0, ".log");
    int fd = -1;
    rc = create_segment_file(path, 0, 0, &fd);
    free(path);
    if (rc == 0 && fdatasync(fd) != 0)
      rc = QS_ERR_IO;
    if (rc == 0)
      rc = fsync_dir(log->dir);
    if (rc != 0) {
      if (fd >= 0)
        close(fd);
      return rc;
    }
    push_segment(log, 0, 0, fd);
  }
  return 0;
}

/* ---- lifecycle ---- */

void hub_plog_options_init(hub_plog_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->fsync_policy = HUB_PLOG_FSYNC_GROUP;
  opt->commit_interval_ms = 5;
  opt->commit_bytes = 1024 * 1024;
  opt->max_pending_bytes = 8 * 1024 * 1024;
  opt->segment_bytes = 64ull * 1024 * 1024;
  opt->segment_age_ms = 24ull * 3600 * 1000;
  opt->retention_ms = 7ull * 24 * 3600 * 1000;
  opt->tail_cache_bytes = 8 * 1024 * 1024;
  opt->index_interval = 4096;
}

hub_plog *hub_plog_new(void) { return qs_xcalloc(1, sizeof(hub_plog)); }

static void group_free(plog_group *g) {
  if (!g)
    return;
  free(g->buf);
  free(g->recpos);
  for (size_t i = 0; i < g->nspans; i++)
    free(g->spans[i].seal_blob);
  free(g->spans);
  free(g->pidx);
  free(g);
}

static void cache_drop_head(hub_plog *log) {
  plog_chunk *c = log->cache_head;
  log->cache_head = c->next;
  if (log->cache_head)
    log->cache_head->prev = NULL;
  else
    log->cache_tail = NULL;
  log->cache_bytes -= c->len;
  free(c->buf);
  free(c->recpos);
  free(c);
}

void hub_plog_free(hub_plog *log) {
  if (!log)
    return;
  for (size_t i = 0; i < log->nsegs; i++)
    seg_free(&log->segs[i]);
  free(log->segs);
  while (log->cache_head)
    cache_drop_head(log);
  group_free(log->pend);
  group_free(log->flight);
  free(log->rbuf);
  free(log->dir);
  free(log);
}

void hub_plog_set_data(hub_plog *log, void *data) { log->data = data; }
void *hub_plog_get_data(const hub_plog *log) { return log->data; }
const hub_plog_stats *hub_plog_get_stats(const hub_plog *log) { return &log->stats; }

static void reset_cursor(hub_plog *log) {
  const plog_segment *a = &log->segs[log->nsegs - 1];
  log->d_next_seq = a->last_seq + 1;
  log->d_last_offset = -1;
  log->d_last_enq = 0;
  for (size_t i = log->nsegs; i-- > 0;) {
    if (log->segs[i].last_seq >= log->segs[i].base_seq) {
      log->d_last_offset = log->segs[i].last_offset;
      log->d_last_enq = log->segs[i].last_enq;
      break;
    }
  }
  log->a_seq = log->d_next_seq;
  log->a_offset = a->base_offset + (int64_t)(a->size - SEG_HDR);
  log->a_enq = log->d_last_enq;
  log->a_seg_base_seq = a->base_seq;
  log->a_seg_base_offset = a->base_offset;
  log->a_seg_first_enq = a->first_enq;
  log->a_seg_size = a->size;
  log->a_seg_nrec = (size_t)(a->last_seq + 1 - a->base_seq);
  log->a_last_idx_pos = a->nidx ? a->idx[a->nidx - 1].pos : 0;
}

int hub_plog_open(hub_plog *log, uv_loop_t *loop, const char *data_dir, const char *hub,
                  int partition, const hub_plog_options *opt) {
  if (!log || !loop || !data_dir || !*data_dir || !hub || !valid_hub_name(hub) || partition < 0 ||
      partition > 1023 || log->opened)
    return QS_ERR_INVALID;
  if (opt)
    log->opt = *opt;
  else
    hub_plog_options_init(&log->opt);
  hub_plog_options *o = &log->opt;
  if (o->fsync_policy > HUB_PLOG_FSYNC_NEVER || o->segment_bytes < SEG_HDR + REC_HDR ||
      o->index_interval == 0 || o->commit_bytes == 0 || o->max_pending_bytes < MAX_REC ||
      o->max_pending_bytes > MAX_PENDING_LIMIT)
    return QS_ERR_RANGE;
  size_t n = strlen(data_dir) + strlen(hub) + 16;
  log->dir = qs_xmalloc(n);
  snprintf(log->dir, n, "%s/%s/%d", data_dir, hub, partition);
  int rc = qs_mkdir_p(log->dir) == 0 ? 0 : QS_ERR_IO;
  if (rc == 0)
    rc = recover(log);
  if (rc != 0) {
    for (size_t i = 0; i < log->nsegs; i++)
      seg_free(&log->segs[i]);
    log->nsegs = 0;
    return rc;
  }
  reset_cursor(log);
  log->loop = loop;
  uv_timer_init(loop, &log->timer);
  log->timer.data = log;
  log->opened = true;
  return 0;
}

/* ---- append and commit ---- */

static void start_commit(hub_plog *log);

static void timer_cb(uv_timer_t *t) {
  hub_plog *log = t->data;
  log->timer_armed = false;
  if (log->flight)
    log->commit_due = true;
  else
    start_commit(log);
}

static plog_span *group_span(plog_group *g) { return &g->spans[g->nspans - 1]; }

static plog_span *add_span(plog_group *g, bool is_new, uint64_t file_pos, int64_t base_seq,
                           int64_t base_offset) {
  g->spans = grow(g->spans, &g->capspans, g->nspans + 1, sizeof *g->spans);
  plog_span *s = &g->spans[g->nspans++];
  memset(s, 0, sizeof *s);
  s->buf_start = s->buf_end = g->len;
  s->file_pos = file_pos;
  s->base_seq = base_seq;
  s->base_offset = base_offset;
  s->is_new = is_new;
  s->new_fd = -1;
  return s;
}

int hub_plog_append(hub_plog *log, hub_plog_append_req *req, const hub_plog_entry *entries,
                    size_t n, hub_plog_append_cb cb) {
  if (!log || !req || !cb || (n > 0 && !entries))
    return QS_ERR_INVALID;
  if (!log->opened || log->closing)
    return QS_ERR_CLOSED;
  if (log->failed)
    return log->failed;
  if (n == 0 || n > (1u << 20))
    return QS_ERR_INVALID;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const hub_plog_entry *e = &entries[i];
    if (e->key_len > HUB_PLOG_MAX_KEY || e->payload_len > HUB_PLOG_MAX_PAYLOAD)
      return QS_ERR_TOOBIG;
    if ((e->key_len && !e->key) || (e->payload_len && !e->payload))
      return QS_ERR_INVALID;
    total += REC_HDR + e->key_len + e->payload_len;
  }
  size_t pending = (log->pend ? log->pend->len : 0) + (log->flight ? log->flight->len : 0);
  if (pending + total > log->opt.max_pending_bytes) {
    log->stats.full_rejections++;
    return QS_ERR_FULL;
  }
  if (!log->pend) {
    log->pend = qs_xcalloc(1, sizeof *log->pend);
    log->pend->log = log;
    log->pend->first_seq = log->a_seq;
  }
  plog_group *g = log->pend;
  int64_t enq = now_ms(log);
  if (enq < log->a_enq)
    enq = log->a_enq;
  req->first_seq = log->a_seq;
  req->first_offset = log->a_offset;
  req->enqueued_ms = enq;
  req->count = n;
  req->cb_ = cb;
  req->next_ = NULL;
  g->buf = grow(g->buf, &g->cap, g->len + total, 1);
  g->recpos = grow(g->recpos, &g->caprec, g->nrec + n, sizeof *g->recpos);
  for (size_t i = 0; i < n; i++) {
    const hub_plog_entry *e = &entries[i];
    uint32_t len = (uint32_t)(REC_HDR + e->key_len + e->payload_len);
    bool roll = log->a_seg_nrec > 0 &&
                (log->a_seg_size + len > log->opt.segment_bytes ||
                 (log->opt.segment_age_ms > 0 &&
                  (uint64_t)(enq - log->a_seg_first_enq) >= log->opt.segment_age_ms));
    if (roll) {
      if (g->nspans)
        group_span(g)->last_enq = log->a_enq;
      add_span(g, true, SEG_HDR, log->a_seq, log->a_offset);
      log->a_seg_base_seq = log->a_seq;
      log->a_seg_base_offset = log->a_offset;
      log->a_seg_size = SEG_HDR;
      log->a_seg_nrec = 0;
    } else if (g->nspans == 0) {
      add_span(g, false, log->a_seg_size, log->a_seg_base_seq, log->a_seg_base_offset);
    }
    plog_span *sp = group_span(g);
    uint64_t fpos = log->a_seg_size;
    if (log->a_seg_nrec == 0 || fpos - log->a_last_idx_pos >= log->opt.index_interval) {
      g->pidx = grow(g->pidx, &g->cappidx, g->npidx + 1, sizeof *g->pidx);
      g->pidx[g->npidx++] = (plog_pidx){g->nspans - 1, {log->a_seq, enq, fpos}};
      log->a_last_idx_pos = fpos;
    }
    if (log->a_seg_nrec == 0) {
      log->a_seg_first_enq = enq;
      sp->first_enq = enq;
    }
    uint8_t *r = g->buf + g->len;
    put_u32(r, len);
    put_i64(r + 8, log->a_seq);
    put_i64(r + 16, log->a_offset);
    put_i64(r + 24, enq);
    put_u16(r + 32, (uint16_t)e->key_len);
    put_u16(r + 34, 0);
    if (e->key_len)
      memcpy(r + REC_HDR, e->key, e->key_len);
    if (e->payload_len)
      memcpy(r + REC_HDR + e->key_len, e->payload, e->payload_len);
    put_u32(r + 4, record_crc(r, len));
    g->recpos[g->nrec++] = (uint32_t)g->len;
    g->len += len;
    sp->buf_end = g->len;
    sp->last_enq = enq;
    sp->last_offset = log->a_offset;
    log->a_seq++;
    log->a_offset += len;
    log->a_seg_size += len;
    log->a_seg_nrec++;
    log->a_enq = enq;
  }
  req->end_ = g->len;
  if (g->tail)
    g->tail->next_ = req;
  else
    g->head = req;
  g->tail = req;
  log->stats.append_calls++;
  log->stats.records_appended += n;
  log->stats.bytes_appended += total;
  log->stats.pending_bytes = pending + total;

  if (log->opt.fsync_policy != HUB_PLOG_FSYNC_GROUP || g->len >= log->opt.commit_bytes) {
    if (log->flight)
      log->commit_due = true;
    else
      start_commit(log);
  } else if (!log->timer_armed) {
    log->timer_armed = true;
    uv_timer_start(&log->timer, timer_cb, log->opt.commit_interval_ms, 0);
  }
  return 0;
}

/* Worker thread: write the group's spans, rolling segments as planned, and make it durable. */
static int sync_fd(plog_group *g, int fd) {
  const hub_plog_options *o = &g->log->opt;
  if (o->fsync_policy == HUB_PLOG_FSYNC_NEVER)
    return 0;
  uint64_t t0 = mono_ns();
  if (fdatasync(fd) != 0)
    return QS_ERR_IO;
  g->fsync_ns += mono_ns() - t0;
  g->nsyncs++;
  if (o->after_sync_hook)
    o->after_sync_hook(o->after_sync_arg);
  return 0;
}

static void commit_work(uv_work_t *w) {
  plog_group *g = w->data;
  hub_plog *log = g->log;
  bool always = log->opt.fsync_policy == HUB_PLOG_FSYNC_ALWAYS;
  int fd = g->start_fd, rc = 0;
  bool dirty = false, new_files = false;
  hub_plog_append_req *req = g->head;
  for (size_t i = 0; i < g->nspans && rc == 0; i++) {
    plog_span *s = &g->spans[i];
    if (s->is_new) {
      if (dirty && (rc = sync_fd(g, fd)) != 0)
        break;
      dirty = false;
      char *ip = seg_path(log, s->seal_base_seq, ".index");
      rc = write_file_durable(ip, s->seal_blob, s->seal_len);
      free(ip);
      if (rc != 0)
        break;
      char *lp = seg_path(log, s->base_seq, ".log");
      rc = create_segment_file(lp, s->base_seq, s->base_offset, &s->new_fd);
      free(lp);
      if (rc != 0)
        break;
      fd = s->new_fd;
      dirty = new_files = true;
    }
    size_t at = s->buf_start;
    while (always && req && req->end_ <= s->buf_end && rc == 0) {
      rc = pwrite_all(fd, g->buf + at, req->end_ - at, s->file_pos + (at - s->buf_start));
      if (rc == 0)
        rc = sync_fd(g, fd);
      at = req->end_;
      req = req->next_;
    }
    if (rc == 0 && at < s->buf_end) {
      rc = pwrite_all(fd, g->buf + at, s->buf_end - at, s->file_pos + (at - s->buf_start));
      dirty = true;
    }
  }
  if (rc == 0 && dirty)
    rc = sync_fd(g, fd);
  if (rc == 0 && new_files && log->opt.fsync_policy != HUB_PLOG_FSYNC_NEVER)
    rc = fsync_dir(log->dir);
  g->status = rc;
}

static void fail_group(plog_group *g, int status) {
  for (hub_plog_append_req *r = g->head, *next; r; r = next) {
    next = r->next_;
    r->cb_(r, status);
  }
}

static void finish_close_if_idle(hub_plog *log);

static void commit_done(uv_work_t *w, int status) {
  plog_group *g = w->data;
  hub_plog *log = g->log;
  log->flight = NULL;
  if (status == 0)
    status = g->status;
  if (status != 0) {
    for (size_t i = 0; i < g->nspans; i++)
      if (g->spans[i].new_fd >= 0)
        close(g->spans[i].new_fd);
    log->failed = status < 0 ? status : QS_ERR_IO;
    fail_group(g, log->failed);
    group_free(g);
    if (log->pend) {
      plog_group *p = log->pend;
      log->pend = NULL;
      fail_group(p, log->failed);
      group_free(p);
    }
    log->stats.pending_bytes = 0;
    finish_close_if_idle(log);
    return;
  }
  /* apply: new segments, durable sizes, index entries */
  size_t pi = 0;
  for (size_t i = 0; i < g->nspans; i++) {
    plog_span *sp = &g->spans[i];
    if (sp->is_new) {
      push_segment(log, sp->base_seq, sp->base_offset, sp->new_fd);
      sp->new_fd = -1;
      log->stats.segments_rolled++;
    }
    plog_segment *s = &log->segs[log->nsegs - 1];
    size_t nbytes = sp->buf_end - sp->buf_start;
    if (nbytes == 0)
      continue;
    for (; pi < g->npidx && g->pidx[pi].span == i; pi++)
      seg_push_idx(s, g->pidx[pi].e);
    if (s->last_seq < s->base_seq)
      s->first_enq = sp->first_enq;
    s->size += nbytes;
    s->last_enq = sp->last_enq;
    s->last_offset = sp->last_offset;
    s->last_seq =
        (i + 1 < g->nspans ? g->spans[i + 1].base_seq : g->first_seq + (int64_t)g->nrec) - 1;
  }
  log->d_next_seq = g->first_seq + (int64_t)g->nrec;
  log->d_last_offset = g->spans[g->nspans - 1].last_offset;
  log->d_last_enq = g->spans[g->nspans - 1].last_enq;
  log->stats.commits++;
  log->stats.fsyncs += g->nsyncs;
  size_t nrec = g->nrec, nbytes = g->len;
  uint64_t fsync_ns = g->fsync_ns;
  /* the group's buffer becomes a tail-cache chunk */
  if (log->opt.tail_cache_bytes > 0) {
    plog_chunk *c = qs_xcalloc(1, sizeof *c);
    c->first_seq = g->first_seq;
    c->nrec = g->nrec;
    c->buf = g->buf;
    c->len = g->len;
    c->recpos = g->recpos;
    g->buf = NULL;
    g->recpos = NULL;
    c->prev = log->cache_tail;
    if (log->cache_tail)
      log->cache_tail->next = c;
    else
      log->cache_head = c;
    log->cache_tail = c;
    log->cache_bytes += c->len;
    while (log->cache_head && log->cache_bytes > log->opt.tail_cache_bytes)
      cache_drop_head(log);
  }
  hub_plog_append_req *head = g->head;
  g->head = g->tail = NULL;
  group_free(g);
  log->stats.pending_bytes = log->pend ? log->pend->len : 0;
  for (hub_plog_append_req *r = head, *next; r; r = next) {
    next = r->next_;
    r->cb_(r, 0);
  }
  if (log->opt.on_commit)
    log->opt.on_commit(log->opt.on_commit_arg, fsync_ns, nrec, nbytes);
  if (log->opt.on_durable)
    log->opt.on_durable(log->opt.on_durable_arg, log->d_next_seq - 1);
  if (log->pend && !log->flight &&
      (log->commit_due || log->closing || log->opt.fsync_policy != HUB_PLOG_FSYNC_GROUP ||
       log->pend->len >= log->opt.commit_bytes))
    start_commit(log);
  finish_close_if_idle(log);
}

static void start_commit(hub_plog *log) {
  plog_group *g = log->pend;
  if (!g || log->flight)
    return;
  log->pend = NULL;
  log->commit_due = false;
  if (log->timer_armed) {
    uv_timer_stop(&log->timer);
    log->timer_armed = false;
  }
  const plog_segment *act = &log->segs[log->nsegs - 1];
  g->start_fd = act->fd;
  /* build the index files of the segments this group seals */
  for (size_t i = 0; i < g->nspans; i++) {
    plog_span *sp = &g->spans[i];
    if (!sp->is_new)
      continue;
    const plog_span *pv = i > 0 ? &g->spans[i - 1] : NULL;
    bool prev_is_active = pv == NULL || !pv->is_new;
    const plog_ientry *dur = prev_is_active ? act->idx : NULL;
    size_t ndur = prev_is_active ? act->nidx : 0;
    int64_t base_seq = pv ? pv->base_seq : act->base_seq;
    int64_t base_off = pv ? pv->base_offset : act->base_offset;
    int64_t last_enq = pv ? pv->last_enq : act->last_enq;
    uint64_t size = pv ? pv->file_pos + (pv->buf_end - pv->buf_start) : act->size;
    sp->seal_base_seq = base_seq;
    sp->seal_blob = encode_index(base_seq, base_off, sp->base_seq - 1, last_enq, size, dur, ndur,
                                 g->pidx, g->npidx, pv ? i - 1 : (size_t)-1, &sp->seal_len);
  }
  log->flight = g;
  g->work.data = g;
  int rc = uv_queue_work(log->loop, &g->work, commit_work, commit_done);
  if (rc != 0)
    QS_FATAL("uv_queue_work failed: %s", uv_strerror(rc));
}

void hub_plog_flush(hub_plog *log) {
  if (!log->pend)
    return;
  if (log->flight)
    log->commit_due = true;
  else
    start_commit(log);
}

/* ---- close ---- */

static void timer_closed(uv_handle_t *h) {
  hub_plog *log = h->data;
  log->opened = false;
  if (log->close_cb)
    log->close_cb(log);
}

static void finish_close_if_idle(hub_plog *log) {
  if (!log->closing || log->flight || log->pend || uv_is_closing((uv_handle_t *)&log->timer))
    return;
  uv_close((uv_handle_t *)&log->timer, timer_closed);
}

int hub_plog_close(hub_plog *log, hub_plog_close_cb cb) {
  if (!log || !log->opened)
    return QS_ERR_STATE;
  if (log->closing)
    return QS_ERR_CLOSED;
  log->closing = true;
  log->close_cb = cb;
  if (log->timer_armed) {
    uv_timer_stop(&log->timer);
    log->timer_armed = false;
  }
  if (log->pend && !log->flight)
    start_commit(log);
  finish_close_if_idle(log);
  return 0;
}

/* ---- info, lookups, reads ---- */

void hub_plog_get_info(const hub_plog *log, hub_plog_info *info) {
  if (log->nsegs == 0) { /* not open */
    *info = (hub_plog_info){0, -1, -1, 0, true};
    return;
  }
  info->begin_seq = log->segs[0].base_seq;
  info->last_seq = log->d_next_seq - 1;
  info->empty = info->last_seq < info->begin_seq;
  info->last_offset = info->empty ? -1 : log->d_last_offset;
  info->last_enqueued_ms = info->empty ? 0 : log->d_last_enq;
}

/* Index of the segment holding seq (seq within [begin, durable end)). */
static size_t seg_for_seq(const hub_plog *log, int64_t seq) {
  size_t lo = 0, hi = log->nsegs - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    if (log->segs[mid].base_seq <= seq)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

static bool key_passes(int64_t key, int64_t value, bool inclusive) {
  return inclusive ? key >= value : key > value;
}

static int64_t entry_key(const plog_segment *s, const plog_ientry *e, hub_plog_find_by by) {
  return by == HUB_PLOG_BY_OFFSET ? s->base_offset + (int64_t)(e->pos - SEG_HDR) : e->enq;
}

int hub_plog_find(hub_plog *log, hub_plog_find_by by, int64_t value, bool inclusive,
                  int64_t *seq_out) {
  if (!log || !seq_out || !log->opened || by > HUB_PLOG_BY_ENQUEUED)
    return QS_ERR_INVALID;
  hub_plog_info in;
  hub_plog_get_info(log, &in);
  int64_t end = in.last_seq + 1;
  if (by == HUB_PLOG_BY_SEQ) {
    int64_t t = inclusive ? value : (value == INT64_MAX ? INT64_MAX : value + 1);
    *seq_out = t < in.begin_seq ? in.begin_seq : (t > end ? end : t);
    return 0;
  }
  /* first non-empty segment whose last key passes */
  size_t i = 0;
  for (; i < log->nsegs; i++) {
    const plog_segment *s = &log->segs[i];
    if (s->last_seq < s->base_seq)
      continue;
    int64_t last = by == HUB_PLOG_BY_OFFSET ? s->last_offset : s->last_enq;
    if (key_passes(last, value, inclusive))
      break;
  }
  if (i == log->nsegs) {
    *seq_out = end;
    return 0;
  }
  const plog_segment *s = &log->segs[i];
  if (s->nidx == 0)
    return QS_ERR_IO;
  if (key_passes(entry_key(s, &s->idx[0], by), value, inclusive)) {
    *seq_out = s->base_seq;
    return 0;
  }
  /* last index entry that does not pass */
  size_t lo = 0, hi = s->nidx - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    if (key_passes(entry_key(s, &s->idx[mid], by), value, inclusive))
      hi = mid - 1;
    else
      lo = mid;
  }
  uint64_t pos = s->idx[lo].pos;
  int64_t seq = s->idx[lo].seq;
  uint8_t h[REC_HDR];
  while (pos < s->size) {
    if (pread_full(s->fd, h, REC_HDR, pos) != (ssize_t)REC_HDR)
      return QS_ERR_IO;
    uint32_t len = get_u32(h);
    if (len < REC_HDR || len > MAX_REC || get_i64(h + 8) != seq)
      return QS_ERR_IO;
    int64_t key = by == HUB_PLOG_BY_OFFSET ? get_i64(h + 16) : get_i64(h + 24);
    if (key_passes(key, value, inclusive)) {
      *seq_out = seq;
      return 0;
    }
    pos += len;
    seq++;
  }
  return QS_ERR_IO; /* the segment's last key passed, so the scan must have stopped */
}

/* Output arena: offsets while filling (it may move), pointers at the end. */
static uint8_t *arena_reserve(hub_plog *log, size_t used, size_t more) {
  if (used + more > log->rcap) {
    size_t c = log->rcap ? log->rcap : READ_CHUNK;
    while (c < used + more)
      c *= 2;
    log->rbuf = qs_xrealloc(log->rbuf, c);
    log->rcap = c;
  }
  return log->rbuf + used;
}

static void emit(hub_plog_record *o, const plog_rec_hdr *h, size_t rec_at) {
  o->seq = h->seq;
  o->offset = h->offset;
  o->enqueued_ms = h->enq;
  o->key_len = h->key_len;
  o->payload_len = h->len - REC_HDR - h->key_len;
  /* arena offsets; turned into pointers once the arena stops moving */
  o->key = (const uint8_t *)(uintptr_t)(rec_at + REC_HDR);
  o->payload = (const uint8_t *)(uintptr_t)(rec_at + REC_HDR + h->key_len);
}

static int read_cache(hub_plog *log, int64_t seq, size_t max_records, size_t max_bytes,
                      hub_plog_record *out, size_t *n, size_t *used, size_t *bytes) {
  plog_chunk *c = log->cache_tail;
  while (c && c->first_seq > seq)
    c = c->prev;
  if (!c || seq >= c->first_seq + (int64_t)c->nrec)
    return 0;
  log->stats.reads_from_cache++;
  while (c && *n < max_records) {
    size_t k = (size_t)(seq - c->first_seq);
    for (; k < c->nrec && *n < max_records; k++) {
      const uint8_t *r = c->buf + c->recpos[k];
      plog_rec_hdr h;
      if (parse_record(r, c->len - c->recpos[k], false, &h) != 1)
        return QS_ERR_IO;
      size_t pl = h.len - REC_HDR;
      if (*n > 0 && *bytes + pl > max_bytes)
        return 0;
      uint8_t *dst = arena_reserve(log, *used, h.len);
      memcpy(dst, r, h.len);
      emit(&out[(*n)++], &h, *used);
      *used += h.len;
      *bytes += pl;
      seq++;
    }
    c = c->next;
  }
  return 0;
}

static int read_disk(hub_plog *log, int64_t seq, int64_t end, size_t max_records, size_t max_bytes,
                     hub_plog_record *out, size_t *n, size_t *used, size_t *bytes) {
  size_t si = seg_for_seq(log, seq);
  const plog_segment *s = &log->segs[si];
  if (s->corrupt || s->nidx == 0)
    return QS_ERR_IO;
  /* last index entry at or before seq */
  size_t lo = 0, hi = s->nidx - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    if (s->idx[mid].seq <= seq)
      lo = mid;
    else
      hi = mid - 1;
  }
  uint64_t pos = s->idx[lo].pos;
  int64_t cur = s->idx[lo].seq;
  log->stats.reads_from_disk++;
  while (*n < max_records && cur < end) {
    if (pos >= s->size) {
      if (++si >= log->nsegs)
        return QS_ERR_IO;
      s = &log->segs[si];
      if (s->base_seq != cur || s->corrupt)
        return QS_ERR_IO;
      pos = SEG_HDR;
    }
    size_t want = (size_t)(s->size - pos) < READ_CHUNK ? (size_t)(s->size - pos) : READ_CHUNK;
    uint8_t *dst = arena_reserve(log, *used, want);
    ssize_t got = pread_full(s->fd, dst, want, pos);
    if (got != (ssize_t)want)
      return QS_ERR_IO;
    size_t off = 0, keep = 0;
    while (off < want && *n < max_records && cur < end) {
      plog_rec_hdr h;
      int pr = parse_record(dst + off, want - off, true, &h);
      if (pr < 0 || (pr == 1 && h.seq != cur))
        return QS_ERR_IO;
      if (pr == 0) {
        if (off > 0)
          break;
        /* one record larger than the chunk: read it whole */
        if (want < REC_HDR || pos + h.len > s->size)
          return QS_ERR_IO;
        dst = arena_reserve(log, *used, h.len);
        if (pread_full(s->fd, dst, h.len, pos) != (ssize_t)h.len)
          return QS_ERR_IO;
        want = h.len;
        continue;
      }
      if (cur >= seq) {
        size_t pl = h.len - REC_HDR;
        if (*n > 0 && *bytes + pl > max_bytes) {
          *used += keep;
          return 0;
        }
        emit(&out[(*n)++], &h, *used + off);
        *bytes += pl;
        keep = off + h.len;
      }
      off += h.len;
      cur++;
    }
    /* bytes up to the last emitted record stay; skipped ones are overwritten next time */
    *used += keep;
    pos += off;
  }
  return 0;
}

int hub_plog_read(hub_plog *log, int64_t from_seq, size_t max_records, size_t max_bytes,
                  hub_plog_record *out, size_t *n_out) {
  if (!log || !out || !n_out || max_records == 0 || !log->opened)
    return QS_ERR_INVALID;
  *n_out = 0;
  hub_plog_info in;
  hub_plog_get_info(log, &in);
  int64_t end = in.last_seq + 1;
  if (from_seq < in.begin_seq)
    from_seq = in.begin_seq;
  if (from_seq >= end)
    return 0;
  if (max_bytes > MAX_READ_BYTES)
    max_bytes = MAX_READ_BYTES;
  size_t n = 0, used = 0, bytes = 0;
  int rc = 0;
  if (log->cache_head && from_seq >= log->cache_head->first_seq)
    rc = read_cache(log, from_seq, max_records, max_bytes, out, &n, &used, &bytes);
  if (rc == 0 && n == 0)
    rc = read_disk(log, from_seq, end, max_records, max_bytes, out, &n, &used, &bytes);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    out[i].payload = log->rbuf + (uintptr_t)out[i].payload;
    out[i].key = out[i].key_len ? log->rbuf + (uintptr_t)out[i].key : NULL;
  }
  *n_out = n;
  return 0;
}

/* ---- retention ---- */

int hub_plog_retain(hub_plog *log, int64_t now) {
  if (!log || !log->opened)
    return QS_ERR_INVALID;
  int64_t cutoff = now - (int64_t)log->opt.retention_ms;
  size_t k = 0;
  while (k + 1 < log->nsegs) {
    const plog_segment *s = &log->segs[k];
    bool empty = s->last_seq < s->base_seq;
    if (!empty && s->last_enq >= cutoff)
      break;
    k++;
  }
  for (size_t i = 0; i < k; i++) {
    plog_segment *s = &log->segs[i];
    char *lp = seg_path(log, s->base_seq, ".log");
    char *ip = seg_path(log, s->base_seq, ".index");
    unlink(ip); /* index first: a log without index is rebuilt; the reverse is never left */
    int rc = unlink(lp) == 0 || errno == ENOENT ? 0 : QS_ERR_IO;
    free(lp);
    free(ip);
    seg_free(s);
    if (rc != 0)
      return rc;
    log->stats.segments_deleted++;
  }
  if (k > 0) {
    memmove(log->segs, log->segs + k, (log->nsegs - k) * sizeof *log->segs);
    log->nsegs -= k;
    while (log->cache_head &&
           log->cache_head->first_seq + (int64_t)log->cache_head->nrec <= log->segs[0].base_seq)
      cache_drop_head(log);
  }
  return (int)k;
}
