/* ehconn.c — connection-string parsing and SAS tokens (HMAC-SHA256 with OpenSSL).
 *
 * Invariants: every output string is NUL-terminated and bounded; a failed parse leaves no partial
 * secret behind in *out (it is zeroed); signatures are compared in constant time.
 */
#include "qs/ehconn.h"

#include "qs/error.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, const char *msg, const char *detail) {
  if (err && errlen)
    snprintf(err, errlen, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
  return QS_ERR_INVALID;
}

/* Copy [b, e) trimmed of spaces into out (cap bytes); false if it does not fit. */
static bool copy_trim(const char *b, const char *e, char *out, size_t cap) {
  while (b < e && isspace((unsigned char)*b))
    b++;
  while (e > b && isspace((unsigned char)e[-1]))
    e--;
  if ((size_t)(e - b) >= cap)
    return false;
  memcpy(out, b, (size_t)(e - b));
  out[e - b] = '\0';
  return true;
}

static int parse_endpoint(const char *v, qs_ehconn *out, char *err, size_t errlen) {
  const char *p = strstr(v, "://");
  if (!p)
    return fail(err, errlen, "Endpoint must look like sb://<host>[:port]/", v);
  if (strncasecmp(v, "sb://", 5) != 0 && strncasecmp(v, "amqps://", 8) != 0 &&
      strncasecmp(v, "amqp://", 7) != 0)
    return fail(err, errlen, "Endpoint scheme must be sb://, amqps:// or amqp://", v);
  const char *host = p + 3;
  const char *end = host + strcspn(host, "/");
  const char *colon = memchr(host, ':', (size_t)(end - host));
  const char *hend = colon ? colon : end;
  if (hend == host || (size_t)(hend - host) >= sizeof out->host)
    return fail(err, errlen, "Endpoint has no valid host", v);
  memcpy(out->host, host, (size_t)(hend - host));
  out->host[hend - host] = '\0';
  out->port = 0;
  if (colon) {
    char *pe;
    long port = strtol(colon + 1, &pe, 10);
    if (pe != end || port < 1 || port > 65535)
      return fail(err, errlen, "Endpoint port must be 1..65535", v);
    out->port = (int)port;
  }
  return 0;
}

int qs_ehconn_parse(const char *s, qs_ehconn *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  bool have_endpoint = false;
  char endpoint[600] = "";
  if (!s)
    return fail(err, errlen, "connection string is empty", NULL);
  for (const char *p = s; *p;) {
    const char *semi = strchr(p, ';');
    const char *end = semi ? semi : p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    char key[64];
    if (end == p || (eq == NULL && strspn(p, " \t") == (size_t)(end - p))) {
      p = semi ? semi + 1 : end; /* empty part (e.g. a trailing ';') */
      continue;
    }
    if (!eq || !copy_trim(p, eq, key, sizeof key))
      return memset(out, 0, sizeof *out), fail(err, errlen, "expected Key=Value parts", NULL);
    char *dst = NULL;
    size_t cap = 0;
    char flag[16];
    if (strcasecmp(key, "Endpoint") == 0)
      dst = endpoint, cap = sizeof endpoint, have_endpoint = true;
    else if (strcasecmp(key, "SharedAccessKeyName") == 0)
      dst = out->key_name, cap = sizeof out->key_name;
    else if (strcasecmp(key, "SharedAccessKey") == 0)
      dst = out->key, cap = sizeof out->key;
    else if (strcasecmp(key, "SharedAccessSignature") == 0)
      dst = out->sas, cap = sizeof out->sas;
    else if (strcasecmp(key, "EntityPath") == 0)
      dst = out->entity_path, cap = sizeof out->entity_path;
    else if (strcasecmp(key, "UseDevelopmentEmulator") == 0)
      dst = flag, cap = sizeof flag;
    else
      return memset(out, 0, sizeof *out), fail(err, errlen, "unknown connection string key", key);
    if (!copy_trim(eq + 1, end, dst, cap))
      return memset(out, 0, sizeof *out), fail(err, errlen, "value too long for key", key);
    if (dst == flag) {
      if (strcasecmp(flag, "true") == 0)
        out->emulator = true;
      else if (strcasecmp(flag, "false") != 0)
        return memset(out, 0, sizeof *out),
               fail(err, errlen, "UseDevelopmentEmulator must be true or false", flag);
    }
    p = semi ? semi + 1 : end;
  }
  int rc = 0;
  if (!have_endpoint || !endpoint[0])
    rc = fail(err, errlen, "connection string has no Endpoint", NULL);
  else if ((rc = parse_endpoint(endpoint, out, err, errlen)) != 0)
    ;
  else if (out->key[0] && out->sas[0])
    rc = fail(err, errlen, "give SharedAccessKey or SharedAccessSignature, not both", NULL);
  else if (out->key[0] && !out->key_name[0])
    rc = fail(err, errlen, "SharedAccessKey needs SharedAccessKeyName", NULL);
  else if (!out->key[0] && !out->sas[0])
    rc = fail(err, errlen,
              "connection string has neither SharedAccessKey nor SharedAccessSignature", NULL);
  if (rc != 0) {
    memset(out, 0, sizeof *out);
    return rc;
  }
  out->use_tls = !out->emulator;
  if (out->port == 0)
    out->port = out->emulator ? 5672 : 5671;
  return 0;
}

