/*
 * import and export. Both move private keys in clear text through this
 * process: every buffer is wiped before it is freed (jansson's through the
 * allocator set in main), and exported files are created 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/err.h"
#include "tools/cli-client.h"
#include "tools/cli.h"

/* The largest file import reads, checked before anything is sent. */
#define CLI_IMPORT_FILE_MAX ((size_t)64 * 1024 * 1024)
/* Longest file name written inside an export directory, in bytes. */
#define CLI_EXPORT_NAME_MAX 200
#define CLI_EXPORT_FILES_MAX 1000000

struct cli_transfer_opts {
	const char *format;
	const char *out;
	const char *rp;
	const char *id;
};

static int cli_transfer_option(struct cli *cli, void *ctx, int val, const char *arg)
{
	struct cli_transfer_opts *o = ctx;

	switch (val) {
	case 'f':
		o->format = arg;
		break;
	case 'o':
		o->out = arg;
		break;
	case 'r':
		o->rp = arg;
		break;
	case 'i':
		o->id = arg;
		break;
	default:
		return cli_usage_error(cli, "unhandled option");
	}
	return CLI_CONTINUE;
}

/*
 * Reads all of path ("-": standard input) into buf, refusing more than
 * CLI_IMPORT_FILE_MAX bytes; a regular file that is too large is refused
 * from its size, without reading it.
 */
