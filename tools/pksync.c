/*
 * pksync: the command-line front of pksync-agent. Every command becomes one
 * request on the agent's control socket (docs/control-protocol.md); this
 * file holds main(), the dispatch and the helpers the cli-*.c files share.
 */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "tools/cli-client.h"
#include "tools/cli.h"

#ifndef PKSYNC_VERSION
#define PKSYNC_VERSION "unknown"
#endif

#define CLI_OPT_HELP 'h'
#define CLI_OPT_JSON 0x1001
#define CLI_OPT_STATE_DIR 0x1002
#define CLI_OPTIONS_MAX 32
#define CLI_TEXT_ELLIPSIS "..."

static const struct cli_command *const cli_commands[] = {
    &cli_command_init,    &cli_command_unlock, &cli_command_lock,    &cli_command_status,
    &cli_command_devices, &cli_command_new,    &cli_command_list,    &cli_command_show,
    &cli_command_edit,    &cli_command_rm,     &cli_command_restore, &cli_command_import,
    &cli_command_export,  &cli_command_assert, &cli_command_pair,    &cli_command_join,
    &cli_command_revoke,  &cli_command_sync,
};
#define CLI_NCOMMANDS (sizeof(cli_commands) / sizeof(cli_commands[0]))

static void cli_usage(FILE *f)
{
	fprintf(f, "usage: pksync [--state-dir DIR] [--json] COMMAND [ARGS]\n"
		   "\n"
		   "Passkeys synced between your own devices. Every command asks the\n"
		   "running pksync-agent through its control socket.\n"
		   "\n"
		   "Commands:\n");
	for (size_t i = 0; i < CLI_NCOMMANDS; i++)
		fprintf(f, "  %-9s %s\n", cli_commands[i]->name, cli_commands[i]->summary);
	fprintf(f, "  %-9s %s\n", "help", "show the help of a command");
	fprintf(f, "\n"
		   "Options (also accepted after the command):\n"
		   "  --state-dir DIR  the agent's state directory (default $PKSYNC_STATE_DIR,\n"
		   "                   else $XDG_DATA_HOME/pksync or ~/.local/share/pksync)\n"
		   "  --json           print the result, or {\"error\": ...}, as JSON\n"
		   "  --help           show this help\n"
		   "  --version        show the version\n"
		   "\n"
		   "'pksync help COMMAND' or 'pksync COMMAND --help' shows a command's options.\n"
		   "Exit status: 0 done, 1 failed, 2 the command line is wrong.\n");
}

/* Formats into buf and makes sure the sentence ends with a period. */
__attribute__((format(printf, 3, 0), nonnull(1, 3))) static void
cli_sentence(char *buf, size_t cap, const char *fmt, va_list ap)
{
	size_t len;

	vsnprintf(buf, cap, fmt, ap);
	len = strlen(buf);
	if (len > 0 && len + 1 < cap && strchr(".!?", buf[len - 1]) == NULL) {
		buf[len] = '.';
		buf[len + 1] = '\0';
	}
}

static void cli_report(struct cli *cli, const char *sentence)
{
	json_t *doc = NULL;

	if (cli != NULL && cli->json) {
		doc = json_pack("{s:s}", "error", sentence);
		/* One line, so tools reading errors line by line get it whole. */
		if (doc != NULL && json_dumpf(doc, stdout, JSON_ENCODE_ANY) == 0 &&
		    fputc('\n', stdout) != EOF) {
			json_decref(doc);
			return;
		}
		json_decref(doc);
	}
	fprintf(stderr, "pksync: %s\n", sentence);
}

