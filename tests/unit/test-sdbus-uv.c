/*
 * transport/sdbus-uv: a private dbus-daemon started by the test (skip, 77,
 * when dbus-daemon is missing) and two sd-bus connections on one libuv loop:
 * a service exporting a method, a method returning a file descriptor and a
 * signal; a client calling them asynchronously and matching the signal.
 * Everything must complete by running the loop alone, and the loop must
 * close cleanly after detaching. Also: the error callback when the daemon
 * goes away.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/sdbus-uv.h"

extern char **environ;

#define SVC_NAME "org.pksync.Test"
#define SVC_PATH "/org/pksync/test"
#define SVC_IFACE "org.pksync.Test1"

static char daemon_dir[64];
static char daemon_addr[160];
static pid_t daemon_pid = -1;

static const char daemon_conf[] =
    "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
    " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
    "<busconfig><type>session</type><auth>EXTERNAL</auth>"
    "<listen>unix:tmpdir=/tmp</listen>"
    "<policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>"
    "<allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy>"
    "</busconfig>\n";

/* Starts dbus-daemon on DIR/bus; false (and a skip) when it cannot run. */
static bool daemon_start(void)
{
	char conf[128], addr_arg[200], bus[128];
	char *argv[] = {"dbus-daemon", NULL, NULL, "--nofork", "--nopidfile", NULL};
	FILE *f;
	int r;

	snprintf(daemon_dir, sizeof(daemon_dir), "/tmp/pks-sdbus-XXXXXX");
	if (mkdtemp(daemon_dir) == NULL)
		return false;
	snprintf(conf, sizeof(conf), "%s/bus.conf", daemon_dir);
	snprintf(bus, sizeof(bus), "%s/bus", daemon_dir);
	snprintf(daemon_addr, sizeof(daemon_addr), "unix:path=%s", bus);
	f = fopen(conf, "w");
	if (f == NULL)
		return false;
	fputs(daemon_conf, f);
	fclose(f);
	char conf_arg[160];
	snprintf(conf_arg, sizeof(conf_arg), "--config-file=%s", conf);
	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", daemon_addr);
	argv[1] = conf_arg;
	argv[2] = addr_arg;
	r = posix_spawnp(&daemon_pid, "dbus-daemon", NULL, NULL, argv, environ);
	if (r != 0) {
		daemon_pid = -1;
		return false;
	}
	/* Wait for the socket to appear (at most 5 s). */
	for (int i = 0; i < 500; i++) {
		struct stat st;
		if (stat(bus, &st) == 0)
			return true;
		usleep(10000);
	}
	return false;
}

static void daemon_stop(void)
{
	char p[128];

	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = -1;
	}
	snprintf(p, sizeof(p), "%s/bus", daemon_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/bus.conf", daemon_dir);
	unlink(p);
	rmdir(daemon_dir);
}

struct state {
	int echo_calls;
	char echo_reply[64];
	int signals;
	char signal_arg[64];
	int fd_read;
	char fd_text[16];
	int errors;
	int last_err;
	bool name_acquired;
	struct sdbus_uv *svc_uv, *cli_uv;
	sd_bus *cli;
};

static int svc_echo(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;
	const char *s = NULL;
	int r = sd_bus_message_read(m, "s", &s);

	(void)err;
	if (r < 0)
		return r;
	st->echo_calls++;
	/* Reply, then emit a signal from inside the handler: both queue and go
	   out on the next loop iteration. */
	r = sd_bus_reply_method_return(m, "s", s);
	if (r < 0)
		return r;
	return sd_bus_emit_signal(sd_bus_message_get_bus(m), SVC_PATH, SVC_IFACE, "Pinged", "s", s);
}

static int svc_get_fd(sd_bus_message *m, void *user, sd_bus_error *err)
{
	int p[2], r;

	(void)user;
	(void)err;
	if (pipe2(p, O_CLOEXEC) != 0)
		return -errno;
	if (write(p[1], "fd-ok", 5) != 5) {
		close(p[0]);
		close(p[1]);
		return -EIO;
	}
	close(p[1]);
	/* sd-bus duplicates the fd into the message. */
	r = sd_bus_reply_method_return(m, "h", p[0]);
	close(p[0]);
	return r;
}

static const sd_bus_vtable svc_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("Echo", "s", "s", svc_echo, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetFd", "", "h", svc_get_fd, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL("Pinged", "s", 0),
    SD_BUS_VTABLE_END,
};

static int cli_echo_reply(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;
	const char *s = NULL;

	(void)err;
	if (sd_bus_message_is_method_error(m, NULL))
		return 0;
	if (sd_bus_message_read(m, "s", &s) >= 0)
		snprintf(st->echo_reply, sizeof(st->echo_reply), "%s", s);
	return 0;
}

static int cli_fd_reply(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;
	int fd = -1;

	(void)err;
	if (sd_bus_message_is_method_error(m, NULL))
		return 0;
	if (sd_bus_message_read(m, "h", &fd) >= 0 && fd >= 0) {
		ssize_t n = read(fd, st->fd_text, sizeof(st->fd_text) - 1);
		if (n > 0)
			st->fd_read = (int)n;
	}
	return 0;
}

static int cli_signal(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;
	const char *s = NULL;

	(void)err;
	if (sd_bus_message_read(m, "s", &s) >= 0) {
		st->signals++;
		snprintf(st->signal_arg, sizeof(st->signal_arg), "%s", s);
	}
	return 0;
}