static int cli_import_read(struct cli *cli, const char *path, struct pks_buf *buf)
{
	uint8_t chunk[65536];
	struct stat st;
	int from_stdin = strcmp(path, "-") == 0;
	int fd = -1;
	int r = CLI_EXIT_ERROR;

	fd = from_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = cli_error(cli, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		r = cli_error(cli, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		r = cli_error(cli, "%s is a directory, not an export file", path);
		goto out;
	}
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > CLI_IMPORT_FILE_MAX) {
		r = cli_error(cli, "%s is %jd bytes, over the %zu MiB import limit", path,
			      (intmax_t)st.st_size, CLI_IMPORT_FILE_MAX >> 20);
		goto out;
	}
	if (S_ISREG(st.st_mode) && pks_buf_reserve(buf, (size_t)st.st_size) != PKS_OK) {
		r = cli_error(cli, "out of memory for %s", path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = cli_error(cli, "cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		if (pks_buf_append(buf, chunk, (size_t)n) != PKS_OK) {
			r = cli_error(cli, "%s is over the %zu MiB import limit", path,
				      CLI_IMPORT_FILE_MAX >> 20);
			goto out;
		}
	}
	r = CLI_EXIT_OK;
out:
	sodium_memzero(chunk, sizeof(chunk));
	if (fd >= 0 && !from_stdin)
		close(fd);
	return r;
}

static json_int_t cli_count(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
}

static int cli_run_import(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_transfer_opts o = {0};
	struct pks_buf buf;
	json_t *req = NULL;
	json_t *result = NULL;
	json_t *data;
	json_int_t total, added, updated, unchanged;
	const char *path, *name;
	char **args;
	int nargs;
	int r;

	pks_buf_init(&buf, CLI_IMPORT_FILE_MAX);
	r = cli_parse(cli, cmd, argc, argv, cli_transfer_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	path = args[0];
	name = strcmp(path, "-") == 0 ? "standard input" : path;
	if (o.format != NULL && strcmp(o.format, "cxf") != 0 &&
	    strcmp(o.format, "keepassxc") != 0 && strcmp(o.format, "bitwarden") != 0) {
		r = cli_usage_error(cli, "--format takes cxf, keepassxc or bitwarden");
		goto out;
	}
	r = cli_import_read(cli, path, &buf);
	if (r != CLI_EXIT_OK)
		goto out;
	if (buf.len == 0) {
		r = cli_error(cli, "%s is empty", name);
		goto out;
	}
	if (memchr(buf.data, '\0', buf.len) != NULL) {
		r = cli_error(cli, "%s is not a text file (it holds NUL bytes)", name);
		goto out;
	}
	req = cli_request_new(cli, "import");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	data = json_stringn((const char *)buf.data, buf.len);
	if (data == NULL) {
		r = cli_error(
		    cli, "%s is not UTF-8 text, so it is no CXF, KeePassXC or Bitwarden export",
		    name);
		goto out;
	}
	if (json_object_set_new(req, "data", data) != 0) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	/* The text now lives in the request: the file buffer can go. */
	pks_buf_free(&buf);
	if ((o.format != NULL &&
	     (r = cli_set_string(cli, req, "format", o.format, "--format")) != CLI_CONTINUE) ||
	    (r = cli_set_string(cli, req, "filename", name, "FILE")) != CLI_CONTINUE)
		goto out;
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	if (cli->json) {
		r = cli_print_json(cli, result);
		goto out;
	}
	total = cli_count(result, "total");
	added = cli_count(result, "added");
	updated = cli_count(result, "updated");
	unchanged = cli_count(result, "unchanged");
	if (total < 0 || added < 0 || updated < 0 || unchanged < 0) {
		r = cli_error(cli, "pksync-agent sent an import result without its counts");
		goto out;
	}
	printf("Imported %" JSON_INTEGER_FORMAT " passkey%s from ", total, total == 1 ? "" : "s");
	cli_text_print(stdout, name, 0);
	printf(" (%" JSON_INTEGER_FORMAT " new, %" JSON_INTEGER_FORMAT
	       " updated, %" JSON_INTEGER_FORMAT " unchanged).\n",
	       added, updated, unchanged);
out:
	pks_buf_free(&buf);
	json_decref(req);
	json_decref(result);
	return r;
}

/*
 * A file name the agent suggested, made safe to create inside a directory:
 * no '/', no leading '.', no control characters, at most
 * CLI_EXPORT_NAME_MAX bytes, never empty.
 */
static void cli_export_safe_name(const char *suggested, size_t index, const char *ext, char *out,
				 size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; suggested[i] != '\0';) {
		unsigned char ch = (unsigned char)suggested[i];
		/* A UTF-8 sequence is copied whole or not at all. */
		size_t seq = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 1;

		if (o + seq > CLI_EXPORT_NAME_MAX || o + seq >= cap)
			break;
		if (seq == 1) {
			if (ch == '/' || ch == '\\' || ch < 0x20 || ch == 0x7f ||
			    (o == 0 && ch == '.'))
				ch = '_';
			out[o++] = (char)ch;
			i++;
			continue;
		}
		for (size_t k = 0; k < seq; k++) {
			if (suggested[i] == '\0')
				break;
			out[o++] = suggested[i++];
		}
	}
	out[o] = '\0';
	if (o == 0)
		snprintf(out, cap, "passkey-%zu%s", index + 1, ext);
}

/* Makes name unique among the used names by adding "-2", "-3"... before its extension. */
static void cli_export_unique(char *name, size_t cap, char **used, size_t nused)
{
	char base[CLI_EXPORT_NAME_MAX + 32];
	const char *dot;
	size_t stem;
	int clash = 1;

	snprintf(base, sizeof(base), "%s", name);
	dot = strrchr(base, '.');
	stem = dot != NULL && dot != base ? (size_t)(dot - base) : strlen(base);
	for (unsigned long n = 2; clash; n++) {
		clash = 0;
		for (size_t i = 0; i < nused; i++) {
			if (strcmp(used[i], name) == 0) {
				clash = 1;
				break;
			}
		}
		if (clash)
			snprintf(name, cap, "%.*s-%lu%s", (int)stem, base, n, base + stem);
	}
}

/*
 * Writes data to name (relative to dirfd) as a private file: created 0600,
 * never through a symbolic link, and chmod'ed 0600 if it existed.
 */
static int cli_export_write(struct cli *cli, int dirfd, const char *name, const char *shown,
			    const char *data, size_t len)
{
	struct stat st;
	int fd = -1;
	int r = CLI_EXIT_ERROR;

	fd = openat(dirfd, name,
		    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
		    0600);
	if (fd < 0 && errno == ELOOP) {
		r = cli_error(
		    cli, "%s is a symbolic link; refusing to write private keys through it", shown);
		goto out;
	}
	if (fd < 0) {
		r = cli_error(cli, "cannot create %s: %s", shown, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		r = cli_error(cli, "%s is not a regular file", shown);
		goto out;
	}
	if (fchmod(fd, 0600) != 0) {
		r = cli_error(cli, "cannot make %s private: %s", shown, strerror(errno));
		goto out;
	}
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			r = cli_error(cli, "cannot write %s: %s", shown,
				      n < 0 ? strerror(errno) : "nothing written");
			goto out;
		}
		data += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0 && errno != EINVAL) {
		r = cli_error(cli, "cannot write %s: %s", shown, strerror(errno));
		goto out;
	}
	r = close(fd) == 0 ? CLI_EXIT_OK
			   : cli_error(cli, "cannot write %s: %s", shown, strerror(errno));
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* Opens (creating it 0700 if missing) the directory files go into. */
static int cli_export_dir(struct cli *cli, const char *path, size_t nfiles, int *dirfd)
{
	int fd;

	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return cli_error(cli, "cannot create the directory %s: %s", path, strerror(errno));
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && (errno == ENOTDIR || errno == ELOOP) && nfiles > 1)
		return cli_error(
		    cli,
		    "%s is not a directory, but the KeePassXC export has %zu files (one "
		    "per passkey): give a directory for --out",
		    path, nfiles);
	if (fd < 0 && (errno == ENOTDIR || errno == ELOOP))
		return cli_error(
		    cli, "%s is a symbolic link; refusing to write private keys through it", path);
	if (fd < 0)
		return cli_error(cli, "cannot open the directory %s: %s", path, strerror(errno));
	*dirfd = fd;
	return CLI_EXIT_OK;
}

