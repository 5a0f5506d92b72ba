/*
 * The pinentry dialogue against small shell scripts that speak Assuan the
 * way pinentry does (and some ways it should not), on a real libuv loop.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "agent/pinentry.h"
#include "common/err.h"
#include "tests/check.h"

struct answer {
	int calls;
	enum pinentry_result result;
	char pin[64];
	size_t pin_len;
};

static void on_done(void *user, enum pinentry_result result, const char *pin, size_t pin_len)
{
	struct answer *a = user;

	a->calls++;
	a->result = result;
	if (pin != NULL && pin_len < sizeof(a->pin)) {
		memcpy(a->pin, pin, pin_len);
		a->pin_len = pin_len;
	}
}

/* Writes an executable script into a fresh temp dir; returns its path (static buffer). */
static const char *script(const char *body)
{
	static char path[256];
	char dir[] = "/tmp/pks-pinentry-XXXXXX";
	FILE *f;

	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/pinentry", dir);
	f = fopen(path, "w");
	if (f == NULL)
		abort();
	fprintf(f, "#!/bin/sh\n%s", body);
	fclose(f);
	chmod(path, 0700);
	return path;
}

/* Removes a script made by script() and its directory. */
static void cleanup(const char *program)
{
	char dir[256];
	char *slash;

	if (strncmp(program, "/tmp/pks-pinentry-", 18) != 0 || strlen(program) >= sizeof(dir))
		return;
	memcpy(dir, program, strlen(program) + 1);
	slash = strrchr(dir, '/');
	unlink(program);
	if (slash != NULL) {
		*slash = '\0';
		rmdir(dir);
	}
}

static struct answer ask(const char *program, bool want_pin, unsigned timeout_s)
{
	struct answer a;
	struct pinentry_request req;
	struct pinentry *p = NULL;
	uv_loop_t loop;

