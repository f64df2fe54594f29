/* blob.h — a minimal Azure Blob Storage (and ADLS Gen2 through its blob endpoint) client over the
 * REST API with libcurl easy handles: List Blobs (prefix, marker paging), Get Blob, Put Blob.
 *
 * Blocking by design: it runs on the batch job's worker thread, never on the loop.
 * Authentication: Shared Key (HMAC-SHA256 of the canonical request with the base64 account key,
 * x-ms-version 2021-12-02) or a SAS token appended to every URL; neither for public containers.
 *
 * Source URLs:
 *   https://<account>.blob.core.windows.net/<container>[/<prefix>][?<sas>]
 *   http://127.0.0.1:10000/<account>/<container>[/<prefix>]   (path style: Azurite, IP hosts)
 *   abfs[s]://<container>@<account>.dfs.core.windows.net[/<prefix>]   (ADLS Gen2, via its blob
 *   endpoint https://<account>.blob.core.windows.net)
 * Every response is bounded: listings by the page size, blobs by max_blob_bytes.
 */
#ifndef BW_BLOB_H
#define BW_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "qs/buf.h"

#define BW_BLOB_VERSION "2021-12-02"

typedef struct bw_blob {
  char base[512];      /* scheme://host[:port] */
  char account[128];   /* storage account name */
  char path_base[400]; /* URL path of the container, "/container" or "/account/container" */
  char prefix[1024];   /* blob name prefix (no leading '/') */
  char sas[2048];      /* SAS query without '?', "" for none */
  unsigned char key[128];
  size_t key_len; /* 0: no Shared Key */
  long page_size; /* maxresults of List Blobs */
  size_t max_blob_bytes;
  long timeout_s;
  void *curl; /* CURL *, reused for keep-alive */
} bw_blob;

/* Parses the URL; account_key (base64) and sas may be NULL or "". A SAS in the URL's query is
 * used when sas is empty. 0 or QS_ERR_INVALID with err set. */
int bw_blob_init(bw_blob *b, const char *url, const char *account_key, const char *sas, char *err,
                 size_t errlen);
void bw_blob_free(bw_blob *b);

/* True for the URL forms above (http://, https://, abfs://, abfss://). */
int bw_blob_is_url(const char *s);

typedef int (*bw_blob_list_fn)(void *ud, const char *name, uint64_t size);
/* Lists every blob under the prefix, page by page (cb returning non-zero stops with that code). */
int bw_blob_list(bw_blob *b, bw_blob_list_fn cb, void *ud, char *err, size_t errlen);
/* Downloads a blob (name relative to the container) into out (reset first). */
int bw_blob_get(bw_blob *b, const char *name, qs_buf *out, char *err, size_t errlen);
/* Uploads a block blob in one Put Blob (atomic: readers see the old or the new content). */
int bw_blob_put(bw_blob *b, const char *name, const void *data, size_t len, char *err,
                size_t errlen);

/* The Shared Key signature of a request: base64(HMAC-SHA256(key, string-to-sign)) into out (>= 64
 * bytes). Exposed for tests. query_canon is the canonicalized query part ("\ncomp:list\n..."),
 * x_ms_headers the canonicalized x-ms-* headers each ending in '\n'. */
void bw_blob_sign(const unsigned char *key, size_t key_len, const char *verb,
                  const char *content_length, const char *content_type, const char *x_ms_headers,
                  const char *account, const char *path, const char *query_canon, char *out,
                  size_t cap);

/* Percent-encodes s for a URL path (keeps unreserved and '/'), or for a query value
 * (slash_too != 0). Appends to out. */
void bw_blob_escape(qs_buf *out, const char *s, int slash_too);

#endif
