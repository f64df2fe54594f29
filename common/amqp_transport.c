/* amqp_transport.c — pn_connection_driver over libuv TCP, TLS via qs_tls,
 * and the outgoing begin-frame filter (see qs/amqp_transport.h).
 *
 * Invariants:
 * - Proton sees plaintext only. In "direct" mode (no TLS, no filter) the
 *   socket reads into proton's read_buffer and writes from its
 *   write_buffer, and write_done() runs only in the write callback, because
 *   proton may move that buffer until then. Otherwise output is copied out
 *   of proton into `stage` (filtered), then encrypted into `wire`.
 * - At most one uv_write is in flight; `wire` is not touched while it is.
 * - The pump is never re-entered: a call from inside a handler (wake,
 *   abort) sets `repump` and the running pump loops again.
 * - The connection is freed only in the last close callback (tcp, timer,
 *   async and a cancelled getaddrinfo all count), after on_closed.
 * - pn_transport_tick runs only while connected, so DNS and TCP connect
 *   time does not count against the idle timeout.
 */
#include "qs/amqp_transport.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/event.h>
#include <proton/object.h>
#include <proton/transport.h>

#include "qs/error.h"

#define TLS_READ_CHUNK (64 * 1024)

struct qs_amqp_conn {
  pn_connection_driver_t driver;
  uv_loop_t *loop;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_async_t async;
  qs_amqp_conn_cbs cbs;
  void *data;

  bool use_tls;
  qs_tls tls;
  bool tls_shutdown_sent;
  uint8_t *tls_inbuf;

  qs_amqp_out_filter_fn filter;
  void *filter_state;
  qs_amqp_frame_pad_state *own_pad_filter;

  qs_amqp_buf stage; /* plaintext out of proton (filtered), not yet encrypted */
  qs_amqp_buf wire;  /* bytes of the in-flight write (owned mode) */
  uv_write_t wreq;
  bool writing;
  size_t writing_direct; /* bytes of proton's buffer in flight (direct mode) */

  uv_getaddrinfo_t gai;
  bool resolving;
  struct addrinfo *addrs;
  struct addrinfo *next_addr;
  uv_connect_t creq;
  bool retrying; /* tcp handle closing to try the next address */
  char host[QS_AMQP_HOST_MAX + 1];
  int port;

  bool connected;
  bool reading;
  bool in_pump;
  bool repump;
  bool closing;
  bool silent; /* rejected in setup or failed synchronously: no on_closed */
  int pending_closes;

  int err_code; /* set when this glue failed the transport */
  bool error_reported;
};

/* ---- small buffer ------------------------------------------------------- */