int cli_error(struct cli *cli, const char *fmt, ...)
{
	char sentence[CLI_SENTENCE_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	cli_sentence(sentence, sizeof(sentence), fmt, ap);
	va_end(ap);
	cli_report(cli, sentence);
	return CLI_EXIT_ERROR;
}

int cli_usage_error(struct cli *cli, const char *fmt, ...)
{
	char what[CLI_SENTENCE_MAX];
	char sentence[CLI_SENTENCE_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (cli != NULL && cli->command != NULL)
		snprintf(sentence, sizeof(sentence), "%s (see 'pksync help %s').", what,
			 cli->command);
	else
		snprintf(sentence, sizeof(sentence), "%s (see 'pksync --help').", what);
	cli_report(cli, sentence);
	return CLI_EXIT_USAGE;
}

void cli_warn(const char *fmt, ...)
{
	char sentence[CLI_SENTENCE_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	cli_sentence(sentence, sizeof(sentence), fmt, ap);
	va_end(ap);
	fprintf(stderr, "pksync: warning: %s\n", sentence);
}

int cli_print_json(struct cli *cli, const json_t *value)
{
	(void)cli;
	if (json_dumpf(value, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0 ||
	    fputc('\n', stdout) == EOF)
		return CLI_EXIT_ERROR;
	return CLI_EXIT_OK;
}

int cli_print_json_line(struct cli *cli, const json_t *value)
{
	(void)cli;
	if (json_dumpf(value, stdout, JSON_COMPACT | JSON_ENCODE_ANY) != 0 ||
	    fputc('\n', stdout) == EOF || fflush(stdout) == EOF)
		return CLI_EXIT_ERROR;
	return CLI_EXIT_OK;
}

const char *cli_json_str(const json_t *obj, const char *key, const char *fallback)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s != NULL ? s : fallback;
}

const char *cli_prefix(const char *s, size_t n, char *out, size_t cap)
{
	if (s == NULL)
		return NULL;
	snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), s);
	return out;
}

int cli_is_record_id(const char *s)
{
	size_t len = strlen(s);

	if (len < 4 || len > 32)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (strchr("0123456789abcdefABCDEF", s[i]) == NULL)
			return 0;
	return 1;
}

json_t *cli_request_new(struct cli *cli, const char *name)
{
	json_t *req = json_pack("{s:s}", "cmd", name);

	if (req == NULL)
		cli_error(cli, "out of memory");
	return req;
}

int cli_set_string(struct cli *cli, json_t *obj, const char *key, const char *arg, const char *what)
{
	json_t *s;

	if (strlen(arg) > CLI_ARG_MAX)
		return cli_usage_error(cli, "%s is longer than %zu bytes", what, CLI_ARG_MAX);
	s = json_string(arg);
	if (s == NULL)
		return cli_usage_error(cli, "%s is not valid UTF-8 text", what);
	if (json_object_set_new(obj, key, s) != 0)
		return cli_error(cli, "out of memory");
	return CLI_CONTINUE;
}

/*
 * One printable piece of text: the bytes to print (raw or an escape) and its
 * width in columns. Returns how many input bytes it covers.
 */
static size_t cli_text_token(const unsigned char *s, char *tok, size_t cap, size_t *cols)
{
	uint32_t cp;
	size_t n;

	if (s[0] < 0x80) {
		if (s[0] == '\n')
			snprintf(tok, cap, "\\n");
		else if (s[0] == '\t')
			snprintf(tok, cap, "\\t");
		else if (s[0] == '\r')
			snprintf(tok, cap, "\\r");
		else if (s[0] < 0x20 || s[0] == 0x7f)
			snprintf(tok, cap, "\\x%02x", s[0]);
		else
			snprintf(tok, cap, "%c", s[0]);
		*cols = strlen(tok);
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		cp = s[0] & 0x07;
	} else {
		n = 0;
		cp = 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			n = 0;
			break;
		}
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (n == 0 || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff)) {
		snprintf(tok, cap, "\\x%02x", s[0]);
		*cols = strlen(tok);
		return 1;
	}
	/* C1 controls, bidirectional overrides and line separators can disguise text. */
	if (cp <= 0x9f || cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069)) {
		snprintf(tok, cap, "\\u%04x", (unsigned int)cp);
		*cols = strlen(tok);
		return n;
	}
	memcpy(tok, s, n);
	tok[n] = '\0';
	*cols = 1;
	return n;
}

