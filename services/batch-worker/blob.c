/* blob.c — Azure Blob REST client (see blob.h).
 *
 * List Blobs is parsed with a small scanner for <Name>, <Content-Length> and <NextMarker>, which
 * is all the response schema guarantees we need; XML entities in names are decoded.
 */
#include "blob.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "qs/error.h"

#define LIST_MAX_BYTES (16u << 20) /* one listing page */

int bw_blob_is_url(const char *s) {
  return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0 ||
         strncmp(s, "abfs://", 7) == 0 || strncmp(s, "abfss://", 8) == 0;
}

static int is_ip_host(const char *host, size_t n) {
  if (n == 9 && strncmp(host, "localhost", 9) == 0)
    return 1;
  if (n > 0 && host[0] == '[')
    return 1;
  for (size_t i = 0; i < n; i++)
    if (!isdigit((unsigned char)host[i]) && host[i] != '.')
      return 0;
  return n > 0;
}

static int copy(char *dst, size_t cap, const char *src, size_t n) {
  if (n >= cap)
    return -1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return 0;
}

int bw_blob_init(bw_blob *b, const char *url, const char *account_key, const char *sas, char *err,
                 size_t errlen) {
  memset(b, 0, sizeof *b);
  b->page_size = 5000;
  b->max_blob_bytes = (size_t)1 << 30;
  b->timeout_s = 300;
  char tmp[2048];
  const char *u = url;
  /* abfs[s]://container@account.dfs.core.windows.net/path -> the account's blob endpoint. */
  if (strncmp(url, "abfs://", 7) == 0 || strncmp(url, "abfss://", 8) == 0) {
    const char *rest = strstr(url, "://") + 3;
    const char *at = strchr(rest, '@');
    const char *dot = at ? strchr(at, '.') : NULL;
    const char *slash = at ? strchr(at, '/') : NULL;
    if (!at || !dot || (slash && slash < dot)) {
      qs_set_reason(err, errlen, "%s: expected abfss://<container>@<account>.dfs.core.windows.net",
                    url);
      return QS_ERR_INVALID;
    }
    int n = snprintf(tmp, sizeof tmp, "https://%.*s.blob.core.windows.net/%.*s%s",
                     (int)(dot - at - 1), at + 1, (int)(at - rest), rest, slash ? slash : "");
    if (n < 0 || (size_t)n >= sizeof tmp) {
      qs_set_reason(err, errlen, "source URL too long");
      return QS_ERR_INVALID;
    }
    u = tmp;
  }
  if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
    qs_set_reason(err, errlen, "%s: not an http(s) or abfs(s) URL", url);
    return QS_ERR_INVALID;
  }
  const char *host = strstr(u, "://") + 3;
  const char *path = host + strcspn(host, "/?");
  const char *query = strchr(path, '?');
  size_t hostport_len = (size_t)(path - host);
  size_t host_len = hostport_len;
  if (host[0] != '[') {
    const char *colon = memchr(host, ':', hostport_len);
    if (colon)
      host_len = (size_t)(colon - host);
  }
  if (host_len == 0 || copy(b->base, sizeof b->base, u, (size_t)(path - u))) {
    qs_set_reason(err, errlen, "%s: bad host", url);
    return QS_ERR_INVALID;
  }
  size_t path_len = query ? (size_t)(query - path) : strlen(path);
  char p[1600];
  if (copy(p, sizeof p, path, path_len)) {
    qs_set_reason(err, errlen, "%s: path too long", url);
    return QS_ERR_INVALID;
  }
  char *seg = p[0] == '/' ? p + 1 : p;
  char *container;
  if (is_ip_host(host, host_len)) {
    char *s = strchr(seg, '/');
    if (!s || copy(b->account, sizeof b->account, seg, (size_t)(s - seg))) {
      qs_set_reason(err, errlen, "%s: path-style URL needs /<account>/<container>", url);
      return QS_ERR_INVALID;
    }
    container = s + 1;
  } else {
    const char *dot = memchr(host, '.', host_len);
    if (!dot || copy(b->account, sizeof b->account, host, (size_t)(dot - host))) {
      qs_set_reason(err, errlen, "%s: host must be <account>.<endpoint>", url);
      return QS_ERR_INVALID;
    }
    container = seg;
  }
  char *cslash = strchr(container, '/');
  const char *prefix = "";
  if (cslash) {
    *cslash = '\0';
    prefix = cslash + 1;
  }
  if (!container[0] || strlen(container) > 63) {
    qs_set_reason(err, errlen, "%s: no container name", url);
    return QS_ERR_INVALID;
  }
  int n = is_ip_host(host, host_len)
              ? snprintf(b->path_base, sizeof b->path_base, "/%s/%s", b->account, container)
              : snprintf(b->path_base, sizeof b->path_base, "/%s", container);
  if (n < 0 || (size_t)n >= sizeof b->path_base ||
      copy(b->prefix, sizeof b->prefix, prefix, strlen(prefix))) {
    qs_set_reason(err, errlen, "%s: too long", url);
    return QS_ERR_INVALID;
  }
  const char *s = (sas && sas[0]) ? sas : (query ? query + 1 : "");
  if (s[0] == '?')
    s++;
  if (copy(b->sas, sizeof b->sas, s, strlen(s))) {
    qs_set_reason(err, errlen, "SAS token too long");
    return QS_ERR_INVALID;
  }
  if (account_key && account_key[0]) {
    size_t kl = strlen(account_key);
    unsigned char dec[256];
    if (kl > 4 * sizeof b->key / 3 + 4 || kl % 4 != 0) {
      qs_set_reason(err, errlen, "BLOB_ACCOUNT_KEY: not a base64 key");
      return QS_ERR_INVALID;
    }
    int dl = EVP_DecodeBlock(dec, (const unsigned char *)account_key, (int)kl);
    if (dl < 0) {
      qs_set_reason(err, errlen, "BLOB_ACCOUNT_KEY: not a base64 key");
      return QS_ERR_INVALID;
    }
    /* EVP_DecodeBlock counts '=' padding as zero bytes. */
    if (kl >= 1 && account_key[kl - 1] == '=')
      dl--;
    if (kl >= 2 && account_key[kl - 2] == '=')
      dl--;
    if (dl <= 0 || (size_t)dl > sizeof b->key) {
      qs_set_reason(err, errlen, "BLOB_ACCOUNT_KEY: not a base64 key");
      return QS_ERR_INVALID;
    }
    memcpy(b->key, dec, (size_t)dl);
    b->key_len = (size_t)dl;
  }
  b->curl = curl_easy_init();
  if (!b->curl)
    QS_FATAL("curl_easy_init failed");
  return 0;
}

