/*
 * The passkey commands: new, list, show, edit, rm, restore and assert. Each
 * one is a single request; the agent checks everything that needs the vault,
 * this file checks what the command line alone can tell.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

struct cli_record_opts {
	const char *rp;
	const char *user;
	const char *display;
	const char *notes;
	const char *client_data_hash;
	const char *credential;
	int trash;
};

static int cli_record_option(struct cli *cli, void *ctx, int val, const char *arg)
{
	struct cli_record_opts *o = ctx;

	switch (val) {
	case 'r':
		o->rp = arg;
		break;
	case 'u':
		o->user = arg;
		break;
	case 'd':
		o->display = arg;
		break;
	case 'n':
		o->notes = arg;
		break;
	case 'c':
		o->client_data_hash = arg;
		break;
	case 'C':
		o->credential = arg;
		break;
	case 't':
		o->trash = 1;
		break;
	default:
		return cli_usage_error(cli, "unhandled option");
	}
	return CLI_CONTINUE;
}

/* Adds obj[key] = arg when arg was given. */
static int cli_record_set(struct cli *cli, json_t *req, const char *key, const char *arg,
			  const char *what)
{
	if (arg == NULL)
		return CLI_CONTINUE;
	return cli_set_string(cli, req, key, arg, what);
}

static int cli_record_id_arg(struct cli *cli, json_t *req, const char *id)
{
	if (!cli_is_record_id(id))
		return cli_usage_error(
		    cli, "'%.64s' is not a passkey id: give 4 to 32 hex characters of one", id);
	return cli_set_string(cli, req, "id", id, "ID");
}

/* "0123456789ab (alice at example.org)" */
static void cli_record_ref(FILE *f, const json_t *rec)
{
	char id[16];

	cli_text_print(f, cli_prefix(cli_json_str(rec, "id", "?"), 12, id, sizeof(id)), 0);
	fputs(" (", f);
	cli_text_print(f, cli_json_str(rec, "user_name", "?"), 64);
	fputs(" at ", f);
	cli_text_print(f, cli_json_str(rec, "rp_id", "?"), 64);
	fputs(")", f);
}

enum cli_record_show {
	CLI_SHOW_FIELDS,
	CLI_SHOW_CREATED,
	CLI_SHOW_UPDATED,
	CLI_SHOW_TRASHED,
	CLI_SHOW_RESTORED,
};

/* Sends req and prints the record that comes back. */
static int cli_record_call(struct cli *cli, json_t *req, enum cli_record_show how)
{
	char id[16];
	json_t *rec = NULL;
	int r;

	r = cli_call(cli, req, &rec);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, rec);
		goto out;
	}
	if (!json_is_object(rec)) {
		r = cli_error(cli, "pksync-agent sent a passkey that is not an object");
		goto out;
	}
	switch (how) {
	case CLI_SHOW_FIELDS:
		break;
	case CLI_SHOW_CREATED:
		fputs("Created passkey ", stdout);
		cli_record_ref(stdout, rec);
		fputs(":\n", stdout);
		break;
	case CLI_SHOW_UPDATED:
		fputs("Updated passkey ", stdout);
		cli_record_ref(stdout, rec);
		fputs(":\n", stdout);
		break;
	case CLI_SHOW_TRASHED:
		cli_prefix(cli_json_str(rec, "id", "?"), 12, id, sizeof(id));
		fputs("Moved passkey ", stdout);
		cli_record_ref(stdout, rec);
		fputs(" to the trash; 'pksync restore ", stdout);
		cli_text_print(stdout, id, 0);
		fputs("' brings it back.\n", stdout);
		goto out;
	case CLI_SHOW_RESTORED:
		fputs("Restored passkey ", stdout);
		cli_record_ref(stdout, rec);
		fputs(".\n", stdout);
		goto out;
	}
	cli_print_fields(stdout, rec);
out:
	json_decref(rec);
	return r;
}

static int cli_run_new(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_record_opts o = {0};
	json_t *req = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_record_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	if (o.rp == NULL || o.user == NULL) {
		r = cli_usage_error(cli, "%s is required", o.rp == NULL ? "--rp" : "--user");
		goto out;
	}
	req = cli_request_new(cli, "new");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_record_set(cli, req, "rp", o.rp, "--rp")) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "user", o.user, "--user")) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "display", o.display, "--display")) != CLI_CONTINUE)
		goto out;
	r = cli_record_call(cli, req, CLI_SHOW_CREATED);
out:
	json_decref(req);
	return r;
}

