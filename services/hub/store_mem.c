/* store_mem.c — in-memory hub_store for tests (never used by the service).
 *
 * Appends are queued and become durable only when the test calls
 * hub_store_mem_flush(), so tests decide exactly when "durable" happens.
 * Offsets are byte positions: a record's offset is the sum of the payload
 * lengths before it in its partition. Everything is freed by _free.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qs/error.h"

typedef struct mem_rec {
  int64_t offset, enq_ms;
  char *pkey;
  size_t pkey_len;
  uint8_t *payload;
  size_t len;
} mem_rec;

typedef struct mem_part {
  mem_rec *recs;
  size_t n, cap;
  int64_t next_offset;
} mem_part;

typedef struct mem_hub {
  char *name;
  int nparts;
  mem_part *parts;
} mem_hub;

typedef struct mem_pending {
  struct mem_pending *next;
  mem_hub *hub;
  int part;
  mem_rec *recs;
  size_t n;
  hub_append_cb cb;
  void *arg;
} mem_pending;

struct hub_store_mem {
  mem_hub *hubs;
  size_t nhubs;
  mem_pending *head, *tail;
  int64_t now_ms;
  hub_newdata_cb listener;
  void *listener_arg;
};

hub_store_mem *hub_store_mem_new(const char *const *hubs, const int *parts, size_t n) {
  hub_store_mem *m = qs_xcalloc(1, sizeof *m);
  m->hubs = qs_xcalloc(n ? n : 1, sizeof *m->hubs);
  m->nhubs = n;
  for (size_t i = 0; i < n; i++) {
    m->hubs[i].name = qs_xstrdup(hubs[i]);
    m->hubs[i].nparts = parts[i];
    m->hubs[i].parts = qs_xcalloc((size_t)parts[i], sizeof(mem_part));
  }
  return m;
}

static void rec_free(mem_rec *r) {
  free(r->pkey);
  free(r->payload);
}

void hub_store_mem_free(hub_store_mem *m) {
  if (!m)
    return;
  for (mem_pending *p = m->head, *nx; p; p = nx) {
    nx = p->next;
    for (size_t i = 0; i < p->n; i++)
      rec_free(&p->recs[i]);
    free(p->recs);
    free(p);
  }
  for (size_t i = 0; i < m->nhubs; i++) {
    for (int j = 0; j < m->hubs[i].nparts; j++) {
      mem_part *pt = &m->hubs[i].parts[j];
      for (size_t k = 0; k < pt->n; k++)
        rec_free(&pt->recs[k]);
      free(pt->recs);
    }
    free(m->hubs[i].parts);
    free(m->hubs[i].name);
  }
  free(m->hubs);
  free(m);
}

static mem_part *find_part(hub_store_mem *m, const char *hub, int part, mem_hub **hub_out) {
  for (size_t i = 0; i < m->nhubs; i++) {
    if (strcasecmp(m->hubs[i].name, hub) == 0) {
      if (part < 0 || part >= m->hubs[i].nparts)
        return NULL;
      if (hub_out)
        *hub_out = &m->hubs[i];
      return &m->hubs[i].parts[part];
    }
  }
  return NULL;
}

static int mem_append(void *ctx, const char *hub, int part, const hub_record *recs, size_t n,
                      hub_append_cb cb, void *arg) {
  hub_store_mem *m = ctx;
  mem_hub *h = NULL;
  if (!find_part(m, hub, part, &h))
    return QS_ERR_NOTFOUND;
  if (n == 0 || !cb)
    return QS_ERR_INVALID;
  mem_pending *p = qs_xcalloc(1, sizeof *p);
  p->hub = h;
  p->part = part;
  p->n = n;
  p->cb = cb;
  p->arg = arg;
  p->recs = qs_xcalloc(n, sizeof *p->recs);
  for (size_t i = 0; i < n; i++) {
    mem_rec *r = &p->recs[i];
    if (recs[i].pkey) {
      r->pkey = qs_xmalloc(recs[i].pkey_len + 1);
      memcpy(r->pkey, recs[i].pkey, recs[i].pkey_len);
      r->pkey[recs[i].pkey_len] = 0;
      r->pkey_len = recs[i].pkey_len;
    }
    r->payload = qs_xmalloc(recs[i].len ? recs[i].len : 1);
    memcpy(r->payload, recs[i].payload, recs[i].len);
    r->len = recs[i].len;
  }
  if (m->tail)
    m->tail->next = p;
  else
    m->head = p;
  m->tail = p;
  return 0;
}

static int complete(hub_store_mem *m, int code) {
  int done = 0;
  while (m->head) {
    mem_pending *p = m->head;
    m->head = p->next;
    if (!m->head)
      m->tail = NULL;
    int64_t first = -1;
    if (code == 0) {
      mem_part *pt = &p->hub->parts[p->part];
      first = (int64_t)pt->n;
      if (pt->n + p->n > pt->cap) {
        pt->cap = (pt->n + p->n) * 2;
        pt->recs = qs_xrealloc(pt->recs, pt->cap * sizeof *pt->recs);
      }
      for (size_t i = 0; i < p->n; i++) {
        p->recs[i].offset = pt->next_offset;
        p->recs[i].enq_ms = m->now_ms;
        pt->next_offset += (int64_t)p->recs[i].len;
        pt->recs[pt->n++] = p->recs[i];
      }
    } else {
      for (size_t i = 0; i < p->n; i++)
        rec_free(&p->recs[i]);
    }
    free(p->recs);
    char hubname[256];
    snprintf(hubname, sizeof hubname, "%s", p->hub->name);
    int part = p->part;
    p->cb(p->arg, code, first);
    free(p);
    if (code == 0 && m->listener)
      m->listener(m->listener_arg, hubname, part);
    done++;
  }
  return done;
}

int hub_store_mem_flush(hub_store_mem *m) { return complete(m, 0); }
int hub_store_mem_fail(hub_store_mem *m, int code) { return complete(m, code); }

static int mem_read(void *ctx, const char *hub, int part, int64_t from_seq, size_t max_n,
                    size_t max_bytes, hub_stored *out, size_t *n_out) {
  hub_store_mem *m = ctx;
  mem_part *pt = find_part(m, hub, part, NULL);
  *n_out = 0;
  if (!pt)
    return QS_ERR_NOTFOUND;
  if (from_seq < 0)
    return QS_ERR_RANGE;
  size_t bytes = 0;
  for (int64_t s = from_seq; s < (int64_t)pt->n && *n_out < max_n; s++) {
    mem_rec *r = &pt->recs[s];
    if (*n_out > 0 && bytes + r->len > max_bytes)
      break;
    bytes += r->len;
    out[*n_out] = (hub_stored){s, r->offset, r->enq_ms, r->pkey, r->pkey_len, r->payload, r->len};
    (*n_out)++;
  }
  return 0;
}

static int mem_seek_offset(void *ctx, const char *hub, int part, int64_t offset, bool inclusive,
                           int64_t *seq_out) {
  mem_part *pt = find_part(ctx, hub, part, NULL);
  if (!pt)
    return QS_ERR_NOTFOUND;
  size_t s = 0;
  while (s < pt->n && (inclusive ? pt->recs[s].offset < offset : pt->recs[s].offset <= offset))
    s++;
  *seq_out = (int64_t)s;
  return 0;
}

static int mem_seek_seq(void *ctx, const char *hub, int part, int64_t seq, bool inclusive,
                        int64_t *seq_out) {
  mem_part *pt = find_part(ctx, hub, part, NULL);
  if (!pt)
    return QS_ERR_NOTFOUND;
  int64_t s = inclusive ? seq : seq + 1;
  if (s < 0)
    s = 0;
  if (s > (int64_t)pt->n)
    s = (int64_t)pt->n;
  *seq_out = s;
  return 0;
}

static int mem_seek_time(void *ctx, const char *hub, int part, int64_t ms, int64_t *seq_out) {
  mem_part *pt = find_part(ctx, hub, part, NULL);
  if (!pt)
    return QS_ERR_NOTFOUND;
  size_t s = 0;
  while (s < pt->n && pt->recs[s].enq_ms <= ms)
    s++;
  *seq_out = (int64_t)s;
  return 0;
}

static int mem_info(void *ctx, const char *hub, int part, hub_part_info *out) {
  mem_part *pt = find_part(ctx, hub, part, NULL);
  if (!pt)
    return QS_ERR_NOTFOUND;
  if (pt->n == 0) {
    *out = (hub_part_info){-1, -1, -1, 0, true};
  } else {
    mem_rec *r = &pt->recs[pt->n - 1];
    *out = (hub_part_info){0, (int64_t)pt->n - 1, r->offset, r->enq_ms, false};
  }
  return 0;
}

static void mem_set_listener(void *ctx, hub_newdata_cb cb, void *arg) {
  hub_store_mem *m = ctx;
  m->listener = cb;
  m->listener_arg = arg;
}

hub_store hub_store_mem_vtable(hub_store_mem *m) {
  return (hub_store){
      m,        mem_append,      mem_read, mem_seek_offset, mem_seek_seq, mem_seek_time,
      mem_info, mem_set_listener};
}

void hub_store_mem_set_time(hub_store_mem *m, int64_t now_ms) { m->now_ms = now_ms; }

size_t hub_store_mem_count(hub_store_mem *m, const char *hub, int part) {
  mem_part *pt = find_part(m, hub, part, NULL);
  return pt ? pt->n : 0;
}
