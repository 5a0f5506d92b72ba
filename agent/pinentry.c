/*
 * The Assuan dialogue with a pinentry program. Commands go out one at a
 * time; each waits for its "OK" or "ERR". Status ("S"), comment ("#") and
 * data ("D") lines may come before the answer; INQUIRE is refused with CAN.
 * Errors to the cosmetic SET* commands are ignored (old pinentry programs
 * lack some of them); the answer to CONFIRM or GETPIN decides.
 */
#include "agent/pinentry.h"

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* GnuPG error codes as pinentry sends them (source 5, "pinentry"). */
#define PINENTRY_GPG_CODE_MASK 0xffffu
#define PINENTRY_GPG_TIMEOUT 62
#define PINENTRY_GPG_CANCELED 99
#define PINENTRY_GPG_NOT_CONFIRMED 114
#define PINENTRY_GPG_FULLY_CANCELED 198

#define PINENTRY_CMDS_MAX 10
/* Our own deadline is the program's plus this: its timeout usually answers
   first, and a program that ignores SETTIMEOUT is cut off soon after. */
#define PINENTRY_GRACE_MS 250u

struct pinentry {
	uv_loop_t *loop;
	struct pks_logger log;
	pinentry_done_fn fn;
	void *user;
	uv_process_t proc;
	uv_pipe_t to_child, from_child;
	uv_timer_t timer;
	int open_handles;
	bool proc_started, exited, done, cancelled;
	char *cmds[PINENTRY_CMDS_MAX];
	size_t n_cmds, next_cmd;
	bool greeted, final_sent, want_pin;
	char line[PINENTRY_LINE_MAX];
	size_t line_len;
	char *pin; /* sodium_malloc'd, PINENTRY_PIN_MAX + 1 */
	size_t pin_len;
};

struct pinentry_write {
	uv_write_t req;
	char *data;
	size_t len;
};

int pinentry_escape(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
		if (*p == '%' || *p < 0x20 || *p == 0x7f) {
			if (o + 3 >= cap)
				return PKS_ERR_TOO_LARGE;
			snprintf(out + o, 4, "%%%02X", *p);
			o += 3;
		} else {
			if (o + 1 >= cap)
				return PKS_ERR_TOO_LARGE;
			out[o++] = (char)*p;
		}
	}
	if (o >= cap)
		return PKS_ERR_TOO_LARGE;
	out[o] = '\0';
	return PKS_OK;
}

static int pinentry_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int pinentry_unescape(char *s, size_t *len)
{
	size_t i = 0, o = 0, n = *len;

	while (i < n) {
		if (s[i] == '%') {
			int hi, lo;
			if (i + 2 >= n)
				return PKS_ERR_MALFORMED;
			hi = pinentry_hex(s[i + 1]);
			lo = pinentry_hex(s[i + 2]);
			if (hi < 0 || lo < 0)
				return PKS_ERR_MALFORMED;
			s[o++] = (char)(hi << 4 | lo);
			i += 3;
		} else {
			s[o++] = s[i++];
		}
	}
	/* Wipe the tail the escapes freed up. */
	if (o < n)
		sodium_memzero(s + o, n - o);
	*len = o;
	return PKS_OK;
}

static void pinentry_free(struct pinentry *p)
{
	for (size_t i = 0; i < p->n_cmds; i++)
		free(p->cmds[i]);
	if (p->pin != NULL)
		sodium_free(p->pin);
	sodium_memzero(p->line, sizeof(p->line));
	free(p);
}

static void pinentry_handle_closed(uv_handle_t *h)
{
	struct pinentry *p = h->data;

	if (--p->open_handles == 0)
		pinentry_free(p);
}

static void pinentry_close_handle(struct pinentry *p, uv_handle_t *h)
{
	if (h->data == p && !uv_is_closing(h))
		uv_close(h, pinentry_handle_closed);
}

