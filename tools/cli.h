/*
 * Shared pieces of the pksync command-line program: the per-run context, the
 * command table entries, option parsing, output and the one call to the
 * agent. Each cli-*.c file implements a group of commands on top of these.
 */
#ifndef PKS_CLI_H
#define PKS_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Exit statuses. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_ERROR 1
#define CLI_EXIT_USAGE 2
/* Returned by cli_parse() when the command should go on running. */
#define CLI_CONTINUE (-1)

/* The longest string argument accepted on the command line (8 KiB). */
#define CLI_ARG_MAX ((size_t)8192)

struct cli {
	/* --state-dir as given, NULL when absent (PKSYNC_STATE_DIR then applies). */
	const char *state_dir_opt;
	/* Print results and errors as JSON (--json anywhere on the line). */
	int json;
	/* The command being run, for messages; NULL before dispatch. */
	const char *command;
};

struct cli_command {
	const char *name;
	/* One line for 'pksync --help'. */
	const char *summary;
	/* The full text of 'pksync help NAME', starting with "usage: ". */
	const char *help;
	/* Command options, terminated by a zeroed entry; --help, --json and --state-dir are added.
	 */
	const struct option *options;
	/* How many positional arguments, and what to call them in messages. */
	int min_args;
	int max_args;
	const char *args_name;
	/* argv[0] is the command name; returns an exit status. */
	int (*run)(struct cli *cli, const struct cli_command *cmd, int argc, char **argv);
};

/*
 * Called for each command option with its value (NULL for flags); returns
 * CLI_CONTINUE or an exit status (after printing a message).
 */
typedef int (*cli_option_fn)(struct cli *cli, void *ctx, int val, const char *arg);

/*
 * Parses argv (options may come before, between or after positional
 * arguments). Handles --help (prints cmd->help, returns CLI_EXIT_OK), --json
 * and --state-dir itself, refuses values longer than CLI_ARG_MAX, unknown
 * options and a wrong number of positional arguments (CLI_EXIT_USAGE). On
 * CLI_CONTINUE *args points at the positional arguments and *nargs counts them.
 */
int cli_parse(struct cli *cli, const struct cli_command *cmd, int argc, char **argv,
	      cli_option_fn on_option, void *ctx, char ***args, int *nargs);

/*
 * Prints one error sentence ("pksync: ..." on stderr, or {"error": ...} on
 * stdout with --json) and returns CLI_EXIT_ERROR. A final period is added
 * when the sentence has none.
 */
int cli_error(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for command-line mistakes, pointing at the help; returns CLI_EXIT_USAGE. */
int cli_usage_error(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "pksync: warning: ..." on stderr, whatever the output mode. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Sends request (borrowed) to the agent and waits for the final frame,
 * drawing progress frames as a bar on stderr when it is a terminal. On
 * success returns CLI_EXIT_OK and *result (owned by the caller) holds the
 * agent's result; otherwise the error has been printed and the exit status
 * is returned.
 */
int cli_call(struct cli *cli, const json_t *request, json_t **result);
/* The same, passing each {"event": ...} object (borrowed) to on_event as it arrives. */
typedef void (*cli_event_fn)(void *user, const json_t *event);
int cli_call_events(struct cli *cli, const json_t *request, cli_event_fn on_event, void *user,
		    json_t **result);

/* Sets obj[key] to a string argument; a usage error when arg is not UTF-8 text. */
int cli_set_string(struct cli *cli, json_t *obj, const char *key, const char *arg,
		   const char *what);
/* A new {"cmd": name} request, or NULL (after printing) when memory runs out. */
json_t *cli_request_new(struct cli *cli, const char *name);

/* Prints a JSON value on stdout, indented, newline terminated. */
int cli_print_json(struct cli *cli, const json_t *value);
/* The same on one compact line, flushed (for streams of answers, like pair --json). */
int cli_print_json_line(struct cli *cli, const json_t *value);

/*
 * Text from the agent or a file may hold terminal escapes: these print it with
 * control and bidirectional-override characters escaped (\n, \x1b, \u202e),
 * counting one column per code point and cutting at max_cols (0: no limit)
 * with "...". cli_text_width() measures what cli_text_print() would print.
 */
size_t cli_text_width(const char *s, size_t max_cols);
size_t cli_text_print(FILE *f, const char *s, size_t max_cols);

/*
 * Prints an aligned table: header has ncols names, cells holds nrows * ncols
 * strings row by row (NULL or empty prints as "-"), max_cols caps each column's
 * width (0: no cap). Cells go through cli_text_print().
 */
void cli_table_print(FILE *f, const char *const *header, size_t ncols, const char **cells,
		     size_t nrows, const size_t *max_cols);

/* Prints "key: value" lines for every member of obj, keys aligned. */
void cli_print_fields(FILE *f, const json_t *obj);

/*
 * The first n bytes of s in out (an id prefix, the date of an RFC 3339 time);
 * NULL gives NULL.
 */
const char *cli_prefix(const char *s, size_t n, char *out, size_t cap);

/* A string member or fallback when absent or not a string. */
const char *cli_json_str(const json_t *obj, const char *key, const char *fallback);

/* True when s is 4 to 32 hex characters (a record id or a unique prefix of one). */
int cli_is_record_id(const char *s);

/* Draws text as a QR code (tools/cli-qr.c); -1 when it does not fit one. */
int cli_qr_print(FILE *f, const char *text);

/* Every command of the program. */
extern const struct cli_command cli_command_init, cli_command_unlock, cli_command_lock,
    cli_command_status, cli_command_devices, cli_command_new, cli_command_list, cli_command_show,
    cli_command_edit, cli_command_rm, cli_command_restore, cli_command_import, cli_command_export,
    cli_command_assert, cli_command_pair, cli_command_join, cli_command_revoke, cli_command_sync;

#endif