static int cli_run_list(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	static const char *const header[] = {"ID",           "RP",      "USER",
					     "DISPLAY NAME", "CREATED", "TRASHED"};
	static const size_t max_cols[] = {0, 40, 32, 32, 0, 0};
	struct cli_list_dates {
		char id[16];
		char created[16];
		char trashed[16];
	} *dates = NULL;
	struct cli_record_opts o = {0};
	json_t *req = NULL;
	json_t *result = NULL;
	const char **cells = NULL;
	size_t ncols, i;
	json_t *rec;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_record_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	req = cli_request_new(cli, "list");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_record_set(cli, req, "rp", o.rp, "--rp")) != CLI_CONTINUE)
		goto out;
	if (o.trash && json_object_set_new(req, "trash", json_true()) != 0) {
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
	if (!json_is_array(result)) {
		r = cli_error(cli, "pksync-agent sent a passkey list that is not an array");
		goto out;
	}
	if (json_array_size(result) == 0) {
		puts(o.trash ? "The trash is empty." : "No passkeys.");
		goto out;
	}
	ncols = o.trash ? 6 : 5;
	cells = calloc(json_array_size(result) * ncols, sizeof(*cells));
	dates = calloc(json_array_size(result), sizeof(*dates));
	if (cells == NULL || dates == NULL) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	json_array_foreach(result, i, rec)
	{
		const char **row = cells + i * ncols;

		if (!json_is_object(rec)) {
			r = cli_error(cli, "pksync-agent sent a passkey that is not an object");
			goto out;
		}
		row[0] =
		    cli_prefix(cli_json_str(rec, "id", NULL), 12, dates[i].id, sizeof(dates[i].id));
		row[1] = cli_json_str(rec, "rp_id", NULL);
		row[2] = cli_json_str(rec, "user_name", NULL);
		row[3] = cli_json_str(rec, "user_display_name", NULL);
		row[4] = cli_prefix(cli_json_str(rec, "created_at", NULL), 10, dates[i].created,
				    sizeof(dates[i].created));
		if (o.trash)
			row[5] = cli_prefix(cli_json_str(rec, "trashed_at", NULL), 10,
					    dates[i].trashed, sizeof(dates[i].trashed));
	}
	cli_table_print(stdout, header, ncols, cells, json_array_size(result), max_cols);
out:
	free(dates);
	free(cells);
	json_decref(req);
	json_decref(result);
	return r;
}

/* show, rm and restore: one ID, nothing else. */
static int cli_run_by_id(struct cli *cli, const struct cli_command *cmd, int argc, char **argv,
			 enum cli_record_show how)
{
	json_t *req = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, NULL, NULL, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	req = cli_request_new(cli, cmd->name);
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_record_id_arg(cli, req, args[0])) != CLI_CONTINUE)
		goto out;
	r = cli_record_call(cli, req, how);
out:
	json_decref(req);
	return r;
}

static int cli_run_show(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	return cli_run_by_id(cli, cmd, argc, argv, CLI_SHOW_FIELDS);
}

static int cli_run_rm(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	return cli_run_by_id(cli, cmd, argc, argv, CLI_SHOW_TRASHED);
}

static int cli_run_restore(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	return cli_run_by_id(cli, cmd, argc, argv, CLI_SHOW_RESTORED);
}

static int cli_run_edit(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_record_opts o = {0};
	json_t *req = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_record_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	if (o.user == NULL && o.display == NULL && o.notes == NULL) {
		r = cli_usage_error(cli, "nothing to change: give --user, --display or --notes");
		goto out;
	}
	req = cli_request_new(cli, "edit");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_record_id_arg(cli, req, args[0])) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "user", o.user, "--user")) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "display", o.display, "--display")) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "notes", o.notes, "--notes")) != CLI_CONTINUE)
		goto out;
	r = cli_record_call(cli, req, CLI_SHOW_UPDATED);
out:
	json_decref(req);
	return r;
}

static int cli_run_assert(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	static const char *const fields[] = {"credential_id", "authenticator_data", "signature",
					     "user_handle"};
	struct cli_record_opts o = {0};
	char hash[65];
	json_t *req = NULL;
	json_t *result = NULL;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_record_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	if (o.rp == NULL || o.client_data_hash == NULL) {
		r = cli_usage_error(cli, "%s is required",
				    o.rp == NULL ? "--rp" : "--client-data-hash");
		goto out;
	}
	if (strlen(o.client_data_hash) != 64) {
		r = cli_usage_error(
		    cli,
		    "--client-data-hash must be exactly 64 hex characters (a SHA-256 "
		    "hash), not %zu",
		    strlen(o.client_data_hash));
		goto out;
	}
	for (size_t i = 0; i < 64; i++) {
		if (!isxdigit((unsigned char)o.client_data_hash[i])) {
			r = cli_usage_error(cli,
					    "--client-data-hash must be hex: '%c' is not a "
					    "hex digit",
					    isprint((unsigned char)o.client_data_hash[i])
						? o.client_data_hash[i]
						: '?');
			goto out;
		}
		hash[i] = (char)tolower((unsigned char)o.client_data_hash[i]);
	}
	hash[64] = '\0';
	req = cli_request_new(cli, "assert");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_record_set(cli, req, "rp", o.rp, "--rp")) != CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "client_data_hash", hash, "--client-data-hash")) !=
		CLI_CONTINUE ||
	    (r = cli_record_set(cli, req, "credential", o.credential, "--credential")) !=
		CLI_CONTINUE)
		goto out;
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *v = cli_json_str(result, fields[i], NULL);

		if (v == NULL) {
			r = cli_error(cli, "pksync-agent sent an assertion without %s", fields[i]);
			goto out;
		}
	}
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		printf("%-19s ", fields[i]);
		cli_text_print(stdout, cli_json_str(result, fields[i], ""), 0);
		putchar('\n');
	}
