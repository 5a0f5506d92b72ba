/*
 * Getting a passphrase from a file or from the terminal without echo. The
 * passphrase always lives in sodium_malloc'd memory; free it with
 * cli_passphrase_free(), which wipes it.
 */
#ifndef PKS_CLI_PASSPHRASE_H
#define PKS_CLI_PASSPHRASE_H

#include <stddef.h>

/*
 * The first line of path ("-" is standard input), without its "\n" or
 * "\r\n". Warns when a regular file is open to group or others. Errors, with a
 * sentence in err: PKS_ERR_IO (cannot read), PKS_ERR_TOO_LARGE (line over
 * CLI_ARG_MAX bytes), PKS_ERR_INVALID (empty line or a NUL byte).
 */
int cli_passphrase_from_file(const char *path, char **out, char *err, size_t err_len);

/*
 * Asks on /dev/tty with echo off; when confirm is not NULL asks a second time
 * with it and refuses a mismatch (PKS_ERR_INVALID). PKS_ERR_NOT_FOUND when
 * there is no terminal to ask on (err left empty). Ctrl-C restores the
 * terminal before the program dies of the signal.
 */
int cli_passphrase_prompt(const char *prompt, const char *confirm, char **out, char *err,
			  size_t err_len);

/* 1 when there is a terminal to ask on (so it can be checked before other work). */
int cli_passphrase_have_terminal(void);

/* Wipes and frees; NULL is fine. */
void cli_passphrase_free(char *passphrase);

#endif