void bw_blob_free(bw_blob *b) {
  if (b->curl)
    curl_easy_cleanup(b->curl);
  memset(b->key, 0, sizeof b->key);
  b->curl = NULL;
}

void bw_blob_escape(qs_buf *out, const char *s, int slash_too) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !slash_too)) {
      qs_buf_append(out, s, 1);
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      qs_buf_append(out, e, 3);
    }
  }
}

void bw_blob_sign(const unsigned char *key, size_t key_len, const char *verb,
                  const char *content_length, const char *content_type, const char *x_ms_headers,
                  const char *account, const char *path, const char *query_canon, char *out,
                  size_t cap) {
  qs_buf s = QS_BUF_INIT;
  /* VERB, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since, If-Match,
   * If-None-Match, If-Unmodified-Since, Range; then x-ms-* headers and the resource. */
  qs_buf_printf(&s, "%s\n\n\n%s\n\n%s\n\n\n\n\n\n\n%s/%s%s%s", verb, content_length, content_type,
                x_ms_headers, account, path, query_canon);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned maclen = 0;
  HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)s.p, s.len, mac, &maclen);
  qs_buf_free(&s);
  if (cap >= 64)
    EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
  else if (cap)
    out[0] = '\0';
}

typedef struct {
  qs_buf *buf;
  size_t max;
  int too_big;
} sink;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  sink *s = ud;
  size_t len = sz * n;
  if (s->buf->len + len > s->max) {
    s->too_big = 1;
    return 0;
  }
  qs_buf_append(s->buf, p, len);
  return len;
}