out:
	json_decref(req);
	json_decref(result);
	return r;
}

static const struct option cli_new_options[] = {
    {"rp", required_argument, NULL, 'r'},
    {"user", required_argument, NULL, 'u'},
    {"display", required_argument, NULL, 'd'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_new = {
    "new",
    "create a passkey",
    "usage: pksync new --rp RPID --user NAME [--display NAME] [--json]\n"
    "\n"
    "Creates a passkey (ES256) for a relying party and shows it.\n"
    "\n"
    "  --rp RPID       the relying party id, e.g. example.org\n"
    "  --user NAME     the user name\n"
    "  --display NAME  the user's display name (default: none)\n"
    "  --json          print the new passkey as JSON\n",
    cli_new_options,
    0,
    0,
    NULL,
    cli_run_new,
};

static const struct option cli_list_options[] = {
    {"rp", required_argument, NULL, 'r'},
    {"trash", no_argument, NULL, 't'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_list = {
    "list",
    "list the passkeys (or the trash)",
    "usage: pksync list [--rp RPID] [--trash] [--json]\n"
    "\n"
    "Lists the passkeys, sorted by relying party then user name: an id prefix,\n"
    "the relying party, the user, the display name and the creation date.\n"
    "\n"
    "  --rp RPID  only the passkeys of this relying party (exact match)\n"
    "  --trash    list the trash instead (kept 30 days)\n"
    "  --json     print every field as a JSON array\n",
    cli_list_options,
    0,
    0,
    NULL,
    cli_run_list,
};

const struct cli_command cli_command_show = {
    "show",
    "show one passkey",
    "usage: pksync show ID [--json]\n"
    "\n"
    "Shows every field of a passkey as \"key: value\" lines. ID is its id or a\n"
    "unique prefix of at least 4 hex characters.\n",
    NULL,
    1,
    1,
    "ID",
    cli_run_show,
};

static const struct option cli_edit_options[] = {
    {"user", required_argument, NULL, 'u'},
    {"display", required_argument, NULL, 'd'},
    {"notes", required_argument, NULL, 'n'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_edit = {
    "edit",
    "change a passkey's user name, display name or notes",
    "usage: pksync edit ID [--user NAME] [--display NAME] [--notes TEXT] [--json]\n"
    "\n"
    "Changes the given fields of a passkey; an empty value clears a display\n"
    "name or notes. ID is its id or a unique prefix of at least 4 hex characters.\n"
    "\n"
    "  --user NAME     the new user name\n"
    "  --display NAME  the new display name\n"
    "  --notes TEXT    the new notes\n"
    "  --json          print the changed passkey as JSON\n",
    cli_edit_options,
    1,
    1,
    "ID",
    cli_run_edit,
};

const struct cli_command cli_command_rm = {
    "rm",
    "move a passkey to the trash",
    "usage: pksync rm ID [--json]\n"
    "\n"
    "Moves a passkey to the trash, where it stays 30 days; 'pksync restore ID'\n"
    "brings it back. A passkey in the trash cannot sign.\n",
    NULL,
    1,
    1,
    "ID",
    cli_run_rm,
};

const struct cli_command cli_command_restore = {
    "restore",
    "bring a passkey back from the trash",
    "usage: pksync restore ID [--json]\n"
    "\n"
    "Brings a passkey back from the trash ('pksync list --trash' shows it).\n",
    NULL,
    1,
    1,
    "ID",
    cli_run_restore,
};

static const struct option cli_assert_options[] = {
    {"rp", required_argument, NULL, 'r'},
    {"client-data-hash", required_argument, NULL, 'c'},
    {"credential", required_argument, NULL, 'C'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_assert = {
    "assert",
    "sign a WebAuthn assertion with a passkey",
    "usage: pksync assert --rp RPID --client-data-hash HEX [--credential ID] [--json]\n"
    "\n"
    "Signs a WebAuthn assertion as an authenticator would, and prints its\n"
    "credential id, authenticator data, signature and user handle (base64url).\n"
    "\n"
    "  --rp RPID                the relying party id\n"
    "  --client-data-hash HEX   SHA-256 of the client data JSON, 64 hex characters\n"
    "  --credential ID          which passkey: a record id prefix or a base64url\n"
    "                           credential id (default: the relying party's only one)\n"
    "  --json                   print the assertion as JSON\n",
    cli_assert_options,
    0,
    0,
    NULL,
    cli_run_assert,
};
