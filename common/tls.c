/* tls.c — TLS over OpenSSL memory BIOs (see qs/tls.h).
 *
 * Invariants: a session owns one SSL and two memory BIOs (net_in is read by
 * OpenSSL, net_out written by it); OpenSSL's thread-local error queue is
 * cleared before every SSL call, so the reason recorded for a failure is the
 * failure's own; the first failure is sticky.
 */
#include "qs/tls.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "qs/error.h"

/* OpenSSL's most recent queued error as text, or fallback. */
static const char *ossl_reason(char *buf, size_t len, const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  if (e == 0) {
    snprintf(buf, len, "%s", fallback);
  } else {
    ERR_error_string_n(e, buf, len);
  }
  ERR_clear_error();
  return buf;
}

static SSL_CTX *new_ctx(const SSL_METHOD *method) {
  SSL_CTX *c = SSL_CTX_new(method);
  if (!c)
    return NULL;
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1) {
    SSL_CTX_free(c);
    return NULL;
  }
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* The glue retries SSL_write from a buffer that may have moved. */
  SSL_CTX_set_mode(c, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
  return c;
}

int qs_tls_ctx_init_server(qs_tls_ctx *ctx, const char *cert_chain_file, const char *key_file,
                           char *err, size_t err_len) {
  char why[256];
  memset(ctx, 0, sizeof(*ctx));
  if (!cert_chain_file || !key_file || !*cert_chain_file || !*key_file) {
    qs_set_reason(err, err_len, "TLS server needs a certificate chain file and a key file");
    return QS_ERR_INVALID;
  }
  ERR_clear_error();
  SSL_CTX *c = new_ctx(TLS_server_method());
  if (!c) {
    qs_set_reason(err, err_len, "TLS context: %s",
                  ossl_reason(why, sizeof(why), "SSL_CTX_new failed"));
    return QS_ERR_NOMEM;
  }
  if (SSL_CTX_use_certificate_chain_file(c, cert_chain_file) != 1) {
    qs_set_reason(err, err_len, "TLS certificate chain %s: %s", cert_chain_file,
                  ossl_reason(why, sizeof(why), "unreadable"));
    SSL_CTX_free(c);
    return QS_ERR_IO;
  }
  if (SSL_CTX_use_PrivateKey_file(c, key_file, SSL_FILETYPE_PEM) != 1) {
    bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    qs_set_reason(err, err_len, "TLS private key %s%s: %s", key_file,
                  mismatch ? " does not match the certificate" : "",
                  ossl_reason(why, sizeof(why), "unreadable"));
    SSL_CTX_free(c);
    return mismatch ? QS_ERR_INVALID : QS_ERR_IO;
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    qs_set_reason(err, err_len, "TLS private key %s does not match certificate %s: %s", key_file,
                  cert_chain_file, ossl_reason(why, sizeof(why), "mismatch"));
    SSL_CTX_free(c);
    return QS_ERR_INVALID;
  }
  ctx->ssl_ctx = c;
  ctx->is_server = true;
  return 0;
}