static int cli_is_dir(const char *path)
{
	struct stat st;
	size_t len = strlen(path);

	if (len > 0 && path[len - 1] == '/')
		return 1;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Checks the shape of an export result: {"format", "count", "files": [{"name", "data"}]}. */
static int cli_export_check(struct cli *cli, const json_t *result, size_t *nfiles)
{
	json_t *files = json_object_get(result, "files");
	json_t *f;
	size_t i;

	if (!json_is_array(files) || cli_count(result, "count") < 0 ||
	    json_array_size(files) > CLI_EXPORT_FILES_MAX)
		return cli_error(cli, "pksync-agent sent an export result without its files");
	json_array_foreach(files, i, f)
	{
		if (!json_is_string(json_object_get(f, "name")) ||
		    !json_is_string(json_object_get(f, "data")))
			return cli_error(cli, "pksync-agent sent an export file without a name or "
					      "data");
	}
	*nfiles = json_array_size(files);
	return CLI_EXIT_OK;
}

static int cli_run_export(struct cli *cli, const struct cli_command *cmd, int argc, char **argv)
{
	struct cli_transfer_opts o = {0};
	json_t *req = NULL;
	json_t *result = NULL;
	json_t *summary = NULL;
	json_t *written = NULL;
	json_t *files, *f;
	char **used = NULL;
	char shown[4096 + CLI_EXPORT_NAME_MAX + 40];
	char name[CLI_EXPORT_NAME_MAX + 40];
	const char *ext;
	size_t nfiles = 0, i;
	int into_dir;
	int dirfd = -1;
	char **args;
	int nargs;
	int r;

	r = cli_parse(cli, cmd, argc, argv, cli_transfer_option, &o, &args, &nargs);
	if (r != CLI_CONTINUE)
		goto out;
	if (o.format == NULL || o.out == NULL) {
		r = cli_usage_error(cli, "%s is required", o.format == NULL ? "--format" : "--out");
		goto out;
	}
	if (strcmp(o.format, "cxf") != 0 && strcmp(o.format, "keepassxc") != 0) {
		r = cli_usage_error(cli, "--format takes cxf or keepassxc");
		goto out;
	}
	if (o.out[0] == '\0' || strlen(o.out) > 4096) {
		r = cli_usage_error(cli, "--out needs a path of at most 4096 bytes");
		goto out;
	}
	if (o.id != NULL && !cli_is_record_id(o.id)) {
		r = cli_usage_error(cli, "--id takes 4 to 32 hex characters of a passkey id");
		goto out;
	}
	ext = strcmp(o.format, "cxf") == 0 ? ".json" : ".passkey";
	req = cli_request_new(cli, "export");
	if (req == NULL) {
		r = CLI_EXIT_ERROR;
		goto out;
	}
	if ((r = cli_set_string(cli, req, "format", o.format, "--format")) != CLI_CONTINUE ||
	    (o.rp != NULL && (r = cli_set_string(cli, req, "rp", o.rp, "--rp")) != CLI_CONTINUE) ||
	    (o.id != NULL && (r = cli_set_string(cli, req, "id", o.id, "--id")) != CLI_CONTINUE))
		goto out;
	r = cli_call(cli, req, &result);
	if (r != CLI_EXIT_OK)
		goto out;
	r = cli_export_check(cli, result, &nfiles);
	if (r != CLI_EXIT_OK)
		goto out;
	if (nfiles == 0 || cli_count(result, "count") == 0) {
		r = cli_error(cli, "no passkeys to export; nothing was written");
		goto out;
	}
	files = json_object_get(result, "files");
	/* Several files need a directory; one goes to the path unless it names a directory. */
	into_dir = nfiles > 1 || cli_is_dir(o.out);
	if (into_dir) {
		r = cli_export_dir(cli, o.out, nfiles, &dirfd);
		if (r != CLI_EXIT_OK)
			goto out;
	}
	used = calloc(nfiles, sizeof(*used));
	written = json_array();
	if (used == NULL || written == NULL) {
		r = cli_error(cli, "out of memory");
		goto out;
	}
	json_array_foreach(files, i, f)
	{
		json_t *data = json_object_get(f, "data");
		const char *target = o.out;

		if (into_dir) {
			cli_export_safe_name(cli_json_str(f, "name", ""), i, ext, name,
					     sizeof(name));
			cli_export_unique(name, sizeof(name), used, i);
			used[i] = strdup(name);
			if (used[i] == NULL) {
				r = cli_error(cli, "out of memory");
				goto out;
			}
			snprintf(shown, sizeof(shown), "%s%s%s", o.out,
				 o.out[strlen(o.out) - 1] == '/' ? "" : "/", name);
			target = name;
		} else {
			snprintf(shown, sizeof(shown), "%s", o.out);
		}
		r = cli_export_write(cli, into_dir ? dirfd : AT_FDCWD, target, shown,
				     json_string_value(data), json_string_length(data));
		if (r != CLI_EXIT_OK)
			goto out;
		if (json_array_append_new(written, json_string(shown)) != 0) {
			r = cli_error(cli, "out of memory");
			goto out;
		}
	}
	cli_warn("%s holds unencrypted private keys; keep it safe and delete it when done",
		 into_dir && nfiles > 1 ? o.out : shown);
	if (cli->json) {
		summary = json_pack("{s:s, s:I, s:O}", "format", o.format, "count",
				    (json_int_t)cli_count(result, "count"), "files", written);
		r = summary != NULL ? cli_print_json(cli, summary)
				    : cli_error(cli, "out of memory");
		goto out;
	}
	printf("Exported %" JSON_INTEGER_FORMAT " passkey%s to ", cli_count(result, "count"),
	       cli_count(result, "count") == 1 ? "" : "s");
	cli_text_print(stdout, into_dir && nfiles > 1 ? o.out : shown, 0);
	if (into_dir && nfiles > 1)
		printf(" (%zu files)", nfiles);
	puts(".");
out:
	if (used != NULL) {
		for (i = 0; i < nfiles; i++)
			free(used[i]);
		free(used);
	}
	if (dirfd >= 0)
		close(dirfd);
	json_decref(summary);
	json_decref(written);
	json_decref(req);
	/* The result holds the private keys: jansson's allocator wipes them now. */
	json_decref(result);
	return r;
}

static const struct option cli_import_options[] = {
    {"format", required_argument, NULL, 'f'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_import = {
    "import",
    "import passkeys from a CXF, KeePassXC or Bitwarden file",
    "usage: pksync import FILE [--format cxf|keepassxc|bitwarden] [--json]\n"
    "\n"
    "Imports every passkey in FILE ('-' reads standard input, at most 64 MiB).\n"
    "The file is taken whole or not at all; passkeys already in the vault are\n"
    "updated. A progress bar shows on a terminal.\n"
    "\n"
    "  --format F  the file's format (default: detected)\n"
    "  --json      print the counts as JSON\n",
    cli_import_options,
    1,
    1,
    "FILE",
    cli_run_import,
};

static const struct option cli_export_options[] = {
    {"format", required_argument, NULL, 'f'},
    {"out", required_argument, NULL, 'o'},
    {"rp", required_argument, NULL, 'r'},
    {"id", required_argument, NULL, 'i'},
    {NULL, 0, NULL, 0},
};

const struct cli_command cli_command_export = {
    "export",
    "export passkeys, private keys included, to CXF or KeePassXC files",
    "usage: pksync export --format cxf|keepassxc --out PATH [--rp RPID] [--id ID] [--json]\n"
    "\n"
    "Writes passkeys, with their private keys unencrypted, to files only you can\n"
    "read (mode 0600). CXF is one file. KeePassXC has one file per passkey: with\n"
    "several, PATH is a directory (created if missing); an existing directory\n"
    "always receives the files under their suggested names.\n"
    "\n"
    "  --format F  cxf or keepassxc\n"
    "  --out PATH  the file or directory to write\n"
    "  --rp RPID   only this relying party's passkeys\n"
    "  --id ID     only this passkey (an id prefix of at least 4 hex characters)\n"
    "  --json      print {\"format\", \"count\", \"files\": [paths written]}\n",
    cli_export_options,
    0,
    0,
    NULL,
    cli_run_export,
};
