#include "tools/cli-client.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/err.h"

int cli_paths_resolve(const char *state_dir, struct cli_paths *out, char *err, size_t err_len)
{
	const char *env = getenv("PKSYNC_STATE_DIR");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME");
	const char *data = getenv("XDG_DATA_HOME");
	struct cli_paths p;
	int n;

	memset(&p, 0, sizeof(p));
	if (state_dir == NULL || state_dir[0] == '\0')
		state_dir = env;
	p.explicit_state_dir = 1;
	if (state_dir != NULL && state_dir[0] != '\0') {
		n = snprintf(p.state_dir, sizeof(p.state_dir), "%s", state_dir);
	} else if (data != NULL && data[0] == '/') {
		p.explicit_state_dir = 0;
		n = snprintf(p.state_dir, sizeof(p.state_dir), "%s/pksync", data);
	} else if (home != NULL && home[0] == '/') {
		p.explicit_state_dir = 0;
		n = snprintf(p.state_dir, sizeof(p.state_dir), "%s/.local/share/pksync", home);
	} else {
		snprintf(err, err_len,
			 "there is no state directory: give --state-dir or set XDG_DATA_HOME or "
			 "HOME");
		return PKS_ERR_INVALID;
	}
	if (n < 0 || (size_t)n >= sizeof(p.state_dir)) {
		snprintf(err, err_len, "the state directory path is too long");
		return PKS_ERR_TOO_LARGE;
	}
	if (!p.explicit_state_dir && runtime != NULL && runtime[0] == '/')
		n = snprintf(p.socket_path, sizeof(p.socket_path), "%s/pksync/control.sock",
			     runtime);
	else
		n = snprintf(p.socket_path, sizeof(p.socket_path), "%s/control.sock", p.state_dir);
	if (n < 0 || (size_t)n >= sizeof(p.socket_path)) {
		snprintf(err, err_len,
			 "the control socket path would be longer than %zu bytes; use a shorter "
			 "--state-dir",
			 sizeof(p.socket_path) - 1);
		return PKS_ERR_TOO_LARGE;
	}
	*out = p;
	return PKS_OK;
}

void cli_frame_clear(struct cli_frame *frame)
{
	if (frame == NULL)
		return;
	json_decref(frame->result);
	sodium_memzero(frame, sizeof(*frame));
}