/* Ends everything: kills the program if it still runs and closes handles. */
static void pinentry_teardown(struct pinentry *p)
{
	if (p->proc_started && !p->exited)
		uv_process_kill(&p->proc, SIGTERM);
	uv_timer_stop(&p->timer);
	pinentry_close_handle(p, (uv_handle_t *)&p->timer);
	pinentry_close_handle(p, (uv_handle_t *)&p->to_child);
	pinentry_close_handle(p, (uv_handle_t *)&p->from_child);
	/* The process handle closes in its exit callback (or now if it never ran or ended). */
	if (!p->proc_started || p->exited)
		pinentry_close_handle(p, (uv_handle_t *)&p->proc);
}

static void pinentry_finish(struct pinentry *p, enum pinentry_result res)
{
	if (p->done)
		return;
	p->done = true;
	if (!p->cancelled && p->fn != NULL) {
		bool pin = res == PINENTRY_ALLOW && p->want_pin;
		p->fn(p->user, res, pin ? p->pin : NULL, pin ? p->pin_len : 0);
	}
	if (p->pin != NULL)
		sodium_memzero(p->pin, PINENTRY_PIN_MAX + 1);
	pinentry_teardown(p);
}

static void pinentry_written(uv_write_t *req, int status)
{
	struct pinentry_write *w = (struct pinentry_write *)req;

	(void)status;
	sodium_memzero(w->data, w->len);
	free(w->data);
	free(w);
}

static int pinentry_send_line(struct pinentry *p, const char *text)
{
	struct pinentry_write *w = calloc(1, sizeof(*w));
	size_t n = strlen(text);
	uv_buf_t buf;

	if (w == NULL)
		return PKS_ERR_NOMEM;
	w->data = malloc(n + 1);
	if (w->data == NULL) {
		free(w);
		return PKS_ERR_NOMEM;
	}
	memcpy(w->data, text, n);
	w->data[n] = '\n';
	w->len = n + 1;
	buf = uv_buf_init(w->data, (unsigned int)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&p->to_child, &buf, 1, pinentry_written) != 0) {
		free(w->data);
		free(w);
		return PKS_ERR_IO;
	}
	return PKS_OK;
}

static void pinentry_send_next(struct pinentry *p)
{
	if (p->next_cmd >= p->n_cmds) {
		pinentry_finish(p, PINENTRY_ERROR);
		return;
	}
	if (p->next_cmd == p->n_cmds - 1)
		p->final_sent = true;
	if (pinentry_send_line(p, p->cmds[p->next_cmd++]) != PKS_OK)
		pinentry_finish(p, PINENTRY_ERROR);
}

static enum pinentry_result pinentry_classify_err(const char *line)
{
	unsigned long code = strtoul(line + 3, NULL, 10) & PINENTRY_GPG_CODE_MASK;

	switch (code) {
	case PINENTRY_GPG_TIMEOUT:
		return PINENTRY_TIMEOUT;
	case PINENTRY_GPG_CANCELED:
	case PINENTRY_GPG_NOT_CONFIRMED:
	case PINENTRY_GPG_FULLY_CANCELED:
		return PINENTRY_DENY;
	default:
		return PINENTRY_ERROR;
	}
}

static void pinentry_take_data(struct pinentry *p, const char *data, size_t len)
{
	if (!p->final_sent || !p->want_pin || p->pin_len + len > PINENTRY_PIN_MAX) {
		pinentry_finish(p, PINENTRY_ERROR);
		return;
	}
	memcpy(p->pin + p->pin_len, data, len);
	p->pin_len += len;
}

