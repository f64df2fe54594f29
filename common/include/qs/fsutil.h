/* fsutil.h — small file-system helpers shared by the services. */
#ifndef QS_FSUTIL_H
#define QS_FSUTIL_H

/* mkdir -p: create path and every missing parent (mode 0755). 0 or -errno. */
int qs_mkdir_p(const char *path);
/* Create the directories a file at `file` needs (not the file). 0 or -errno. */
int qs_mkdir_parents(const char *file);

#endif
