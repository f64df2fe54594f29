/* evmsg.c — AMQP message section codec (see evmsg.h). */
#include "evmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int skip_depth(const uint8_t *p, size_t n, size_t *len, int depth) {
  if (n < 1 || depth > HUB_EVMSG_MAX_DEPTH)
    return QS_ERR_PARSE;
  uint8_t c = p[0];
  if (c == 0x00) {
    size_t d, v;
    if (skip_depth(p + 1, n - 1, &d, depth + 1) < 0)
      return QS_ERR_PARSE;
    if (skip_depth(p + 1 + d, n - 1 - d, &v, depth + 1) < 0)
      return QS_ERR_PARSE;
    *len = 1 + d + v;
    return 0;
  }
  size_t need;
  switch (c >> 4) {
  case 0x4:
    need = 1;
    break;
  case 0x5:
    need = 2;
    break;
  case 0x6:
    need = 3;
    break;
  case 0x7:
    need = 5;
    break;
  case 0x8:
    need = 9;
    break;
  case 0x9:
    need = 17;
    break;
  case 0xa:
  case 0xc:
  case 0xe:
    if (n < 2)
      return QS_ERR_PARSE;
    need = 2 + (size_t)p[1];
    break;
  case 0xb:
  case 0xd:
  case 0xf:
    if (n < 5)
      return QS_ERR_PARSE;
    need = 5 + (size_t)rd32(p + 1);
    if (need < 5)
      return QS_ERR_PARSE;
    break;
  default:
    return QS_ERR_PARSE;
  }
  if (need > n)
    return QS_ERR_PARSE;
  *len = need;
  return 0;
}

int hub_evmsg_skip(const uint8_t *p, size_t n, size_t *len) { return skip_depth(p, n, len, 0); }

/* Descriptor code of a section: smallulong, ulong or ulong0 forms. */
static int descriptor_code(const uint8_t *p, size_t n, uint64_t *code, size_t *dlen) {
  if (n >= 2 && p[0] == 0x53) {
    *code = p[1];
    *dlen = 2;
    return 0;
  }
  if (n >= 9 && p[0] == 0x80) {
    uint64_t v = 0;
    for (int i = 1; i <= 8; i++)
      v = v << 8 | p[i];
    *code = v;
    *dlen = 9;
    return 0;
  }
  if (n >= 1 && p[0] == 0x44) {
    *code = 0;
    *dlen = 1;
    return 0;
  }
  return QS_ERR_PARSE;
}

int hub_evmsg_next(const uint8_t *msg, size_t len, size_t *pos, hub_evmsg_section *sec) {
  if (*pos >= len)
    return 0;
  const uint8_t *p = msg + *pos;
  size_t n = len - *pos, total, dlen;
  uint64_t code;
  if (p[0] != 0x00 || hub_evmsg_skip(p, n, &total) < 0)
    return QS_ERR_PARSE;
  if (descriptor_code(p + 1, n - 1, &code, &dlen) < 0 || code < 0x70 || code > 0x78)
    return QS_ERR_PARSE;
  sec->code = (uint8_t)code;
  sec->start = p;
  sec->len = total;
  sec->value = p + 1 + dlen;
  sec->value_len = total - 1 - dlen;
  *pos += total;
  return 1;
}

/* Contents of a map value: pointer to the first key, byte length, count of
 * items (keys + values). A null value is an empty map. */
static int map_body(const uint8_t *v, size_t n, const uint8_t **body, size_t *blen,
                    uint32_t *count) {
  if (n >= 1 && v[0] == 0x40) {
    *body = v + 1;
    *blen = 0;
    *count = 0;
    return 0;
  }
  if (n >= 3 && v[0] == 0xc1) {
    if ((size_t)v[1] + 2 > n || v[1] < 1)
      return QS_ERR_PARSE;
    *count = v[2];
    *body = v + 3;
    *blen = (size_t)v[1] - 1;
    return 0;
  }
  if (n >= 9 && v[0] == 0xd1) {
    uint32_t sz = rd32(v + 1);
    if ((size_t)sz + 5 > n || sz < 4)
      return QS_ERR_PARSE;
    *count = rd32(v + 5);
    *body = v + 9;
    *blen = sz - 4;
    return 0;
  }
  return QS_ERR_PARSE;
}

/* Is the encoded value at p a symbol (or string) equal to s? */
static bool key_is(const uint8_t *p, size_t n, const char *s) {
  size_t sl = strlen(s);
  if (n >= 2 && (p[0] == 0xa3 || p[0] == 0xa1))
    return p[1] == sl && n >= 2 + sl && memcmp(p + 2, s, sl) == 0;
  if (n >= 5 && (p[0] == 0xb3 || p[0] == 0xb1))
    return rd32(p + 1) == sl && n >= 5 + sl && memcmp(p + 5, s, sl) == 0;
  return false;
}