size_t qs_url_encode(const char *in, size_t n, char *out, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    /* encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) unescaped */
    if (isalnum(c) || strchr("-_.!~*'()", c)) {
      if (o + 1 < cap)
        out[o] = (char)c;
      o++;
    } else {
      if (o + 3 < cap) {
        out[o] = '%';
        out[o + 1] = hex[c >> 4];
        out[o + 2] = hex[c & 15];
      }
      o += 3;
    }
  }
  if (cap)
    out[o < cap ? o : cap - 1] = '\0';
  return o;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode [b, e) into out; false on a bad escape or overflow. */
static bool url_decode(const char *b, const char *e, char *out, size_t cap) {
  size_t o = 0;
  for (; b < e; b++) {
    int c = (unsigned char)*b;
    if (c == '%') {
      if (e - b < 3 || hexval(b[1]) < 0 || hexval(b[2]) < 0)
        return false;
      c = hexval(b[1]) * 16 + hexval(b[2]);
      b += 2;
    } else if (c == '+') {
      c = ' ';
    }
    if (o + 1 >= cap)
      return false;
    out[o++] = (char)c;
  }
  out[o] = '\0';
  return true;
}

/* base64(HMAC-SHA256(key, msg)) into out (>= 45 bytes). */
static void sign(const char *key, const char *msg, size_t msglen, char out[64]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, msglen, mac, &maclen);
  EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
}

int qs_sas_token_make(const char *resource, const char *key_name, const char *key, int64_t expiry_s,
                      char *out, size_t cap) {
  char enc_res[3 * QS_EH_FIELD_MAX], to_sign[3 * QS_EH_FIELD_MAX + 32], sig[64], enc_sig[200],
      enc_name[3 * QS_EH_FIELD_MAX];
  if (qs_url_encode(resource, strlen(resource), enc_res, sizeof enc_res) >= sizeof enc_res ||
      qs_url_encode(key_name, strlen(key_name), enc_name, sizeof enc_name) >= sizeof enc_name)
    return QS_ERR_TOOBIG;
  int n = snprintf(to_sign, sizeof to_sign, "%s\n%" PRId64, enc_res, expiry_s);
  sign(key, to_sign, (size_t)n, sig);
  qs_url_encode(sig, strlen(sig), enc_sig, sizeof enc_sig);
  int len = snprintf(out, cap, "SharedAccessSignature sr=%s&sig=%s&se=%" PRId64 "&skn=%s", enc_res,
                     enc_sig, expiry_s, enc_name);
  return len < 0 || (size_t)len >= cap ? QS_ERR_TOOBIG : 0;
}

