/*
 * The client side of the control socket (docs/control-protocol.md): where the
 * socket is, the length-prefixed JSON framing, and the checks every frame
 * from the agent goes through before anything else looks at it.
 */
#ifndef PKS_CLI_CLIENT_H
#define PKS_CLI_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_REQUEST_MAX ((size_t)64 * 1024 * 1024)
#define CLI_RESPONSE_MAX ((size_t)256 * 1024 * 1024)
/* Progress frames are tiny; a larger one is a broken agent. */
#define CLI_PROGRESS_FRAME_MAX ((size_t)4096)
/* More progress frames than this before the answer is a broken agent too. */
#define CLI_PROGRESS_FRAMES_MAX 10000000L
/* The longest error sentence kept from the agent, in bytes. */
#define CLI_SENTENCE_MAX 1024

struct cli_paths {
	char state_dir[4096];
	char socket_path[108];
	/* 1 when the state dir came from --state-dir or PKSYNC_STATE_DIR. */
	int explicit_state_dir;
};

/*
 * Resolves the state dir and socket path exactly as the agent does: state_dir
 * (may be NULL), then PKSYNC_STATE_DIR (empty means unset), then
 * $XDG_DATA_HOME/pksync or ~/.local/share/pksync, with the socket in
 * $XDG_RUNTIME_DIR/pksync for the default dir. PKS_ERR_INVALID (no HOME) or
 * PKS_ERR_TOO_LARGE (path too long), with a sentence in err.
 */
int cli_paths_resolve(const char *state_dir, struct cli_paths *out, char *err, size_t err_len);

enum cli_frame_kind {
	CLI_FRAME_PROGRESS,
	CLI_FRAME_OK,
	CLI_FRAME_ERROR,
	/* An advisory {"event": {...}} frame (pair shows its code with one). */
	CLI_FRAME_EVENT,
};

/* One checked frame. cli_frame_clear() releases it. */
struct cli_frame {
	enum cli_frame_kind kind;
	/* CLI_FRAME_OK: the result value; CLI_FRAME_EVENT: the event object (owned). */
	json_t *result;
	/* CLI_FRAME_ERROR: the agent's sentence, control characters removed. */
	char error[CLI_SENTENCE_MAX];
	/* CLI_FRAME_PROGRESS. */
	int64_t done;
	int64_t total;
	char what[64];
};

void cli_frame_clear(struct cli_frame *frame);

/*
 * Checks one frame body: a JSON object with no duplicate keys that is a
 * progress, success or failure message. PKS_ERR_MALFORMED with a sentence
 * in err when it is none of those; *out is written only on success.
 */
int cli_frame_parse(const uint8_t *body, size_t len, struct cli_frame *out, char *err,
		    size_t err_len);

/* Called for each progress and event frame before the answer. */
typedef void (*cli_progress_fn)(void *user_data, const struct cli_frame *progress);

/*
 * One request, one answer. Serialises request (borrowed), connects to
 * socket_path, sends it, passes progress frames to progress (may be NULL)
 * and returns the final frame in *out (CLI_FRAME_OK or CLI_FRAME_ERROR).
 * PKS_ERR_NOT_FOUND: nothing listens at socket_path (err left empty, the
 * caller explains); PKS_ERR_TOO_LARGE: the request exceeds CLI_REQUEST_MAX;
 * other errors: err holds a sentence. Buffers are wiped before they are freed.
 */
int cli_client_call(const char *socket_path, const json_t *request, cli_progress_fn progress,
		    void *user_data, struct cli_frame *out, char *err, size_t err_len);

#endif