static int string_value(const uint8_t *p, size_t n, const char **s, size_t *sl) {
  if (n >= 2 && (p[0] == 0xa1 || p[0] == 0xa3)) {
    *s = (const char *)p + 2;
    *sl = p[1];
    return 0;
  }
  if (n >= 5 && (p[0] == 0xb1 || p[0] == 0xb3)) {
    *s = (const char *)p + 5;
    *sl = rd32(p + 1);
    return 0;
  }
  return QS_ERR_PARSE;
}

static int find_pkey(const hub_evmsg_section *ma, const char **pk, size_t *pkl) {
  const uint8_t *body;
  size_t blen, pos = 0;
  uint32_t count;
  if (map_body(ma->value, ma->value_len, &body, &blen, &count) < 0 || count % 2)
    return QS_ERR_PARSE;
  for (uint32_t i = 0; i < count; i += 2) {
    size_t kl, vl;
    if (hub_evmsg_skip(body + pos, blen - pos, &kl) < 0 ||
        hub_evmsg_skip(body + pos + kl, blen - pos - kl, &vl) < 0)
      return QS_ERR_PARSE;
    if (key_is(body + pos, kl, "x-opt-partition-key") && body[pos + kl] != 0x40) {
      if (string_value(body + pos + kl, vl, pk, pkl) < 0)
        return QS_ERR_PARSE;
      if (*pkl > HUB_EVMSG_MAX_PKEY)
        return QS_ERR_TOOBIG;
    }
    pos += kl + vl;
  }
  return pos == blen ? 0 : QS_ERR_PARSE;
}

/* A data section whose binary holds an encoded message section. */
static int data_payload(const hub_evmsg_section *s, const uint8_t **p, size_t *n) {
  const uint8_t *v = s->value;
  if (s->value_len >= 2 && v[0] == 0xa0) {
    *p = v + 2;
    *n = v[1];
  } else if (s->value_len >= 5 && v[0] == 0xb0) {
    *p = v + 5;
    *n = rd32(v + 1);
  } else {
    return QS_ERR_PARSE;
  }
  return 0;
}

static bool looks_like_message(const uint8_t *p, size_t n) {
  return n >= 3 && p[0] == 0x00 && p[1] == 0x53 && p[2] >= 0x70 && p[2] <= 0x78;
}

int hub_evmsg_inspect(const uint8_t *msg, size_t len, hub_evmsg_info *out) {
  memset(out, 0, sizeof *out);
  size_t pos = 0, ndata = 0;
  bool body_seen = false, only_msgs = true;
  int last = 0, r;
  hub_evmsg_section s;
  while ((r = hub_evmsg_next(msg, len, &pos, &s)) == 1) {
    if (s.code < last && !(s.code == HUB_SEC_DATA && last == HUB_SEC_DATA))
      return QS_ERR_PARSE; /* sections out of order */
    if (s.code == HUB_SEC_MESSAGE_ANN) {
      int e = find_pkey(&s, &out->pkey, &out->pkey_len);
      if (e < 0)
        return e;
    }
    if (s.code >= HUB_SEC_DATA && s.code <= HUB_SEC_VALUE) {
      if (!body_seen)
        out->body_pos = (size_t)(s.start - msg);
      body_seen = true;
      if (s.code == HUB_SEC_DATA) {
        const uint8_t *p;
        size_t n;
        if (data_payload(&s, &p, &n) < 0)
          return QS_ERR_PARSE;
        ndata++;
        if (!looks_like_message(p, n))
          only_msgs = false;
      } else {
        only_msgs = false;
      }
    }
    last = s.code;
  }
  if (r < 0 || pos != len)
    return QS_ERR_PARSE;
  out->is_batch = body_seen && only_msgs && ndata > 0;
  out->n_events = out->is_batch ? ndata : 1;
  return 0;
}

int hub_evmsg_batch_next(const uint8_t *msg, size_t len, size_t *pos, const uint8_t **ev,
                         size_t *ev_len) {
  hub_evmsg_section s;
  int r = hub_evmsg_next(msg, len, pos, &s);
  if (r <= 0)
    return r;
  if (s.code == HUB_SEC_FOOTER)
    return 0;
  if (s.code != HUB_SEC_DATA || data_payload(&s, ev, ev_len) < 0)
    return QS_ERR_PARSE;
  return 1;
}

/* ---- encoding ---- */
typedef struct wbuf {
  uint8_t *p;
  size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = qs_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}