/* Prints (f not NULL) or measures s, cut at max_cols with an ellipsis. */
static size_t cli_text_emit(FILE *f, const char *s, size_t max_cols)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t total = 0, printed = 0, cols;
	size_t room;
	char tok[16];

	for (const unsigned char *q = p; *q != '\0';) {
		q += cli_text_token(q, tok, sizeof(tok), &cols);
		total += cols;
	}
	if (max_cols == 0 || total <= max_cols) {
		room = total;
	} else if (max_cols > strlen(CLI_TEXT_ELLIPSIS)) {
		room = max_cols - strlen(CLI_TEXT_ELLIPSIS);
	} else {
		room = 0;
	}
	while (*p != '\0') {
		size_t used = cli_text_token(p, tok, sizeof(tok), &cols);

		if (printed + cols > room)
			break;
		if (f != NULL)
			fputs(tok, f);
		printed += cols;
		p += used;
	}
	if (printed < total) {
		if (f != NULL)
			fputs(CLI_TEXT_ELLIPSIS, f);
		printed += strlen(CLI_TEXT_ELLIPSIS);
	}
	return printed;
}

size_t cli_text_width(const char *s, size_t max_cols)
{
	return cli_text_emit(NULL, s, max_cols);
}

size_t cli_text_print(FILE *f, const char *s, size_t max_cols)
{
	return cli_text_emit(f, s, max_cols);
}

void cli_table_print(FILE *f, const char *const *header, size_t ncols, const char **cells,
		     size_t nrows, const size_t *max_cols)
{
	size_t widths[16];

	if (ncols > sizeof(widths) / sizeof(widths[0]))
		ncols = sizeof(widths) / sizeof(widths[0]);
	for (size_t c = 0; c < ncols; c++) {
		widths[c] = cli_text_width(header[c], 0);
		for (size_t r = 0; r < nrows; r++) {
			const char *cell = cells[r * ncols + c];
			size_t w;

			/* Empty cells print "-" so every column stays one word for awk. */
			if (cell == NULL || cell[0] == '\0')
				cell = "-";
			w = cli_text_width(cell, max_cols ? max_cols[c] : 0);

			if (w > widths[c])
				widths[c] = w;
		}
	}
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			const char *cell = r == 0 ? header[c] : cells[(r - 1) * ncols + c];
			size_t w;

			if (cell == NULL || cell[0] == '\0')
				cell = "-";
			w = cli_text_print(f, cell, max_cols ? max_cols[c] : 0);

			/* The last column is not padded: no trailing blanks. */
			if (c + 1 < ncols)
				fprintf(f, "%*s", (int)(widths[c] - w + 2), "");
		}
		fputc('\n', f);
	}
}

void cli_print_fields(FILE *f, const json_t *obj)
{
	const char *key;
	json_t *value;
	size_t width = 0;

	json_object_foreach((json_t *)obj, key, value)
	{
		size_t w = cli_text_width(key, 0);

		if (w > width)
			width = w;
	}
	json_object_foreach((json_t *)obj, key, value)
	{
		char *text = NULL;
		size_t w = cli_text_print(f, key, 0);

		fputc(':', f);
		/* No trailing blanks after an empty value. */
		if (!json_is_string(value) || json_string_length(value) > 0)
			fprintf(f, "%*s", (int)(width - w + 1), "");
		switch (json_typeof(value)) {
		case JSON_STRING:
			cli_text_print(f, json_string_value(value), 0);
			break;
		case JSON_INTEGER:
			fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
			break;
		case JSON_TRUE:
			fputs("true", f);
			break;
		case JSON_FALSE:
			fputs("false", f);
			break;
		case JSON_NULL:
			fputs("-", f);
			break;
		case JSON_REAL:
		case JSON_OBJECT:
		case JSON_ARRAY:
			text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
			cli_text_print(f, text ? text : "?", 0);
			break;
		}
		if (text != NULL) {
			json_free_t free_fn = free;

			json_get_alloc_funcs(NULL, &free_fn);
			free_fn(text);
		}
		fputc('\n', f);
	}
}

