/* Where the agent keeps its state and its control socket (docs/control-protocol.md). */
#ifndef PKS_AGENT_PATHS_H
#define PKS_AGENT_PATHS_H

#include <stddef.h>

struct paths {
	char state_dir[4096];
	char socket_path[108];
	char db_path[4096];
	char lock_path[4096];
	char key_file[4096];
};

/*
 * Resolves the paths from an explicit state dir (may be NULL), then
 * PKSYNC_STATE_DIR, then the XDG defaults. PKS_ERR_TOO_LARGE when the socket
 * path does not fit a sockaddr_un; err holds a sentence on failure.
 */
int paths_resolve(const char *state_dir, struct paths *out, char *err, size_t err_len);

/* Creates dir and its missing parents; the last component gets mode 0700. */
int paths_mkdir(const char *dir);

#endif
