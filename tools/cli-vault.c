/*
 * The vault and device commands: init, unlock, lock, status, devices, and
 * the device-sync commands pair, join, revoke and sync.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "tools/cli-passphrase.h"
#include "tools/cli.h"

struct cli_vault_opts {
	const char *name;
	const char *passphrase_file;
	int no_passphrase;
	const char *peer;
	const char *qr;
	long timeout;
	int wait;
};

static int cli_vault_option(struct cli *cli, void *ctx, int val, const char *arg)
{
	struct cli_vault_opts *o = ctx;
	char *end = NULL;

	switch (val) {
	case 'n':
		o->name = arg;
		break;
	case 'p':
		o->passphrase_file = arg;
		break;
	case 'N':
		o->no_passphrase = 1;
		break;
	case 'P':
		o->peer = arg;
		break;
	case 'q':
		o->qr = arg;
		break;
	case 't':
		errno = 0;
		o->timeout = strtol(arg, &end, 10);
		if (errno != 0 || end == arg || *end != '\0' || o->timeout <= 0 ||
		    o->timeout > 86400)
			return cli_usage_error(cli,
					       "--timeout takes whole seconds from 1 to 86400");
		break;
	case 'w':
		o->wait = 1;
		break;
	default:
		return cli_usage_error(cli, "unhandled option");
	}
	return CLI_CONTINUE;
}

/*
 * Asks the agent for its status before anyone types a passphrase, so that
 * nobody types one for an agent that is not there or does not need it.
 */
static int cli_vault_status(struct cli *cli, json_t **status)
{
	json_t *req = cli_request_new(cli, "status");
	int r;

	if (req == NULL)
		return CLI_EXIT_ERROR;
	r = cli_call(cli, req, status);
	json_decref(req);
	return r;
}

/*
 * Fills req["passphrase"] from --passphrase-file or the terminal (init asks
 * twice: confirm). no_tty says what to do instead when there is no terminal.
 * An unlock that needs no passphrase (not initialised, not locked) goes
 * without one and the agent answers.
 */
static int cli_vault_passphrase(struct cli *cli, json_t *req, const char *file, int confirm,
				const char *no_tty)
{
	json_t *status = NULL;
	char err[512];
	char *pass = NULL;
	int r;

	if (file != NULL) {
		if (cli_passphrase_from_file(file, &pass, err, sizeof(err)) != PKS_OK) {
			r = cli_error(cli, "%s", err);
			goto out;
		}
	} else {
		if (!cli_passphrase_have_terminal()) {
			r = cli_error(cli, "%s", no_tty);
			goto out;
		}
		r = cli_vault_status(cli, &status);
		if (r != CLI_EXIT_OK)
			goto out;
		if (confirm && json_is_true(json_object_get(status, "initialized"))) {
			r = cli_error(cli, "This state dir already holds a vault.");
			goto out;
		}
		if (!confirm && (!json_is_true(json_object_get(status, "initialized")) ||
				 json_is_false(json_object_get(status, "locked")))) {
			r = CLI_EXIT_OK;
			goto out;
		}
		r = cli_passphrase_prompt(
		    confirm ? "New passphrase for the vault: " : "Passphrase: ",
		    confirm ? "Repeat the passphrase: " : NULL, &pass, err, sizeof(err));
		if (r == PKS_ERR_NOT_FOUND) {
			r = cli_error(cli, "%s", no_tty);
			goto out;
		}
		if (r != PKS_OK) {
			r = cli_error(cli, "%s", err);
			goto out;
		}
	}
	r = cli_set_string(cli, req, "passphrase", pass, "the passphrase");
	if (r == CLI_CONTINUE)
		r = CLI_EXIT_OK;
out:
	json_decref(status);
	cli_passphrase_free(pass);
	return r;
}