static void pinentry_line(struct pinentry *p, char *line, size_t len)
{
	bool ok = len >= 2 && memcmp(line, "OK", 2) == 0 && (len == 2 || line[2] == ' ');
	bool err = len >= 3 && memcmp(line, "ERR", 3) == 0 && (len == 3 || line[3] == ' ');

	if (len >= 2 && memcmp(line, "D ", 2) == 0) {
		size_t n = len - 2;
		if (pinentry_unescape(line + 2, &n) != PKS_OK) {
			pinentry_finish(p, PINENTRY_ERROR);
			return;
		}
		pinentry_take_data(p, line + 2, n);
		return;
	}
	if (len >= 7 && memcmp(line, "INQUIRE", 7) == 0) {
		if (pinentry_send_line(p, "CAN") != PKS_OK)
			pinentry_finish(p, PINENTRY_ERROR);
		return;
	}
	if (!ok && !err)
		return; /* S status lines, # comments */
	if (!p->greeted) {
		p->greeted = true;
		if (!ok) {
			pinentry_finish(p, PINENTRY_ERROR);
			return;
		}
		pinentry_send_next(p);
		return;
	}
	if (!p->final_sent) {
		pinentry_send_next(p); /* SET* errors are cosmetic */
		return;
	}
	if (ok) {
		if (p->want_pin && p->pin_len == 0) {
			/* An empty passphrase is no answer. */
			pinentry_finish(p, PINENTRY_DENY);
			return;
		}
		pinentry_send_line(p, "BYE");
		pinentry_finish(p, PINENTRY_ALLOW);
		return;
	}
	pinentry_finish(p, pinentry_classify_err(line));
}

static void pinentry_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct pinentry *p = h->data;
	size_t room = sizeof(p->line) - p->line_len;

	(void)suggested;
	*buf = uv_buf_init(p->line + p->line_len, (unsigned int)room);
}

static void pinentry_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct pinentry *p = s->data;
	size_t start = 0;

	(void)buf;
	if (p->done)
		return;
	if (nread < 0) {
		/* The program closed its output without answering. */
		pinentry_finish(p, PINENTRY_ERROR);
		return;
	}
	p->line_len += (size_t)nread;
	for (size_t i = 0; i < p->line_len && !p->done; i++) {
		if (p->line[i] != '\n')
			continue;
		p->line[i] = '\0';
		pinentry_line(p, p->line + start, i - start);
		start = i + 1;
	}
	if (p->done)
		return;
	if (start > 0) {
		memmove(p->line, p->line + start, p->line_len - start);
		sodium_memzero(p->line + p->line_len - start, start);
		p->line_len -= start;
	}
	if (p->line_len == sizeof(p->line)) {
		pks_log(&p->log, PKS_LOG_WARN, "pinentry: a line longer than %d bytes; giving up",
			PINENTRY_LINE_MAX);
		pinentry_finish(p, PINENTRY_ERROR);
	}
}

static void pinentry_exited(uv_process_t *proc, int64_t status, int sig)
{
	struct pinentry *p = proc->data;

	(void)status, (void)sig;
	p->exited = true;
	if (!p->done)
		pinentry_finish(p, PINENTRY_ERROR);
	pinentry_close_handle(p, (uv_handle_t *)&p->proc);
}

static void pinentry_timeout(uv_timer_t *t)
{
	struct pinentry *p = t->data;

	if (p->done) {
		/* The spawn failed: report it from the loop, as promised. */
		return;
	}
	pks_log(&p->log, PKS_LOG_INFO, "pinentry: no answer in time; prompt withdrawn");
	pinentry_finish(p, PINENTRY_TIMEOUT);
}

static void pinentry_spawn_failed(uv_timer_t *t)
{
	struct pinentry *p = t->data;

	pinentry_finish(p, PINENTRY_ERROR);
}

static int pinentry_add_cmd(struct pinentry *p, const char *verb, const char *arg)
{
	char esc[PINENTRY_TEXT_MAX * 3 + 1];
	size_t n;
	char *c;

	if (p->n_cmds == PINENTRY_CMDS_MAX)
		return PKS_ERR_TOO_LARGE;
	esc[0] = '\0';
	if (arg != NULL) {
		char cut[PINENTRY_TEXT_MAX + 1];
		snprintf(cut, sizeof(cut), "%s", arg);
		if (pinentry_escape(cut, esc, sizeof(esc)) != PKS_OK)
			return PKS_ERR_TOO_LARGE;
	}
	n = strlen(verb) + 1 + strlen(esc) + 1;
	c = malloc(n);
	if (c == NULL)
		return PKS_ERR_NOMEM;
	snprintf(c, n, arg != NULL ? "%s %s" : "%s", verb, esc);
	p->cmds[p->n_cmds++] = c;
	return PKS_OK;
}

