/* test_tls.c — the memory-BIO TLS engine, two sessions pumped into each
 * other in memory. Certificates (a CA, a server cert for 127.0.0.1 and
 * localhost, a server cert for another name, and a second untrusted CA) are
 * generated at run time with the openssl CLI into a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qs/error.h"
#include "qs/tls.h"

typedef struct certs {
  char dir[64];
  char path[8][128];
} certs;

enum { CA_CRT, SRV_CRT, SRV_KEY, WRONG_CRT, WRONG_KEY, OTHER_CA_CRT, N_FILES };
static const char *const file_names[N_FILES] = {"ca.crt",    "srv.crt",   "srv.key",
                                                "wrong.crt", "wrong.key", "other.crt"};

static int run(const char *cmd) {
  int rc = system(cmd);
  return rc == 0 ? 0 : -1;
}

/* Builds a CA (dir/ca.*), a leaf signed by it for `san` (dir/<leaf>.*). */
static int make_leaf(const char *dir, const char *ca, const char *leaf, const char *san) {
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s.key -out %s.csr -subj /CN=%s 2>/dev/null && "
           "printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\n' > %s.ext && "
           "openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -days 2 "
           "-out %s.crt -extfile %s.ext 2>/dev/null",
           dir, leaf, leaf, leaf, san, leaf, leaf, ca, ca, leaf, leaf);
  return run(cmd);
}

static int make_ca(const char *dir, const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s.key -out %s.crt -days 2 -subj /CN=qs-test-%s "
           "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
           "2>/dev/null",
           dir, name, name, name);
  return run(cmd);
}

static int certs_setup(void **state) {
  certs *c = calloc(1, sizeof(*c));
  snprintf(c->dir, sizeof(c->dir), "/tmp/qs-tls-XXXXXX");
  if (!mkdtemp(c->dir)) {
    free(c);
    return -1;
  }
  for (int i = 0; i < N_FILES; i++)
    snprintf(c->path[i], sizeof(c->path[i]), "%s/%s", c->dir, file_names[i]);
  if (make_ca(c->dir, "ca") || make_leaf(c->dir, "ca", "srv", "IP:127.0.0.1,DNS:localhost") ||
      make_leaf(c->dir, "ca", "wrong", "DNS:wrong.example") || make_ca(c->dir, "other")) {
    fprintf(stderr, "openssl CLI failed to generate test certificates\n");
    return -1;
  }
  *state = c;
  return 0;
}

static int certs_teardown(void **state) {
  certs *c = *state;
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
  (void)run(cmd);
  free(c);
  return 0;
}

/* Moves ciphertext both ways and decrypts whatever arrives, until neither
 * side has anything to say. Plaintext received is appended to rx buffers. */
typedef struct side {
  qs_tls t;
  char rx[65536];
  size_t rx_len;
  int rc; /* last non-zero result */
} side;

static void pump(side *a, side *b) {
  for (int round = 0; round < 100; round++) {
    char buf[16384];
    int moved = 0;
    side *pair[2][2] = {{a, b}, {b, a}};
    for (int k = 0; k < 2; k++) {
      side *from = pair[k][0], *to = pair[k][1];
      size_t n;
      while ((n = qs_tls_drain(&from->t, buf, sizeof(buf))) > 0) {
        assert_int_equal(qs_tls_feed(&to->t, buf, n), qs_tls_error(&to->t));
        moved = 1;
      }
      size_t got = 0;
      int rc = qs_tls_decrypt(&to->t, to->rx + to->rx_len, sizeof(to->rx) - to->rx_len, &got);
      to->rx_len += got;
      if (rc)
        to->rc = rc;
    }
    if (!moved)
      return;
  }
  fail_msg("TLS pump did not settle");
}

