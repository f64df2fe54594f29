/* fsutil.c — mkdir -p, the one copy every service uses. */
#include "qs/fsutil.h"

#include "qs/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Create every directory of path up to (and, when include_last, including) its last component. */
static int make_dirs(const char *path, int include_last) {
  char *tmp = qs_xstrdup(path);
  int rc = 0;
  for (char *p = tmp + 1; rc == 0; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char c = *p;
    if (c == '\0' && !include_last)
      break;
    *p = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
      rc = -errno;
    *p = c;
    if (c == '\0')
      break;
  }
  free(tmp);
  return rc;
}

int qs_mkdir_p(const char *path) { return make_dirs(path, 1); }
int qs_mkdir_parents(const char *file) { return make_dirs(file, 0); }
