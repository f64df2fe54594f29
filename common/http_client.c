/* http_client.c — libcurl multi on libuv (see http_client.h).
 *
 * Invariants: every easy handle in the multi handle has a live qs_http_req as its private
 * pointer; a socket curl watches has exactly one poll context (assigned with curl_multi_assign)
 * until curl says CURL_POLL_REMOVE; curl_multi_socket_action is never called from inside a
 * curl callback (the timer callback defers a 0 ms timeout to the loop).
 */
#include "qs/http_client.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "qs/buf.h"
#include "qs/error.h"

#define HEADERS_MAX (64 * 1024)

typedef struct qs_http_req {
  qs_http_client *c;
  CURL *easy;
  struct curl_slist *hdrs;
  char *body;
  qs_buf resp_body, resp_headers;
  size_t max_response;
  bool too_big;
  qs_http_cb cb;
  void *ud;
  char errbuf[CURL_ERROR_SIZE];
  struct qs_http_req *next, *prev;
} qs_http_req;

typedef struct poll_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  qs_http_client *c;
} poll_ctx;

struct qs_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  qs_http_req *reqs; /* in flight */
  size_t inflight, max_inflight;
  char user_agent[128];
  int open_handles; /* timer + polls */
  bool closing;
  void (*close_cb)(void *ud);
  void *close_ud;
};

static void check_done(qs_http_client *c);

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  qs_http_req *r = ud;
  size_t len = size * n;
  if (r->resp_body.len + len > r->max_response) {
    r->too_big = true;
    return 0; /* aborts the transfer */
  }
  qs_buf_append(&r->resp_body, p, len);
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  qs_http_req *r = ud;
  size_t len = size * n;
  /* A new status line (redirect, 100-continue) starts a new header block. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
    qs_buf_reset(&r->resp_headers);
  if (r->resp_headers.len + len <= HEADERS_MAX)
    qs_buf_append(&r->resp_headers, p, len);
  return len;
}

static void maybe_closed(qs_http_client *c) {
  if (c->closing && c->open_handles == 0) {
    void (*cb)(void *) = c->close_cb;
    void *ud = c->close_ud;
    free(c);
    if (cb)
      cb(ud);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  qs_http_client *c = h->data;
  if ((void *)h != (void *)&c->timer)
    free(h); /* a poll_ctx: the poll is its first member */
  c->open_handles--;
  maybe_closed(c);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poll_ctx *p = (poll_ctx *)h;
  qs_http_client *c = p->c;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(c->multi, p->fd, flags, &running);
  check_done(c);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)easy;
  qs_http_client *c = userp;
  poll_ctx *p = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (p) {
      uv_poll_stop(&p->poll);
      p->poll.data = c;
      uv_close((uv_handle_t *)&p->poll, on_handle_closed);
      curl_multi_assign(c->multi, s, NULL);
    }
    return 0;
  }
  if (!p) {
    p = qs_xcalloc(1, sizeof *p);
    p->fd = s;
    p->c = c;
    if (uv_poll_init_socket(c->loop, &p->poll, s) != 0) {
      free(p);
      return -1;
    }
    c->open_handles++;
    curl_multi_assign(c->multi, s, p);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    events |= UV_WRITABLE;
  uv_poll_start(&p->poll, events, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  qs_http_client *c = t->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  qs_http_client *c = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0); /* 0: next loop turn */
  return 0;
}

static void req_unlink(qs_http_client *c, qs_http_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    c->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  c->inflight--;
}

static void req_free(qs_http_req *r) {
  curl_slist_free_all(r->hdrs);
  free(r->body);
  qs_buf_free(&r->resp_body);
  qs_buf_free(&r->resp_headers);
  free(r);
}

static void finish(qs_http_client *c, qs_http_req *r, CURLcode code) {
  qs_http_response res;
  memset(&res, 0, sizeof res);
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &res.total_seconds);
  res.error_text = "";
  if (r->too_big) {
    res.error = QS_ERR_TOOBIG;
    res.error_text = "response body over the limit";
  } else if (code == CURLE_OPERATION_TIMEDOUT) {
    res.error = QS_ERR_TIMEOUT;
    res.error_text = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
  } else if (code != CURLE_OK) {
    res.error = QS_ERR_IO;
    res.error_text = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
  } else {
    res.status = (int)status;
  }
  qs_buf_append(&r->resp_body, "", 1); /* NUL for callers that want text */
  qs_buf_append(&r->resp_headers, "", 1);
  res.body = r->resp_body.p;
  res.body_len = r->resp_body.len - 1;
  res.headers = r->resp_headers.p;
  res.headers_len = r->resp_headers.len - 1;
  curl_multi_remove_handle(c->multi, r->easy);
  curl_easy_cleanup(r->easy);
  req_unlink(c, r);
  r->cb(&res, r->ud);
  req_free(r);
}

