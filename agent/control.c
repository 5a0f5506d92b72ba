#include "agent/control.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/err.h"

struct control_server {
	uv_pipe_t pipe;
	uv_loop_t *loop;
	struct pks_logger log;
	control_handler_fn handler;
	void *user_data;
	int closing;
};

struct control_request {
	uv_pipe_t pipe;
	uv_write_t write;
	struct control_server *server;
	struct pks_buf in;
	uint8_t *out;
	size_t out_len;
	int replied;
	int closing;
	int closed;
};

struct control_progress_write {
	uv_write_t write;
	uint8_t *frame;
};

static void control_json_wipe(json_t *json)
{
	const char *key;
	json_t *value;
	size_t i;

	switch (json_typeof(json)) {
	case JSON_STRING:
		sodium_memzero((char *)json_string_value(json), json_string_length(json));
		break;
	case JSON_OBJECT:
		json_object_foreach(json, key, value) control_json_wipe(value);
		break;
	case JSON_ARRAY:
		json_array_foreach(json, i, value) control_json_wipe(value);
		break;
	case JSON_INTEGER:
	case JSON_REAL:
	case JSON_TRUE:
	case JSON_FALSE:
	case JSON_NULL:
		break;
	}
}

void control_json_wipe_decref(json_t *json)
{
	if (json == NULL)
		return;
	if (json->refcount == 1)
		control_json_wipe(json);
	json_decref(json);
}

/* Frees req once libuv has closed it and the handler has answered, whichever is last. */
static void control_request_maybe_free(struct control_request *req)
{
	if (!req->closed || !req->replied)
		return;
	pks_buf_free(&req->in);
	if (req->out != NULL) {
		sodium_memzero(req->out, req->out_len);
		free(req->out);
	}
	free(req);
}

static void control_request_closed(uv_handle_t *handle)
{
	struct control_request *req = handle->data;

	req->closed = 1;
	control_request_maybe_free(req);
}

static void control_request_close(struct control_request *req)
{
	if (req->closing)
		return;
	req->closing = 1;
	uv_close((uv_handle_t *)&req->pipe, control_request_closed);
}

static int control_frame(json_t *msg, uint8_t **out, size_t *out_len)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t n;
	uint8_t *frame;

	if (text == NULL)
		return PKS_ERR_NOMEM;
	n = strlen(text);
	if (n > CONTROL_RESPONSE_MAX) {
		sodium_memzero(text, n);
		free(text);
		return PKS_ERR_TOO_LARGE;
	}
	frame = malloc(n + 4);
	if (frame == NULL) {
		sodium_memzero(text, n);
		free(text);
		return PKS_ERR_NOMEM;
	}
	frame[0] = (uint8_t)(n >> 24);
	frame[1] = (uint8_t)(n >> 16);
	frame[2] = (uint8_t)(n >> 8);
	frame[3] = (uint8_t)n;
	memcpy(frame + 4, text, n);
	sodium_memzero(text, n);
	free(text);
	*out = frame;
	*out_len = n + 4;
	return PKS_OK;
}

static void control_request_written(uv_write_t *w, int status)
{
	struct control_request *req = w->data;

	(void)status;
	control_request_close(req);
}

static void control_request_send_final(struct control_request *req, json_t *msg)
{
	uv_buf_t buf;
	int r;

	if (req->replied) {
		control_json_wipe_decref(msg);
		return;
	}
	req->replied = 1;
	if (req->closing) {
		/* The connection is gone: nothing to send. */
		control_json_wipe_decref(msg);
		control_request_maybe_free(req);
		return;
	}
	r = control_frame(msg, &req->out, &req->out_len);
	control_json_wipe_decref(msg);
	if (r != PKS_OK) {
		json_t *err = json_pack("{s:b, s:s}", "ok", 0, "error",
					"The response was too large to send.");
		if (err == NULL || control_frame(err, &req->out, &req->out_len) != PKS_OK) {
			json_decref(err);
			control_request_close(req);
			return;
		}
		json_decref(err);
	}
	buf = uv_buf_init((char *)req->out, (unsigned int)req->out_len);
	req->write.data = req;
	if (uv_write(&req->write, (uv_stream_t *)&req->pipe, &buf, 1, control_request_written) != 0)
		control_request_close(req);
}