/* Copies an agent sentence, dropping control characters so it stays one line. */
static void cli_copy_sentence(char *dst, size_t cap, const char *src)
{
	size_t o = 0;

	for (size_t i = 0; src[i] != '\0' && o + 1 < cap; i++) {
		unsigned char ch = (unsigned char)src[i];

		dst[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
	}
	/* Never end on half a UTF-8 sequence when the sentence was cut. */
	if (o + 1 >= cap) {
		while (o > 0 && ((unsigned char)dst[o - 1] & 0xc0) == 0x80)
			o--;
		if (o > 0 && ((unsigned char)dst[o - 1] & 0x80) != 0)
			o--;
	}
	dst[o] = '\0';
}

static int cli_progress_parse(json_t *progress, struct cli_frame *f, char *err, size_t err_len)
{
	json_t *done = json_object_get(progress, "done");
	json_t *total = json_object_get(progress, "total");
	json_t *what = json_object_get(progress, "what");

	if (!json_is_object(progress) || !json_is_integer(done) || !json_is_integer(total) ||
	    json_integer_value(done) < 0 || json_integer_value(total) < 0 ||
	    (what != NULL && !json_is_string(what))) {
		snprintf(err, err_len, "pksync-agent sent a malformed progress message");
		return PKS_ERR_MALFORMED;
	}
	f->kind = CLI_FRAME_PROGRESS;
	f->done = json_integer_value(done);
	f->total = json_integer_value(total);
	cli_copy_sentence(f->what, sizeof(f->what), what ? json_string_value(what) : "working");
	return PKS_OK;
}

int cli_frame_parse(const uint8_t *body, size_t len, struct cli_frame *out, char *err,
		    size_t err_len)
{
	struct cli_frame f;
	json_error_t jerr;
	json_t *msg = NULL;
	json_t *ok, *progress, *error, *result, *event;
	int r = PKS_ERR_MALFORMED;

	memset(&f, 0, sizeof(f));
	msg = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (msg == NULL || !json_is_object(msg)) {
		snprintf(err, err_len, "pksync-agent sent a response that is not a JSON object");
		goto out;
	}
	progress = json_object_get(msg, "progress");
	event = json_object_get(msg, "event");
	ok = json_object_get(msg, "ok");
	if (event != NULL && ok == NULL && progress == NULL) {
		if (!json_is_object(event)) {
			snprintf(err, err_len, "pksync-agent sent an event that is not an object");
			goto out;
		}
		f.kind = CLI_FRAME_EVENT;
		f.result = json_incref(event);
	} else if (progress != NULL && ok == NULL) {
		r = cli_progress_parse(progress, &f, err, err_len);
		if (r != PKS_OK)
			goto out;
	} else if (json_is_true(ok)) {
		result = json_object_get(msg, "result");
		if (result == NULL) {
			snprintf(err, err_len,
				 "pksync-agent sent a success response without a result");
			goto out;
		}
		f.kind = CLI_FRAME_OK;
		f.result = json_incref(result);
	} else if (json_is_false(ok)) {
		error = json_object_get(msg, "error");
		if (!json_is_string(error) || json_string_length(error) == 0) {
			snprintf(err, err_len,
				 "pksync-agent sent a failure response without a reason");
			goto out;
		}
		f.kind = CLI_FRAME_ERROR;
		cli_copy_sentence(f.error, sizeof(f.error), json_string_value(error));
	} else {
		snprintf(err, err_len,
			 "pksync-agent sent a response with neither \"ok\" nor "
			 "\"progress\"");
		goto out;
	}
	*out = f;
	memset(&f, 0, sizeof(f));
	r = PKS_OK;
out:
	cli_frame_clear(&f);
	json_decref(msg);
	return r;
}

static int cli_connect(const char *socket_path, int *fd_out, char *err, size_t err_len)
{
	struct sockaddr_un addr;
	size_t len = strlen(socket_path);
	int fd = -1;
	int r = PKS_ERR_INTERNAL;

	if (len >= sizeof(addr.sun_path)) {
		snprintf(err, err_len, "the control socket path %s is too long", socket_path);
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, socket_path, len + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, err_len, "cannot create a socket: %s", strerror(errno));
		r = pks_err_from_errno(errno);
		goto out;
	}
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) != 0) {
		if (errno == ENOENT || errno == ECONNREFUSED || errno == ENOTDIR) {
			err[0] = '\0';
			r = PKS_ERR_NOT_FOUND;
		} else {
			snprintf(err, err_len, "cannot reach pksync-agent at %s: %s", socket_path,
				 strerror(errno));
			r = pks_err_from_errno(errno);
		}
		goto out;
	}
	*fd_out = fd;
	fd = -1;
	r = PKS_OK;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* Sends all of data; PKS_ERR_CLOSED when the agent has gone away. */
static int cli_send_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return PKS_ERR_CLOSED;
		if (n <= 0)
			return PKS_ERR_IO;
		data += n;
		len -= (size_t)n;
	}
	return PKS_OK;
}

/*
 * Reads exactly len bytes. PKS_ERR_CLOSED at end of stream before any byte,
 * PKS_ERR_TRUNCATED at end of stream after some.
 */
static int cli_recv_all(int fd, uint8_t *data, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, data + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ECONNRESET)
			return got == 0 ? PKS_ERR_CLOSED : PKS_ERR_TRUNCATED;
		if (n < 0)
			return PKS_ERR_IO;
		if (n == 0)
			return got == 0 ? PKS_ERR_CLOSED : PKS_ERR_TRUNCATED;
		got += (size_t)n;
	}
	return PKS_OK;
}