static void open_pair(certs *c, side *cli, side *srv, const char *crt, const char *key,
                      const char *ca, const char *name) {
  static qs_tls_ctx sctx, cctx; /* closed by close_pair */
  char err[256];
  assert_int_equal(qs_tls_ctx_init_server(&sctx, crt, key, err, sizeof(err)), 0);
  assert_int_equal(qs_tls_ctx_init_client(&cctx, ca, err, sizeof(err)), 0);
  assert_int_equal(qs_tls_init(&srv->t, &sctx, NULL), 0);
  assert_int_equal(qs_tls_init(&cli->t, &cctx, name), 0);
  /* Sessions hold their own context references. */
  qs_tls_ctx_close(&sctx);
  qs_tls_ctx_close(&cctx);
  (void)c;
  assert_int_equal(qs_tls_handshake(&cli->t), 0);
  pump(cli, srv);
}

static void test_handshake_and_data_both_ways(void **state) {
  certs *c = *state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  open_pair(c, cli, srv, c->path[SRV_CRT], c->path[SRV_KEY], c->path[CA_CRT], "localhost");
  assert_int_equal(qs_tls_get_state(&cli->t), QS_TLS_OPEN);
  assert_int_equal(qs_tls_get_state(&srv->t), QS_TLS_OPEN);
  assert_string_equal(qs_tls_reason(&cli->t), "");

  char big[40000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)(i * 7);
  size_t used;
  assert_int_equal(qs_tls_encrypt(&cli->t, big, sizeof(big), &used), 0);
  assert_int_equal(used, sizeof(big));
  assert_int_equal(qs_tls_encrypt(&srv->t, "pong", 4, &used), 0);
  assert_int_equal(used, 4);
  pump(cli, srv);
  assert_int_equal(srv->rx_len, sizeof(big));
  assert_memory_equal(srv->rx, big, sizeof(big));
  assert_int_equal(cli->rx_len, 4);
  assert_memory_equal(cli->rx, "pong", 4);

  /* close_notify is reported as QS_ERR_CLOSED on the other side. */
  assert_int_equal(qs_tls_shutdown(&cli->t), 0);
  pump(cli, srv);
  assert_int_equal(srv->rc, QS_ERR_CLOSED);
  assert_int_equal(qs_tls_get_state(&srv->t), QS_TLS_CLOSED);
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  free(cli);
  free(srv);
}

static void test_ip_literal_is_verified_against_ip_san(void **state) {
  certs *c = *state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  open_pair(c, cli, srv, c->path[SRV_CRT], c->path[SRV_KEY], c->path[CA_CRT], "127.0.0.1");
  assert_int_equal(qs_tls_get_state(&cli->t), QS_TLS_OPEN);
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  memset(cli, 0, sizeof(*cli));
  memset(srv, 0, sizeof(*srv));
  open_pair(c, cli, srv, c->path[SRV_CRT], c->path[SRV_KEY], c->path[CA_CRT], "127.0.0.2");
  assert_int_equal(qs_tls_get_state(&cli->t), QS_TLS_FAILED);
  assert_int_equal(qs_tls_error(&cli->t), QS_ERR_AUTH);
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  free(cli);
  free(srv);
}

static void test_hostname_mismatch_fails_with_verification_reason(void **state) {
  certs *c = *state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  open_pair(c, cli, srv, c->path[WRONG_CRT], c->path[WRONG_KEY], c->path[CA_CRT], "localhost");
  assert_int_equal(qs_tls_get_state(&cli->t), QS_TLS_FAILED);
  assert_int_equal(cli->rc, QS_ERR_AUTH);
  assert_non_null(strstr(qs_tls_reason(&cli->t), "certificate verification failed"));
  assert_non_null(strstr(qs_tls_reason(&cli->t), "ostname mismatch"));
  /* The client's alert reaches the server, which fails too, with a reason. */
  assert_int_equal(qs_tls_get_state(&srv->t), QS_TLS_FAILED);
  assert_true(strlen(qs_tls_reason(&srv->t)) > 0);
  /* Errors are sticky. */
  size_t used;
  assert_int_equal(qs_tls_encrypt(&cli->t, "x", 1, &used), QS_ERR_AUTH);
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  free(cli);
  free(srv);
}

