/* ehconn.h — Event Hubs connection strings and Shared Access Signature tokens.
 *
 * Connection string: `Endpoint=sb://host[:port]/;SharedAccessKeyName=..;SharedAccessKey=..;
 * EntityPath=..;UseDevelopmentEmulator=true` or `..;SharedAccessSignature=SharedAccessSignature
 * sr=..`. Keys compare case-insensitively (as the Azure SDKs do); values may contain '=';
 * whitespace around parts and a trailing ';' are ignored. The port defaults to 5671 (TLS), or 5672
 * with UseDevelopmentEmulator=true, which also selects plain TCP.
 *
 * SAS token: `SharedAccessSignature sr=<enc(resource)>&sig=<enc(base64(HMAC-SHA256(key bytes,
 * enc(resource) + "\n" + expiry)))>&se=<expiry>&skn=<key name>`, where enc is JavaScript's
 * encodeURIComponent. A token for resource R is valid for audience A when R equals A or is a
 * path-segment prefix of it, compared case-insensitively after dropping the scheme and the port
 * (a namespace-wide token `sb://ns/` covers every entity; `sb://ns/hub` covers `sb://ns/hub/...`
 * but not `sb://ns/hub2`).
 */
#ifndef QS_EHCONN_H
#define QS_EHCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QS_EH_FIELD_MAX 512

typedef struct qs_ehconn {
  char host[256];
  int port;
  bool use_tls;
  bool emulator;
  char key_name[QS_EH_FIELD_MAX];
  char key[QS_EH_FIELD_MAX];
  char sas[2048]; /* a ready token instead of a key */
  char entity_path[QS_EH_FIELD_MAX];
} qs_ehconn;

int qs_ehconn_parse(const char *s, qs_ehconn *out, char *err, size_t errlen);

/* encodeURIComponent of the n bytes at in: returns the encoded length (out gets at most cap-1 bytes
 * and a NUL); a return >= cap means it did not fit. */
size_t qs_url_encode(const char *in, size_t n, char *out, size_t cap);

/* Make a token for resource (a URI such as sb://127.0.0.1:5672/earthquake-events) valid until
 * expiry_s (epoch seconds). Returns 0, or -QS_ERR_TOOBIG if out is too small. */
int qs_sas_token_make(const char *resource, const char *key_name, const char *key, int64_t expiry_s,
                      char *out, size_t cap);

typedef struct qs_sas_token {
  char resource[QS_EH_FIELD_MAX];     /* decoded */
  char resource_enc[QS_EH_FIELD_MAX]; /* as signed */
  char sig[128];                      /* decoded base64 text */
  char key_name[QS_EH_FIELD_MAX];
  int64_t expiry_s;
} qs_sas_token;

/* Parse "SharedAccessSignature sr=..&sig=..&se=..&skn=.." (fields in any order). */
int qs_sas_token_parse(const char *token, qs_sas_token *out, char *err, size_t errlen);

/* Check a parsed token's signature against key (constant-time), its expiry against now_s
 * (-QS_ERR_EXPIRED) and, when audience is not NULL, that it covers the audience (-QS_ERR_AUTH).
 * The key name is the caller's business (it chose the key by tok->key_name). */
int qs_sas_token_verify(const qs_sas_token *tok, const char *key, const char *audience,
                        int64_t now_s, char *err, size_t errlen);

/* The audience rule above, exposed for the broker and tests. */
bool qs_sas_resource_covers(const char *resource, const char *audience);

#endif