static int cli_match_installed(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;

	(void)err;
	if (sd_bus_message_is_method_error(m, NULL))
		return 0;
	/* Only now is the signal routed to us: call the service. */
	if (sd_bus_call_method_async(st->cli, NULL, SVC_NAME, SVC_PATH, SVC_IFACE, "Echo",
				     cli_echo_reply, st, "s", "hello over sd-bus") < 0)
		st->errors++;
	if (sd_bus_call_method_async(st->cli, NULL, SVC_NAME, SVC_PATH, SVC_IFACE, "GetFd",
				     cli_fd_reply, st, "") < 0)
		st->errors++;
	return 0;
}

static int svc_name_reply(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct state *st = user;

	(void)err;
	if (!sd_bus_message_is_method_error(m, NULL))
		st->name_acquired = true;
	return 0;
}

static void on_error(void *user, int err)
{
	struct state *st = user;

	st->errors++;
	st->last_err = err;
}

static void stop_when_done(uv_timer_t *t)
{
	struct state *st = t->data;

	if (st->signals > 0 && st->echo_reply[0] != '\0' && st->fd_read > 0)
		uv_stop(t->loop);
}

static void on_deadline(uv_timer_t *t)
{
	uv_stop(t->loop);
}

static void test_call_and_signal(void)
{
	uv_loop_t loop;
	uv_timer_t poll_t, deadline;
	sd_bus *svc = NULL, *cli = NULL;
	sd_bus_slot *vt = NULL, *match = NULL;
	struct state st = {0};

	CHECK_OK(uv_loop_init(&loop));
	CHECK_OK(sdbus_uv_open(daemon_addr, &svc));
	CHECK_OK(sdbus_uv_open(daemon_addr, &cli));
	if (svc == NULL || cli == NULL)
		goto out;
	st.cli = cli;
	CHECK(sd_bus_add_object_vtable(svc, &vt, SVC_PATH, SVC_IFACE, svc_vtable, &st) >= 0);
	CHECK(sd_bus_request_name_async(svc, NULL, SVC_NAME, 0, svc_name_reply, &st) >= 0);
	CHECK_OK(sdbus_uv_attach(&loop, svc, on_error, &st, &st.svc_uv));
	CHECK_OK(sdbus_uv_attach(&loop, cli, on_error, &st, &st.cli_uv));
	CHECK(sd_bus_match_signal_async(cli, &match, NULL, SVC_PATH, SVC_IFACE, "Pinged",
					cli_signal, cli_match_installed, &st) >= 0);

	uv_timer_init(&loop, &poll_t);
	uv_timer_init(&loop, &deadline);
	poll_t.data = &st;
	uv_timer_start(&poll_t, stop_when_done, 5, 5);
	uv_timer_start(&deadline, on_deadline, 10000, 0);
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK(st.name_acquired);
	CHECK_EQ(st.echo_calls, 1);
	CHECK_STR_EQ(st.echo_reply, "hello over sd-bus");
	CHECK_EQ(st.signals, 1);
	CHECK_STR_EQ(st.signal_arg, "hello over sd-bus");
	CHECK_EQ(st.fd_read, 5);
	CHECK_STR_EQ(st.fd_text, "fd-ok");
	CHECK_EQ(st.errors, 0);

	sd_bus_slot_unref(match);
	sd_bus_slot_unref(vt);
	sdbus_uv_detach(st.svc_uv);
	sdbus_uv_detach(st.cli_uv);
	sdbus_uv_detach(NULL);
	uv_close((uv_handle_t *)&poll_t, NULL);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	/* Our references are the last ones: the attachments dropped theirs. */
	sd_bus_unref(svc);
	sd_bus_unref(cli);
	svc = cli = NULL;
	CHECK_EQ(uv_loop_close(&loop), 0);
out:
	sd_bus_unref(svc);
	sd_bus_unref(cli);
}

static void test_open_errors(void)
{
	sd_bus *b = NULL;

	CHECK(sdbus_uv_open("unix:path=/nonexistent/pks/bus", &b) < 0);
	CHECK(b == NULL);
	CHECK(sdbus_uv_open("not an address", &b) < 0);
	CHECK(b == NULL);
	CHECK_EQ(sdbus_uv_open(NULL, NULL), PKS_ERR_INVALID);
}

static void detach_on_error(void *user, int err)
{
	struct state *st = user;

	st->errors++;
	st->last_err = err;
	/* Detaching from inside the callback must be safe. */
	sdbus_uv_detach(st->cli_uv);
	st->cli_uv = NULL;
}

static void test_daemon_gone(void)
{
	uv_loop_t loop;
	uv_timer_t deadline;
	sd_bus *cli = NULL;
	struct state st = {0};

	CHECK_OK(uv_loop_init(&loop));
	CHECK_OK(sdbus_uv_open(daemon_addr, &cli));
	if (cli == NULL)
		return;
	CHECK_OK(sdbus_uv_attach(&loop, cli, detach_on_error, &st, &st.cli_uv));
	uv_run(&loop, UV_RUN_NOWAIT);
	daemon_stop();
	uv_timer_init(&loop, &deadline);
	uv_timer_start(&deadline, on_deadline, 5000, 0);
	uv_unref((uv_handle_t *)&deadline);
	/* The loop ends by itself once the detached handles are closed. */
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(st.errors, 1);
	CHECK(st.last_err < 0);
	CHECK(st.cli_uv == NULL);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(uv_loop_close(&loop), 0);
	sd_bus_unref(cli);
}

static const struct check_case cases[] = {
    {"/sdbus_uv/call_and_signal", test_call_and_signal},
    {"/sdbus_uv/open_errors", test_open_errors},
    {"/sdbus_uv/daemon_gone", test_daemon_gone},
};

int check_failed_current;

int main(int argc, char **argv)
{
	int r;

	signal(SIGPIPE, SIG_IGN);
	if (!daemon_start()) {
		printf("1..0 # SKIP dbus-daemon cannot run here\n");
		daemon_stop();
		return 77;
	}
	r = check_run(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);
	daemon_stop();
	return r;
}