/* query: list of (name, value) pairs, NULL-terminated, already in canonical (sorted) order. */
static int request(bw_blob *b, const char *verb, const char *blob_name, const char *const *query,
                   const void *body, size_t body_len, qs_buf *out, size_t max, char *err,
                   size_t errlen) {
  qs_buf path = QS_BUF_INIT, url = QS_BUF_INIT, canon = QS_BUF_INIT;
  bw_blob_escape(&path, b->path_base, 0);
  if (blob_name) {
    qs_buf_puts(&path, "/");
    bw_blob_escape(&path, blob_name, 0);
  }
  qs_buf_printf(&url, "%s%s", b->base, path.p);
  char sep = '?';
  for (size_t i = 0; query && query[i]; i += 2) {
    qs_buf_printf(&url, "%c%s=", sep, query[i]);
    bw_blob_escape(&url, query[i + 1], 1);
    qs_buf_printf(&canon, "\n%s:%s", query[i], query[i + 1]);
    sep = '&';
  }
  if (b->sas[0] && !b->key_len)
    qs_buf_printf(&url, "%c%s", sep, b->sas);

  char date[64];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  int put = strcmp(verb, "PUT") == 0;
  char xms[256];
  snprintf(xms, sizeof xms, "%sx-ms-date:%s\nx-ms-version:%s\n",
           put ? "x-ms-blob-type:BlockBlob\n" : "", date, BW_BLOB_VERSION);

  struct curl_slist *hdr = NULL;
  char line[512];
  snprintf(line, sizeof line, "x-ms-date: %s", date);
  hdr = curl_slist_append(hdr, line);
  hdr = curl_slist_append(hdr, "x-ms-version: " BW_BLOB_VERSION);
  if (put) {
    hdr = curl_slist_append(hdr, "x-ms-blob-type: BlockBlob");
    hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
  }
  hdr = curl_slist_append(hdr, "Expect:");
  if (b->key_len) {
    char clen[32] = "";
    if (put && body_len > 0)
      snprintf(clen, sizeof clen, "%zu", body_len);
    char sig[64];
    bw_blob_sign(b->key, b->key_len, verb, clen, put ? "application/octet-stream" : "", xms,
                 b->account, path.p, canon.p ? canon.p : "", sig, sizeof sig);
    snprintf(line, sizeof line, "Authorization: SharedKey %s:%s", b->account, sig);
    hdr = curl_slist_append(hdr, line);
  }
  CURL *c = b->curl;
  curl_easy_reset(c);
  qs_buf_reset(out);
  sink s = {.buf = out, .max = max};
  curl_easy_setopt(c, CURLOPT_URL, url.p);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, b->timeout_s);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (put) {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  CURLcode cc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(hdr);
  int rc = 0;
  if (s.too_big) {
    qs_set_reason(err, errlen, "%s %s: response over %zu bytes", verb, path.p, max);
    rc = QS_ERR_TOOBIG;
  } else if (cc != CURLE_OK) {
    qs_set_reason(err, errlen, "%s %s: %s", verb, path.p, curl_easy_strerror(cc));
    rc = QS_ERR_IO;
  } else if (status < 200 || status >= 300) {
    /* The error body's <Code> says why (AuthenticationFailed, BlobNotFound, ...). */
    const char *code = out->p ? strstr(out->p, "<Code>") : NULL;
    const char *end = code ? strstr(code, "</Code>") : NULL;
    qs_set_reason(err, errlen, "%s %s: HTTP %ld%s%.*s", verb, path.p, status,
                  code && end ? " " : "", code && end ? (int)(end - code - 6) : 0,
                  code && end ? code + 6 : "");
    rc = (status == 401 || status == 403) ? QS_ERR_AUTH
         : status == 404                  ? QS_ERR_NOTFOUND
                                          : QS_ERR_IO;
  }
  qs_buf_free(&path);
  qs_buf_free(&url);
  qs_buf_free(&canon);
  return rc;
}