void control_request_reply_ok(struct control_request *req, json_t *result)
{
	json_t *msg = json_object();

	if (msg == NULL || json_object_set_new(msg, "ok", json_true()) != 0 ||
	    json_object_set_new(msg, "result", result ? result : json_object()) != 0) {
		json_decref(msg);
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	control_request_send_final(req, msg);
}

void control_request_reply_error(struct control_request *req, const char *sentence)
{
	json_t *msg = json_pack("{s:b, s:s}", "ok", 0, "error", sentence);

	if (msg == NULL) {
		req->replied = 1;
		control_request_close(req);
		return;
	}
	control_request_send_final(req, msg);
}

static void control_progress_written(uv_write_t *w, int status)
{
	struct control_progress_write *pw = w->data;

	(void)status;
	free(pw->frame);
	free(pw);
}

/*
 * Sends an advisory frame now if the socket can take it. A frame is never
 * dropped half-way: the rest of a partial write is queued, and while
 * anything is queued later frames are skipped. Takes msg.
 */
static void control_request_advisory(struct control_request *req, json_t *msg)
{
	struct control_progress_write *pw;
	int n;
	uint8_t *frame = NULL;
	size_t len = 0;
	uv_buf_t buf;

	if (msg == NULL)
		return;
	if (req->closing || req->replied) {
		json_decref(msg);
		return;
	}
	if (control_frame(msg, &frame, &len) == PKS_OK) {
		buf = uv_buf_init((char *)frame, (unsigned int)len);
		n = uv_try_write((uv_stream_t *)&req->pipe, &buf, 1);
		if (n > 0 && (size_t)n < len) {
			pw = calloc(1, sizeof(*pw));
			if (pw != NULL) {
				pw->frame = frame;
				pw->write.data = pw;
				buf =
				    uv_buf_init((char *)frame + n, (unsigned int)(len - (size_t)n));
				if (uv_write(&pw->write, (uv_stream_t *)&req->pipe, &buf, 1,
					     control_progress_written) == 0)
					frame = NULL;
				else
					free(pw);
			}
		}
		free(frame);
	}
	json_decref(msg);
}

void control_request_progress(struct control_request *req, const char *what, size_t done,
			      size_t total)
{
	control_request_advisory(req, json_pack("{s:{s:I, s:I, s:s}}", "progress", "done",
						(json_int_t)done, "total", (json_int_t)total,
						"what", what));
}

void control_request_event(struct control_request *req, json_t *event)
{
	control_request_advisory(req, json_pack("{s:o}", "event", event));
}

bool control_request_gone(const struct control_request *req)
{
	return req->closing;
}

static void control_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct control_request *req = handle->data;
	size_t want = suggested < 65536 ? 65536 : suggested;

	if (pks_buf_reserve(&req->in, want) != PKS_OK && pks_buf_reserve(&req->in, 1) != PKS_OK) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)req->in.data + req->in.len,
			   (unsigned int)(req->in.cap - req->in.len));
}

static void control_dispatch(struct control_request *req)
{
	struct control_server *s = req->server;
	json_error_t jerr;
	json_t *msg = NULL;
	json_t *cmd;

	msg = json_loadb((const char *)req->in.data + 4, req->in.len - 4, JSON_REJECT_DUPLICATES,
			 &jerr);
	pks_buf_free(&req->in);
	if (msg == NULL || !json_is_object(msg)) {
		pks_log(&s->log, PKS_LOG_WARN, "control: malformed request refused");
		control_request_reply_error(req, "The request is not a JSON object.");
		goto out;
	}
	cmd = json_object_get(msg, "cmd");
	if (!json_is_string(cmd)) {
		control_request_reply_error(req, "The request has no \"cmd\" string.");
		goto out;
	}
	s->handler(s->user_data, req, json_string_value(cmd), msg);
out:
	control_json_wipe_decref(msg);
}

static void control_watch_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	static char sink[256];

	(void)handle, (void)suggested;
	*buf = uv_buf_init(sink, sizeof(sink));
}

