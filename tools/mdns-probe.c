/*
 * mdns-probe: a small command line over transport/mdns for tests and humans.
 *
 *   mdns-probe [OPTIONS] publish NAME PORT [KEY=VALUE|KEY]...
 *       Publishes until killed (SIGTERM/SIGINT withdraw it cleanly). Lines on
 *       standard input change it: "rename NAME [KEY=VALUE...]" republishes
 *       under a new name and TXT (as the agent's rotation does),
 *       "unpublish" withdraws it, "quit" exits.
 *   mdns-probe [OPTIONS] browse SECONDS
 *       Browses and prints what is found and lost, then exits.
 *
 * Options: --backend auto|client|core, --ipv4 (IPv4 only), --verbose,
 * --browse (publish also browses, as the agent does).
 * Every event is one JSON object per line on standard output:
 *   {"event":"backend","backend":"avahi-client","t":0.01}
 *   {"event":"published","instance":"..","t":..}
 *   {"event":"found","instance":"..","addr":"10.77.0.1","port":7393,
 *    "ifindex":2,"scope_id":0,"txt":{"k":"v"},"txt_hex":"..","t":..}
 *   {"event":"lost","instance":"..","t":..}
 * t is seconds since start. TXT values that are not printable ASCII appear
 * only in txt_hex.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "transport/mdns-txt.h"
#include "transport/mdns.h"

struct probe {
	uv_loop_t *loop;
	struct mdns *mdns;
	uint64_t start_ms;
	const char *last_backend;
	uint16_t port;
	bool verbose;
	uv_timer_t tick;
	uv_timer_t deadline;
	uv_signal_t sigterm;
	uv_signal_t sigint;
	uv_poll_t in;
	bool in_open;
	char line[2048];
	size_t line_len;
	int exit_code;
};

static void probe_emit(struct probe *p, json_t *obj)
{
	char *text;

	json_object_set_new(obj, "t", json_real((double)(uv_now(p->loop) - p->start_ms) / 1000.0));
	text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text != NULL) {
		printf("%s\n", text);
		fflush(stdout);
		free(text);
	}
	json_decref(obj);
}

static void probe_log(void *user_data, enum pks_log_level level, const char *msg)
{
	struct probe *p = user_data;

	if (level == PKS_LOG_DEBUG && !p->verbose)
		return;
	pks_log_stderr(NULL, level, msg);
}

static json_t *probe_txt_json(const uint8_t *txt, size_t len)
{
	struct mdns_txt t;
	json_t *obj = json_object();

	if (obj == NULL || mdns_txt_parse(txt, len, &t) != PKS_OK)
		return obj;
	for (size_t i = 0; i < t.n; i++) {
		const struct mdns_txt_pair *pair = &t.pairs[i];
		bool printable = true;

		for (size_t k = 0; k < pair->value_len; k++)
			if (pair->value[k] < 0x20 || pair->value[k] > 0x7e)
				printable = false;
		if (!pair->has_value)
			json_object_set_new(obj, pair->key, json_true());
		else if (printable)
			json_object_set_new(
			    obj, pair->key,
			    json_stringn((const char *)pair->value, pair->value_len));
	}
	return obj;
}

static void probe_found(void *user, const struct mdns_found *f)
{
	struct probe *p = user;
	char host[INET6_ADDRSTRLEN] = "";
	char *hex = malloc(f->txt_len * 2 + 1);
	uint16_t port = 0;
	uint32_t scope = 0;
	json_t *obj;

	if (f->addr.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&f->addr;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (f->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&f->addr;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		scope = sin6->sin6_scope_id;
	}
	if (hex != NULL)
		for (size_t i = 0; i < f->txt_len; i++)
			snprintf(hex + 2 * i, 3, "%02x", f->txt[i]);
	obj = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:o, s:s}", "event", "found", "instance",
			f->instance, "addr", host, "port", (int)port, "ifindex", (int)f->ifindex,
			"scope_id", (int)scope, "txt", probe_txt_json(f->txt, f->txt_len),
			"txt_hex", hex != NULL ? hex : "");
	free(hex);
	if (obj != NULL)
		probe_emit(p, obj);
}

static void probe_lost(void *user, const char *instance)
{
	struct probe *p = user;
	json_t *obj = json_pack("{s:s, s:s}", "event", "lost", "instance", instance);

	if (obj != NULL)
		probe_emit(p, obj);
}

static void probe_published(void *user, const char *instance)
{
	struct probe *p = user;
	json_t *obj = json_pack("{s:s, s:s}", "event", "published", "instance", instance);

	if (obj != NULL)
		probe_emit(p, obj);
}

/* Reports backend changes (daemon gone, back, embedded stack). */
static void probe_tick(uv_timer_t *t)
{
	struct probe *p = t->data;
	const char *b = mdns_backend(p->mdns);
	json_t *obj;

	if (p->last_backend != NULL && strcmp(p->last_backend, b) == 0)
		return;
	p->last_backend = b;
	obj = json_pack("{s:s, s:s}", "event", "backend", "backend", b);
	if (obj != NULL)
		probe_emit(p, obj);
}