/* The name of the long option whose value is val, for messages. */
static const char *cli_option_name(const struct option *opts, int val)
{
	for (size_t i = 0; opts[i].name != NULL; i++)
		if (opts[i].val == val)
			return opts[i].name;
	return "?";
}

/* getopt_long() said '?': an unknown option, or a value given to a flag. */
static int cli_bad_option(struct cli *cli, const char *arg, int opt)
{
	if (strncmp(arg, "--", 2) == 0 && opt != 0)
		return cli_usage_error(cli, "option '%.*s' takes no value", (int)strcspn(arg, "="),
				       arg);
	if (strncmp(arg, "--", 2) == 0 || opt == 0 || opt >= 0x100)
		return cli_usage_error(cli, "unknown option '%.64s'", arg);
	return cli_usage_error(cli, "unknown option '-%c'", opt);
}

int cli_parse(struct cli *cli, const struct cli_command *cmd, int argc, char **argv,
	      cli_option_fn on_option, void *ctx, char ***args, int *nargs)
{
	static const struct option common[] = {
	    {"help", no_argument, NULL, CLI_OPT_HELP},
	    {"json", no_argument, NULL, CLI_OPT_JSON},
	    {"state-dir", required_argument, NULL, CLI_OPT_STATE_DIR},
	};
	struct option opts[CLI_OPTIONS_MAX + 4];
	size_t n = 0;
	int r = CLI_CONTINUE;
	int c;

	/* Positional arguments are gathered at the front of argv, in order. */
	*nargs = 0;
	*args = argv + 1;
	for (size_t i = 0; cmd->options != NULL && cmd->options[i].name != NULL; i++) {
		if (n == CLI_OPTIONS_MAX)
			return cli_error(cli, "internal error: too many options");
		opts[n++] = cmd->options[i];
	}
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
		opts[n++] = common[i];
	memset(&opts[n], 0, sizeof(opts[n]));

	optind = 0;
	opterr = 0;
	/* "-" returns positional arguments in order (no reliance on permutation). */
	while ((c = getopt_long(argc, argv, "-:h", opts, NULL)) != -1) {
		if (c == 1) {
			if (strlen(optarg) > CLI_ARG_MAX)
				return cli_usage_error(
				    cli, "the %s argument is longer than %zu bytes",
				    cmd->args_name ? cmd->args_name : "", CLI_ARG_MAX);
			(*args)[(*nargs)++] = optarg;
			continue;
		}
		if (c == '?')
			return cli_bad_option(cli, argv[optind - 1], optopt);
		if (c == ':')
			return cli_usage_error(cli, "option '--%s' needs a value",
					       cli_option_name(opts, optopt));
		if (optarg != NULL && strlen(optarg) > CLI_ARG_MAX)
			return cli_usage_error(cli, "the value of --%s is longer than %zu bytes",
					       cli_option_name(opts, c), CLI_ARG_MAX);
		switch (c) {
		case CLI_OPT_HELP:
			fputs(cmd->help, stdout);
			return CLI_EXIT_OK;
		case CLI_OPT_JSON:
			cli->json = 1;
			break;
		case CLI_OPT_STATE_DIR:
			if (optarg[0] == '\0')
				return cli_usage_error(cli, "--state-dir needs a directory");
			cli->state_dir_opt = optarg;
			break;
		default:
			r = on_option != NULL ? on_option(cli, ctx, c, optarg) : CLI_EXIT_USAGE;
			if (r != CLI_CONTINUE)
				return r;
			break;
		}
	}
	/* After "--" everything is positional. */
	while (optind < argc) {
		if (strlen(argv[optind]) > CLI_ARG_MAX)
			return cli_usage_error(cli, "the %s argument is longer than %zu bytes",
					       cmd->args_name ? cmd->args_name : "", CLI_ARG_MAX);
		(*args)[(*nargs)++] = argv[optind++];
	}
	if (*nargs < cmd->min_args)
		return cli_usage_error(cli, "missing %s", cmd->args_name);
	if (*nargs > cmd->max_args)
		return cli_usage_error(cli, "unexpected argument '%.64s'", (*args)[cmd->max_args]);
	return CLI_CONTINUE;
}