int qs_tls_ctx_init_client(qs_tls_ctx *ctx, const char *ca_file, char *err, size_t err_len) {
  char why[256];
  memset(ctx, 0, sizeof(*ctx));
  ERR_clear_error();
  SSL_CTX *c = new_ctx(TLS_client_method());
  if (!c) {
    qs_set_reason(err, err_len, "TLS context: %s",
                  ossl_reason(why, sizeof(why), "SSL_CTX_new failed"));
    return QS_ERR_NOMEM;
  }
  int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(c, ca_file, NULL)
                               : SSL_CTX_set_default_verify_paths(c);
  if (ok != 1) {
    qs_set_reason(err, err_len, "TLS trust store %s: %s",
                  ca_file && *ca_file ? ca_file : "(system)",
                  ossl_reason(why, sizeof(why), "unreadable"));
    SSL_CTX_free(c);
    return QS_ERR_IO;
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  ctx->ssl_ctx = c;
  ctx->is_server = false;
  return 0;
}

void qs_tls_ctx_close(qs_tls_ctx *ctx) {
  if (ctx->ssl_ctx)
    SSL_CTX_free(ctx->ssl_ctx);
  ctx->ssl_ctx = NULL;
}

static int fail(qs_tls *t, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(qs_tls *t, int code, const char *fmt, ...) {
  if (t->state == QS_TLS_FAILED)
    return t->error;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->reason, sizeof(t->reason), fmt, ap);
  va_end(ap);
  t->state = QS_TLS_FAILED;
  t->error = code;
  return code;
}

static bool is_ip_literal(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int qs_tls_init(qs_tls *t, qs_tls_ctx *ctx, const char *peer_name) {
  memset(t, 0, sizeof(*t));
  if (!ctx || !ctx->ssl_ctx)
    return QS_ERR_INVALID;
  if (ctx->is_server ? peer_name != NULL : (!peer_name || !*peer_name || strlen(peer_name) > 253))
    return QS_ERR_INVALID;
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->net_in = BIO_new(BIO_s_mem());
  t->net_out = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->net_in || !t->net_out) {
    if (t->ssl)
      SSL_free(t->ssl);
    BIO_free(t->net_in);
    BIO_free(t->net_out);
    memset(t, 0, sizeof(*t));
    ERR_clear_error();
    return QS_ERR_NOMEM;
  }
  /* An empty input BIO means "wait for more", never end of stream. */
  BIO_set_mem_eof_return(t->net_in, -1);
  BIO_set_mem_eof_return(t->net_out, -1);
  SSL_set_bio(t->ssl, t->net_in, t->net_out); /* SSL owns both now */
  if (ctx->is_server) {
    SSL_set_accept_state(t->ssl);
  } else {
    int ok;
    if (is_ip_literal(peer_name)) {
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), peer_name);
    } else {
      ok =
          SSL_set_tlsext_host_name(t->ssl, peer_name) == 1 && SSL_set1_host(t->ssl, peer_name) == 1;
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (ok != 1) {
      qs_tls_close(t);
      ERR_clear_error();
      return QS_ERR_INVALID;
    }
    SSL_set_connect_state(t->ssl);
  }
  t->state = QS_TLS_HANDSHAKING;
  return 0;
}

void qs_tls_close(qs_tls *t) {
  if (t->ssl)
    SSL_free(t->ssl); /* frees both BIOs */
  memset(t, 0, sizeof(*t));
}

/* Classifies the result of an SSL call: 0 when it only needs more input or
 * output room, QS_ERR_CLOSED on close_notify, else a sticky failure. */
static int check(qs_tls *t, int ret, const char *op) {
  int e = SSL_get_error(t->ssl, ret);
  char why[200];
  switch (e) {
  case SSL_ERROR_NONE:
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE:
    ERR_clear_error();
    return 0;
  case SSL_ERROR_ZERO_RETURN:
    ERR_clear_error();
    t->state = QS_TLS_CLOSED;
    return QS_ERR_CLOSED;
  default:
    break;
  }
  long vr = SSL_get_verify_result(t->ssl);
  if (!SSL_is_server(t->ssl) && vr != X509_V_OK) {
    ERR_clear_error();
    return fail(t, QS_ERR_AUTH, "certificate verification failed: %s",
                X509_verify_cert_error_string(vr));
  }
  return fail(t, QS_ERR_IO, "TLS %s failed: %s", op,
              ossl_reason(why, sizeof(why),
                          e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : "protocol error"));
}

static void note_handshake(qs_tls *t) {
  if (t->state == QS_TLS_HANDSHAKING && SSL_is_init_finished(t->ssl))
    t->state = QS_TLS_OPEN;
}

int qs_tls_handshake(qs_tls *t) {
  if (!t->ssl)
    return QS_ERR_STATE;
  if (t->state == QS_TLS_FAILED)
    return t->error;
  if (SSL_is_server(t->ssl) || t->state != QS_TLS_HANDSHAKING)
    return 0;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  int rc = check(t, r, "handshake");
  note_handshake(t);
  return rc == QS_ERR_CLOSED ? 0 : rc;
}