static void probe_close_all(struct probe *p)
{
	mdns_free(p->mdns);
	p->mdns = NULL;
	uv_close((uv_handle_t *)&p->tick, NULL);
	uv_close((uv_handle_t *)&p->deadline, NULL);
	uv_close((uv_handle_t *)&p->sigterm, NULL);
	uv_close((uv_handle_t *)&p->sigint, NULL);
	if (p->in_open)
		uv_close((uv_handle_t *)&p->in, NULL);
	p->in_open = false;
}

static void probe_deadline(uv_timer_t *t)
{
	probe_close_all(t->data);
}

static void probe_signal(uv_signal_t *s, int signum)
{
	probe_close_all(s->data);
}

/* Builds TXT rdata from KEY=VALUE arguments; returns PKS_OK or why not. */
static int probe_build_txt(int argc, char **argv, uint8_t *out, size_t cap, size_t *len)
{
	struct mdns_txt t;
	int r;

	mdns_txt_init(&t);
	for (int i = 0; i < argc; i++) {
		r = mdns_txt_add_text(&t, argv[i]);
		if (r != PKS_OK) {
			fprintf(stderr, "mdns-probe: bad TXT entry '%s': %s\n", argv[i],
				pks_strerror(r));
			return r;
		}
	}
	return mdns_txt_build(&t, out, cap, len);
}

static int probe_publish(struct probe *p, const char *name, int argc, char **argv)
{
	uint8_t txt[MDNS_TXT_MAX];
	size_t txt_len = 0;
	int r;

	r = probe_build_txt(argc, argv, txt, sizeof(txt), &txt_len);
	if (r == PKS_OK)
		r = mdns_publish(p->mdns, name, p->port, txt, txt_len);
	if (r != PKS_OK)
		fprintf(stderr, "mdns-probe: cannot publish: %s\n", pks_strerror(r));
	return r;
}

static void probe_command(struct probe *p, char *line)
{
	char *argv[MDNS_TXT_STRINGS_MAX + 2];
	int argc = 0;

	for (char *tok = strtok(line, " \t\r");
	     tok != NULL && argc < (int)(sizeof(argv) / sizeof(argv[0]));
	     tok = strtok(NULL, " \t\r"))
		argv[argc++] = tok;
	if (argc == 0)
		return;
	if (strcmp(argv[0], "rename") == 0 && argc >= 2)
		probe_publish(p, argv[1], argc - 2, argv + 2);
	else if (strcmp(argv[0], "unpublish") == 0)
		mdns_unpublish(p->mdns);
	else if (strcmp(argv[0], "quit") == 0)
		probe_close_all(p);
	else
		fprintf(stderr, "mdns-probe: unknown command '%s'\n", argv[0]);
}