static void test_untrusted_ca_fails_verification(void **state) {
  certs *c = *state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  open_pair(c, cli, srv, c->path[SRV_CRT], c->path[SRV_KEY], c->path[OTHER_CA_CRT], "localhost");
  assert_int_equal(qs_tls_error(&cli->t), QS_ERR_AUTH);
  assert_non_null(strstr(qs_tls_reason(&cli->t), "local issuer"));
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  free(cli);
  free(srv);
}

static void test_tls11_client_is_refused(void **state) {
  certs *c = *state;
  qs_tls_ctx sctx, cctx;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  assert_int_equal(qs_tls_ctx_init_server(&sctx, c->path[SRV_CRT], c->path[SRV_KEY], NULL, 0), 0);
  assert_int_equal(qs_tls_ctx_init_client(&cctx, c->path[CA_CRT], NULL, 0), 0);
  /* Force the client down to TLS 1.1 behind the API's back. */
  SSL_CTX_set_security_level(cctx.ssl_ctx, 0);
  SSL_CTX_set_min_proto_version(cctx.ssl_ctx, TLS1_1_VERSION);
  SSL_CTX_set_max_proto_version(cctx.ssl_ctx, TLS1_1_VERSION);
  assert_int_equal(qs_tls_init(&srv->t, &sctx, NULL), 0);
  assert_int_equal(qs_tls_init(&cli->t, &cctx, "localhost"), 0);
  (void)qs_tls_handshake(&cli->t);
  pump(cli, srv);
  assert_int_equal(qs_tls_get_state(&srv->t), QS_TLS_FAILED);
  assert_int_not_equal(qs_tls_get_state(&cli->t), QS_TLS_OPEN);
  qs_tls_close(&cli->t);
  qs_tls_close(&srv->t);
  qs_tls_ctx_close(&sctx);
  qs_tls_ctx_close(&cctx);
  free(cli);
  free(srv);
}

static void test_bad_files_and_arguments_are_rejected(void **state) {
  certs *c = *state;
  qs_tls_ctx ctx;
  char err[256] = "";
  assert_int_equal(
      qs_tls_ctx_init_server(&ctx, "/nonexistent.crt", c->path[SRV_KEY], err, sizeof(err)),
      QS_ERR_IO);
  assert_non_null(strstr(err, "/nonexistent.crt"));
  assert_int_equal(
      qs_tls_ctx_init_server(&ctx, c->path[SRV_CRT], c->path[WRONG_KEY], err, sizeof(err)),
      QS_ERR_INVALID);
  assert_non_null(strstr(err, "does not match"));
  assert_int_equal(qs_tls_ctx_init_client(&ctx, "/nonexistent-ca.pem", err, sizeof(err)),
                   QS_ERR_IO);
  /* The system trust store loads. */
  assert_int_equal(qs_tls_ctx_init_client(&ctx, NULL, err, sizeof(err)), 0);
  qs_tls t;
  assert_int_equal(qs_tls_init(&t, &ctx, NULL), QS_ERR_INVALID); /* client needs a name */
  assert_int_equal(qs_tls_init(&t, &ctx, "example.org"), 0);
  qs_tls_close(&t);
  qs_tls_ctx_close(&ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake_and_data_both_ways),
      cmocka_unit_test(test_ip_literal_is_verified_against_ip_san),
      cmocka_unit_test(test_hostname_mismatch_fails_with_verification_reason),
      cmocka_unit_test(test_untrusted_ca_fails_verification),
      cmocka_unit_test(test_tls11_client_is_refused),
      cmocka_unit_test(test_bad_files_and_arguments_are_rejected),
  };
  return cmocka_run_group_tests(tests, certs_setup, certs_teardown);
}
