/* tls.h — a TLS engine on OpenSSL memory BIOs, independent of sockets.
 *
 * The AMQP transport glue (amqp_transport.c) moves bytes between a socket
 * and this engine; the engine never touches a file descriptor. Data flows:
 *
 *   network -> qs_tls_feed (ciphertext in) -> qs_tls_decrypt (plaintext out)
 *   app     -> qs_tls_encrypt (plaintext in) -> qs_tls_drain (ciphertext out)
 *
 * Handshake messages are produced and consumed by the same calls, so a
 * caller that always drains after feeding/encrypting needs no extra step; a
 * client calls qs_tls_handshake() once to emit its ClientHello.
 *
 * Contexts (qs_tls_ctx) are shared read-only by many sessions: one for the
 * hub's TLS listener (cert chain + key), one per client configuration (a CA
 * file or the system default paths, always verifying the peer). TLS 1.2 is
 * the minimum version. A session's first failure is sticky: every later call
 * returns the same code, and qs_tls_reason() names it (verification failures
 * say "certificate verification failed: <OpenSSL's reason>").
 *
 * Memory: the engine buffers at most what the caller feeds and does not
 * drain; callers bound that with qs_tls_pending_in()/qs_tls_pending_out().
 */
#ifndef QS_TLS_H
#define QS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

typedef struct qs_tls_ctx {
  SSL_CTX *ssl_ctx; /* owned; exposed for tests and advanced tuning */
  bool is_server;
} qs_tls_ctx;

/* Server context from a PEM certificate chain (leaf first) and a PEM key.
 * On failure returns QS_ERR_INVALID/QS_ERR_IO, writes a reason into err
 * (if err_len > 0) and leaves ctx closed. */
int qs_tls_ctx_init_server(qs_tls_ctx *ctx, const char *cert_chain_file, const char *key_file,
                           char *err, size_t err_len);

/* Client context that verifies the peer against ca_file (PEM, may hold
 * several certificates) or, when ca_file is NULL, the system default trust
 * store. Verification cannot be switched off through this API. */
int qs_tls_ctx_init_client(qs_tls_ctx *ctx, const char *ca_file, char *err, size_t err_len);

/* Frees the context. Sessions hold their own reference, so it may be closed
 * while sessions made from it are still alive. */
void qs_tls_ctx_close(qs_tls_ctx *ctx);

typedef enum qs_tls_state {
  QS_TLS_HANDSHAKING = 0,
  QS_TLS_OPEN = 1,   /* handshake done, data flows */
  QS_TLS_CLOSED = 2, /* peer sent close_notify */
  QS_TLS_FAILED = 3  /* see qs_tls_error()/qs_tls_reason() */
} qs_tls_state;

typedef struct qs_tls {
  SSL *ssl;
  BIO *net_in;  /* ciphertext from the network, read by OpenSSL */
  BIO *net_out; /* ciphertext to the network, written by OpenSSL */
  qs_tls_state state;
  int error;
  char reason[256];
} qs_tls;

/* Starts a session. For a client, peer_name is required: it is sent as SNI
 * (unless it is an IP literal) and the certificate must match it (DNS name,
 * or IP address SAN for a literal). For a server, peer_name must be NULL. */
int qs_tls_init(qs_tls *t, qs_tls_ctx *ctx, const char *peer_name);
void qs_tls_close(qs_tls *t);

/* Client: emits the ClientHello (drain it afterwards). Server: no-op.
 * Returns 0 or the sticky error. */
int qs_tls_handshake(qs_tls *t);

/* Appends n bytes of ciphertext received from the network. */
int qs_tls_feed(qs_tls *t, const void *data, size_t n);

/* Decrypts up to cap bytes of plaintext into buf; *out gets the count (0 when
 * more ciphertext is needed). Drives the handshake. Returns 0, QS_ERR_CLOSED
 * once the peer's close_notify has been read (and all data before it was
 * returned), or a negative error (QS_ERR_AUTH for certificate verification,
 * QS_ERR_IO for protocol failures). */
int qs_tls_decrypt(qs_tls *t, void *buf, size_t cap, size_t *out);

/* Encrypts up to n bytes of plaintext; *consumed gets how many were taken
 * (0 while the handshake is still in progress). Returns 0 or an error. */
int qs_tls_encrypt(qs_tls *t, const void *data, size_t n, size_t *consumed);

/* Copies up to cap bytes of ciphertext to send into buf; returns the count. */
size_t qs_tls_drain(qs_tls *t, void *buf, size_t cap);

/* Queues a close_notify alert (drain it afterwards). */
int qs_tls_shutdown(qs_tls *t);

size_t qs_tls_pending_in(const qs_tls *t);  /* fed ciphertext not yet decrypted */
size_t qs_tls_pending_out(const qs_tls *t); /* ciphertext waiting for qs_tls_drain */
qs_tls_state qs_tls_get_state(const qs_tls *t);
int qs_tls_error(const qs_tls *t);          /* 0 or the sticky error */
const char *qs_tls_reason(const qs_tls *t); /* "" when no error */

#endif