static void probe_stdin(uv_poll_t *h, int status, int events)
{
	struct probe *p = h->data;
	ssize_t n;

	n = read(0, p->line + p->line_len, sizeof(p->line) - 1 - p->line_len);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		/* End of input: keep publishing until killed. */
		uv_close((uv_handle_t *)&p->in, NULL);
		p->in_open = false;
		return;
	}
	p->line_len += (size_t)n;
	for (;;) {
		char *nl = memchr(p->line, '\n', p->line_len);
		size_t used;

		if (nl == NULL)
			break;
		*nl = '\0';
		used = (size_t)(nl - p->line) + 1;
		probe_command(p, p->line);
		if (p->mdns == NULL)
			return;
		memmove(p->line, p->line + used, p->line_len - used);
		p->line_len -= used;
	}
	if (p->line_len == sizeof(p->line) - 1)
		p->line_len = 0; /* an over-long line is dropped */
}

static int usage(void)
{
	fprintf(stderr,
		"usage: mdns-probe [--backend auto|client|core] [--ipv4] [--verbose] [--browse]\n"
		"         publish NAME PORT [KEY=VALUE|KEY]...\n"
		"       mdns-probe [options] browse SECONDS\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct probe p;
	struct mdns_opts opts = {0};
	struct mdns_cb cb = {probe_found, probe_lost, probe_published};
	struct pks_logger log;
	bool also_browse = false;
	int i = 1, r;
	long num;
	char *end;

	memset(&p, 0, sizeof(p));
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "client") == 0)
				opts.backend = MDNS_BACKEND_CLIENT;
			else if (strcmp(argv[i], "core") == 0)
				opts.backend = MDNS_BACKEND_CORE;
			else if (strcmp(argv[i], "auto") == 0)
				opts.backend = MDNS_BACKEND_AUTO;
			else
				return usage();
		} else if (strcmp(argv[i], "--browse") == 0) {
			also_browse = true;
		} else if (strcmp(argv[i], "--ipv4") == 0) {
			opts.ipv4_only = true;
		} else if (strcmp(argv[i], "--verbose") == 0) {
			p.verbose = true;
		} else {
			return usage();
		}
	}
	if (i >= argc)
		return usage();
	if (strcmp(argv[i], "publish") == 0 && argc - i >= 3) {
		num = strtol(argv[i + 2], &end, 10);
		if (*end != '\0' || num < 1 || num > 65535)
			return usage();
		p.port = (uint16_t)num;
	} else if (strcmp(argv[i], "browse") == 0 && argc - i == 2) {
		num = strtol(argv[i + 1], &end, 10);
		if (*end != '\0' || num < 1 || num > 86400)
			return usage();
	} else {
		return usage();
	}

	p.loop = uv_default_loop();
	p.start_ms = uv_now(p.loop);
	log.fn = probe_log;
	log.user_data = &p;
	r = mdns_new_opts(p.loop, &log, &cb, &p, &opts, &p.mdns);
	if (r != PKS_OK) {
		fprintf(stderr, "mdns-probe: %s\n", pks_strerror(r));
		return 1;
	}
	uv_timer_init(p.loop, &p.tick);
	p.tick.data = &p;
	uv_timer_start(&p.tick, probe_tick, 0, 100);
	uv_timer_init(p.loop, &p.deadline);
	p.deadline.data = &p;
	uv_signal_init(p.loop, &p.sigterm);
	p.sigterm.data = &p;
	uv_signal_start(&p.sigterm, probe_signal, SIGTERM);
	uv_signal_init(p.loop, &p.sigint);
	p.sigint.data = &p;
	uv_signal_start(&p.sigint, probe_signal, SIGINT);
	probe_tick(&p.tick);

	if (strcmp(argv[i], "publish") == 0) {
		if (probe_publish(&p, argv[i + 1], argc - i - 3, argv + i + 3) != PKS_OK) {
			p.exit_code = 1;
			probe_close_all(&p);
		} else if (uv_poll_init(p.loop, &p.in, 0) == 0) {
			p.in.data = &p;
			p.in_open = true;
			uv_poll_start(&p.in, UV_READABLE, probe_stdin);
		}
		if (also_browse && p.mdns != NULL)
			mdns_browse(p.mdns, true);
	} else {
		mdns_browse(p.mdns, true);
		uv_timer_start(&p.deadline, probe_deadline, (uint64_t)num * 1000u, 0);
	}
	uv_run(p.loop, UV_RUN_DEFAULT);
	uv_loop_close(p.loop);
	return p.exit_code;
}