struct cli_progress_bar {
	cli_event_fn on_event;
	void *event_user;
	int enabled;
	int drawn;
	int64_t last_done;
	int last_percent;
};

#define CLI_BAR_WIDTH 30

static void cli_progress_draw(void *user_data, const struct cli_frame *p)
{
	struct cli_progress_bar *bar = user_data;
	char cells[CLI_BAR_WIDTH + 1];
	int64_t done = p->done;
	int percent = 0;
	size_t filled = 0;

	if (p->kind == CLI_FRAME_EVENT) {
		if (bar->on_event != NULL)
			bar->on_event(bar->event_user, p->result);
		return;
	}
	if (!bar->enabled)
		return;
	if (p->total > 0) {
		if (done > p->total)
			done = p->total;
		percent = (int)(done * 100 / p->total);
		filled = (size_t)(done * CLI_BAR_WIDTH / p->total);
	}
	/* Redrawing for every record would cost more than the work on a slow terminal. */
	if (bar->drawn && percent == bar->last_percent && (p->total > 0 || done == bar->last_done))
		return;
	memset(cells, '#', filled);
	memset(cells + filled, '.', CLI_BAR_WIDTH - filled);
	cells[CLI_BAR_WIDTH] = '\0';
	fputc('\r', stderr);
	cli_text_print(stderr, p->what, 20);
	if (p->total > 0)
		fprintf(stderr, " [%s] %lld/%lld %3d%%", cells, (long long)done,
			(long long)p->total, percent);
	else
		fprintf(stderr, " %lld", (long long)done);
	fputs("\033[K", stderr);
	fflush(stderr);
	bar->drawn = 1;
	bar->last_done = done;
	bar->last_percent = percent;
}

int cli_call(struct cli *cli, const json_t *request, json_t **result)
{
	return cli_call_events(cli, request, NULL, NULL, result);
}

int cli_call_events(struct cli *cli, const json_t *request, cli_event_fn on_event, void *user,
		    json_t **result)
{
	struct cli_progress_bar bar = {on_event, user, 0, 0, 0, -1};
	struct cli_frame frame;
	struct cli_paths paths;
	char err[CLI_SENTENCE_MAX + 256];
	int r;

	memset(&frame, 0, sizeof(frame));
	if (cli_paths_resolve(cli->state_dir_opt, &paths, err, sizeof(err)) != PKS_OK)
		return cli_error(cli, "%s", err);
	bar.enabled = isatty(STDERR_FILENO);
	r = cli_client_call(paths.socket_path, request, cli_progress_draw, &bar, &frame, err,
			    sizeof(err));
	if (bar.drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	if (r == PKS_ERR_NOT_FOUND) {
		if (paths.explicit_state_dir)
			return cli_error(cli,
					 "cannot reach pksync-agent at %s (is it running? start it "
					 "with 'pksync-agent --state-dir %s')",
					 paths.socket_path, paths.state_dir);
		return cli_error(cli,
				 "cannot reach pksync-agent at %s (is it running? start it with "
				 "'pksync-agent')",
				 paths.socket_path);
	}
	if (r != PKS_OK)
		return cli_error(cli, "%s", err);
	if (frame.kind == CLI_FRAME_ERROR) {
		r = cli_error(cli, "%s", frame.error);
		cli_frame_clear(&frame);
		return r;
	}
	*result = frame.result;
	frame.result = NULL;
	cli_frame_clear(&frame);
	return CLI_EXIT_OK;
}

/*
 * jansson holds passphrases and private keys in its strings and buffers:
 * every block it frees is wiped first. The size sits in a header before the
 * block, padded to keep malloc's alignment.
 */
#define CLI_JSON_HEADER 16

static void *cli_json_malloc(size_t size)
{
	unsigned char *p;

	if (size > SIZE_MAX - CLI_JSON_HEADER)
		return NULL;
	p = malloc(size + CLI_JSON_HEADER);
	if (p == NULL)
		return NULL;
	memcpy(p, &size, sizeof(size));
	return p + CLI_JSON_HEADER;
}

static void cli_json_free(void *ptr)
{
	unsigned char *p;
	size_t size;

	if (ptr == NULL)
		return;
	p = (unsigned char *)ptr - CLI_JSON_HEADER;
	memcpy(&size, p, sizeof(size));
	sodium_memzero(p, size + CLI_JSON_HEADER);
	free(p);
}

static const struct cli_command *cli_find(const char *name)
{
	for (size_t i = 0; i < CLI_NCOMMANDS; i++)
		if (strcmp(cli_commands[i]->name, name) == 0)
			return cli_commands[i];
	return NULL;
}

static int cli_help(struct cli *cli, int argc, char **argv)
{
	const struct cli_command *cmd;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		cli_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc > 2)
		return cli_usage_error(cli, "'help' takes one command name");
	cmd = cli_find(argv[1]);
	if (cmd == NULL)
		return cli_usage_error(cli, "unknown command '%.64s'", argv[1]);
	fputs(cmd->help, stdout);
	return CLI_EXIT_OK;
}

