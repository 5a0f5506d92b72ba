/*
 * The agent's control socket: a Unix stream socket speaking length-prefixed
 * JSON (docs/control-protocol.md). One request per connection. Peers whose
 * uid differs from the agent's are refused before anything is read.
 */
#ifndef PKS_AGENT_CONTROL_H
#define PKS_AGENT_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/log.h"

#define CONTROL_REQUEST_MAX ((size_t)64 * 1024 * 1024)
#define CONTROL_RESPONSE_MAX ((size_t)256 * 1024 * 1024)

struct control_server;
struct control_request;

/*
 * Called once per well-formed request, with the parsed object (borrowed: it
 * is wiped and freed after the handler returns, so copy what must outlive
 * the call). The handler must eventually answer exactly once with
 * control_request_reply_ok() or control_request_reply_error(), now or later.
 */
typedef void (*control_handler_fn)(void *user_data, struct control_request *req, const char *cmd,
				   json_t *request);

/* Binds path (replacing a stale socket file) with mode 0600 and starts serving. */
int control_server_new(uv_loop_t *loop, const char *path, const struct pks_logger *log,
		       control_handler_fn handler, void *user_data, struct control_server **out);
/* Stops listening; pending requests are dropped. Memory is freed once libuv has closed. */
void control_server_close(struct control_server *s);

/* Best effort: sent now if the socket can take it, otherwise skipped. */
void control_request_progress(struct control_request *req, const char *what, size_t done,
			      size_t total);
/* An advisory {"event": event} frame (takes event), sent like progress. */
void control_request_event(struct control_request *req, json_t *event);
/* The client closed its end: answering is still required, but nobody listens. */
bool control_request_gone(const struct control_request *req);
/* Sends {"ok": true, "result": result} and takes ownership of result. */
void control_request_reply_ok(struct control_request *req, json_t *result);
void control_request_reply_error(struct control_request *req, const char *sentence);

/* Overwrites every string in a JSON tree (they may hold secrets), then frees it. */
void control_json_wipe_decref(json_t *json);

#endif