static void check_done(qs_http_client *c) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(c->multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    qs_http_req *r = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    CURLcode code = m->data.result;
    finish(c, r, code);
  }
}

int qs_http_client_init(qs_http_client **out, uv_loop_t *loop, const qs_http_client_opts *opts) {
  static bool global_done;
  if (!global_done) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return QS_ERR_IO;
    global_done = true;
  }
  qs_http_client *c = qs_xcalloc(1, sizeof *c);
  c->loop = loop;
  c->max_inflight = opts && opts->max_inflight ? opts->max_inflight : 64;
  snprintf(c->user_agent, sizeof c->user_agent, "%s",
           opts && opts->user_agent ? opts->user_agent : "quakestream");
  c->multi = curl_multi_init();
  if (!c->multi) {
    free(c);
    return QS_ERR_NOMEM;
  }
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  *out = c;
  return 0;
}

int qs_http_request_start(qs_http_client *c, const qs_http_request *req, qs_http_cb cb, void *ud) {
  if (!c || !req || !req->url || !cb ||
      (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0))
    return QS_ERR_INVALID;
  if (c->closing)
    return QS_ERR_CLOSED;
  if (c->inflight >= c->max_inflight)
    return QS_ERR_FULL;
  qs_http_req *r = qs_xcalloc(1, sizeof *r);
  r->c = c;
  r->cb = cb;
  r->ud = ud;
  r->max_response = req->max_response ? req->max_response : 1024 * 1024;
  r->easy = curl_easy_init();
  if (!r->easy) {
    free(r);
    return QS_ERR_NOMEM;
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : 30000));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  const char *method = req->method ? req->method : "GET";
  if (req->body) {
    r->body = qs_xmalloc(req->body_len + 1);
    memcpy(r->body, req->body, req->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  }
  if (strcmp(method, "GET") != 0 && !(strcmp(method, "POST") == 0 && req->body))
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  /* No "Expect: 100-continue" round trip for small bodies. */
  r->hdrs = curl_slist_append(r->hdrs, "Expect:");
  for (size_t i = 0; i < req->nheaders; i++) {
    qs_buf h = QS_BUF_INIT;
    qs_buf_printf(&h, "%s: %s", req->headers[i].name, req->headers[i].value);
    if (strpbrk(h.p, "\r\n")) {
      qs_buf_free(&h);
      curl_slist_free_all(r->hdrs);
      curl_easy_cleanup(e);
      free(r->body);
      free(r);
      return QS_ERR_INVALID;
    }
    r->hdrs = curl_slist_append(r->hdrs, h.p);
    qs_buf_free(&h);
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
  r->next = c->reqs;
  if (c->reqs)
    c->reqs->prev = r;
  c->reqs = r;
  c->inflight++;
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
    req_unlink(c, r);
    curl_easy_cleanup(e);
    req_free(r);
    return QS_ERR_IO;
  }
  return 0;
}

size_t qs_http_client_inflight(const qs_http_client *c) { return c->inflight; }

void qs_http_client_close(qs_http_client *c, void (*cb)(void *ud), void *ud) {
  if (c->closing)
    return;
  c->closing = true;
  c->close_cb = cb;
  c->close_ud = ud;
  while (c->reqs) {
    qs_http_req *r = c->reqs;
    qs_http_response res;
    memset(&res, 0, sizeof res);
    res.error = QS_ERR_CLOSED;
    res.error_text = "client closed";
    res.body = "";
    res.headers = "";
    curl_multi_remove_handle(c->multi, r->easy);
    curl_easy_cleanup(r->easy);
    req_unlink(c, r);
    r->cb(&res, r->ud);
    req_free(r);
  }
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

int qs_http_header_get(const char *headers, size_t len, const char *name, char *buf, size_t cap) {
  size_t nlen = strlen(name);
  const char *p = headers, *end = headers + len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
      eol = end;
    if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
      const char *v = p + nlen + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      const char *ve = eol;
      while (ve > v && isspace((unsigned char)ve[-1]))
        ve--;
      if (cap == 0)
        return QS_ERR_TOOBIG;
      size_t n = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
      memcpy(buf, v, n);
      buf[n] = '\0';
      return 0;
    }
    p = eol + 1;
  }
  return QS_ERR_NOTFOUND;
}
