#include "agent/paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"

static int paths_join(char *out, size_t cap, const char *a, const char *b)
{
	int n = snprintf(out, cap, "%s/%s", a, b);

	return n < 0 || (size_t)n >= cap ? PKS_ERR_TOO_LARGE : PKS_OK;
}

int paths_resolve(const char *state_dir, struct paths *out, char *err, size_t err_len)
{
	const char *env = getenv("PKSYNC_STATE_DIR");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME");
	const char *data = getenv("XDG_DATA_HOME");
	char runtime_dir[4096];
	int explicit_dir = 1;
	int n;

	memset(out, 0, sizeof(*out));
	if (state_dir == NULL || state_dir[0] == '\0')
		state_dir = env;
	if (state_dir != NULL && state_dir[0] != '\0') {
		n = snprintf(out->state_dir, sizeof(out->state_dir), "%s", state_dir);
	} else if (data != NULL && data[0] == '/') {
		explicit_dir = 0;
		n = snprintf(out->state_dir, sizeof(out->state_dir), "%s/pksync", data);
	} else if (home != NULL && home[0] == '/') {
		explicit_dir = 0;
		n = snprintf(out->state_dir, sizeof(out->state_dir), "%s/.local/share/pksync",
			     home);
	} else {
		snprintf(err, err_len,
			 "No state directory: set --state-dir, XDG_DATA_HOME or HOME.");
		return PKS_ERR_INVALID;
	}
	if (n < 0 || (size_t)n >= sizeof(out->state_dir)) {
		snprintf(err, err_len, "The state directory path is too long.");
		return PKS_ERR_TOO_LARGE;
	}
	if (paths_join(out->db_path, sizeof(out->db_path), out->state_dir, "vault.db") ||
	    paths_join(out->lock_path, sizeof(out->lock_path), out->state_dir, "agent.lock") ||
	    paths_join(out->key_file, sizeof(out->key_file), out->state_dir, "kek.key")) {
		snprintf(err, err_len, "The state directory path is too long.");
		return PKS_ERR_TOO_LARGE;
	}
	if (!explicit_dir && runtime != NULL && runtime[0] == '/') {
		n = snprintf(runtime_dir, sizeof(runtime_dir), "%s/pksync", runtime);
		if (n < 0 || (size_t)n >= sizeof(runtime_dir) ||
		    paths_join(out->socket_path, sizeof(out->socket_path), runtime_dir,
			       "control.sock")) {
			snprintf(err, err_len,
				 "The control socket path under XDG_RUNTIME_DIR is longer than %zu "
				 "bytes.",
				 sizeof(out->socket_path) - 1);
			return PKS_ERR_TOO_LARGE;
		}
		return PKS_OK;
	}
	if (paths_join(out->socket_path, sizeof(out->socket_path), out->state_dir,
		       "control.sock")) {
		snprintf(err, err_len,
			 "The control socket path %s/control.sock is longer than %zu bytes; use a "
			 "shorter --state-dir.",
			 out->state_dir, sizeof(out->socket_path) - 1);
		return PKS_ERR_TOO_LARGE;
	}
	return PKS_OK;
}

int paths_mkdir(const char *dir)
{
	char tmp[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(tmp))
		return PKS_ERR_INVALID;
	memcpy(tmp, dir, len + 1);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return pks_err_from_errno(errno);
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return pks_err_from_errno(errno);
	return PKS_OK;
}
