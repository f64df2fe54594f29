/* http_client.c — libcurl multi on libuv: CURLMOPT_SOCKETFUNCTION maps curl's sockets to
 * uv_poll handles, CURLMOPT_TIMERFUNCTION to one uv_timer; finished transfers are collected
 * with curl_multi_info_read after every socket action. */
#include "qs/http_client.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "qs/buf.h"
#include "qs/error.h"

typedef struct http_req {
  struct http_req *prev, *next;
  qs_http *h;
  CURL *easy;
  struct curl_slist *hdrs;
  qs_buf body;
  bool too_big;
  char etag[256], last_modified[128], retry_after[64], content_type[128];
  char errbuf[CURL_ERROR_SIZE];
  qs_http_cb cb;
  void *ud;
} http_req;

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  qs_http *h;
} sock_ctx;

struct qs_http {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  qs_http_opts o;
  char ua[128];
  http_req *reqs;
  size_t pending;
  bool closing;
  int handles_open;
  void (*close_cb)(void *);
  void *close_ud;
};

static void check_done(qs_http *h);

static void finish(http_req *r, CURLcode code) {
  qs_http *h = r->h;
  qs_http_response res;
  memset(&res, 0, sizeof res);
  double total = 0;
  curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
  res.total_s = total;
  if (code == CURLE_OK) {
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
  } else {
    res.error = code == CURLE_OPERATION_TIMEDOUT                ? QS_ERR_TIMEOUT
                : r->too_big || code == CURLE_FILESIZE_EXCEEDED ? QS_ERR_TOOBIG
                : code == CURLE_ABORTED_BY_CALLBACK             ? QS_ERR_CLOSED
                                                                : QS_ERR_IO;
    res.error_text = r->too_big     ? "response larger than the limit"
                     : r->errbuf[0] ? r->errbuf
                                    : curl_easy_strerror(code);
  }
  qs_buf_append(&r->body, "", 1); /* NUL */
  r->body.len--;
  res.body = r->body.p;
  res.body_len = r->body.len;
  res.etag = r->etag;
  res.last_modified = r->last_modified;
  res.retry_after = r->retry_after;
  res.content_type = r->content_type;
  if (r->prev)
    r->prev->next = r->next;
  else
    h->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  h->pending--;
  curl_multi_remove_handle(h->multi, r->easy);
  if (r->cb)
    r->cb(&res, r->ud);
  curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->hdrs);
  qs_buf_free(&r->body);
  free(r);
}

static void check_multi_info(qs_http *h) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    http_req *r = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (r)
      finish(r, m->data.result);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sock_ctx *s = p->data;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  qs_http *h = s->h;
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  check_multi_info(h);
}

static void on_poll_closed(uv_handle_t *hd) {
  sock_ctx *s = hd->data;
  qs_http *h = s->h;
  free(s);
  h->handles_open--;
  check_done(h);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  qs_http *h = userp;
  sock_ctx *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      curl_multi_assign(h->multi, fd, NULL);
      uv_close((uv_handle_t *)&s->poll, on_poll_closed);
    }
    return 0;
  }
  if (!s) {
    s = qs_xcalloc(1, sizeof *s);
    s->fd = fd;
    s->h = h;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    h->handles_open++;
    curl_multi_assign(h->multi, fd, s);
  }
  int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  qs_http *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(h);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  qs_http *h = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
  http_req *r = ud;
  size_t len = sz * n;
  if (r->body.len + len > r->h->o.max_response_bytes) {
    r->too_big = true;
    return 0; /* aborts the transfer */
  }
  qs_buf_append(&r->body, p, len);
  return len;
}