	CHECK(sodium_init() >= 0);
	memset(&a, 0, sizeof(a));
	memset(&req, 0, sizeof(req));
	req.program = program;
	req.title = "pksync";
	req.description = "Sign in to example.com as 100% alice\nreally?";
	req.ok_label = "Allow";
	req.cancel_label = "Deny";
	req.want_pin = want_pin;
	req.timeout_s = timeout_s;
	uv_loop_init(&loop);
	CHECK_OK(pinentry_ask(&loop, &req, NULL, on_done, &a, &p));
	CHECK(p != NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(uv_loop_close(&loop), 0);
	cleanup(program);
	return a;
}

#define ASSUAN_LOOP(confirm)                                                                       \
	"echo 'OK Pleased to meet you'\n"                                                          \
	"while read -r line; do\n"                                                                 \
	"  case \"$line\" in\n"                                                                    \
	"    CONFIRM*|GETPIN*) " confirm " ;;\n"                                                   \
	"    BYE*) echo OK; exit 0 ;;\n"                                                           \
	"    SETTIMEOUT*) echo 'ERR 83886355 Unknown command <Pinentry>' ;;\n"                     \
	"    *) echo OK ;;\n"                                                                      \
	"  esac\n"                                                                                 \
	"done\n"

static void test_confirm_outcomes(void)
{
	struct answer a;

	a = ask(script(ASSUAN_LOOP("echo '# a comment'; echo 'S status'; echo OK")), false, 5);
	CHECK_EQ(a.calls, 1);
	CHECK_EQ(a.result, PINENTRY_ALLOW);
	CHECK_EQ(a.pin_len, 0);
	a = ask(script(ASSUAN_LOOP("echo 'ERR 83886179 Operation cancelled <Pinentry>'")), false,
		5);
	CHECK_EQ(a.result, PINENTRY_DENY);
	a = ask(script(ASSUAN_LOOP("echo 'ERR 83886194 Not confirmed <Pinentry>'")), false, 5);
	CHECK_EQ(a.result, PINENTRY_DENY);
	a = ask(script(ASSUAN_LOOP("echo 'ERR 83886142 Timeout <Pinentry>'")), false, 5);
	CHECK_EQ(a.result, PINENTRY_TIMEOUT);
	a = ask(script(ASSUAN_LOOP("echo 'ERR 83886081 General error'")), false, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
}

static void test_getpin(void)
{
	struct answer a;

	/* %25 is '%', %0A a newline: unescaped. */
	a = ask(script(ASSUAN_LOOP("echo 'D pa%25ss%0Aword'; echo OK")), true, 5);
	CHECK_EQ(a.result, PINENTRY_ALLOW);
	CHECK_EQ(a.pin_len, 10);
	CHECK_MEM_EQ(a.pin, "pa%ss\nword", 10);
	/* No data: an empty passphrase is no answer. */
	a = ask(script(ASSUAN_LOOP("echo OK")), true, 5);
	CHECK_EQ(a.result, PINENTRY_DENY);
	/* A bad escape. */
	a = ask(script(ASSUAN_LOOP("echo 'D pa%zz'; echo OK")), true, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
	/* Data to a CONFIRM is nonsense. */
	a = ask(script(ASSUAN_LOOP("echo 'D x'; echo OK")), false, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
}

static void test_broken_programs(void)
{
	struct answer a;
	char line[PINENTRY_LINE_MAX + 100];
	char body[sizeof(line) + 64];

	/* Missing program: reported from the loop. */
	a = ask("/nonexistent/pinentry", false, 5);
	CHECK_EQ(a.calls, 1);
	CHECK_EQ(a.result, PINENTRY_ERROR);
	/* Exits without a word; greets with ERR; hangs (our timer). */
	a = ask(script("exit 0\n"), false, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
	a = ask(script("echo 'ERR 1 no'\nsleep 5\n"), false, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
	a = ask(script("echo 'OK hi'\nexec sleep 30\n"), false, 1);
	CHECK_EQ(a.calls, 1);
	CHECK_EQ(a.result, PINENTRY_TIMEOUT);
	/* An endless line. */
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	snprintf(body, sizeof(body), "echo 'OK hi'\nprintf '%s'\nsleep 5\n", line);
	a = ask(script(body), false, 5);
	CHECK_EQ(a.result, PINENTRY_ERROR);
}

static void test_cancel(void)
{
	struct answer a;
	struct pinentry_request req;
	struct pinentry *p = NULL;
	uv_loop_t loop;

	CHECK(sodium_init() >= 0);
	memset(&a, 0, sizeof(a));
	memset(&req, 0, sizeof(req));
	req.program = script("echo 'OK hi'\nexec sleep 30\n");
	req.timeout_s = 30;
	uv_loop_init(&loop);
	CHECK_OK(pinentry_ask(&loop, &req, NULL, on_done, &a, &p));
	uv_run(&loop, UV_RUN_NOWAIT);
	pinentry_cancel(p);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(a.calls, 0);
	CHECK_EQ(uv_loop_close(&loop), 0);
	cleanup(req.program);
	/* Bad requests. */
	req.timeout_s = 0;
	CHECK_EQ(pinentry_ask(&loop, &req, NULL, on_done, &a, &p), PKS_ERR_INVALID);
}

static void test_escape(void)
{
	char out[32];
	char s[32];
	size_t n;

	CHECK_OK(pinentry_escape("a%b\nc\r", out, sizeof(out)));
	CHECK_STR_EQ(out, "a%25b%0Ac%0D");
	CHECK_EQ(pinentry_escape("abcdef", out, 6), PKS_ERR_TOO_LARGE);
	CHECK_OK(pinentry_escape("abcde", out, 6));
	strcpy(s, "x%41%0a%");
	n = strlen(s);
	CHECK_EQ(pinentry_unescape(s, &n), PKS_ERR_MALFORMED);
	strcpy(s, "x%41%0a");
	n = strlen(s);
	CHECK_OK(pinentry_unescape(s, &n));
	CHECK_EQ(n, 3);
	CHECK_MEM_EQ(s, "xA\n", 3);
	strcpy(s, "%4");
	n = strlen(s);
	CHECK_EQ(pinentry_unescape(s, &n), PKS_ERR_MALFORMED);
}

CHECK_MAIN({"/pinentry/confirm-outcomes", test_confirm_outcomes}, {"/pinentry/getpin", test_getpin},
	   {"/pinentry/broken-programs", test_broken_programs}, {"/pinentry/cancel", test_cancel},
	   {"/pinentry/escape", test_escape})
