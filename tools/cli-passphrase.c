#include "tools/cli-passphrase.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/err.h"
#include "tools/cli.h"

/* Signals that would otherwise leave the terminal without echo. */
static const int cli_prompt_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define CLI_PROMPT_NSIGNALS (sizeof(cli_prompt_signals) / sizeof(cli_prompt_signals[0]))

static volatile sig_atomic_t cli_prompt_caught;

static void cli_prompt_on_signal(int signum)
{
	cli_prompt_caught = signum;
}

void cli_passphrase_free(char *passphrase)
{
	/* sodium_free() wipes the whole allocation. */
	sodium_free(passphrase);
}

/*
 * Reads one line from fd a byte at a time, so nothing past the newline is
 * consumed (stdin may carry more). PKS_ERR_CLOSED on end of input before any
 * byte; PKS_ERR_TOO_LARGE past CLI_ARG_MAX bytes.
 */
static int cli_read_line(int fd, char **out, size_t *out_len)
{
	char *line = NULL;
	size_t len = 0;
	int any = 0;
	int r = PKS_ERR_INTERNAL;

	line = sodium_malloc(CLI_ARG_MAX + 2);
	if (line == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		char ch;
		ssize_t n = read(fd, &ch, 1);

		if (n < 0 && errno == EINTR && cli_prompt_caught == 0)
			continue;
		if (n < 0) {
			r = errno == EINTR ? PKS_ERR_CLOSED : PKS_ERR_IO;
			goto out;
		}
		if (n == 0) {
			if (!any) {
				r = PKS_ERR_CLOSED;
				goto out;
			}
			break;
		}
		any = 1;
		if (ch == '\n')
			break;
		if (len > CLI_ARG_MAX) {
			r = PKS_ERR_TOO_LARGE;
			goto out;
		}
		line[len++] = ch;
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > CLI_ARG_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	line[len] = '\0';
	*out = line;
	*out_len = len;
	line = NULL;
	r = PKS_OK;
out:
	sodium_free(line);
	return r;
}

/* Empty and NUL-holding passphrases are refused wherever they come from. */
static int cli_passphrase_check(const char *p, size_t len, const char *where, char *err,
				size_t err_len)
{
	if (len == 0) {
		snprintf(err, err_len,
			 "%s holds an empty passphrase (use --no-passphrase for none)", where);
		return PKS_ERR_INVALID;
	}
	if (strlen(p) != len) {
		snprintf(err, err_len, "%s holds a passphrase with a NUL byte", where);
		return PKS_ERR_INVALID;
	}
	return PKS_OK;
}

int cli_passphrase_from_file(const char *path, char **out, char *err, size_t err_len)
{
	struct stat st;
	char *line = NULL;
	size_t len = 0;
	int stdin_input = strcmp(path, "-") == 0;
	int fd = -1;
	int r = PKS_ERR_INTERNAL;

	fd = stdin_input ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, err_len, "cannot open the passphrase file %s: %s", path,
			 strerror(errno));
		r = pks_err_from_errno(errno);
		goto out;
	}
	if (!stdin_input && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
		cli_warn("the passphrase file %s is open to other users (mode %04o); 'chmod 600' "
			 "it",
			 path, (unsigned int)(st.st_mode & 07777));
	r = cli_read_line(fd, &line, &len);
	if (r == PKS_ERR_CLOSED) {
		snprintf(err, err_len, "the passphrase file %s is empty", path);
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (r == PKS_ERR_TOO_LARGE) {
		snprintf(err, err_len, "the passphrase in %s is longer than %zu bytes", path,
			 CLI_ARG_MAX);
		goto out;
	}
	if (r != PKS_OK) {
		snprintf(err, err_len, "cannot read the passphrase file %s: %s", path,
			 strerror(errno));
		goto out;
	}
	r = cli_passphrase_check(line, len, path, err, err_len);
	if (r != PKS_OK)
		goto out;
	*out = line;
	line = NULL;
	r = PKS_OK;
out:
	sodium_free(line);
	if (fd >= 0 && !stdin_input)
		close(fd);
	return r;
}

/* One prompt with echo off; the terminal is restored whatever happens. */
static int cli_prompt_once(int tty, const char *prompt, char **out, size_t *out_len)
{
	struct termios saved, quiet;
	struct sigaction act, old[CLI_PROMPT_NSIGNALS];
	int r;

	if (tcgetattr(tty, &saved) != 0)
		return PKS_ERR_NOT_FOUND;
	memset(&act, 0, sizeof(act));
	act.sa_handler = cli_prompt_on_signal;
	sigemptyset(&act.sa_mask);
	/* No SA_RESTART: the read must stop so the terminal can be restored. */
	act.sa_flags = 0;
	cli_prompt_caught = 0;
	for (size_t i = 0; i < CLI_PROMPT_NSIGNALS; i++)
		sigaction(cli_prompt_signals[i], &act, &old[i]);
	quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	quiet.c_lflag |= ICANON;
	if (tcsetattr(tty, TCSAFLUSH, &quiet) != 0) {
		r = PKS_ERR_NOT_FOUND;
		goto out;
	}
	if (write(tty, prompt, strlen(prompt)) < 0) {
		r = PKS_ERR_IO;
		goto out;
	}
	r = cli_read_line(tty, out, out_len);
out:
	tcsetattr(tty, TCSAFLUSH, &saved);
	if (write(tty, "\n", 1) < 0) {
		/* Only cosmetic: the user's Enter was not echoed. */
	}
	for (size_t i = 0; i < CLI_PROMPT_NSIGNALS; i++)
		sigaction(cli_prompt_signals[i], &old[i], NULL);
	if (cli_prompt_caught != 0) {
		/* Die of the signal as if it had arrived without us in the way. */
		if (r == PKS_OK) {
			sodium_free(*out);
			*out = NULL;
		}
		raise(cli_prompt_caught);
		r = PKS_ERR_CLOSED;
	}
	return r;
}

int cli_passphrase_have_terminal(void)
{
	int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	int yes = tty >= 0 && isatty(tty);

	if (tty >= 0)
		close(tty);
	return yes;
}

int cli_passphrase_prompt(const char *prompt, const char *confirm, char **out, char *err,
			  size_t err_len)
{
	char *first = NULL;
	char *second = NULL;
	size_t first_len = 0, second_len = 0;
	int tty = -1;
	int r = PKS_ERR_INTERNAL;

	err[0] = '\0';
	tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (tty < 0 || !isatty(tty)) {
		r = PKS_ERR_NOT_FOUND;
		goto out;
	}
	r = cli_prompt_once(tty, prompt, &first, &first_len);
	if (r == PKS_OK && first_len == 0) {
		snprintf(err, err_len,
			 "an empty passphrase is not allowed (use --no-passphrase for none)");
		r = PKS_ERR_INVALID;
	}
	if (r == PKS_OK)
		r = cli_passphrase_check(first, first_len, "the answer", err, err_len);
	if (r == PKS_OK && confirm != NULL) {
		r = cli_prompt_once(tty, confirm, &second, &second_len);
		if (r == PKS_OK &&
		    (first_len != second_len || sodium_memcmp(first, second, first_len) != 0)) {
			snprintf(err, err_len, "the two passphrases do not match");
			r = PKS_ERR_INVALID;
		}
	}
	if (r != PKS_OK) {
		if (err[0] == '\0' && r == PKS_ERR_TOO_LARGE)
			snprintf(err, err_len, "the passphrase is longer than %zu bytes",
				 CLI_ARG_MAX);
		else if (err[0] == '\0' && r == PKS_ERR_NOT_FOUND)
			; /* no terminal: the caller explains which flags to use */
		else if (err[0] == '\0')
			snprintf(err, err_len, "no passphrase was entered");
		goto out;
	}
	*out = first;
	first = NULL;
	r = PKS_OK;
out:
	sodium_free(first);
	sodium_free(second);
	if (tty >= 0)
		close(tty);
	return r;
}