static void put8(wbuf *b, uint8_t v) { put(b, &v, 1); }
static void put32(wbuf *b, uint32_t v) {
  uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  put(b, t, 4);
}
static void put64(wbuf *b, uint8_t code, int64_t sv) {
  uint64_t v = (uint64_t)sv;
  uint8_t t[9] = {code};
  for (int i = 0; i < 8; i++)
    t[1 + i] = (uint8_t)(v >> (56 - 8 * i));
  put(b, t, 9);
}
static void put_str(wbuf *b, uint8_t small, const char *s, size_t n) {
  if (n < 256) {
    put8(b, small);
    put8(b, (uint8_t)n);
  } else {
    put8(b, (uint8_t)(small + 0x10));
    put32(b, (uint32_t)n);
  }
  put(b, s, n);
}
static void put_sym(wbuf *b, const char *s) { put_str(b, 0xa3, s, strlen(s)); }
static void put_decimal(wbuf *b, int64_t v) {
  char t[32];
  int n = snprintf(t, sizeof t, "%lld", (long long)v);
  put_str(b, 0xa1, t, (size_t)n);
}

/* Emit "00 53 code d1 size count" + body; count counts keys and values. */
static void put_map_section(wbuf *b, uint8_t code, const wbuf *body, uint32_t count) {
  const uint8_t hdr[3] = {0x00, 0x53, code};
  put(b, hdr, 3);
  put8(b, 0xd1);
  put32(b, (uint32_t)body->n + 4);
  put32(b, count);
  put(b, body->p, body->n);
}

static const char *const ours[] = {"x-opt-sequence-number", "x-opt-offset", "x-opt-enqueued-time",
                                   "x-opt-partition-key"};

static int merged_ma(const hub_evmsg_section *old, const hub_evmsg_annot *a, wbuf *out) {
  wbuf body = {0};
  uint32_t count = 0;
  put_sym(&body, ours[0]);
  put64(&body, 0x81, a->seq);
  put_sym(&body, ours[1]);
  put_decimal(&body, a->offset);
  put_sym(&body, ours[2]);
  put64(&body, 0x83, a->enqueued_ms);
  count = 6;
  if (a->pkey) {
    put_sym(&body, ours[3]);
    put_str(&body, 0xa1, a->pkey, a->pkey_len);
    count += 2;
  }
  if (old) {
    const uint8_t *ob;
    size_t blen, pos = 0;
    uint32_t ocount;
    if (map_body(old->value, old->value_len, &ob, &blen, &ocount) < 0 || ocount % 2) {
      free(body.p);
      return QS_ERR_PARSE;
    }
    for (uint32_t i = 0; i < ocount; i += 2) {
      size_t kl, vl;
      if (hub_evmsg_skip(ob + pos, blen - pos, &kl) < 0 ||
          hub_evmsg_skip(ob + pos + kl, blen - pos - kl, &vl) < 0) {
        free(body.p);
        return QS_ERR_PARSE;
      }
      bool replaced = false;
      for (size_t k = 0; k < 4; k++)
        if (key_is(ob + pos, kl, ours[k]))
          replaced = k < 3 || a->pkey;
      if (!replaced) {
        put(&body, ob + pos, kl + vl);
        count += 2;
      }
      pos += kl + vl;
    }
  }
  put_map_section(out, HUB_SEC_MESSAGE_ANN, &body, count);
  free(body.p);
  return 0;
}

uint8_t *hub_evmsg_annotate(const uint8_t *msg, size_t len, const hub_evmsg_annot *a,
                            size_t *out_len, int *err) {
  wbuf out = {0};
  size_t pos = 0;
  hub_evmsg_section s, ma = {0};
  bool have_ma = false;
  const uint8_t *rest = msg + len; /* first section after the MA position */
  int r;
  *err = 0;
  /* Pass 1: header copied, DA dropped, MA remembered, rest starts at >= 0x73. */
  while ((r = hub_evmsg_next(msg, len, &pos, &s)) == 1) {
    if (s.code == HUB_SEC_HEADER) {
      put(&out, s.start, s.len);
    } else if (s.code == HUB_SEC_MESSAGE_ANN) {
      ma = s;
      have_ma = true;
    } else if (s.code >= HUB_SEC_PROPERTIES) {
      rest = s.start;
      break;
    }
  }
  if (r < 0) {
    free(out.p);
    *err = QS_ERR_PARSE;
    return NULL;
  }
  wbuf da = {0};
  put_sym(&da, "last_enqueued_sequence_number");
  put64(&da, 0x81, a->last_seq);
  put_sym(&da, "last_enqueued_offset");
  put_decimal(&da, a->last_offset);
  put_sym(&da, "last_enqueued_time_utc");
  put64(&da, 0x83, a->last_enqueued_ms);
  put_sym(&da, "runtime_info_retrieval_time_utc");
  put64(&da, 0x83, a->now_ms);
  put_map_section(&out, HUB_SEC_DELIVERY_ANN, &da, 8);
  free(da.p);
  if ((r = merged_ma(have_ma ? &ma : NULL, a, &out)) < 0) {
    free(out.p);
    *err = r;
    return NULL;
  }
  put(&out, rest, (size_t)(msg + len - rest));
  *out_len = out.n;
  return out.p;
}