static int cli_run_init(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_vault_opts o = {0};
	json_t *req = NULL;
	json_t *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_vault_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	if (o.passphrase_file != NULL && o.no_passphrase) {
		r = cli_usage_error(cli,
				    "--passphrase-file and --no-passphrase exclude each other");
		goto out;
	}
	if (o.name != NULL && o.name[0] == '\0') {
		r = cli_usage_error(cli, "--name needs a non-empty name");
		goto out;
	}
	req = cli_request_new(cli, "init");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if (o.name != NULL) {
		r = cli_set_string(cli, req, "name", o.name, "--name");
		if (r != CLI_CONTINUE)
			goto out;
	}
	if (o.no_passphrase) {
		if (json_object_set_new(req, "no_passphrase", json_true()) != 0) {
			r = cli_error(cli, "out of memory");
			goto out;
		}
	} else {
		r = cli_vault_passphrase(cli, req, o.passphrase_file, 1,
					 "there is no terminal to ask for a passphrase: give "
					 "--passphrase-file FILE or --no-passphrase");
		if (r != CLI_EXIT_OK)
			goto out;
	}
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	fputs("Created vault ", stdout);
	cli_text_print(stdout, cli_json_str(result, "vault_id", "?"), 0);
	fputs(" on device \"", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_name", "?"), 0);
	fputs("\" (", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_id", "?"), 0);
	fputs(").\n", stdout);
	r = CLI_EXIT_OK;
out:
	/* The request may hold the passphrase; jansson wipes what it frees. */
	json_decref(req);
	json_decref(result);
	return r;
}

static int cli_run_unlock(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_vault_opts o = {0};
	json_t *req = NULL;
	json_t *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_vault_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	req = cli_request_new(cli, "unlock");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	r = cli_vault_passphrase(cli, req, o.passphrase_file, 0,
				 "there is no terminal to ask for the passphrase: give "
				 "--passphrase-file FILE");
	if (r != CLI_EXIT_OK)
		goto out;
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json)
		r = cli_print_json(cli, result);
	else
		puts("The vault is unlocked.");
out:
	json_decref(req);
	json_decref(result);
	return r;
}

/* Commands that send {"cmd": name} and nothing else. */
static int cli_simple(struct cli *cli, const struct cli_command *cmd, int argc, char **argv,
		      json_t **result)
{
	json_t *req = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, NULL, NULL, &args, &nargs);
	if (r != CLI_CONTINUE)
		return r;
	req = cli_request_new(cli, cmd->name);
	if (req == NULL)
		return CLI_EXIT_ERROR;
	r = cli_call(cli, req, result);
	json_decref(req);
	if (r == CLI_EXIT_OK && cli->json) {
		r = cli_print_json(cli, *result);
		/* Printed: nothing more for the caller to do. */
		json_decref(*result);
		*result = NULL;
	}
	return r;
}

static int cli_run_lock(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	json_t *result = NULL;
	int r = cli_simple(cli, cmd, argc, argv, &result);

	if (r == CLI_EXIT_OK && result != NULL)
		puts("The vault is locked.");
	json_decref(result);
	return r;
}

static void cli_status_line(const char *label, const char *value)
{
	printf("%-12s ", label);
	cli_text_print(stdout, value, 0);
	putchar('\n');
}

static const char *cli_yes_no(const json_t *v)
{
	if (json_is_true(v))
		return "yes";
	if (json_is_false(v))
		return "no";
	return "?";
}

/* "a, b, c" from an array of strings, or "none". */
static void cli_status_list(const char *label, const json_t *arr)
{
	size_t i;
	json_t *v;

	printf("%-12s ", label);
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		puts("none");
		return;
	}
	json_array_foreach(arr, i, v)
	{
		if (i > 0)
			fputs(", ", stdout);
		cli_text_print(stdout, json_is_string(v) ? json_string_value(v) : "?", 0);
	}
	putchar('\n');
}

static void cli_status_peers(const json_t *peers)
{
	char id[16];
	size_t i;
	json_t *p;

	printf("%-12s ", "peers:");
	if (!json_is_array(peers) || json_array_size(peers) == 0) {
		puts("none");
		return;
	}
	printf("%zu\n", json_array_size(peers));
	json_array_foreach(peers, i, p)
	{
		fputs("  ", stdout);
		cli_text_print(stdout, cli_json_str(p, "name", "?"), 40);
		fputs(" (", stdout);
		cli_text_print(
		    stdout, cli_prefix(cli_json_str(p, "device_id", "?"), 12, id, sizeof(id)), 0);
		fputs(") ", stdout);
		cli_text_print(stdout, cli_json_str(p, "address", "-"), 60);
		fputs(" via ", stdout);
		cli_text_print(stdout, cli_json_str(p, "transport", "?"), 20);
		fputs(json_is_true(json_object_get(p, "connected")) ? ", connected" : ", away",
		      stdout);
		fputs(", last sync ", stdout);
		cli_text_print(stdout, cli_json_str(p, "last_sync", "never"), 40);
		putchar('\n');
	}
}

