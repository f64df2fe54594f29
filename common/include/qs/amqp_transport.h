/* amqp_transport.h — qpid-proton pn_connection_driver bound to libuv TCP,
 * with TLS done by qs_tls (OpenSSL memory BIOs) in this glue.
 *
 * One code path serves the hub's listeners (plain 5672, TLS 5671) and the
 * clients (to the hub or to Azure Event Hubs). Proton only ever sees
 * plaintext AMQP bytes:
 *
 *   socket <-> [qs_tls] <-> [outgoing frame filter] <-> pn_connection_driver
 *
 * Life cycle of a connection (qs_amqp_conn, allocated by this module):
 *   1. created by qs_amqp_conn_connect() or accepted by a qs_amqp_listener;
 *   2. cbs.setup(conn) runs BEFORE the transport is bound: set server-side
 *      SASL (pn_sasl), pn_transport_set_max_frame, idle timeout, container
 *      id, an outgoing filter; a negative return rejects the connection
 *      (no other callback then fires for it);
 *   3. every proton event goes to cbs.on_event, in order, from the "pump"
 *      that runs after every read, write, timer tick and wake;
 *   4. a transport failure (socket error, TLS failure, DNS failure, idle
 *      timeout, framing error) is reported ONCE to cbs.on_error with a code
 *      and a reason, just before the PN_TRANSPORT_ERROR event (or, if proton
 *      posts none, before PN_TRANSPORT_CLOSED);
 *   5. when the driver is finished (both directions closed, output flushed)
 *      the handles are closed; cbs.on_closed fires exactly once (unless
 *      setup rejected the connection), then the memory is freed.
 * The module never logs; callers decide.
 *
 * Bounds: output copied out of proton is held in two stages of at most
 * QS_AMQP_STAGE_MAX bytes each (filtered plaintext, then ciphertext; plus
 * the one write in flight), and reading stops while undecrypted ciphertext
 * exceeds QS_AMQP_TLS_IN_MAX or proton has no input capacity. What proton
 * itself buffers is bounded by the application's credit and windows.
 *
 * All functions must be called on the loop's thread, except
 * qs_amqp_conn_wake(), which any thread may call while the connection lives.
 */
#ifndef QS_AMQP_TRANSPORT_H
#define QS_AMQP_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proton/connection_driver.h>
#include <uv.h>

#include "qs/tls.h"

#define QS_AMQP_STAGE_MAX (64 * 1024)
#define QS_AMQP_TLS_IN_MAX (256 * 1024)
#define QS_AMQP_HOST_MAX 253

typedef struct qs_amqp_conn qs_amqp_conn;

typedef struct qs_amqp_conn_cbs {
  /* Optional. Runs before the transport is bound; negative rejects. */
  int (*setup)(qs_amqp_conn *conn, void *data);
  /* Required. Every proton event of the connection. */
  void (*on_event)(qs_amqp_conn *conn, pn_event_t *ev, void *data);
  /* Optional. At most once: why the transport failed. Codes: QS_ERR_AUTH
   * (TLS verification), QS_ERR_TIMEOUT (idle timeout), QS_ERR_IO (socket,
   * DNS, TLS protocol, connection aborted), QS_ERR_PARSE (AMQP framing). */
  void (*on_error)(qs_amqp_conn *conn, int code, const char *reason, void *data);
  /* Optional. Exactly once, last; the conn is freed right after it. */
  void (*on_closed)(qs_amqp_conn *conn, void *data);
  /* Optional. After each completed socket write, before the pump runs: a server that caps its
   * output per write (the hub) resumes paused deliveries here. */
  void (*on_written)(qs_amqp_conn *conn, void *data);
} qs_amqp_conn_cbs;

/* Opens a client connection: resolves host with uv_getaddrinfo, connects
 * (trying each address), then does TLS when tls is not NULL, with
 * tls_peer_name (or host when NULL) as SNI and verified name. cbs.setup runs
 * inside this call. On success *out is the connection; on a synchronous
 * failure the return is negative and no callback fires. */
int qs_amqp_conn_connect(uv_loop_t *loop, const char *host, int port, qs_tls_ctx *tls,
                         const char *tls_peer_name, const qs_amqp_conn_cbs *cbs, void *data,
                         qs_amqp_conn **out);

pn_connection_t *qs_amqp_conn_connection(qs_amqp_conn *conn);
/* The proton driver (for code that attaches per-connection state in setup). */
pn_connection_driver_t *qs_amqp_conn_driver(qs_amqp_conn *conn);
pn_transport_t *qs_amqp_conn_transport(qs_amqp_conn *conn);
void *qs_amqp_conn_data(const qs_amqp_conn *conn);
void qs_amqp_conn_set_data(qs_amqp_conn *conn, void *data);
/* The conn a proton connection belongs to (NULL if not one of ours). */
qs_amqp_conn *qs_amqp_conn_from_connection(pn_connection_t *c);
bool qs_amqp_conn_is_tls(const qs_amqp_conn *conn);

/* Asks for a PN_CONNECTION_WAKE event on the loop thread. Several wakes
 * before the event may coalesce into one. Thread-safe. */
void qs_amqp_conn_wake(qs_amqp_conn *conn);