/* After the request: bytes are ignored; EOF or an error means the client left. */
static void control_watch(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct control_request *req = stream->data;

	(void)buf;
	if (nread >= 0)
		return;
	uv_read_stop(stream);
	if (!req->replied)
		control_request_close(req);
}

static void control_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct control_request *req = stream->data;
	size_t need;

	(void)buf;
	if (nread < 0) {
		uv_read_stop(stream);
		if (nread == UV_ENOBUFS) {
			control_request_reply_error(req, "The request is too large.");
		} else {
			/* The peer left before sending a whole request: nobody holds req. */
			req->replied = 1;
			control_request_close(req);
		}
		return;
	}
	req->in.len += (size_t)nread;
	if (req->in.len < 4)
		return;
	need = ((size_t)req->in.data[0] << 24) | ((size_t)req->in.data[1] << 16) |
	       ((size_t)req->in.data[2] << 8) | req->in.data[3];
	if (need > CONTROL_REQUEST_MAX) {
		uv_read_stop(stream);
		pks_log(&req->server->log, PKS_LOG_WARN, "control: oversized request refused");
		control_request_reply_error(req, "The request is larger than 64 MiB.");
		return;
	}
	if (req->in.len < need + 4)
		return;
	if (req->in.len > need + 4) {
		uv_read_stop(stream);
		control_request_reply_error(req, "Only one request per connection is allowed.");
		return;
	}
	uv_read_stop(stream);
	/* Keep watching the connection, so a long request notices a client that left. */
	if (uv_read_start(stream, control_watch_alloc, control_watch) != 0)
		uv_read_stop(stream);
	control_dispatch(req);
}

static int control_peer_is_us(uv_pipe_t *pipe)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)pipe, &fd) != 0)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return 0;
	return cred.uid == getuid();
}

static void control_connection(uv_stream_t *server, int status)
{
	struct control_server *s = server->data;
	struct control_request *req;

	if (status < 0)
		return;
	req = calloc(1, sizeof(*req));
	if (req == NULL)
		return;
	req->server = s;
	pks_buf_init(&req->in, CONTROL_REQUEST_MAX + 4);
	uv_pipe_init(s->loop, &req->pipe, 0);
	req->pipe.data = req;
	if (uv_accept(server, (uv_stream_t *)&req->pipe) != 0) {
		req->replied = 1;
		control_request_close(req);
		return;
	}
	if (!control_peer_is_us(&req->pipe)) {
		pks_log(&s->log, PKS_LOG_WARN, "control: refused a connection from another user");
		req->replied = 1;
		control_request_close(req);
		return;
	}
	uv_read_start((uv_stream_t *)&req->pipe, control_alloc, control_read);
}

static void control_server_closed(uv_handle_t *handle)
{
	free(handle->data);
}

int control_server_new(uv_loop_t *loop, const char *path, const struct pks_logger *log,
		       control_handler_fn handler, void *user_data, struct control_server **out)
{
	struct control_server *s = NULL;
	struct stat st;
	int r = PKS_ERR_INTERNAL;
	int rc;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return PKS_ERR_NOMEM;
	s->loop = loop;
	s->handler = handler;
	s->user_data = user_data;
	if (log != NULL)
		s->log = *log;
	uv_pipe_init(loop, &s->pipe, 0);
	s->pipe.data = s;
	/* The caller holds the state-dir lock, so a socket file left here is stale. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	rc = uv_pipe_bind(&s->pipe, path);
	if (rc == 0) {
		chmod(path, 0600);
		rc = uv_listen((uv_stream_t *)&s->pipe, 16, control_connection);
	}
	if (rc != 0) {
		pks_log(&s->log, PKS_LOG_ERROR, "control: cannot listen on %s: %s", path,
			uv_strerror(rc));
		r = rc == UV_EADDRINUSE ? PKS_ERR_BUSY : PKS_ERR_IO;
		uv_close((uv_handle_t *)&s->pipe, control_server_closed);
		return r;
	}
	*out = s;
	return PKS_OK;
}

void control_server_close(struct control_server *s)
{
	if (s == NULL || s->closing)
		return;
	s->closing = 1;
	uv_close((uv_handle_t *)&s->pipe, control_server_closed);
}