static void header_value(const char *line, size_t len, size_t name_len, char *out, size_t cap) {
  const char *v = line + name_len;
  size_t vl = len - name_len;
  while (vl && (*v == ' ' || *v == '\t'))
    v++, vl--;
  while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
    vl--;
  if (vl >= cap)
    vl = cap - 1;
  memcpy(out, v, vl);
  out[vl] = 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  http_req *r = ud;
  size_t len = sz * n;
  static const struct {
    const char *name;
    size_t off, cap;
  } want[] = {
      {"etag:", offsetof(http_req, etag), sizeof(((http_req *)0)->etag)},
      {"last-modified:", offsetof(http_req, last_modified), sizeof(((http_req *)0)->last_modified)},
      {"retry-after:", offsetof(http_req, retry_after), sizeof(((http_req *)0)->retry_after)},
      {"content-type:", offsetof(http_req, content_type), sizeof(((http_req *)0)->content_type)},
  };
  if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (redirect, 100): reset */
    r->etag[0] = r->last_modified[0] = r->retry_after[0] = r->content_type[0] = 0;
    return len;
  }
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    size_t nl = strlen(want[i].name);
    if (len > nl && strncasecmp(p, want[i].name, nl) == 0)
      header_value(p, len, nl, (char *)r + want[i].off, want[i].cap);
  }
  return len;
}

int qs_http_init(qs_http **out, uv_loop_t *loop, const qs_http_opts *opts) {
  static bool global;
  if (!global) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    global = true;
  }
  qs_http *h = qs_xcalloc(1, sizeof *h);
  h->loop = loop;
  if (opts)
    h->o = *opts;
  snprintf(h->ua, sizeof h->ua, "%s",
           h->o.user_agent && *h->o.user_agent ? h->o.user_agent : "quakestream/" QS_VERSION);
  h->o.user_agent = h->ua;
  if (!h->o.max_response_bytes)
    h->o.max_response_bytes = 64u * 1024u * 1024u;
  if (!h->o.connect_timeout_ms)
    h->o.connect_timeout_ms = 10000;
  h->multi = curl_multi_init();
  if (!h->multi)
    QS_FATAL("curl_multi_init failed");
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  h->handles_open = 1;
  *out = h;
  return 0;
}

int qs_http_request(qs_http *h, const qs_http_req *req, qs_http_cb cb, void *ud) {
  if (!h || !req || !req->url ||
      (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0))
    return QS_ERR_INVALID;
  if (h->closing)
    return QS_ERR_CLOSED;
  http_req *r = qs_xcalloc(1, sizeof *r);
  r->h = h;
  r->cb = cb;
  r->ud = ud;
  r->easy = curl_easy_init();
  if (!r->easy)
    QS_FATAL("curl_easy_init failed");
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_USERAGENT, h->o.user_agent);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* gzip/deflate as curl supports */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->o.connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : 30000));
  for (const char *const *hd = req->headers; hd && *hd; hd++)
    r->hdrs = curl_slist_append(r->hdrs, *hd);
  if (r->hdrs)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
  const char *method = req->method && *req->method ? req->method : "GET";
  if (strcmp(method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (req->body || strcmp(method, "POST") == 0) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
      curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? (const char *)req->body : "");
    }
  }
  r->next = h->reqs;
  if (h->reqs)
    h->reqs->prev = r;
  h->reqs = r;
  h->pending++;
  if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
    QS_FATAL("curl_multi_add_handle failed");
  return 0;
}

size_t qs_http_pending(const qs_http *h) { return h->pending; }

static void check_done(qs_http *h) {
  if (!h->closing || h->handles_open > 0)
    return;
  void (*cb)(void *) = h->close_cb;
  void *ud = h->close_ud;
  curl_multi_cleanup(h->multi);
  free(h);
  if (cb)
    cb(ud);
}

static void on_timer_closed(uv_handle_t *hd) {
  qs_http *h = hd->data;
  h->handles_open--;
  check_done(h);
}

void qs_http_close(qs_http *h, void (*cb)(void *ud), void *ud) {
  if (!h || h->closing)
    return;
  h->closing = true;
  h->close_cb = cb;
  h->close_ud = ud;
  while (h->reqs)
    finish(h->reqs, CURLE_ABORTED_BY_CALLBACK); /* removing the handle closes its sockets */
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}