/* Drops the connection at once: sets the transport condition
 * (qs:aborted, reason), closes both directions, reports on_error with
 * QS_ERR_CLOSED, and closes asynchronously. For a clean AMQP close, call
 * pn_connection_close() instead and let the peer answer. */
void qs_amqp_conn_abort(qs_amqp_conn *conn, const char *reason);

/* ---- Outgoing frame filter ---------------------------------------------
 * A filter sees the plaintext bytes proton writes (after SASL/AMQP framing,
 * before TLS), in order, split anywhere, and appends what is to be sent to
 * out. It must consume all its input. A negative return fails the
 * connection with QS_ERR_PARSE. */
typedef struct qs_amqp_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} qs_amqp_buf;

void qs_amqp_buf_append(qs_amqp_buf *b, const void *p, size_t n);
void qs_amqp_buf_free(qs_amqp_buf *b);

typedef int (*qs_amqp_out_filter_fn)(void *state, const uint8_t *in, size_t n, qs_amqp_buf *out);

/* Installs a filter (in setup). state is owned by the caller and must live
 * until on_closed. */
void qs_amqp_conn_set_out_filter(qs_amqp_conn *conn, qs_amqp_out_filter_fn fn, void *state);
/* Installs the ready-made frame padding filter below, owned by the connection. */
void qs_amqp_conn_use_frame_padding(qs_amqp_conn *conn);

/* The frame padding filter: re-encodes every AMQP performative (frame type 0, descriptors
 * 0x10 open .. 0x18 close) whose field list is shorter than the performative's arity, padding
 * it with nulls (begin's handle-max with 0xffffffff) and adjusting the frame size; a transfer's
 * payload streams through untouched. Protocol headers, SASL and empty frames pass byte-identical.
 * Needed by pyamqp, which indexes performative fields by position (a transfer's payload must sit
 * at index 11), while proton 0.37 omits trailing null fields and cannot set handle-max. */
typedef struct qs_amqp_frame_pad_state {
  bool pad;          /* pad performatives (qs_amqp_frame_pad_init sets it) */
  bool mark_batches; /* set message-format 0x80013700 on batch transfers (see below) */
  struct {
    uint16_t channel;
    uint32_t handle;
    bool marked;
  } partial[32]; /* multi-frame deliveries in progress: is the delivery marked */
  size_t npartial;
  int phase;         /* internal: what the buffered bytes are */
  size_t pass_left;  /* bytes of the current frame to copy through */
  uint8_t acc[2048]; /* head of the current frame, up to the end of its performative list */
  size_t acc_len;
  size_t need;    /* bytes acc must hold before the next decision */
  uint64_t code;  /* descriptor of the current performative */
  size_t arity;   /* its number of fields */
  size_t list_at; /* where its list starts in acc */
} qs_amqp_frame_pad_state;

void qs_amqp_frame_pad_init(qs_amqp_frame_pad_state *f);

/* Batch marking, for Event Hubs clients: proton 0.37 cannot set a delivery's message-format, so
 * the filter sets it. A transfer whose payload starts with a message-annotations section
 * (00 53 72) gets message-format 0x80013700, and so do the continuation frames of that delivery
 * (tracked per channel and handle while `more` is set); every other frame passes unchanged. The
 * client encodes each batch starting with message-annotations and nothing else that way. */
void qs_amqp_frame_mark_init(qs_amqp_frame_pad_state *f);
/* Installs the marking filter, owned by the connection (in setup). */
void qs_amqp_conn_use_batch_marking(qs_amqp_conn *conn);
int qs_amqp_frame_pad(void *state, const uint8_t *in, size_t n, qs_amqp_buf *out);

/* ---- Listener ----------------------------------------------------------- */
typedef struct qs_amqp_listener qs_amqp_listener;
typedef void (*qs_amqp_listener_close_cb)(qs_amqp_listener *l);

struct qs_amqp_listener {
  uv_tcp_t tcp;
  bool inited;     /* tcp handle initialised */
  qs_tls_ctx *tls; /* borrowed; NULL for plain AMQP */
  qs_amqp_conn_cbs cbs;
  void *data; /* given to each accepted conn; the module never touches it */
  int port;   /* actual bound port */
  int last_accept_error;
  qs_amqp_listener_close_cb close_cb;
  bool closing;
};

/* Binds host:port (host an IPv4 or IPv6 literal; port 0 picks a free port,
 * see qs_amqp_listener_port), listens, and accepts: each connection is put
 * in server mode (pn_transport_set_server) and then handed to cbs.setup
 * before binding. Accepted connections do not reference the listener, which
 * may be closed while they live; limit their number in setup. As with a
 * libuv handle, the listener must be closed with qs_amqp_listener_close()
 * even when init fails, and stay valid until its close_cb. */
int qs_amqp_listener_init(qs_amqp_listener *l, uv_loop_t *loop, const char *host, int port,
                          qs_tls_ctx *tls, const qs_amqp_conn_cbs *cbs, void *data);
int qs_amqp_listener_port(const qs_amqp_listener *l);
/* Stops accepting; close_cb (may be NULL) fires when the handle is closed. */
void qs_amqp_listener_close(qs_amqp_listener *l, qs_amqp_listener_close_cb close_cb);

#endif
