/*
 * pksync-agent: owns the state dir, the vault and the control socket. One
 * agent per state dir (an exclusive lock on agent.lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/authn.h"
#include "agent/discovery-ble.h"
#include "agent/discovery.h"
#include "common/err.h"

#define AGENT_VERSION "0.1.0"

static int agent_verbose;

static void agent_log(void *user_data, enum pks_log_level level, const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char when[32];

	(void)user_data;
	if (level == PKS_LOG_DEBUG && !agent_verbose)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ pksync-agent %s: %s\n", when, ts.tv_nsec / 1000000,
		pks_log_level_name(level), msg);
}

static void agent_usage(FILE *f)
{
	fprintf(f, "Usage: pksync-agent [--state-dir DIR] [--listen ADDR:PORT | --no-listen]\n"
		   "                    [--peer ADDR:PORT]... [--no-mdns] [--no-ble] [--verbose]\n"
		   "                    [--uhid] [--ctaphid-socket PATH] [--pinentry PROGRAM]\n"
		   "                    [--up-timeout SECONDS]\n"
		   "\n"
		   "Runs the pksync agent in the foreground. It owns the vault in DIR\n"
		   "(default $XDG_DATA_HOME/pksync) and serves the 'pksync' command on a\n"
		   "control socket. Stop it with Ctrl-C or SIGTERM.\n"
		   "\n"
		   "  --state-dir DIR   where the vault lives (also PKSYNC_STATE_DIR)\n"
		   "  --listen ADDR:PORT  accept other devices here (default [::]:7393,\n"
		   "                    or 0.0.0.0:7393 without IPv6)\n"
		   "  --no-listen       accept no connections (this device only dials)\n"
		   "  --peer ADDR:PORT  dial this device of the vault (repeatable)\n"
		   "  --no-mdns         do not publish or look for devices on the LAN (mDNS)\n"
		   "  --no-ble          do not advertise, scan or connect over Bluetooth LE\n"
		   "  --uhid            appear to browsers as a FIDO2 security key through\n"
		   "                    /dev/uhid (see \"Use with your browser\" in README.md)\n"
		   "  --ctaphid-socket PATH  the same security key on a Unix SOCK_SEQPACKET\n"
		   "                    socket of 64-byte reports (tests, other front ends)\n"
		   "  --pinentry PROGRAM  asks the person to confirm each registration and\n"
		   "                    sign-in (default: pinentry)\n"
		   "  --up-timeout SECONDS  how long the prompt waits (default 30, 1..600)\n"
		   "  --verbose         log debug messages\n"
		   "  --help            this text\n"
		   "  --version         the version\n");
}

/* No core dumps, not ptrace-able by other processes of the user, private files. */
static int agent_harden(void)
{
	struct rlimit no_core = {0, 0};

	umask(077);
	if (setrlimit(RLIMIT_CORE, &no_core) != 0)
		return PKS_ERR_PERM;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return PKS_ERR_PERM;
	return PKS_OK;
}

static int agent_lock_state_dir(const struct paths *paths, int *fd_out)
{
	int fd = open(paths->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return pks_err_from_errno(errno);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		close(fd);
		return PKS_ERR_BUSY;
	}
	*fd_out = fd;
	return PKS_OK;
}

static void agent_on_signal(uv_signal_t *sig, int signum)
{
	struct agent *a = sig->data;

	pks_log(&a->log, PKS_LOG_INFO, "received signal %d, stopping", signum);
	uv_stop(a->loop);
}

static void agent_close_walk(uv_handle_t *handle, void *arg)
{
	(void)arg;
	if (!uv_is_closing(handle))
		uv_close(handle, NULL);
}

/* A passkey made by the authenticator goes to the other devices at once. */
static void agent_local_change(void *user)
{
	struct agent *a = user;

	if (a->net != NULL)
		net_local_change(a->net);
}

static void agent_member_found(void *user, const uint8_t device_id[32], const char *addr)
{
	struct agent *a = user;

	net_member_found(a->net, device_id, addr);
}

static void agent_sponsor_found(void *user, const char *addr)
{
	struct agent *a = user;

	net_sponsor_found(a->net, addr);
}

static void agent_member_found_ble(void *user, const uint8_t device_id[32], const char *address)
{
	struct agent *a = user;

	net_member_found_ble(a->net, device_id, address);
}

static void agent_sponsor_found_ble(void *user, const char *address)
{
	struct agent *a = user;

	net_sponsor_found_ble(a->net, address);
}

static void agent_ble_accepted(void *user, struct ble_link *l)
{
	struct agent *a = user;

	net_ble_accepted(a->net, l);
}

