/* checkpoint_file.c — the file-system half of atomic saves: temporary names, cleanup of
 * temporaries left by killed writers, fsync + rename. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "checkpoint_internal.h"

gz_status ckpt_check_readable(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return gz_fail(GZ_ERR_IO, "checkpoint %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return gz_fail(GZ_ERR_IO, "checkpoint %s: not a regular file", path);
    return GZ_OK;
}

/* Folder part of path ("." when it has none), malloc'ed; NULL when out of memory. */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *basename_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

gz_status ckpt_temp_path(const char *path, char **out) {
    static unsigned long counter; /* callers hold the checkpoint lock */
    *out = NULL;
    if (!*basename_of(path)) return gz_fail(GZ_ERR_VALUE, "checkpoint path '%s' names a folder, not a file", path);
    char *folder = folder_of(path);
    if (!folder) return gz_fail(GZ_ERR_NOMEM, "out of memory");
    struct stat st;
    gz_status s = GZ_OK;
    if (stat(folder, &st) != 0)
        s = gz_fail(GZ_ERR_IO, "cannot save checkpoint %s: folder %s: %s", path, folder, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        s = gz_fail(GZ_ERR_IO, "cannot save checkpoint %s: %s is not a folder", path, folder);
    else if (access(folder, W_OK | X_OK) != 0)
        s = gz_fail(GZ_ERR_IO, "cannot save checkpoint %s: folder %s: %s", path, folder, strerror(errno));
    free(folder);
    GZ_TRY(s);
    size_t size = strlen(path) + 64;
    GZ_TRY(gz_calloc((void **)out, size, 1, "a checkpoint file name"));
    snprintf(*out, size, "%s.tmp-%ld-%lu", path, (long)getpid(), ++counter);
    return GZ_OK;
}

/* Parses "<base>.tmp-<pid>-<n>"; returns the pid or -1 when name is not such a file. */
static long temp_owner(const char *name, const char *base) {
    size_t blen = strlen(base);
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp-", 5) != 0) return -1;
    const char *p = name + blen + 5;
    char *end;
    errno = 0;
    long pid = strtol(p, &end, 10);
    if (errno || end == p || *end != '-' || pid <= 0) return -1;
    p = end + 1;
    strtoul(p, &end, 10);
    if (end == p || *end) return -1;
    return pid;
}

void ckpt_remove_stale_temps(const char *path) {
    char *folder = folder_of(path);
    DIR *dir = folder ? opendir(folder) : NULL;
    if (!dir) {
        free(folder);
        return; /* best effort: the save itself reports real folder problems */
    }
    const char *base = basename_of(path);
    long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        long pid = temp_owner(e->d_name, base);
        if (pid < 0) continue;
        /* kill(pid, 0) fails with ESRCH only when no such process exists; EPERM means alive. */
        int gone = pid == self || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
        if (!gone) continue;
        char *full = malloc(strlen(folder) + strlen(e->d_name) + 2);
        if (!full) break;
        sprintf(full, "%s/%s", folder, e->d_name);
        unlink(full);
        free(full);
    }
    closedir(dir);
    free(folder);
}

static gz_status fsync_path(const char *path, int is_folder, const char *what) {
    int fd = open(path, O_RDONLY | (is_folder ? O_DIRECTORY : 0) | O_CLOEXEC);
    if (fd < 0) return gz_fail(GZ_ERR_IO, "%s: opening %s for fsync: %s", what, path, strerror(errno));
    int rc = fsync(fd), err = errno;
    close(fd);
    /* Some file systems cannot fsync a folder (EINVAL); the rename is then as durable as they allow. */
    if (rc != 0 && !(is_folder && (err == EINVAL || err == ENOTSUP)))
        return gz_fail(GZ_ERR_IO, "%s: fsync of %s failed: %s", what, path, strerror(err));
    return GZ_OK;
}

gz_status ckpt_commit(const char *tmp, const char *path) {
    /* A re-saved checkpoint keeps the mode of the file it replaces (a private 0600 stays private). */
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && chmod(tmp, st.st_mode & 07777) != 0)
        return gz_fail(GZ_ERR_IO, "%s: setting the mode of %s failed: %s", path, tmp, strerror(errno));
    GZ_TRY(fsync_path(tmp, 0, path));
    if (rename(tmp, path) != 0)
        return gz_fail(GZ_ERR_IO, "%s: renaming %s into place failed: %s", path, tmp, strerror(errno));
    char *folder = folder_of(path);
    if (!folder) return gz_fail(GZ_ERR_NOMEM, "out of memory");
    gz_status s = fsync_path(folder, 1, path);
    free(folder);
    return s;
}
