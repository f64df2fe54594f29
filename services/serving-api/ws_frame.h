/* ws_frame.h — the WebSocket wire format (RFC 6455) as pure functions: the handshake's accept
 * key, server frame headers, and a parser of client frames. No I/O, no allocation: live.c feeds
 * it the bytes h2o read, the unit tests feed it memory.
 *
 * Client frames must be masked (5.1); reserved bits must be 0 (no extension is negotiated);
 * control frames carry at most 125 bytes and are never fragmented (5.5). Fragmented data messages
 * are refused (QS_ERR_UNSUPPORTED): the protocol's client messages are small JSON texts.
 */
#ifndef SERVING_WS_FRAME_H
#define SERVING_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA
#define WS_HEADER_MAX 10

/* base64(SHA-1(key + GUID)): 28 characters and a NUL into out. */
void ws_accept_key(const char *client_key, size_t len, char out[29]);

/* Header of an unmasked, final server frame of len payload bytes; returns its size (2..10). */
size_t ws_frame_header(uint8_t out[WS_HEADER_MAX], uint8_t opcode, size_t len);

typedef struct ws_frame {
  uint8_t opcode;
  uint8_t *payload; /* unmasked in place, inside the parsed buffer */
  size_t len;
} ws_frame;

/* Parses one client frame at buf[0..avail). Returns the bytes it spans (> 0) with *f filled and
 * its payload unmasked in place, 0 when more bytes are needed, or a negative qs_err:
 * QS_ERR_PARSE (unmasked, reserved bits, bad control frame, unknown opcode), QS_ERR_TOOBIG
 * (payload over max_payload), QS_ERR_UNSUPPORTED (fragmented message). */
long ws_frame_parse(uint8_t *buf, size_t avail, size_t max_payload, ws_frame *f);

#endif