int pinentry_ask(uv_loop_t *loop, const struct pinentry_request *req, const struct pks_logger *log,
		 pinentry_done_fn fn, void *user, struct pinentry **out)
{
	struct pinentry *p = NULL;
	uv_process_options_t opt;
	uv_stdio_container_t stdio[3];
	char *args[2];
	char timeout[16];
	int r = PKS_ERR_INVALID;

	if (loop == NULL || req == NULL || req->program == NULL || req->program[0] == '\0' ||
	    req->timeout_s == 0 || req->timeout_s > 600 || fn == NULL || out == NULL)
		return PKS_ERR_INVALID;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return PKS_ERR_NOMEM;
	p->loop = loop;
	if (log != NULL)
		p->log = *log;
	p->fn = fn;
	p->user = user;
	p->want_pin = req->want_pin;
	p->pin = sodium_malloc(PINENTRY_PIN_MAX + 1);
	if (p->pin == NULL) {
		r = PKS_ERR_NOMEM;
		goto fail;
	}
	snprintf(timeout, sizeof(timeout), "%u", req->timeout_s);
	if ((r = pinentry_add_cmd(p, "SETTITLE", req->title ? req->title : "pksync")) != PKS_OK ||
	    (r = pinentry_add_cmd(p, "SETDESC", req->description ? req->description : "")) !=
		PKS_OK ||
	    (req->want_pin && (r = pinentry_add_cmd(p, "SETPROMPT", "Passphrase:")) != PKS_OK) ||
	    (req->ok_label && (r = pinentry_add_cmd(p, "SETOK", req->ok_label)) != PKS_OK) ||
	    (req->cancel_label &&
	     (r = pinentry_add_cmd(p, "SETCANCEL", req->cancel_label)) != PKS_OK) ||
	    (r = pinentry_add_cmd(p, "SETTIMEOUT", timeout)) != PKS_OK ||
	    (r = pinentry_add_cmd(p, req->want_pin ? "GETPIN" : "CONFIRM", NULL)) != PKS_OK)
		goto fail;

	uv_timer_init(loop, &p->timer);
	p->timer.data = p;
	p->open_handles++;
	uv_pipe_init(loop, &p->to_child, 0);
	p->to_child.data = p;
	p->open_handles++;
	uv_pipe_init(loop, &p->from_child, 0);
	p->from_child.data = p;
	p->open_handles++;
	p->proc.data = p;
	p->open_handles++;

	memset(&opt, 0, sizeof(opt));
	args[0] = (char *)req->program;
	args[1] = NULL;
	stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
	stdio[0].data.stream = (uv_stream_t *)&p->to_child;
	stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
	stdio[1].data.stream = (uv_stream_t *)&p->from_child;
	stdio[2].flags = UV_IGNORE;
	opt.file = req->program;
	opt.args = args;
	opt.stdio = stdio;
	opt.stdio_count = 3;
	opt.exit_cb = pinentry_exited;
	r = uv_spawn(loop, &p->proc, &opt);
	p->proc.data = p;
	if (r != 0) {
		pks_log(&p->log, PKS_LOG_WARN,
			"pinentry: cannot start %s; install a pinentry program or pass --pinentry",
			req->program);
		/* uv_spawn leaves an initialised handle that must still be closed. */
		p->exited = true;
		p->proc_started = true;
		uv_timer_start(&p->timer, pinentry_spawn_failed, 0, 0);
		*out = p;
		return PKS_OK;
	}
	p->proc_started = true;
	uv_read_start((uv_stream_t *)&p->from_child, pinentry_alloc, pinentry_read);
	uv_timer_start(&p->timer, pinentry_timeout,
		       (uint64_t)req->timeout_s * 1000u + PINENTRY_GRACE_MS, 0);
	*out = p;
	return PKS_OK;
fail:
	pinentry_free(p);
	return r;
}

void pinentry_cancel(struct pinentry *p)
{
	if (p == NULL || p->done)
		return;
	p->cancelled = true;
	pinentry_finish(p, PINENTRY_DENY);
}