/* Reads and checks one frame. */
static int cli_read_frame(int fd, int sent_all, struct cli_frame *out, char *err, size_t err_len)
{
	uint8_t header[4];
	uint8_t *body = NULL;
	size_t len = 0;
	int r;

	r = cli_recv_all(fd, header, sizeof(header));
	if (r == PKS_ERR_CLOSED) {
		snprintf(err, err_len,
			 sent_all ? "pksync-agent closed the connection without answering"
				  : "pksync-agent closed the connection before the whole request "
				    "was sent");
		goto out;
	}
	if (r != PKS_OK) {
		snprintf(err, err_len,
			 "pksync-agent closed the connection in the middle of a response");
		goto out;
	}
	len = ((size_t)header[0] << 24) | ((size_t)header[1] << 16) | ((size_t)header[2] << 8) |
	      header[3];
	if (len == 0) {
		snprintf(err, err_len, "pksync-agent sent an empty response");
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if (len > CLI_RESPONSE_MAX) {
		snprintf(err, err_len,
			 "pksync-agent sent a response of %zu bytes, over the %zu MiB limit", len,
			 CLI_RESPONSE_MAX >> 20);
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	body = malloc(len);
	if (body == NULL) {
		snprintf(err, err_len, "out of memory for a response of %zu bytes", len);
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = cli_recv_all(fd, body, len);
	if (r != PKS_OK) {
		snprintf(err, err_len,
			 "pksync-agent closed the connection in the middle of a response");
		goto out;
	}
	r = cli_frame_parse(body, len, out, err, err_len);
	if (r == PKS_OK && (out->kind == CLI_FRAME_PROGRESS || out->kind == CLI_FRAME_EVENT) &&
	    len > CLI_PROGRESS_FRAME_MAX) {
		cli_frame_clear(out);
		snprintf(err, err_len, "pksync-agent sent a progress message over %zu bytes",
			 CLI_PROGRESS_FRAME_MAX);
		r = PKS_ERR_TOO_LARGE;
	}
out:
	if (body != NULL) {
		/* Responses hold private keys (export) and user data. */
		sodium_memzero(body, len);
		free(body);
	}
	return r;
}

int cli_client_call(const char *socket_path, const json_t *request, cli_progress_fn progress,
		    void *user_data, struct cli_frame *out, char *err, size_t err_len)
{
	struct cli_frame frame;
	char *text = NULL;
	size_t text_len = 0;
	uint8_t header[4];
	long frames = 0;
	int sent_all = 0;
	int fd = -1;
	int r = PKS_ERR_INTERNAL;

	memset(&frame, 0, sizeof(frame));
	text = json_dumps(request, JSON_COMPACT);
	if (text == NULL) {
		snprintf(err, err_len, "out of memory while encoding the request");
		r = PKS_ERR_NOMEM;
		goto out;
	}
	text_len = strlen(text);
	if (text_len > CLI_REQUEST_MAX) {
		snprintf(err, err_len, "the request is %zu bytes, over the %zu MiB limit", text_len,
			 CLI_REQUEST_MAX >> 20);
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	r = cli_connect(socket_path, &fd, err, err_len);
	if (r != PKS_OK)
		goto out;
	header[0] = (uint8_t)(text_len >> 24);
	header[1] = (uint8_t)(text_len >> 16);
	header[2] = (uint8_t)(text_len >> 8);
	header[3] = (uint8_t)text_len;
	r = cli_send_all(fd, header, sizeof(header));
	if (r == PKS_OK)
		r = cli_send_all(fd, (const uint8_t *)text, text_len);
	if (r == PKS_OK) {
		sent_all = 1;
	} else if (r != PKS_ERR_CLOSED) {
		snprintf(err, err_len, "cannot send the request to pksync-agent: %s",
			 strerror(errno));
		goto out;
	}
	/* Even when the agent hung up early it may have said why: read on. */
	for (;;) {
		r = cli_read_frame(fd, sent_all, &frame, err, err_len);
		if (r != PKS_OK)
			goto out;
		if (frame.kind != CLI_FRAME_PROGRESS && frame.kind != CLI_FRAME_EVENT)
			break;
		if (++frames > CLI_PROGRESS_FRAMES_MAX) {
			snprintf(err, err_len, "pksync-agent sent too many progress messages");
			r = PKS_ERR_TOO_LARGE;
			goto out;
		}
		if (progress != NULL)
			progress(user_data, &frame);
		cli_frame_clear(&frame);
	}
	*out = frame;
	memset(&frame, 0, sizeof(frame));
	r = PKS_OK;
out:
	cli_frame_clear(&frame);
	if (fd >= 0)
		close(fd);
	if (text != NULL) {
		json_free_t free_fn = free;

		/* json_dumps() memory belongs to jansson's allocator. */
		json_get_alloc_funcs(NULL, &free_fn);
		sodium_memzero(text, text_len);
		free_fn(text);
	}
	return r;
}