static int cli_run_status(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	json_t *result = NULL;
	json_t *records, *trash;
	char count[64];
	int r = cli_simple(cli, cmd, argc, argv, &result);

	if (r != CLI_EXIT_OK || result == NULL)
		goto out;
	if (!json_is_object(result)) {
		r = cli_error(cli, "pksync-agent sent a status that is not an object");
		goto out;
	}
	cli_status_line("state dir:", cli_json_str(result, "state_dir", "?"));
	cli_status_line("version:", cli_json_str(result, "version", "?"));
	if (!json_is_true(json_object_get(result, "initialized"))) {
		cli_status_line("initialised:", "no (run 'pksync init')");
		goto out;
	}
	cli_status_line("vault:", cli_json_str(result, "vault_id", "?"));
	printf("%-12s ", "device:");
	cli_text_print(stdout, cli_json_str(result, "device_name", "?"), 0);
	fputs(" (", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_id", "?"), 0);
	fputs(")\n", stdout);
	cli_status_line("locked:", cli_yes_no(json_object_get(result, "locked")));
	records = json_object_get(result, "records");
	trash = json_object_get(result, "trash");
	if (json_is_integer(records)) {
		snprintf(count, sizeof(count),
			 "%" JSON_INTEGER_FORMAT " (%" JSON_INTEGER_FORMAT " in the trash)",
			 json_integer_value(records),
			 json_is_integer(trash) ? json_integer_value(trash) : 0);
		cli_status_line("passkeys:", count);
	}
	if (json_is_string(json_object_get(result, "digest")))
		cli_status_line("digest:", cli_json_str(result, "digest", "?"));
	cli_status_list("transports:", json_object_get(result, "transports"));
	cli_status_peers(json_object_get(result, "peers"));
	cli_status_line("last sync:", cli_json_str(result, "last_sync", "never"));
out:
	json_decref(result);
	return r;
}

static int cli_run_devices(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	static const char *const header[] = {"DEVICE", "NAME", "ADDED", "ADDED BY", "STATUS"};
	static const size_t max_cols[] = {0, 40, 0, 0, 0};
	struct cli_device_row {
		char id[16];
		char added_at[16];
		char added_by[16];
	} *rows = NULL;
	const size_t ncols = sizeof(header) / sizeof(header[0]);
	json_t *result = NULL;
	const char **cells = NULL;
	json_t *d;
	size_t i;
	int r = cli_simple(cli, cmd, argc, argv, &result);

	if (r != CLI_EXIT_OK || result == NULL)
		goto out;
	if (!json_is_array(result)) {
		r = cli_error(cli, "pksync-agent sent a device list that is not an array");
		goto out;
	}
	cells = calloc(json_array_size(result) * ncols + 1, sizeof(*cells));
	rows = calloc(json_array_size(result) + 1, sizeof(*rows));
	if (cells == NULL || rows == NULL) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	json_array_foreach(result, i, d)
	{
		const char **row = cells + i * ncols;

		row[0] = cli_prefix(cli_json_str(d, "device_id", NULL), 12, rows[i].id,
				    sizeof(rows[i].id));
		row[1] = cli_json_str(d, "name", NULL);
		row[2] = cli_prefix(cli_json_str(d, "added_at", NULL), 10, rows[i].added_at,
				    sizeof(rows[i].added_at));
		row[3] = cli_prefix(cli_json_str(d, "added_by", NULL), 12, rows[i].added_by,
				    sizeof(rows[i].added_by));
		row[4] = json_is_true(json_object_get(d, "revoked")) ? "revoked" : "member";
	}
	cli_table_print(stdout, header, ncols, cells, json_array_size(result), max_cols);
out:
	free(rows);
	free(cells);
	json_decref(result);
	return r;
}

/* Parses the flags so scripts can be written today, then says so plainly. */
/* ---- pair, join, revoke, sync ---- */

struct cli_pair_ctx {
	struct cli *cli;
	int shown;
};

static void cli_pair_event(void *user, const json_t *event)
{
	struct cli_pair_ctx *c = user;
	const char *code = cli_json_str(event, "code", NULL);
	const char *qr = cli_json_str(event, "qr", NULL);
	json_t *addrs = json_object_get(event, "addresses");
	const char *first = NULL;
	size_t i;
	json_t *a;

	if (code == NULL || c->shown)
		return;
	c->shown = 1;
	if (c->cli->json) {
		cli_print_json_line(c->cli, event);
		return;
	}
	json_array_foreach(addrs, i, a)
	{
		const char *s = json_string_value(a);
		/* Offer an address another machine can reach before loopback. */
		if (s != NULL && (first == NULL || strncmp(first, "127.", 4) == 0 ||
				  strncmp(first, "[::1]", 5) == 0))
			first = s;
	}
	printf("Pairing code: %.4s %.4s  (valid %" JSON_INTEGER_FORMAT
	       " s; 5 wrong tries end it)\n\n",
	       code, code + 4, json_integer_value(json_object_get(event, "expires_in")));
	printf("On the new device, with its agent running, type:\n  pksync join %s --peer ", code);
	cli_text_print(stdout, first ? first : "ADDR:PORT", 80);
	printf("\n");
	if (qr != NULL) {
		printf("or scan this code (or pass its text to 'pksync join --qr'):\n  ");
		cli_text_print(stdout, qr, 0);
		printf("\n");
		if (isatty(STDOUT_FILENO))
			cli_qr_print(stdout, qr);
	}
	printf("\nWaiting for the new device...\n");
	fflush(stdout);
}

static int cli_run_pair(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_vault_opts o = {0};
	struct cli_pair_ctx ctx = {cli, 0};
	json_t *req = NULL, *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_vault_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		return r;
	if (o.timeout > 3600)
		return cli_usage_error(cli, "--timeout takes at most 3600 seconds");
	req = cli_request_new(cli, "pair");
	if (req == NULL)
		return CLI_EXIT_ERROR;
	if (o.timeout > 0 && json_object_set_new(req, "timeout", json_integer(o.timeout)) != 0) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	r = cli_call_events(cli, req, cli_pair_event, &ctx, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json_line(cli, result);
		goto out;
	}
	fputs("Added device \"", stdout);
	cli_text_print(stdout, cli_json_str(result, "name", "?"), 64);
	fputs("\" (", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_id", "?"), 0);
	fputs(") to the vault.\n", stdout);
out:
	json_decref(req);
	json_decref(result);
	return r;
}

static int cli_run_join(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_vault_opts o = {0};
	json_t *req = NULL, *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_vault_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		return r;
	if (o.passphrase_file != NULL && o.no_passphrase)
		return cli_usage_error(cli,
				       "--passphrase-file and --no-passphrase exclude each other");
	if ((nargs == 1) == (o.qr != NULL))
		return cli_usage_error(cli, "give the 8-digit CODE or --qr TEXT, one of them");
	if (o.name != NULL && o.name[0] == '\0')
		return cli_usage_error(cli, "--name needs a non-empty name");
	req = cli_request_new(cli, "join");
	if (req == NULL)
		return CLI_EXIT_ERROR;
	if ((nargs == 1 &&
	     (r = cli_set_string(cli, req, "code", args[0], "CODE")) != CLI_CONTINUE) ||
	    (o.qr != NULL && (r = cli_set_string(cli, req, "qr", o.qr, "--qr")) != CLI_CONTINUE) ||
	    (o.peer != NULL &&
	     (r = cli_set_string(cli, req, "peer", o.peer, "--peer")) != CLI_CONTINUE) ||
	    (o.name != NULL &&
	     (r = cli_set_string(cli, req, "name", o.name, "--name")) != CLI_CONTINUE))
		goto out;
	if (o.no_passphrase) {
		if (json_object_set_new(req, "no_passphrase", json_true()) != 0) {
			r = cli_error(cli, "out of memory");
			goto out;
		}
	} else {
		r = cli_vault_passphrase(cli, req, o.passphrase_file, 1,
					 "there is no terminal to ask for a passphrase: give "
					 "--passphrase-file FILE or --no-passphrase");
		if (r != CLI_EXIT_OK)
			goto out;
	}
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	fputs("Joined vault ", stdout);
	cli_text_print(stdout, cli_json_str(result, "vault_id", "?"), 0);
	fputs(" as device \"", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_name", "?"), 64);
	fputs("\" (", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_id", "?"), 0);
	fputs("). Passkeys arrive as the devices sync.\n", stdout);
out:
	json_decref(req);
	json_decref(result);
	return r;
}

static int cli_run_revoke(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	json_t *req = NULL, *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, NULL, NULL, &args, &nargs);
	if (r != CLI_CONTINUE)
		return r;
	req = cli_request_new(cli, "revoke");
	if (req == NULL)
		return CLI_EXIT_ERROR;
	r = cli_set_string(cli, req, "device", args[0], "DEVICE");
	if (r != CLI_CONTINUE)
		goto out;
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	fputs("Revoked device \"", stdout);
	cli_text_print(stdout, cli_json_str(result, "name", "?"), 64);
	fputs("\" (", stdout);
	cli_text_print(stdout, cli_json_str(result, "device_id", "?"), 0);
	fputs("): it can no longer sync, and new changes use a new data key.\n", stdout);
out:
	json_decref(req);
	json_decref(result);
	return r;
}

static int cli_run_sync(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_vault_opts o = {0};
	json_t *req = NULL, *result = NULL;
	json_int_t peers;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_vault_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		return r;
	if (o.timeout > 3600)
		return cli_usage_error(cli, "--timeout takes at most 3600 seconds");
	req = cli_request_new(cli, "sync");
	if (req == NULL)
		return CLI_EXIT_ERROR;
	if ((o.wait && json_object_set_new(req, "wait", json_true()) != 0) ||
	    (o.timeout > 0 && json_object_set_new(req, "timeout", json_integer(o.timeout)) != 0)) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	peers = json_integer_value(json_object_get(result, "peers"));
	if (o.wait)
		printf("In sync with %" JSON_INTEGER_FORMAT " connected device%s.\n", peers,
		       peers == 1 ? "" : "s");
	else
		printf("Syncing with %" JSON_INTEGER_FORMAT " connected device%s.\n", peers,
		       peers == 1 ? "" : "s");
out:
	json_decref(req);
	json_decref(result);
	return r;
}

static const struct option cli_init_options[] = {
    {"name", required_argument, NULL, 'n'},
    {"passphrase-file", required_argument, NULL, 'p'},
    {"no-passphrase", no_argument, NULL, 'N'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_init = {
    "init",
    "create this device's identity and a new vault",
    "usage: pksync init [--name NAME] [--passphrase-file FILE | --no-passphrase] [--json]\n"
    "\n"
    "Creates this device's identity and a new, empty vault in the agent's state\n"
    "directory. Without --passphrase-file or --no-passphrase the passphrase is\n"
    "asked twice on the terminal.\n"
    "\n"
    "  --name NAME             the device's name (default: the host name)\n"
    "  --passphrase-file FILE  read the passphrase from the first line of FILE\n"
    "                          ('-' reads standard input)\n"
    "  --no-passphrase         protect the keys with a key file in the state\n"
    "                          directory instead of a passphrase\n"
    "  --json                  print the result as JSON\n",
    cli_init_options,
    0,
    0,
    NULL,
    cli_run_init,
};

static const struct option cli_unlock_options[] = {
    {"passphrase-file", required_argument, NULL, 'p'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_unlock = {
    "unlock",
    "unlock the vault with its passphrase",
    "usage: pksync unlock [--passphrase-file FILE] [--json]\n"
    "\n"
    "Unlocks the vault. Without --passphrase-file the passphrase is asked on\n"
    "the terminal. Each wrong passphrase makes the agent wait longer.\n"
    "\n"
    "  --passphrase-file FILE  read the passphrase from the first line of FILE\n"
    "                          ('-' reads standard input)\n"
    "  --json                  print the result as JSON\n",
    cli_unlock_options,
    0,
    0,
    NULL,
    cli_run_unlock,
};

const struct cli_command cli_command_lock = {
    "lock",
    "lock the vault (the agent forgets its keys)",
    "usage: pksync lock [--json]\n"
    "\n"
    "Locks the vault: the agent wipes its keys from memory until 'pksync unlock'.\n",
    NULL,
    0,
    0,
    NULL,
    cli_run_lock,
};

const struct cli_command cli_command_status = {
    "status",
    "show the device, the vault and the sync state",
    "usage: pksync status [--json]\n"
    "\n"
    "Shows the state directory, this device, whether the vault is locked, how\n"
    "many passkeys it holds, its digest, the transports, the peers and the\n"
    "last sync.\n",
    NULL,
    0,
    0,
    NULL,
    cli_run_status,
};

const struct cli_command cli_command_devices = {
    "devices",
    "list the vault's member devices",
    "usage: pksync devices [--json]\n"
    "\n"
    "Lists every device of the vault, revoked ones included.\n",
    NULL,
    0,
    0,
    NULL,
    cli_run_devices,
};

static const struct option cli_pair_options[] = {
    {"timeout", required_argument, NULL, 't'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_pair = {
    "pair",
    "let a new device join with a code",
    "usage: pksync pair [--timeout SECONDS] [--json]\n"
    "\n"
    "Shows an 8-digit code and a QR code for a new device to join this vault,\n"
    "and waits for it. The code is single-use, expires, and dies after 5 wrong\n"
    "tries. With --json the first line is {\"code\": ..., \"qr\": ...,\n"
    "\"addresses\": [...]} and the last the added device.\n"
    "\n"
    "  --timeout SECONDS  how long the code stays valid (default 300)\n",
    cli_pair_options,
    0,
    0,
    NULL,
    cli_run_pair,
};

static const struct option cli_join_options[] = {
    {"peer", required_argument, NULL, 'P'},    {"qr", required_argument, NULL, 'q'},
    {"name", required_argument, NULL, 'n'},    {"passphrase-file", required_argument, NULL, 'p'},
    {"no-passphrase", no_argument, NULL, 'N'}, {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_join = {
    "join",
    "join a vault from a new device",
    "usage: pksync join [CODE] [--peer ADDR:PORT] [--qr TEXT] [--name NAME]\n"
    "                   [--passphrase-file FILE | --no-passphrase]\n"
    "\n"
    "Joins the vault of a device running 'pksync pair', with the code it shows.\n"
    "The agent of this device must be running on a fresh state directory.\n"
    "\n"
    "  --peer ADDR:PORT        the sponsor's address, when discovery cannot find it\n"
    "  --qr TEXT               the text of the sponsor's QR code instead of CODE\n"
    "  --name NAME             this device's name (default: the host name)\n"
    "  --passphrase-file FILE  read the new passphrase from the first line of FILE\n"
    "  --no-passphrase         use a key file instead of a passphrase\n",
    cli_join_options,
    0,
    1,
    "CODE",
    cli_run_join,
};

const struct cli_command cli_command_revoke = {
    "revoke",
    "remove a device from the vault",
    "usage: pksync revoke DEVICE\n"
    "\n"
    "Removes DEVICE (an id prefix from 'pksync devices') from the vault: it can no\n"
    "longer sync, whatever it writes afterwards is ignored, and the data key is\n"
    "rotated. DEVICE may also be the device's name.\n",
    NULL,
    1,
    1,
    "DEVICE",
    cli_run_revoke,
};

static const struct option cli_sync_options[] = {
    {"wait", no_argument, NULL, 'w'},
    {"timeout", required_argument, NULL, 't'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_sync = {
    "sync",
    "sync with the other members now",
    "usage: pksync sync [--wait] [--timeout SECONDS]\n"
    "\n"
    "Syncs with every reachable member now (devices sync on their own too).\n"
    "\n"
    "  --wait             return once every connected member has the same digest\n"
    "  --timeout SECONDS  give up after this long (default 30)\n",
    cli_sync_options,
    0,
    0,
    NULL,
    cli_run_sync,
};
