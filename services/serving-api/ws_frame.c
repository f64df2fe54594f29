/* ws_frame.c — RFC 6455 framing (see ws_frame.h). */
#include "ws_frame.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "qs/error.h"

void ws_accept_key(const char *client_key, size_t len, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char src[128 + sizeof guid], sha[SHA_DIGEST_LENGTH];
  if (len > 128)
    len = 128;
  memcpy(src, client_key, len);
  memcpy(src + len, guid, sizeof guid - 1);
  SHA1(src, len + sizeof guid - 1, sha);
  EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH); /* 28 chars + NUL */
}

size_t ws_frame_header(uint8_t out[WS_HEADER_MAX], uint8_t opcode, size_t len) {
  out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (uint8_t)len;
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
  return 10;
}

long ws_frame_parse(uint8_t *buf, size_t avail, size_t max_payload, ws_frame *f) {
  if (avail < 2)
    return 0;
  bool fin = buf[0] & 0x80;
  uint8_t rsv = buf[0] & 0x70, op = buf[0] & 0x0F;
  bool masked = buf[1] & 0x80;
  uint64_t len = buf[1] & 0x7F;
  size_t pos = 2;
  if (rsv || !masked)
    return QS_ERR_PARSE;
  bool control = op & 0x8;
  if (op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE && op != WS_OP_PING &&
      op != WS_OP_PONG && op != 0)
    return QS_ERR_PARSE;
  if (control && (!fin || len > 125))
    return QS_ERR_PARSE;
  if (!control && (!fin || op == 0))
    return QS_ERR_UNSUPPORTED;
  if (len == 126) {
    if (avail < 4)
      return 0;
    len = ((uint64_t)buf[2] << 8) | buf[3];
    pos = 4;
  } else if (len == 127) {
    if (avail < 10)
      return 0;
    len = 0;
    for (int i = 0; i < 8; i++)
      len = (len << 8) | buf[2 + i];
    pos = 10;
  }
  if (len > max_payload)
    return QS_ERR_TOOBIG;
  if (avail < pos + 4 + len)
    return 0;
  const uint8_t *mask = buf + pos;
  uint8_t *p = buf + pos + 4;
  for (size_t i = 0; i < len; i++)
    p[i] ^= mask[i & 3];
  f->opcode = op;
  f->payload = p;
  f->len = (size_t)len;
  return (long)(pos + 4 + len);
}