int qs_tls_feed(qs_tls *t, const void *data, size_t n) {
  if (!t->ssl)
    return QS_ERR_STATE;
  if (t->state == QS_TLS_FAILED)
    return t->error;
  const char *p = data;
  while (n > 0) {
    int chunk = n > INT_MAX ? INT_MAX : (int)n;
    int w = BIO_write(t->net_in, p, chunk);
    if (w <= 0)
      return fail(t, QS_ERR_NOMEM, "TLS input buffer: cannot append %d bytes", chunk);
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int qs_tls_decrypt(qs_tls *t, void *buf, size_t cap, size_t *out) {
  *out = 0;
  if (!t->ssl)
    return QS_ERR_STATE;
  if (t->state == QS_TLS_FAILED)
    return t->error;
  if (t->state == QS_TLS_CLOSED)
    return QS_ERR_CLOSED;
  char *p = buf;
  while (*out < cap) {
    size_t want = cap - *out;
    ERR_clear_error();
    int r = SSL_read(t->ssl, p + *out, want > INT_MAX ? INT_MAX : (int)want);
    note_handshake(t);
    if (r > 0) {
      *out += (size_t)r;
      continue;
    }
    int rc = check(t, r, t->state == QS_TLS_HANDSHAKING ? "handshake" : "read");
    /* Data decrypted before close_notify is delivered first. */
    if (rc == QS_ERR_CLOSED && *out > 0)
      return 0;
    return rc;
  }
  return 0;
}

int qs_tls_encrypt(qs_tls *t, const void *data, size_t n, size_t *consumed) {
  *consumed = 0;
  if (!t->ssl)
    return QS_ERR_STATE;
  if (t->state == QS_TLS_FAILED)
    return t->error;
  if (t->state == QS_TLS_HANDSHAKING) {
    /* SSL_write would drive the handshake too, but a client that has not
     * sent its hello yet must do it through qs_tls_handshake's path. */
    int rc = qs_tls_handshake(t);
    if (rc < 0)
      return rc;
    if (t->state != QS_TLS_OPEN)
      return 0;
  }
  const char *p = data;
  while (*consumed < n) {
    size_t want = n - *consumed;
    ERR_clear_error();
    int r = SSL_write(t->ssl, p + *consumed, want > INT_MAX ? INT_MAX : (int)want);
    if (r > 0) {
      *consumed += (size_t)r;
      continue;
    }
    int rc = check(t, r, "write");
    return rc == QS_ERR_CLOSED ? 0 : rc;
  }
  return 0;
}

size_t qs_tls_drain(qs_tls *t, void *buf, size_t cap) {
  if (!t->ssl || cap == 0)
    return 0;
  int r = BIO_read(t->net_out, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  return r > 0 ? (size_t)r : 0;
}

int qs_tls_shutdown(qs_tls *t) {
  if (!t->ssl)
    return QS_ERR_STATE;
  if (t->state == QS_TLS_FAILED)
    return t->error;
  if (t->state == QS_TLS_HANDSHAKING)
    return QS_ERR_STATE;
  ERR_clear_error();
  int r = SSL_shutdown(t->ssl);
  if (r < 0) {
    int rc = check(t, r, "shutdown");
    return rc == QS_ERR_CLOSED ? 0 : rc;
  }
  return 0;
}

size_t qs_tls_pending_in(const qs_tls *t) { return t->net_in ? BIO_ctrl_pending(t->net_in) : 0; }

size_t qs_tls_pending_out(const qs_tls *t) { return t->net_out ? BIO_ctrl_pending(t->net_out) : 0; }

qs_tls_state qs_tls_get_state(const qs_tls *t) { return t->state; }

int qs_tls_error(const qs_tls *t) { return t->state == QS_TLS_FAILED ? t->error : 0; }

const char *qs_tls_reason(const qs_tls *t) { return t->reason; }