/* Text between <tag> and </tag> starting the search at *pos; advances *pos past it. */
static int xml_next(const char *doc, const char *end, const char *tag, const char **pos,
                    const char **val, size_t *len) {
  char open[64], close[64];
  snprintf(open, sizeof open, "<%s>", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = memmem(*pos, (size_t)(end - *pos), open, strlen(open));
  if (!a)
    return 0;
  a += strlen(open);
  const char *z = memmem(a, (size_t)(end - a), close, strlen(close));
  if (!z)
    return 0;
  (void)doc;
  *val = a;
  *len = (size_t)(z - a);
  *pos = z + strlen(close);
  return 1;
}

static void xml_unescape(char *dst, size_t cap, const char *s, size_t n) {
  static const struct {
    const char *ent;
    char c;
  } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < cap;) {
    int done = 0;
    if (s[i] == '&') {
      for (size_t k = 0; k < sizeof ents / sizeof ents[0]; k++) {
        size_t el = strlen(ents[k].ent);
        if (i + el <= n && memcmp(s + i, ents[k].ent, el) == 0) {
          dst[o++] = ents[k].c;
          i += el;
          done = 1;
          break;
        }
      }
    }
    if (!done)
      dst[o++] = s[i++];
  }
  dst[o] = '\0';
}

int bw_blob_list(bw_blob *b, bw_blob_list_fn cb, void *ud, char *err, size_t errlen) {
  qs_buf resp = QS_BUF_INIT;
  char marker[1024] = "";
  char maxres[32];
  snprintf(maxres, sizeof maxres, "%ld", b->page_size);
  int rc = 0;
  for (;;) {
    /* Canonical order: names sorted. */
    const char *q[12];
    size_t k = 0;
    q[k++] = "comp";
    q[k++] = "list";
    if (marker[0]) {
      q[k++] = "marker";
      q[k++] = marker;
    }
    q[k++] = "maxresults";
    q[k++] = maxres;
    if (b->prefix[0]) {
      q[k++] = "prefix";
      q[k++] = b->prefix;
    }
    q[k++] = "restype";
    q[k++] = "container";
    q[k] = NULL;
    rc = request(b, "GET", NULL, q, NULL, 0, &resp, LIST_MAX_BYTES, err, errlen);
    if (rc)
      break;
    const char *end = resp.p + resp.len;
    const char *pos = resp.p;
    const char *blob;
    size_t blen;
    while (xml_next(resp.p, end, "Blob", &pos, &blob, &blen)) {
      const char *bp = blob, *bend = blob + blen, *v;
      size_t vl;
      char name[1024];
      uint64_t size = 0;
      if (!xml_next(blob, bend, "Name", &bp, &v, &vl))
        continue;
      xml_unescape(name, sizeof name, v, vl);
      bp = blob;
      if (xml_next(blob, bend, "Content-Length", &bp, &v, &vl))
        size = strtoull(v, NULL, 10);
      rc = cb(ud, name, size);
      if (rc)
        break;
    }
    if (rc)
      break;
    pos = resp.p;
    const char *nm;
    size_t nml;
    if (!xml_next(resp.p, end, "NextMarker", &pos, &nm, &nml) || nml == 0)
      break;
    xml_unescape(marker, sizeof marker, nm, nml);
  }
  qs_buf_free(&resp);
  return rc;
}

int bw_blob_get(bw_blob *b, const char *name, qs_buf *out, char *err, size_t errlen) {
  return request(b, "GET", name, NULL, NULL, 0, out, b->max_blob_bytes, err, errlen);
}

int bw_blob_put(bw_blob *b, const char *name, const void *data, size_t len, char *err,
                size_t errlen) {
  qs_buf resp = QS_BUF_INIT;
  int rc = request(b, "PUT", name, NULL, data, len, &resp, 65536, err, errlen);
  qs_buf_free(&resp);
  return rc;
}