/* Global options: only before the command name; the commands accept them too. */
static int cli_main(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
	    {"state-dir", required_argument, NULL, CLI_OPT_STATE_DIR},
	    {"json", no_argument, NULL, CLI_OPT_JSON},
	    {"help", no_argument, NULL, CLI_OPT_HELP},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const struct cli_command *cmd;
	int c;

	/* --json anywhere means errors are JSON too, even those found while parsing. */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			cli->json = 1;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", options, NULL)) != -1) {
		switch (c) {
		case CLI_OPT_STATE_DIR:
			if (optarg[0] == '\0')
				return cli_usage_error(cli, "--state-dir needs a directory");
			if (strlen(optarg) > CLI_ARG_MAX)
				return cli_usage_error(
				    cli,
				    "the value of --state-dir is longer than %zu "
				    "bytes",
				    CLI_ARG_MAX);
			cli->state_dir_opt = optarg;
			break;
		case CLI_OPT_JSON:
			cli->json = 1;
			break;
		case CLI_OPT_HELP:
			cli_usage(stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("pksync %s\n", PKSYNC_VERSION);
			return CLI_EXIT_OK;
		case ':':
			return cli_usage_error(cli, "option '--%s' needs a value",
					       cli_option_name(options, optopt));
		default:
			return cli_bad_option(cli, argv[optind - 1], optopt);
		}
	}
	if (optind >= argc)
		return cli_usage_error(cli, "no command given");
	if (strcmp(argv[optind], "help") == 0)
		return cli_help(cli, argc - optind, argv + optind);
	cmd = cli_find(argv[optind]);
	if (cmd == NULL)
		return cli_usage_error(cli, "unknown command '%.64s'", argv[optind]);
	cli->command = cmd->name;
	return cmd->run(cli, cmd, argc - optind, argv + optind);
}

int main(int argc, char **argv)
{
	struct rlimit no_core = {0, 0};
	struct cli cli;
	int status;

	memset(&cli, 0, sizeof(cli));
	/* Passphrases and private keys pass through this process: no core files. */
	setrlimit(RLIMIT_CORE, &no_core);
	umask(077);
	if (sodium_init() < 0) {
		fprintf(stderr, "pksync: libsodium cannot start.\n");
		return CLI_EXIT_ERROR;
	}
	json_set_alloc_funcs(cli_json_malloc, cli_json_free);
	status = cli_main(&cli, argc, argv);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "pksync: cannot write the output: %s.\n", strerror(errno));
		status = CLI_EXIT_ERROR;
	}
	return status;
}