int qs_sas_token_parse(const char *token, qs_sas_token *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  static const char prefix[] = "SharedAccessSignature ";
  if (!token || strncmp(token, prefix, sizeof prefix - 1) != 0)
    return fail(err, errlen, "token must start with \"SharedAccessSignature \"", NULL);
  bool have_sr = false, have_sig = false, have_se = false, have_skn = false;
  for (const char *p = token + sizeof prefix - 1; *p;) {
    const char *amp = strchr(p, '&');
    const char *end = amp ? amp : p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    if (!eq)
      return fail(err, errlen, "token field without '='", NULL);
    size_t klen = (size_t)(eq - p);
    bool ok = true;
    if (klen == 2 && strncmp(p, "sr", 2) == 0) {
      ok = copy_trim(eq + 1, end, out->resource_enc, sizeof out->resource_enc) &&
           url_decode(eq + 1, end, out->resource, sizeof out->resource);
      have_sr = true;
    } else if (klen == 3 && strncmp(p, "sig", 3) == 0) {
      ok = url_decode(eq + 1, end, out->sig, sizeof out->sig);
      have_sig = true;
    } else if (klen == 2 && strncmp(p, "se", 2) == 0) {
      char num[24], *ne;
      ok = copy_trim(eq + 1, end, num, sizeof num);
      out->expiry_s = ok ? strtoll(num, &ne, 10) : 0;
      ok = ok && num[0] && *ne == '\0';
      have_se = true;
    } else if (klen == 3 && strncmp(p, "skn", 3) == 0) {
      ok = url_decode(eq + 1, end, out->key_name, sizeof out->key_name);
      have_skn = true;
    }
    if (!ok) {
      memset(out, 0, sizeof *out);
      return fail(err, errlen, "malformed or oversized token field", NULL);
    }
    p = amp ? amp + 1 : end;
  }
  if (!have_sr || !have_sig || !have_se || !have_skn) {
    memset(out, 0, sizeof *out);
    return fail(err, errlen, "token needs sr, sig, se and skn", NULL);
  }
  return 0;
}

/* Lower-cased "host/path" without scheme, port and trailing slashes. */
static void normalize(const char *uri, char *out, size_t cap) {
  const char *p = strstr(uri, "://");
  p = p ? p + 3 : uri;
  size_t o = 0;
  bool in_host = true, in_port = false;
  for (; *p && o + 1 < cap; p++) {
    if (in_host && *p == ':') {
      in_port = true;
      continue;
    }
    if (*p == '/') {
      in_host = in_port = false;
    }
    if (in_port)
      continue;
    out[o++] = (char)tolower((unsigned char)*p);
  }
  while (o > 0 && out[o - 1] == '/')
    o--;
  out[o] = '\0';
}

bool qs_sas_resource_covers(const char *resource, const char *audience) {
  char r[QS_EH_FIELD_MAX], a[QS_EH_FIELD_MAX];
  normalize(resource, r, sizeof r);
  normalize(audience, a, sizeof a);
  size_t n = strlen(r);
  return n > 0 && strncmp(r, a, n) == 0 && (a[n] == '\0' || a[n] == '/');
}

int qs_sas_token_verify(const qs_sas_token *tok, const char *key, const char *audience,
                        int64_t now_s, char *err, size_t errlen) {
  char to_sign[QS_EH_FIELD_MAX + 32], want[64];
  int n = snprintf(to_sign, sizeof to_sign, "%s\n%" PRId64, tok->resource_enc, tok->expiry_s);
  sign(key, to_sign, (size_t)n, want);
  size_t wl = strlen(want);
  if (strlen(tok->sig) != wl || CRYPTO_memcmp(tok->sig, want, wl) != 0) {
    if (err && errlen)
      snprintf(err, errlen, "signature does not match key '%s'", tok->key_name);
    return QS_ERR_AUTH;
  }
  if (tok->expiry_s <= now_s) {
    if (err && errlen)
      snprintf(err, errlen, "token expired at %" PRId64 " (now %" PRId64 ")", tok->expiry_s, now_s);
    return QS_ERR_EXPIRED;
  }
  if (audience && !qs_sas_resource_covers(tok->resource, audience)) {
    if (err && errlen)
      snprintf(err, errlen, "token for '%.200s' does not cover '%.200s'", tok->resource, audience);
    return QS_ERR_AUTH;
  }
  return 0;
}