static bool agent_pairing_active(void *user)
{
	struct agent *a = user;

	return net_pairing_active(a->net);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"state-dir", required_argument, NULL, 'd'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"listen", required_argument, NULL, 'l'},
	    {"no-listen", no_argument, NULL, 'L'},
	    {"peer", required_argument, NULL, 'p'},
	    {"no-mdns", no_argument, NULL, 'm'},
	    {"no-ble", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"uhid", no_argument, NULL, 'U'},
	    {"ctaphid-socket", required_argument, NULL, 'S'},
	    {"pinentry", required_argument, NULL, 'P'},
	    {"up-timeout", required_argument, NULL, 'T'},
	    {NULL, 0, NULL, 0},
	};
	struct agent a;
	struct vault_options vopt;
	uv_signal_t sigint, sigterm;
	const char *state_dir = NULL;
	const char *listen = NULL;
	const char *peers[NET_PEERS_MAX];
	size_t n_peers = 0;
	bool no_listen = false, no_mdns = false, no_ble = false;
	struct discovery *disc = NULL;
	struct discovery_ble *disc_ble = NULL;
	struct net_options nopt;
	struct authn_options aopt;
	struct authn *authn = NULL;
	char err[512];
	int lock_fd = -1;
	int status = 1;
	int c, r;

	memset(&a, 0, sizeof(a));
	memset(&aopt, 0, sizeof(aopt));
	aopt.up_timeout_s = AUTHN_UP_TIMEOUT_DEFAULT_S;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'd':
			state_dir = optarg;
			break;
		case 'v':
			agent_verbose = 1;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'L':
			no_listen = true;
			break;
		case 'p':
			if (n_peers == NET_PEERS_MAX) {
				fprintf(stderr, "pksync-agent: at most %d --peer options.\n",
					NET_PEERS_MAX);
				return 2;
			}
			peers[n_peers++] = optarg;
			break;
		case 'm':
			no_mdns = true;
			break;
		case 'b':
			no_ble = true;
			break;
		case 'U':
			aopt.uhid = true;
			break;
		case 'S':
			aopt.socket_path = optarg;
			break;
		case 'P':
			aopt.pinentry = optarg;
			break;
		case 'T': {
			char *end = NULL;
			unsigned long t = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0' || t < 1 || t > 600) {
				fprintf(stderr,
					"pksync-agent: --up-timeout takes 1..600 seconds.\n");
				return 2;
			}
			aopt.up_timeout_s = (unsigned int)t;
			break;
		}
		case 'h':
			agent_usage(stdout);
			return 0;
		case 'V':
			printf("pksync-agent %s\n", AGENT_VERSION);
			return 0;
		default:
			agent_usage(stderr);
			return 2;
		}
	}
	if (listen != NULL && no_listen) {
		fprintf(stderr, "pksync-agent: --listen and --no-listen exclude each other.\n");
		return 2;
	}
	if (optind != argc) {
		fprintf(stderr, "pksync-agent: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (agent_harden() != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot disable core dumps; refusing to run.\n");
		return 1;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "pksync-agent: libsodium failed to initialise.\n");
		return 1;
	}
	a.log.fn = agent_log;
	if (paths_resolve(state_dir, &a.paths, err, sizeof(err)) != PKS_OK) {
		fprintf(stderr, "pksync-agent: %s\n", err);
		return 1;
	}
	if (paths_mkdir(a.paths.state_dir) != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot create the state directory %s.\n",
			a.paths.state_dir);
		return 1;
	}
	{
		/* The socket may live in another directory (XDG_RUNTIME_DIR/pksync). */
		char sockdir[sizeof(a.paths.socket_path)];
		char *slash;
		memcpy(sockdir, a.paths.socket_path, sizeof(sockdir));
		slash = strrchr(sockdir, '/');
		if (slash != NULL && slash != sockdir) {
			*slash = '\0';
			if (paths_mkdir(sockdir) != PKS_OK) {
				fprintf(stderr, "pksync-agent: cannot create %s.\n", sockdir);
				return 1;
			}
		}
	}
	r = agent_lock_state_dir(&a.paths, &lock_fd);
	if (r == PKS_ERR_BUSY) {
		fprintf(stderr, "pksync-agent: another agent is already running for %s.\n",
			a.paths.state_dir);
		return 1;
	} else if (r != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot lock %s: %s.\n", a.paths.lock_path,
			pks_strerror(r));
		return 1;
	}

	memset(&vopt, 0, sizeof(vopt));
	vopt.state_dir = a.paths.state_dir;
	vopt.db_path = a.paths.db_path;
	vopt.key_file = a.paths.key_file;
	vopt.log = a.log;
	vopt.fast_kdf = getenv("PKSYNC_TEST_FAST_KDF") != NULL;
	r = vault_open(&vopt, &a.vault);
	if (r != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot open the vault in %s: %s.\n",
			a.paths.state_dir, pks_strerror(r));
		goto out;
	}

	a.loop = uv_default_loop();
	r = control_server_new(a.loop, a.paths.socket_path, &a.log, commands_handle, &a,
			       &a.control);
	if (r != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot listen on %s.\n", a.paths.socket_path);
		goto out;
	}
	memset(&nopt, 0, sizeof(nopt));
	nopt.log = a.log;
	nopt.peers = peers;
	nopt.n_peers = n_peers;
	nopt.listen = no_listen ? NULL : listen ? listen : "[::]:7393";
	nopt.discovery = !no_mdns || !no_ble;
	r = net_new(a.loop, a.vault, &nopt, &a.net);
	if (r != PKS_OK && listen == NULL && !no_listen) {
		/* The default: IPv4 only, then no listener (another agent may hold the port). */
		nopt.listen = "0.0.0.0:7393";
		r = net_new(a.loop, a.vault, &nopt, &a.net);
		if (r != PKS_OK) {
			pks_log(&a.log, PKS_LOG_WARN,
				"cannot listen on port 7393; this device will only dial out");
			nopt.listen = NULL;
			r = net_new(a.loop, a.vault, &nopt, &a.net);
		}
	}
	if (r != PKS_OK) {
		fprintf(stderr, "pksync-agent: cannot %s: %s.\n",
			nopt.listen ? "listen on the --listen address" : "use a --peer address",
			pks_strerror(r));
		goto out;
	}
	if (!no_mdns) {
		struct discovery_options dopt;
		static const struct discovery_cb dcb = {agent_member_found, agent_sponsor_found,
							agent_pairing_active};
		memset(&dopt, 0, sizeof(dopt));
		dopt.port = net_listen_port(a.net);
		/* Tests watch several rotations; nothing else should set it. */
		if (getenv("PKSYNC_TEST_ROTATE_MS") != NULL)
			dopt.rotate_ms = strtoull(getenv("PKSYNC_TEST_ROTATE_MS"), NULL, 10);
		/* Without any mDNS stack the agent still syncs with known addresses. */
		if (discovery_new(a.loop, a.vault, &a.log, &dopt, &dcb, &a, &disc) != PKS_OK)
			disc = NULL;
		a.discovery = disc;
	}
	if (!no_ble) {
		struct discovery_ble_options bopt;
		static const struct discovery_ble_cb bcb = {
		    agent_member_found_ble, agent_sponsor_found_ble, agent_pairing_active,
		    agent_ble_accepted};
		memset(&bopt, 0, sizeof(bopt));
		if (getenv("PKSYNC_TEST_ROTATE_MS") != NULL)
			bopt.rotate_ms = strtoull(getenv("PKSYNC_TEST_ROTATE_MS"), NULL, 10);
		/* No bus or no adapter: BLE is simply absent (logged once). */
		if (discovery_ble_new(a.loop, a.vault, &a.log, &bopt, &bcb, &a, &disc_ble) ==
		    PKS_OK)
			net_set_ble(a.net, discovery_ble_handle(disc_ble));
		else
			disc_ble = NULL;
		a.discovery_ble = disc_ble;
	}
	if (aopt.uhid || aopt.socket_path != NULL) {
		r = authn_new(a.loop, a.vault, &aopt, &a.log, agent_local_change, &a, &authn);
		if (r != PKS_OK) {
			fprintf(stderr, "pksync-agent: cannot start the security key: %s.\n",
				pks_strerror(r));
			goto out;
		}
	}
	uv_signal_init(a.loop, &sigint);
	uv_signal_init(a.loop, &sigterm);
	sigint.data = &a;
	sigterm.data = &a;
	uv_signal_start(&sigint, agent_on_signal, SIGINT);
	uv_signal_start(&sigterm, agent_on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);

	pks_log(&a.log, PKS_LOG_INFO, "pksync-agent %s serving %s (vault %s)", AGENT_VERSION,
		a.paths.socket_path,
		!vault_is_initialized(a.vault) ? "not initialised"
		: vault_is_locked(a.vault)     ? "locked"
					       : "unlocked");
	uv_run(a.loop, UV_RUN_DEFAULT);

	authn_free(authn);
	a.discovery = NULL;
	a.discovery_ble = NULL;
	discovery_free(disc);
	control_server_close(a.control);
	net_free(a.net);
	/* After net_free: its BLE links and connects complete into the stopped net. */
	discovery_ble_free(disc_ble);
	unlink(a.paths.socket_path);
	uv_walk(a.loop, agent_close_walk, NULL);
	uv_run(a.loop, UV_RUN_DEFAULT);
	uv_loop_close(a.loop);
	status = 0;
out:
	vault_free(a.vault);
	if (lock_fd >= 0)
		close(lock_fd);
	return status;
}