void qs_amqp_buf_append(qs_amqp_buf *b, const void *p, size_t n) {
  if (n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
      cap *= 2;
    b->data = qs_xrealloc(b->data, cap);
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void qs_amqp_buf_free(qs_amqp_buf *b) {
  free(b->data);
  memset(b, 0, sizeof(*b));
}

static void buf_consume(qs_amqp_buf *b, size_t n) {
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

/* ---- frame padding filter ------------------------------------------------
 * pyamqp (the Python SDK) reads performative fields by position and fails on
 * the shorter lists proton 0.37 legitimately sends (trailing nulls left out):
 * begin without handle-max, transfer without settled/more (it even expects
 * the payload at index 11), detach without error, close/end with no fields.
 * The filter re-encodes each performative list to its full arity with nulls
 * (begin's handle-max with its default 0xffffffff); every other byte passes
 * through unchanged, and a transfer's payload is streamed, never buffered.
 * Phases: HEAD collects 8 bytes (protocol header or frame header); DESC the
 * descriptor; LHDR the list constructor and size; LIST the whole list; PASS
 * copies the rest of the frame. */

enum { PH_HEAD = 0, PH_DESC, PH_LHDR, PH_LIST, PH_PASS };

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Fields of each performative (AMQP 1.0 section 2.7); 0 for anything else. */
static size_t performative_arity(uint64_t code) {
  static const uint8_t arity[] = {10, 8, 14, 11, 11, 6, 3, 1, 1}; /* 0x10 open .. 0x18 close */
  return code >= 0x10 && code <= 0x18 ? arity[code - 0x10] : 0;
}

void qs_amqp_frame_pad_init(qs_amqp_frame_pad_state *f) {
  memset(f, 0, sizeof(*f));
  f->pad = true;
  f->phase = PH_HEAD;
  f->need = 8;
}

void qs_amqp_frame_mark_init(qs_amqp_frame_pad_state *f) {
  memset(f, 0, sizeof(*f));
  f->mark_batches = true;
  f->phase = PH_HEAD;
  f->need = 8;
}

/* The constructor and sizes of a list of `count` elements taking elems_len bytes: list8 when it
 * fits, else list32. Writes at most 9 bytes to lhdr; returns how many. */
static size_t list_header(uint8_t *lhdr, size_t elems_len, size_t count) {
  if (elems_len + 1 <= 255 && count <= 255) {
    lhdr[0] = 0xc0, lhdr[1] = (uint8_t)(elems_len + 1), lhdr[2] = (uint8_t)count;
    return 3;
  }
  lhdr[0] = 0xd0;
  put_be32(lhdr + 1, (uint32_t)(elems_len + 4));
  put_be32(lhdr + 5, (uint32_t)count);
  return 9;
}

static void filter_next_frame(qs_amqp_frame_pad_state *f);
static void filter_pass_rest(qs_amqp_frame_pad_state *f, qs_amqp_buf *out);

/* End of the AMQP-encoded value at p (NULL if it does not fit before end). */
static const uint8_t *amqp_skip(const uint8_t *p, const uint8_t *end, int depth) {
  if (p >= end || depth > 4)
    return NULL;
  uint8_t c = *p++;
  if (c == 0x00) { /* described: descriptor, then value */
    p = amqp_skip(p, end, depth + 1);
    return p ? amqp_skip(p, end, depth + 1) : NULL;
  }
  size_t w;
  switch (c >> 4) {
  case 0x4:
    w = 0;
    break;
  case 0x5:
    w = 1;
    break;
  case 0x6:
    w = 2;
    break;
  case 0x7:
    w = 4;
    break;
  case 0x8:
    w = 8;
    break;
  case 0x9:
    w = 16;
    break;
  case 0xa:
  case 0xc:
  case 0xe:
    if (p + 1 > end)
      return NULL;
    w = 1 + (size_t)p[0];
    break;
  case 0xb:
  case 0xd:
  case 0xf:
    if (p + 4 > end)
      return NULL;
    w = 4 + (size_t)get_be32(p);
    break;
  default:
    return NULL;
  }
  return (size_t)(end - p) >= w ? p + w : NULL;
}

static uint32_t amqp_uint_at(const uint8_t *p, const uint8_t *end) {
  if (p >= end)
    return 0;
  if (p[0] == 0x52 && p + 2 <= end)
    return p[1];
  if (p[0] == 0x70 && p + 5 <= end)
    return get_be32(p + 1);
  return 0;
}

/* acc holds a transfer frame up to the end of its field list (at list_end) plus up to 3 payload
 * bytes. Rewrites field 3 (message-format) when the delivery is a batch; see the header. */
static void filter_mark_transfer(qs_amqp_frame_pad_state *f, qs_amqp_buf *out, size_t count,
                                 size_t elems, size_t elems_len) {
  const uint8_t *a = f->acc, *lend = a + elems + elems_len;
  uint32_t size = get_be32(a);
  const uint8_t *field[12] = {0};
  const uint8_t *q = a + elems;
  size_t nf = 0;
  while (nf < count && nf < 11) {
    field[nf] = q;
    q = amqp_skip(q, lend, 0);
    if (!q)
      break;
    nf++;
  }
  field[nf] = q;
  if (nf < count && nf < 11) { /* unparsable: leave the frame alone */
    filter_pass_rest(f, out);
    return;
  }
  uint16_t channel = (uint16_t)(a[6] << 8 | a[7]);
  uint32_t handle = nf > 0 ? amqp_uint_at(field[0], lend) : 0;
  bool more = nf > 5 && (field[5][0] == 0x41 || (field[5][0] == 0x56 && field[5][1] == 1));
  size_t pi = 0;
  while (pi < f->npartial &&
         !(f->partial[pi].channel == channel && f->partial[pi].handle == handle))
    pi++;
  bool continuation = pi < f->npartial;
  size_t payload = (size_t)(lend - a);
  bool marked = continuation ? f->partial[pi].marked
                             : f->acc_len >= payload + 3 && a[payload] == 0x00 &&
                                   a[payload + 1] == 0x53 && a[payload + 2] == 0x72;
  if (more && !continuation && f->npartial < sizeof f->partial / sizeof f->partial[0]) {
    f->partial[f->npartial].channel = channel;
    f->partial[f->npartial].handle = handle;
    f->partial[f->npartial].marked = marked;
    f->npartial++;
  } else if (!more && continuation) {
    f->partial[pi] = f->partial[--f->npartial];
  }
  if (!marked) {
    filter_pass_rest(f, out);
    return;
  }
  /* new element bytes: fields 0..2 (nulls where absent), the format, fields 4.. */
  static const uint8_t fmt[] = {0x70, 0x80, 0x01, 0x37, 0x00};
  uint8_t head[64];
  size_t hl = 0;
  size_t keep = nf < 3 ? nf : 3;
  size_t keep_len = (size_t)(field[keep] - field[0]);
  for (size_t i = nf; i < 3; i++)
    head[hl++] = 0x40;
  memcpy(head + hl, fmt, sizeof fmt);
  hl += sizeof fmt;
  const uint8_t *tail = nf > 4 ? field[4] : lend;
  size_t tail_len = (size_t)(lend - tail);
  size_t new_count = nf > 4 ? nf : 4;
  size_t new_elems = keep_len + hl + tail_len;
  uint8_t lhdr[9];
  size_t lhdr_len = list_header(lhdr, new_elems, new_count);
  size_t rest = size - payload; /* payload bytes, some of them already in acc */
  size_t new_size = f->list_at + lhdr_len + new_elems + rest;
  uint8_t hdr[4];
  put_be32(hdr, (uint32_t)new_size);
  qs_amqp_buf_append(out, hdr, 4);
  qs_amqp_buf_append(out, a + 4, f->list_at - 4);
  qs_amqp_buf_append(out, lhdr, lhdr_len);
  qs_amqp_buf_append(out, field[0], keep_len);
  qs_amqp_buf_append(out, head, hl);
  qs_amqp_buf_append(out, tail, tail_len);
  qs_amqp_buf_append(out, a + payload, f->acc_len - payload);
  f->pass_left = size - f->acc_len;
  f->acc_len = 0;
  if (f->pass_left == 0)
    filter_next_frame(f);
  else
    f->phase = PH_PASS;
}

static void filter_next_frame(qs_amqp_frame_pad_state *f) {
  f->phase = PH_HEAD;
  f->acc_len = 0;
  f->need = 8;
}

/* Emits the buffered bytes and passes the remaining bytes of the frame. */
static void filter_pass_rest(qs_amqp_frame_pad_state *f, qs_amqp_buf *out) {
  uint32_t size = get_be32(f->acc);
  qs_amqp_buf_append(out, f->acc, f->acc_len);
  f->pass_left = size - f->acc_len;
  f->acc_len = 0;
  if (f->pass_left == 0)
    filter_next_frame(f);
  else
    f->phase = PH_PASS;
}

/* acc holds the frame up to the end of its performative list (list at f->list_at, elements
 * from `elems` for elems_len bytes, count fields): writes the frame header and the list padded
 * to the performative's arity, then passes the rest of the frame (e.g. a payload) through. */
static void filter_rewrite(qs_amqp_frame_pad_state *f, qs_amqp_buf *out, size_t count, size_t elems,
                           size_t elems_len) {
  const uint8_t *fr = f->acc;
  uint32_t size = get_be32(fr);
  size_t p = f->list_at, end = f->acc_len, arity = f->arity;
  if (count >= arity) {
    filter_pass_rest(f, out);
    return;
  }
  uint8_t extra[16];
  size_t extra_len = 0;
  for (size_t i = count; i < arity; i++) {
    if (f->code == 0x11 && i == 4) { /* begin's handle-max: the spec default, written out */
      static const uint8_t hmax[] = {0x70, 0xff, 0xff, 0xff, 0xff};
      memcpy(extra + extra_len, hmax, sizeof(hmax));
      extra_len += sizeof(hmax);
    } else {
      extra[extra_len++] = 0x40; /* null */
    }
  }
  size_t new_elems = elems_len + extra_len;
  uint8_t lhdr[9];
  size_t lhdr_len = list_header(lhdr, new_elems, arity);
  size_t new_size = p + lhdr_len + new_elems + (size - end);
  uint8_t hdr[4];
  put_be32(hdr, (uint32_t)new_size);
  qs_amqp_buf_append(out, hdr, 4);
  qs_amqp_buf_append(out, fr + 4, p - 4); /* rest of header, ext header, descriptor */
  qs_amqp_buf_append(out, lhdr, lhdr_len);
  qs_amqp_buf_append(out, fr + elems, elems_len);
  qs_amqp_buf_append(out, extra, extra_len);
  f->pass_left = size - end;
  f->acc_len = 0;
  if (f->pass_left == 0)
    filter_next_frame(f);
  else
    f->phase = PH_PASS;
}

/* Decides what to do once `need` bytes are buffered. */
static int filter_decide(qs_amqp_frame_pad_state *f, qs_amqp_buf *out) {
  const uint8_t *a = f->acc;
  uint32_t size = f->phase == PH_HEAD && memcmp(a, "AMQP", 4) == 0 ? 8 : get_be32(a);
  size_t doff = (size_t)a[4] * 4;
  switch (f->phase) {
  case PH_HEAD:
    if (memcmp(a, "AMQP", 4) == 0) {
      qs_amqp_buf_append(out, a, 8);
      filter_next_frame(f);
      return 0;
    }
    if (size < 8 || doff < 8 || doff > size)
      return QS_ERR_PARSE;
    if (a[5] != 0 || size < doff + 3) { /* SASL frame, or an empty (heartbeat) frame */
      filter_pass_rest(f, out);
      return 0;
    }
    f->phase = PH_DESC;
    f->need = doff + 3;
    return 0;
  case PH_DESC:
    f->code = 0;
    if (a[doff] == 0x00 && a[doff + 1] == 0x53) {
      f->code = a[doff + 2];
      f->list_at = doff + 3;
    } else if (a[doff] == 0x00 && a[doff + 1] == 0x80 && size >= doff + 10) {
      if (f->need < doff + 10) {
        f->need = doff + 10;
        return 0;
      }
      f->code = (uint64_t)get_be32(a + doff + 2) << 32 | get_be32(a + doff + 6);
      f->list_at = doff + 10;
    }
    f->arity = performative_arity(f->code);
    if (f->arity == 0 || f->list_at >= size || (!f->pad && !(f->mark_batches && f->code == 0x14))) {
      filter_pass_rest(f, out);
      return 0;
    }
    f->phase = PH_LHDR;
    f->need = f->list_at + 1;
    return 0;
  case PH_LHDR: {
    size_t p = f->list_at;
    size_t hdr = a[p] == 0x45 ? 1 : a[p] == 0xc0 ? 3 : a[p] == 0xd0 ? 9 : 0;
    if (hdr == 0 || p + hdr > size)
      return QS_ERR_PARSE;
    if (f->need < p + hdr) {
      f->need = p + hdr;
      return 0;
    }
    size_t end = a[p] == 0x45   ? p + 1
                 : a[p] == 0xc0 ? p + 2 + (size_t)a[p + 1]
                                : p + 5 + (size_t)get_be32(a + p + 1);
    if (end > size || (a[p] == 0xc0 && a[p + 1] < 1) || (a[p] == 0xd0 && get_be32(a + p + 1) < 4))
      return QS_ERR_PARSE;
    if (end + 3 > sizeof(f->acc)) { /* a huge list (never seen): leave the frame as it is */
      filter_pass_rest(f, out);
      return 0;
    }
    f->phase = PH_LIST;
    f->need = end;
    if (f->mark_batches && f->code == 0x14) /* peek at the payload's first section */
      f->need = end + (size - end < 3 ? size - end : 3);
    return 0;
  }
  case PH_LIST: {
    size_t p = f->list_at;
    if (f->mark_batches && f->code == 0x14) {
      if (a[p] == 0x45)
        filter_mark_transfer(f, out, 0, p + 1, 0);
      else if (a[p] == 0xc0)
        filter_mark_transfer(f, out, a[p + 2], p + 3, (size_t)a[p + 1] - 1u);
      else
        filter_mark_transfer(f, out, get_be32(a + p + 5), p + 9, (size_t)get_be32(a + p + 1) - 4u);
      return 0;
    }
    if (!f->pad) {
      filter_pass_rest(f, out);
      return 0;
    }
    if (a[p] == 0x45)
      filter_rewrite(f, out, 0, p + 1, 0);
    else if (a[p] == 0xc0)
      filter_rewrite(f, out, a[p + 2], p + 3, (size_t)a[p + 1] - 1u);
    else
      filter_rewrite(f, out, get_be32(a + p + 5), p + 9, (size_t)get_be32(a + p + 1) - 4u);
    return 0;
  }
  }
  return QS_ERR_PARSE;
}

int qs_amqp_frame_pad(void *state, const uint8_t *in, size_t n, qs_amqp_buf *out) {
  qs_amqp_frame_pad_state *f = state;
  while (n > 0) {
    if (f->phase == PH_PASS) {
      size_t take = n < f->pass_left ? n : f->pass_left;
      qs_amqp_buf_append(out, in, take);
      in += take, n -= take;
      f->pass_left -= take;
      if (f->pass_left == 0)
        filter_next_frame(f);
      continue;
    }
    size_t take = f->need - f->acc_len;
    if (take > n)
      take = n;
    memcpy(f->acc + f->acc_len, in, take);
    f->acc_len += take;
    in += take, n -= take;
    while (f->phase != PH_PASS && f->acc_len == f->need) {
      int rc = filter_decide(f, out);
      if (rc < 0)
        return rc;
      if (f->phase == PH_HEAD && f->acc_len == 0)
        break;
    }
  }
  return 0;
}

/* ---- connection --------------------------------------------------------- */

static void pump(qs_amqp_conn *c);

static bool direct_mode(const qs_amqp_conn *c) { return !c->use_tls && !c->filter; }

/* Fails the transport from the glue's side: records the code, sets the
 * condition unless proton already set one, and closes both directions. */
static void conn_fail(qs_amqp_conn *c, int code, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void conn_fail(qs_amqp_conn *c, int code, const char *name, const char *fmt, ...) {
  pn_condition_t *cond = pn_transport_condition(c->driver.transport);
  if (!c->err_code && !c->error_reported)
    c->err_code = code;
  if (!pn_condition_is_set(cond)) {
    va_list ap;
    va_start(ap, fmt);
    pn_connection_driver_verrorf(&c->driver, name, fmt, ap);
    va_end(ap);
  }
  pn_connection_driver_close(&c->driver);
}

static int code_for_condition(const char *name, const char *desc) {
  if (!name)
    return QS_ERR_IO;
  if (strcmp(name, "amqp:resource-limit-exceeded") == 0 && desc && strstr(desc, "idle"))
    return QS_ERR_TIMEOUT;
  if (strcmp(name, "amqp:connection:framing-error") == 0 &&
      !(desc && strstr(desc, "connection aborted")))
    return QS_ERR_PARSE;
  return QS_ERR_IO;
}

static void report_error(qs_amqp_conn *c) {
  if (c->error_reported)
    return;
  pn_condition_t *cond = pn_transport_condition(c->driver.transport);
  if (!pn_condition_is_set(cond))
    return;
  c->error_reported = true;
  const char *name = pn_condition_get_name(cond);
  const char *desc = pn_condition_get_description(cond);
  int code = c->err_code ? c->err_code : code_for_condition(name, desc);
  char reason[512];
  snprintf(reason, sizeof(reason), "%s (%s)", desc && *desc ? desc : "transport error",
           name ? name : "unknown");
  if (c->cbs.on_error)
    c->cbs.on_error(c, code, reason, c->data);
}

static void finalize(qs_amqp_conn *c) {
  if (!c->silent && c->cbs.on_closed)
    c->cbs.on_closed(c, c->data);
  pn_connection_driver_destroy(&c->driver);
  if (c->use_tls)
    qs_tls_close(&c->tls);
  free(c->tls_inbuf);
  free(c->own_pad_filter);
  qs_amqp_buf_free(&c->stage);
  qs_amqp_buf_free(&c->wire);
  if (c->addrs)
    uv_freeaddrinfo(c->addrs);
  free(c);
}

static void on_handle_closed(uv_handle_t *h) {
  qs_amqp_conn *c = h->data;
  if (--c->pending_closes == 0)
    finalize(c);
}

static void start_close(qs_amqp_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  c->pending_closes = 3; /* tcp, timer, async */
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->async, on_handle_closed);
  if (!c->retrying) /* else the retry's close callback counts the tcp handle */
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  if (c->resolving) {
    c->pending_closes++;
    uv_cancel((uv_req_t *)&c->gai);
  }
}

/* Pulls proton's output through the filter into `stage` and, with TLS,
 * encrypts it; both steps stop at QS_AMQP_STAGE_MAX bytes waiting. Direct
 * mode leaves the bytes in proton (start_write sends from there). */
static void flush(qs_amqp_conn *c) {
  if (!c->connected || c->closing || direct_mode(c))
    return;
  while (c->stage.len < QS_AMQP_STAGE_MAX) {
    pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
    if (wb.size == 0)
      break;
    /* Proton may hold megabytes of output; take only what the bound allows. */
    if (wb.size > QS_AMQP_STAGE_MAX - c->stage.len)
      wb.size = QS_AMQP_STAGE_MAX - c->stage.len;
    if (c->filter) {
      int rc = c->filter(c->filter_state, (const uint8_t *)wb.start, wb.size, &c->stage);
      if (rc < 0) {
        conn_fail(c, QS_ERR_PARSE, "qs:filter", "outgoing frame filter failed: %s",
                  qs_strerror(rc));
        break;
      }
    } else {
      qs_amqp_buf_append(&c->stage, wb.start, wb.size);
    }
    pn_connection_driver_write_done(&c->driver, wb.size);
  }
  if (!c->use_tls)
    return;
  if (qs_tls_get_state(&c->tls) == QS_TLS_FAILED) {
    c->stage.len = 0; /* can never be sent; only a queued alert still goes out */
    return;
  }
  if (c->stage.len > 0 && qs_tls_pending_out(&c->tls) < QS_AMQP_STAGE_MAX) {
    size_t used = 0;
    int rc = qs_tls_encrypt(&c->tls, c->stage.data, c->stage.len, &used);
    buf_consume(&c->stage, used);
    if (rc < 0)
      conn_fail(c, rc, "qs:tls", "%s", qs_tls_reason(&c->tls));
  }
  if (pn_connection_driver_write_closed(&c->driver) && c->stage.len == 0 && !c->tls_shutdown_sent &&
      qs_tls_get_state(&c->tls) == QS_TLS_OPEN) {
    c->tls_shutdown_sent = true;
    (void)qs_tls_shutdown(&c->tls); /* best effort close_notify */
  }
}

static void on_write(uv_write_t *req, int status);

/* Starts one write when none is in flight. */
static void start_write(qs_amqp_conn *c) {
  if (!c->connected || c->writing || c->closing)
    return;
  uv_buf_t b;
  if (direct_mode(c)) {
    pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
    if (wb.size == 0)
      return;
    b = uv_buf_init((char *)wb.start, (unsigned)wb.size);
    c->writing_direct = wb.size;
  } else {
    if (c->use_tls) {
      size_t pending = qs_tls_pending_out(&c->tls);
      if (pending > c->wire.cap) {
        c->wire.data = qs_xrealloc(c->wire.data, pending);
        c->wire.cap = pending;
      }
      c->wire.len = qs_tls_drain(&c->tls, c->wire.data, pending);
    } else {
      qs_amqp_buf t = c->wire; /* swap: stage's bytes go out, wire's memory is reused */
      c->wire = c->stage;
      c->stage = t;
      c->stage.len = 0;
    }
    if (c->wire.len == 0)
      return;
    b = uv_buf_init((char *)c->wire.data, (unsigned)c->wire.len);
  }
  int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc < 0) {
    c->writing_direct = 0;
    c->wire.len = 0;
    conn_fail(c, QS_ERR_IO, "proton:io", "write: %s", uv_strerror(rc));
    return;
  }
  c->writing = true;
}

static void on_write(uv_write_t *req, int status) {
  qs_amqp_conn *c = req->data;
  c->writing = false;
  if (c->closing)
    return;
  if (direct_mode(c)) {
    if (status == 0)
      pn_connection_driver_write_done(&c->driver, c->writing_direct);
    c->writing_direct = 0;
  } else {
    c->wire.len = 0;
  }
  if (status < 0)
    conn_fail(c, QS_ERR_IO, "proton:io", "write: %s", uv_strerror(status));
  else if (c->cbs.on_written)
    c->cbs.on_written(c, c->data);
  pump(c);
}

/* Decrypts what proton has room for. */
static void tls_in(qs_amqp_conn *c) {
  for (;;) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
    if (rb.size == 0)
      return;
    size_t got = 0;
    int rc = qs_tls_decrypt(&c->tls, rb.start, rb.size, &got);
    if (got > 0)
      pn_connection_driver_read_done(&c->driver, got);
    if (rc == QS_ERR_CLOSED) {
      pn_connection_driver_read_close(&c->driver);
      return;
    }
    if (rc < 0) {
      conn_fail(c, rc, "qs:tls", "%s", qs_tls_reason(&c->tls));
      return;
    }
    if (got == 0)
      return;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  qs_amqp_conn *c = h->data;
  (void)suggested;
  if (c->use_tls) {
    if (!c->tls_inbuf)
      c->tls_inbuf = qs_xmalloc(TLS_READ_CHUNK);
    *buf = uv_buf_init((char *)c->tls_inbuf, TLS_READ_CHUNK);
    return;
  }
  pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
  *buf = uv_buf_init(rb.start, (unsigned)rb.size); /* 0 -> UV_ENOBUFS */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  qs_amqp_conn *c = s->data;
  (void)buf;
  if (c->closing || nread == 0)
    return;
  if (nread == UV_ENOBUFS) { /* proton is full: the pump resumes reading */
    uv_read_stop(s);
    c->reading = false;
  } else if (nread > 0) {
    if (c->use_tls) {
      int rc = qs_tls_feed(&c->tls, buf->base, (size_t)nread);
      if (rc < 0)
        conn_fail(c, rc, "qs:tls", "%s", qs_tls_reason(&c->tls));
      else
        tls_in(c);
    } else {
      pn_connection_driver_read_done(&c->driver, (size_t)nread);
    }
  } else if (nread == UV_EOF) {
    uv_read_stop(s);
    c->reading = false;
    if (c->use_tls)
      tls_in(c);
    pn_connection_driver_read_close(&c->driver);
  } else {
    uv_read_stop(s);
    c->reading = false;
    conn_fail(c, QS_ERR_IO, "proton:io", "read: %s", uv_strerror((int)nread));
  }
  pump(c);
}

static void update_reading(qs_amqp_conn *c) {
  bool want = c->connected && !pn_connection_driver_read_closed(&c->driver);
  if (want) {
    if (c->use_tls)
      want = qs_tls_pending_in(&c->tls) < QS_AMQP_TLS_IN_MAX;
    else
      want = pn_connection_driver_read_buffer(&c->driver).size > 0;
  }
  if (want && !c->reading) {
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
      conn_fail(c, QS_ERR_IO, "proton:io", "read start: %s", uv_strerror(rc));
      return;
    }
    c->reading = true;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
}

static void on_timer(uv_timer_t *t) { pump(t->data); }

static bool output_idle(qs_amqp_conn *c) {
  return !c->writing && c->wire.len == 0 &&
         (direct_mode(c) ||
          (c->stage.len == 0 && (!c->use_tls || qs_tls_pending_out(&c->tls) == 0)));
}

static void pump(qs_amqp_conn *c) {
  if (c->closing)
    return;
  if (c->in_pump) {
    c->repump = true;
    return;
  }
  c->in_pump = true;
  int64_t deadline = 0;
  int64_t now = (int64_t)uv_now(c->loop);
  for (int rounds = 0;; rounds++) {
    c->repump = false;
    if (c->use_tls && c->connected)
      tls_in(c);
    pn_event_t *ev;
    while ((ev = pn_connection_driver_next_event(&c->driver)) != NULL) {
      pn_event_type_t type = pn_event_type(ev);
      if (type == PN_TRANSPORT_ERROR || type == PN_TRANSPORT_CLOSED)
        report_error(c);
      c->cbs.on_event(c, ev, c->data);
    }
    flush(c);
    start_write(c);
    flush(c); /* what start_write took made room for more */
    update_reading(c);
    if (c->connected && !pn_connection_driver_finished(&c->driver))
      deadline = pn_transport_tick(c->driver.transport, now);
    /* Any step above may have failed the transport and posted events. */
    if (!c->repump && !pn_connection_driver_has_event(&c->driver))
      break;
    if (rounds == 1000) { /* never starve the loop: continue from the timer */
      deadline = now;
      break;
    }
  }
  c->in_pump = false;
  if (pn_connection_driver_finished(&c->driver) && (output_idle(c) || !c->connected)) {
    start_close(c);
    return;
  }
  if (deadline > 0) {
    uint64_t delay = deadline > now ? (uint64_t)(deadline - now) : 1;
    uv_timer_start(&c->timer, on_timer, delay, 0);
  } else {
    uv_timer_stop(&c->timer);
  }
}

static void on_async(uv_async_t *a) {
  qs_amqp_conn *c = a->data;
  if (c->closing)
    return;
  pn_connection_t *pc = c->driver.connection;
  pn_collector_put(pn_connection_collector(pc), PN_OBJECT, pc, PN_CONNECTION_WAKE);
  pump(c);
}

/* Allocates a conn with its driver and loop handles initialised. */
static int conn_new(uv_loop_t *loop, const qs_amqp_conn_cbs *cbs, void *data, qs_amqp_conn **out) {
  if (!loop || !cbs || !cbs->on_event)
    return QS_ERR_INVALID;
  qs_amqp_conn *c = qs_xcalloc(1, sizeof(*c));
  c->loop = loop;
  c->cbs = *cbs;
  c->data = data;
  if (pn_connection_driver_init(&c->driver, NULL, NULL) != 0) {
    free(c);
    return QS_ERR_NOMEM;
  }
  *pn_connection_driver_ptr(c->driver.connection) = &c->driver;
  int rc = uv_tcp_init(loop, &c->tcp);
  if (rc < 0) {
    pn_connection_driver_destroy(&c->driver);
    free(c);
    return rc;
  }
  uv_timer_init(loop, &c->timer); /* cannot fail on an initialised loop */
  rc = uv_async_init(loop, &c->async, on_async);
  c->tcp.data = c->timer.data = c->async.data = c->wreq.data = c->creq.data = c->gai.data = c;
  if (rc < 0) {
    c->silent = true;
    c->pending_closes = 2;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    return rc;
  }
  *out = c;
  return 0;
}

/* Frees a conn whose setup failed: no user callback fires. */
static void conn_discard(qs_amqp_conn *c) {
  c->silent = true;
  start_close(c);
}

static int conn_setup_and_bind(qs_amqp_conn *c) {
  if (c->cbs.setup) {
    int rc = c->cbs.setup(c, c->data);
    if (rc < 0)
      return rc;
  }
  return pn_connection_driver_bind(&c->driver) == 0 ? 0 : QS_ERR_STATE;
}

static void on_connect(uv_connect_t *req, int status);
static void try_connect(qs_amqp_conn *c);

static void on_retry_closed(uv_handle_t *h) {
  qs_amqp_conn *c = h->data;
  c->retrying = false;
  if (c->closing) {
    on_handle_closed(h);
    return;
  }
  int rc = uv_tcp_init(c->loop, &c->tcp);
  if (rc < 0) /* only fails for invalid flags, and none are passed */
    QS_FATAL("uv_tcp_init: %s", uv_strerror(rc));
  c->tcp.data = c;
  try_connect(c);
}

static void try_connect(qs_amqp_conn *c) {
  int last = UV_EAI_NONAME;
  while (c->next_addr) {
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    last = uv_tcp_connect(&c->creq, &c->tcp, ai->ai_addr, on_connect);
    if (last == 0)
      return;
  }
  conn_fail(c, QS_ERR_IO, "proton:io", "connect %s:%d: %s", c->host, c->port, uv_strerror(last));
  pump(c);
}

static void on_connect(uv_connect_t *req, int status) {
  qs_amqp_conn *c = req->data;
  if (c->closing)
    return;
  if (status < 0) {
    if (c->next_addr) {
      c->retrying = true;
      uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
      return;
    }
    conn_fail(c, QS_ERR_IO, "proton:io", "connect %s:%d: %s", c->host, c->port,
              uv_strerror(status));
    pump(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->connected = true;
  if (c->use_tls) {
    int rc = qs_tls_handshake(&c->tls);
    if (rc < 0)
      conn_fail(c, rc, "qs:tls", "%s", qs_tls_reason(&c->tls));
  }
  pump(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  qs_amqp_conn *c = req->data;
  c->resolving = false;
  if (c->closing) {
    if (res)
      uv_freeaddrinfo(res);
    if (--c->pending_closes == 0)
      finalize(c);
    return;
  }
  if (status < 0) {
    conn_fail(c, QS_ERR_IO, "proton:io", "resolve %s: %s", c->host, uv_strerror(status));
    pump(c);
    return;
  }
  c->addrs = c->next_addr = res;
  try_connect(c);
}

int qs_amqp_conn_connect(uv_loop_t *loop, const char *host, int port, qs_tls_ctx *tls,
                         const char *tls_peer_name, const qs_amqp_conn_cbs *cbs, void *data,
                         qs_amqp_conn **out) {
  if (!host || !*host || strlen(host) > QS_AMQP_HOST_MAX || port <= 0 || port > 65535 || !out)
    return QS_ERR_INVALID;
  if (tls && (!tls->ssl_ctx || tls->is_server))
    return QS_ERR_INVALID;
  qs_amqp_conn *c;
  int rc = conn_new(loop, cbs, data, &c);
  if (rc < 0)
    return rc;
  snprintf(c->host, sizeof(c->host), "%s", host);
  c->port = port;
  if (tls) {
    rc = qs_tls_init(&c->tls, tls, tls_peer_name ? tls_peer_name : host);
    if (rc < 0) {
      conn_discard(c);
      return rc;
    }
    c->use_tls = true;
  }
  rc = conn_setup_and_bind(c);
  if (rc < 0) {
    conn_discard(c);
    return rc;
  }
  char port_s[8];
  snprintf(port_s, sizeof(port_s), "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  rc = uv_getaddrinfo(loop, &c->gai, on_resolved, host, port_s, &hints);
  if (rc < 0) {
    conn_discard(c);
    return rc;
  }
  c->resolving = true;
  *out = c;
  /* Drain the INIT/BOUND events now, so handlers can open the connection
   * before any I/O; output waits for the socket. */
  pump(c);
  return 0;
}

pn_connection_driver_t *qs_amqp_conn_driver(qs_amqp_conn *conn) { return &conn->driver; }

pn_connection_t *qs_amqp_conn_connection(qs_amqp_conn *c) { return c->driver.connection; }
pn_transport_t *qs_amqp_conn_transport(qs_amqp_conn *c) { return c->driver.transport; }
void *qs_amqp_conn_data(const qs_amqp_conn *c) { return c->data; }
void qs_amqp_conn_set_data(qs_amqp_conn *c, void *data) { c->data = data; }
bool qs_amqp_conn_is_tls(const qs_amqp_conn *c) { return c->use_tls; }

qs_amqp_conn *qs_amqp_conn_from_connection(pn_connection_t *pc) {
  if (!pc)
    return NULL;
  pn_connection_driver_t *d = *pn_connection_driver_ptr(pc);
  if (!d)
    return NULL;
  return (qs_amqp_conn *)((char *)d - offsetof(qs_amqp_conn, driver));
}

void qs_amqp_conn_wake(qs_amqp_conn *c) { uv_async_send(&c->async); }

void qs_amqp_conn_abort(qs_amqp_conn *c, const char *reason) {
  if (c->closing)
    return;
  conn_fail(c, QS_ERR_CLOSED, "qs:aborted", "%s", reason ? reason : "aborted");
  pump(c);
}

void qs_amqp_conn_set_out_filter(qs_amqp_conn *c, qs_amqp_out_filter_fn fn, void *state) {
  c->filter = fn;
  c->filter_state = state;
}

void qs_amqp_conn_use_batch_marking(qs_amqp_conn *c) {
  if (!c->own_pad_filter)
    c->own_pad_filter = qs_xmalloc(sizeof(qs_amqp_frame_pad_state));
  qs_amqp_frame_mark_init(c->own_pad_filter);
  qs_amqp_conn_set_out_filter(c, qs_amqp_frame_pad, c->own_pad_filter);
}

void qs_amqp_conn_use_frame_padding(qs_amqp_conn *c) {
  if (!c->own_pad_filter)
    c->own_pad_filter = qs_xmalloc(sizeof(qs_amqp_frame_pad_state));
  qs_amqp_frame_pad_init(c->own_pad_filter);
  qs_amqp_conn_set_out_filter(c, qs_amqp_frame_pad, c->own_pad_filter);
}

/* ---- listener ----------------------------------------------------------- */

static void accept_one(qs_amqp_listener *l) {
  qs_amqp_conn *c;
  if (conn_new(l->tcp.loop, &l->cbs, l->data, &c) < 0) {
    l->last_accept_error = QS_ERR_NOMEM;
    return;
  }
  int rc = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp);
  if (rc == 0 && l->tls) {
    rc = qs_tls_init(&c->tls, l->tls, NULL);
    c->use_tls = rc == 0;
  }
  if (rc == 0) {
    pn_transport_set_server(c->driver.transport);
    rc = conn_setup_and_bind(c);
  }
  if (rc < 0) {
    l->last_accept_error = rc;
    conn_discard(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->connected = true;
  pump(c);
}

static void on_connection(uv_stream_t *s, int status) {
  qs_amqp_listener *l = s->data;
  if (l->closing)
    return;
  if (status < 0) {
    l->last_accept_error = status;
    return;
  }
  accept_one(l);
}

int qs_amqp_listener_init(qs_amqp_listener *l, uv_loop_t *loop, const char *host, int port,
                          qs_tls_ctx *tls, const qs_amqp_conn_cbs *cbs, void *data) {
  memset(l, 0, sizeof(*l));
  int rc = uv_tcp_init(loop, &l->tcp);
  if (rc < 0)
    return rc;
  l->inited = true;
  l->tcp.data = l;
  if (!host || port < 0 || port > 65535 || !cbs || !cbs->on_event ||
      (tls && (!tls->ssl_ctx || !tls->is_server)))
    return QS_ERR_INVALID;
  l->tls = tls;
  l->cbs = *cbs;
  l->data = data;
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
    return QS_ERR_INVALID;
  rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection);
  if (rc < 0)
    return rc;
  int len = sizeof(ss);
  rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return rc;
  l->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return 0;
}

int qs_amqp_listener_port(const qs_amqp_listener *l) { return l->port; }

static void on_listener_closed(uv_handle_t *h) {
  qs_amqp_listener *l = h->data;
  if (l->close_cb)
    l->close_cb(l);
}

void qs_amqp_listener_close(qs_amqp_listener *l, qs_amqp_listener_close_cb close_cb) {
  if (l->closing)
    return;
  l->closing = true;
  l->close_cb = close_cb;
  if (l->inited)
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
  else if (close_cb)
    close_cb(l);
}
