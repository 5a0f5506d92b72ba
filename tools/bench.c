/*
 * pksync-bench: prints the figures that show the design is right, as ratios
 * measured in one run on one machine (these machines are shared and noisy,
 * so no figure here is a pass/fail test).
 *
 *   pksync-bench [--json] [--records N] [--sync-records N]   run every benchmark
 *   pksync-bench --only-authn [--json]      only the security-key latencies
 *   pksync-bench --only-first-sync [--json] only the first sync of 10,000 (and its bound)
 *   pksync-bench --make-cxf N FILE          write N fresh passkeys as CXF
 *   pksync-bench --lab [--json] [ARGS...]   the discovery and BLE figures (tools/bench-lab)
 *
 * The sync figures run real agents as subprocesses on loopback and count the
 * bytes each agent reports on its member sockets (status "traffic", framing
 * included), so they measure what goes over the wire, not what the engine
 * thinks it sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/export.h"
#include "agent/import.h"
#include "agent/passkey.h"
#include "common/err.h"
#include "proto/noise.h"
#include "proto/record.h"
#include "tools/cli-client.h"

struct bench_result {
	const char *name;
	double value;
	const char *unit;
	/* Printed beside the figure in the text output; NULL when there is none. */
	const char *target;
};

static struct bench_result results[48];
static size_t nresults;

static void bench_add_target(const char *name, double value, const char *unit, const char *target)
{
	if (nresults < sizeof(results) / sizeof(results[0]))
		results[nresults++] = (struct bench_result){name, value, unit, target};
}

static void bench_add(const char *name, double value, const char *unit)
{
	bench_add_target(name, value, unit, NULL);
}

static double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_rng(void *user_data, uint8_t *buf, size_t n)
{
	(void)user_data;
	randombytes_buf(buf, n);
}

/* ---- generated passkeys ---- */

/* n passkeys numbered from first (the number picks the site and the user name). */
static int bench_make_items(size_t first, size_t n, struct passkey_item **out)
{
	struct passkey_item *items = calloc(n, sizeof(*items));
	int r = PKS_OK;

	if (items == NULL)
		return PKS_ERR_NOMEM;
	for (size_t i = 0; i < n && r == PKS_OK; i++) {
		struct passkey_item *it = &items[i];
		struct passkey_key *key = NULL;
		char buf[64];

		r = passkey_key_generate(RECORD_ALG_ES256, &key);
		if (r == PKS_OK)
			r = passkey_key_pkcs8(key, &it->private_key, &it->private_key_len);
		if (r == PKS_OK)
			r = passkey_key_spki(key, &it->public_key, &it->public_key_len);
		passkey_key_free(key);
		snprintf(buf, sizeof(buf), "site%zu.example", (first + i) % 997);
		it->rp_id = strdup(buf);
		snprintf(buf, sizeof(buf), "user%zu", first + i);
		it->user_name = strdup(buf);
		it->display_name = strdup(buf);
		it->credential_id = malloc(32);
		it->credential_id_len = 32;
		it->user_handle = malloc(16);
		it->user_handle_len = 16;
		it->alg = RECORD_ALG_ES256;
		it->backup_eligible = true;
		it->backup_state = true;
		it->created_at_ms = 1700000000000ull;
		if (it->rp_id == NULL || it->user_name == NULL || it->display_name == NULL ||
		    it->credential_id == NULL || it->user_handle == NULL) {
			r = PKS_ERR_NOMEM;
			break;
		}
		randombytes_buf(it->credential_id, 32);
		randombytes_buf(it->user_handle, 16);
	}
	*out = items;
	return r;
}

static void bench_free_items(struct passkey_item *items, size_t n)
{
	struct passkey_list l = {items, n, NULL, 0};

	passkey_list_free_items(&l);
	free(items);
}

/*
 * Writes one CXF file of n passkeys, made and exported BENCH_CXF_CHUNK at a
 * time: each private key is its own sodium_malloc mapping, and 100,000 of
 * them at once run into vm.max_map_count. export_cxf() renders compact JSON
 * whose items array closes the document ("...\"items\":[ITEMS]}]}"), so the
 * chunks' ITEMS are spliced into the first chunk's document.
 */
#define BENCH_CXF_CHUNK 1000

static int bench_make_cxf(size_t n, const char *path)
{
	static const char tail[] = "]}]}";
	struct passkey_item *items = NULL;
	char *json = NULL;
	FILE *f = fopen(path, "w");
	int r = f == NULL ? PKS_ERR_IO : PKS_OK;

	for (size_t done = 0; r == PKS_OK && done < n;) {
		size_t k = n - done < BENCH_CXF_CHUNK ? n - done : BENCH_CXF_CHUNK;
		const char *body;
		size_t len;

		r = bench_make_items(done, k, &items);
		if (r == PKS_OK)
			r = export_cxf(items, k, "pksync-bench", (uint64_t)time(NULL), &json);
		bench_free_items(items, k);
		items = NULL;
		if (r != PKS_OK)
			break;
		len = strlen(json);
		body = strstr(json, "\"items\":[");
		if (body == NULL || len < sizeof(tail) ||
		    strcmp(json + len - (sizeof(tail) - 1), tail) != 0) {
			r = PKS_ERR_INTERNAL;
		} else if (done == 0) {
			/* The whole document but its closing brackets. */
			if (fwrite(json, 1, len - (sizeof(tail) - 1), f) !=
			    len - (sizeof(tail) - 1))
				r = PKS_ERR_IO;
		} else {
			body += strlen("\"items\":[");
			len = (size_t)(json + len - (sizeof(tail) - 1) - body);
			if (fputc(',', f) == EOF || fwrite(body, 1, len, f) != len)
				r = PKS_ERR_IO;
		}
		sodium_memzero(json, strlen(json));
		free(json);
		json = NULL;
		done += k;
	}
	if (r == PKS_OK && fputs(tail, f) == EOF)
		r = PKS_ERR_IO;
	if (f != NULL && fclose(f) != 0)
		r = PKS_ERR_IO;
	if (r != PKS_OK)
		unlink(path);
	return r;
}

/* ---- crypto core ---- */

static void bench_x25519(void)
{
	uint8_t sk[32], pk[32], out[32];
	double t0, dt;
	size_t n = 0;

	randombytes_buf(sk, sizeof(sk));
	crypto_scalarmult_base(pk, sk);
	t0 = bench_now();
	do {
		for (int i = 0; i < 200; i++)
			if (crypto_scalarmult(out, sk, pk) != 0)
				return;
		n += 200;
		dt = bench_now() - t0;
	} while (dt < 1.0);
	bench_add("x25519_ops_per_s", (double)n / dt, "ops/s");
}

/* Every received record version is checked with one Ed25519 verification:
   this rate, times the cores, bounds a first sync. */
static double bench_ed25519_verify_per_s;

static void bench_ed25519_verify(void)
{
	uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	uint8_t msg[600], sig[crypto_sign_BYTES];
	double t0, dt;
	size_t n = 0;

	crypto_sign_keypair(pk, sk);
	randombytes_buf(msg, sizeof(msg));
	crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk);
	sodium_memzero(sk, sizeof(sk));
	t0 = bench_now();
	do {
		for (int i = 0; i < 200; i++)
			if (crypto_sign_verify_detached(sig, msg, sizeof(msg), pk) != 0)
				return;
		n += 200;
		dt = bench_now() - t0;
	} while (dt < 1.0);
	bench_ed25519_verify_per_s = (double)n / dt;
	bench_add("ed25519_verify_per_s_one_core", bench_ed25519_verify_per_s, "verifications/s");
}

/* One whole Noise_XXpsk0 handshake, both sides, then one transport message each way. */
static int bench_one_handshake(const uint8_t isk[32], const uint8_t rsk[32], const uint8_t psk[32])
{
	struct noise_handshake *i = NULL, *r = NULL;
	uint8_t msg[NOISE_MAX_MESSAGE], payload[NOISE_MAX_MESSAGE];
	size_t len = 0, plen = 0;
	int rc = PKS_ERR_INTERNAL;
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";

	if (noise_handshake_new(name, NOISE_ROLE_INITIATOR, &i) != PKS_OK ||
	    noise_handshake_new(name, NOISE_ROLE_RESPONDER, &r) != PKS_OK)
		goto out;
	if (noise_handshake_set_local_static(i, isk) != PKS_OK ||
	    noise_handshake_set_local_static(r, rsk) != PKS_OK ||
	    noise_handshake_set_psk(i, 0, psk) != PKS_OK ||
	    noise_handshake_set_psk(r, 0, psk) != PKS_OK)
		goto out;
	noise_handshake_set_rng(i, bench_rng, NULL);
	noise_handshake_set_rng(r, bench_rng, NULL);
	if (noise_handshake_start(i) != PKS_OK || noise_handshake_start(r) != PKS_OK)
		goto out;
	for (int step = 0; step < 3; step++) {
		struct noise_handshake *w = step % 2 == 0 ? i : r;
		struct noise_handshake *rd = step % 2 == 0 ? r : i;
		if (noise_handshake_write_message(w, NULL, 0, msg, sizeof(msg), &len) != PKS_OK ||
		    noise_handshake_read_message(rd, msg, len, payload, sizeof(payload), &plen) !=
			PKS_OK)
			goto out;
	}
	rc = PKS_OK;
out:
	noise_handshake_free(i);
	noise_handshake_free(r);
	return rc;
}

static void bench_noise(void)
{
	uint8_t isk[32], rsk[32], psk[32];
	double t0, dt;
	size_t n = 0;

	randombytes_buf(isk, sizeof(isk));
	randombytes_buf(rsk, sizeof(rsk));
	randombytes_buf(psk, sizeof(psk));
	t0 = bench_now();
	do {
		for (int k = 0; k < 20; k++)
			if (bench_one_handshake(isk, rsk, psk) != PKS_OK) {
				fprintf(stderr, "pksync-bench: noise handshake failed\n");
				return;
			}
		n += 20;
		dt = bench_now() - t0;
	} while (dt < 1.0);
	bench_add("noise_xxpsk0_handshakes_per_s", (double)n / dt, "handshakes/s");
}

static void bench_records(void)
{
	struct record_version *v = NULL;
	struct record_version *opened = NULL;
	uint8_t data_key[32], sign_pk[32], sign_sk[64], nonce[24];
	struct passkey_item *items = NULL;
	uint8_t *blob = NULL;
	size_t len = 0, n = 0;
	double t0, dt;

	randombytes_buf(data_key, sizeof(data_key));
	crypto_sign_keypair(sign_pk, sign_sk);
	if (bench_make_items(0, 1, &items) != PKS_OK || (v = record_version_new()) == NULL)
		goto out;
	randombytes_buf(v->record_id, sizeof(v->record_id));
	crypto_generichash(v->author, sizeof(v->author), sign_pk, sizeof(sign_pk), NULL, 0);
	v->seq = 1;
	v->epoch = 1;
	v->op = RECORD_OP_CREATE;
	v->hlc = hlc_make(1700000000000ull, 0);
	v->backup_eligible = true;
	v->backup_state = true;
	v->created_at = items->created_at_ms;
	if (record_version_set_credential(v, items->credential_id, items->credential_id_len,
					  items->rp_id, items->user_handle,
					  items->user_handle_len) != PKS_OK ||
	    record_version_set_keys(v, RECORD_ALG_ES256, items->private_key, items->private_key_len,
				    items->public_key, items->public_key_len) != PKS_OK ||
	    record_version_set_field(v, RECORD_FIELD_USER_NAME, items->user_name, v->hlc) !=
		PKS_OK ||
	    record_version_set_field(v, RECORD_FIELD_DISPLAY_NAME, items->display_name, v->hlc) !=
		PKS_OK)
		goto out;
	t0 = bench_now();
	do {
		for (int k = 0; k < 100; k++) {
			randombytes_buf(nonce, sizeof(nonce));
			free(blob);
			blob = NULL;
			if (record_version_seal(v, data_key, sign_sk, nonce, &blob, &len) != PKS_OK)
				goto out;
		}
		n += 100;
		dt = bench_now() - t0;
	} while (dt < 1.0);
	bench_add("record_seal_per_s", (double)n / dt, "versions/s");
	bench_add("record_sealed_bytes", (double)len, "bytes");
	n = 0;
	t0 = bench_now();
	do {
		for (int k = 0; k < 100; k++) {
			if (record_version_open(blob, len, sign_pk, data_key, &opened) != PKS_OK)
				goto out;
			record_version_free(opened);
		}
		n += 100;
		dt = bench_now() - t0;
	} while (dt < 1.0);
	bench_add("record_open_per_s", (double)n / dt, "versions/s");
out:
	free(blob);
	record_version_free(v);
	bench_free_items(items, 1);
}

/* ---- the agent, through the CLI ---- */

static char bench_dir[64];

static int bench_run(char *const argv[], int quiet)
{
	pid_t pid = fork();
	int status = 0;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (quiet) {
			int fd = open("/dev/null", O_WRONLY);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static long bench_vm_hwm_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "VmHWM:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

static long long bench_dir_bytes(const char *dir)
{
	const char *names[] = {"vault.db", "vault.db-wal", "vault.db-shm"};
	char path[2 * PATH_MAX];
	long long total = 0;
	struct stat st;

	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0)
			total += (long long)st.st_size;
	}
	return total;
}

static char bench_agent_bin[PATH_MAX + 32], bench_cli_bin[PATH_MAX + 32];

/* The agent and the CLI are found beside this binary, as meson lays out the build. */
static void bench_find_binaries(const char *self)
{
	char bin_dir[PATH_MAX];
	char *slash;

	snprintf(bin_dir, sizeof(bin_dir), "%s", self);
	slash = strrchr(bin_dir, '/');
	if (slash == NULL)
		snprintf(bin_dir, sizeof(bin_dir), ".");
	else
		*slash = '\0';
	snprintf(bench_agent_bin, sizeof(bench_agent_bin), "%s/../agent/pksync-agent", bin_dir);
	snprintf(bench_cli_bin, sizeof(bench_cli_bin), "%s/pksync", bin_dir);
}

static void bench_agent(size_t records)
{
	char *agent = bench_agent_bin, *cli = bench_cli_bin;
	char state[128], cxf[128], sock[160];
	pid_t pid;
	double t0;
	int rc;

	snprintf(bench_dir, sizeof(bench_dir), "/tmp/pksync-bench-XXXXXX");
	if (mkdtemp(bench_dir) == NULL)
		return;
	snprintf(state, sizeof(state), "%s/state", bench_dir);
	snprintf(cxf, sizeof(cxf), "%s/import.json", bench_dir);
	snprintf(sock, sizeof(sock), "%s/control.sock", state);
	if (bench_make_cxf(records, cxf) != PKS_OK) {
		fprintf(stderr, "pksync-bench: cannot generate passkeys\n");
		return;
	}
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 2);
		execl(agent, agent, "--state-dir", state, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++)
		usleep(50000);
	{
		char *init[] = {cli,      "--state-dir", state, "init", "--no-passphrase",
				"--name", "bench",       NULL};
		char *import[] = {cli, "--state-dir", state, "import", cxf, NULL};
		char *list[] = {cli, "--state-dir", state, "list", "--json", NULL};

		rc = bench_run(init, 1);
		if (rc != 0) {
			fprintf(stderr, "pksync-bench: init failed\n");
			goto out;
		}
		t0 = bench_now();
		rc = bench_run(import, 1);
		if (rc != 0) {
			fprintf(stderr, "pksync-bench: import failed\n");
			goto out;
		}
		bench_add("import_seconds", bench_now() - t0, "s");
		t0 = bench_now();
		rc = bench_run(list, 1);
		bench_add("list_seconds", bench_now() - t0, "s");
		bench_add("agent_peak_rss_mib", (double)bench_vm_hwm_kib(pid) / 1024.0, "MiB");
	}
out:
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	bench_add("disk_bytes_per_record", (double)bench_dir_bytes(state) / (double)records,
		  "bytes");
	{
		char *rm[] = {"/bin/rm", "-rf", bench_dir, NULL};
		bench_run(rm, 1);
	}
}

/* ---- sync between real agents on loopback ---- */

struct bench_dev {
	const char *name;
	char state[160];
	char sock[192];
	char log[192];
	char addr[32];
	pid_t pid;
};

/* A port nobody holds right now: the agent's pairing addresses need a real port, not 0. */
static int bench_free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port = -1;

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static int bench_dev_setup(struct bench_dev *d, const char *root, const char *name)
{
	int port = bench_free_port();

	if (port <= 0)
		return PKS_ERR_IO;
	memset(d, 0, sizeof(*d));
	d->name = name;
	snprintf(d->state, sizeof(d->state), "%s/%s", root, name);
	snprintf(d->sock, sizeof(d->sock), "%s/control.sock", d->state);
	snprintf(d->log, sizeof(d->log), "%s/%s.log", root, name);
	snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%d", port);
	return PKS_OK;
}

/* The last control request that failed, for the message when a figure is left out. */
static char bench_call_error[CLI_SENTENCE_MAX];

/* One control request; takes request. The result (when wanted) is the caller's to decref. */
static int bench_call(const struct bench_dev *d, json_t *request, json_t **result)
{
	struct cli_frame f;
	char err[CLI_SENTENCE_MAX] = "";
	int r;

	memset(&f, 0, sizeof(f));
	if (request == NULL)
		return PKS_ERR_NOMEM;
	r = cli_client_call(d->sock, request, NULL, NULL, &f, err, sizeof(err));
	json_decref(request);
	if (r == PKS_OK && f.kind != CLI_FRAME_OK) {
		snprintf(err, sizeof(err), "%s", f.error);
		r = PKS_ERR_STATE;
	}
	if (r != PKS_OK)
		snprintf(bench_call_error, sizeof(bench_call_error), "%s: %s", d->name, err);
	if (r == PKS_OK && result != NULL)
		*result = json_incref(f.result);
	cli_frame_clear(&f);
	return r;
}

static int bench_status(const struct bench_dev *d, json_t **st)
{
	return bench_call(d, json_pack("{s:s}", "cmd", "status"), st);
}

/* Bytes this agent counted on its member sockets since it started, both directions. */
static int bench_traffic(const struct bench_dev *d, double *bytes)
{
	json_t *st = NULL;
	json_t *t;
	int r = bench_status(d, &st);

	if (r != PKS_OK)
		return r;
	t = json_object_get(st, "traffic");
	if (!json_is_integer(json_object_get(t, "bytes_in")) ||
	    !json_is_integer(json_object_get(t, "bytes_out"))) {
		r = PKS_ERR_MALFORMED;
	} else {
		*bytes = (double)json_integer_value(json_object_get(t, "bytes_in")) +
			 (double)json_integer_value(json_object_get(t, "bytes_out"));
	}
	json_decref(st);
	return r;
}

static void bench_dev_stop(struct bench_dev *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
			d->pid = 0;
			return;
		}
		usleep(50000);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = 0;
}

/* Starts the agent listening on its own port (dialing peer too when not NULL). */
static int bench_dev_start(struct bench_dev *d, const char *peer)
{
	pid_t pid;

	mkdir(d->state, 0700);
	pid = fork();
	if (pid < 0)
		return PKS_ERR_IO;
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (peer != NULL)
			execl(bench_agent_bin, bench_agent_bin, "--state-dir", d->state, "--listen",
			      d->addr, "--no-mdns", "--no-ble", "--peer", peer, (char *)NULL);
		else
			execl(bench_agent_bin, bench_agent_bin, "--state-dir", d->state, "--listen",
			      d->addr, "--no-mdns", "--no-ble", (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	/* An agent opens every version at start: 100,000 take tens of seconds on a busy box. */
	for (int i = 0; i < 4800; i++) {
		json_t *st = NULL;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			d->pid = 0;
			fprintf(stderr, "pksync-bench: agent %s exited early (see %s)\n", d->name,
				d->log);
			return PKS_ERR_IO;
		}
		if (access(d->sock, F_OK) == 0 && bench_status(d, &st) == PKS_OK) {
			json_decref(st);
			return PKS_OK;
		}
		usleep(25000);
	}
	fprintf(stderr, "pksync-bench: agent %s did not start (see %s)\n", d->name, d->log);
	bench_dev_stop(d);
	return PKS_ERR_TIMEOUT;
}

static int bench_cli(const struct bench_dev *d, const char *a1, const char *a2, const char *a3,
		     const char *a4, const char *a5, const char *a6, const char *a7)
{
	char *argv[] = {bench_cli_bin, "--state-dir", (char *)d->state, (char *)a1, (char *)a2,
			(char *)a3,    (char *)a4,    (char *)a5,       (char *)a6, (char *)a7,
			NULL};

	return bench_run(argv, 1) == 0 ? PKS_OK : PKS_ERR_IO;
}

/* A fresh vault holding n generated passkeys, imported through the CLI. */
static int bench_dev_found(struct bench_dev *d, const char *cxf)
{
	int r = bench_dev_start(d, NULL);

	if (r == PKS_OK)
		r = bench_cli(d, "init", "--no-passphrase", "--name", d->name, NULL, NULL, NULL);
	if (r == PKS_OK)
		r = bench_cli(d, "import", cxf, NULL, NULL, NULL, NULL, NULL);
	if (r != PKS_OK)
		fprintf(stderr, "pksync-bench: setting up %s failed (see %s)\n", d->name, d->log);
	return r;
}

/* joiner (started, not initialised) joins the vault through sponsor with a pairing code. */
static int bench_pair(const struct bench_dev *sponsor, const struct bench_dev *joiner)
{
	char line[4096];
	int fds[2];
	json_t *first = NULL;
	const char *code;
	FILE *f = NULL;
	pid_t pid;
	int status = 0, r = PKS_ERR_IO;

	if (pipe(fds) != 0)
		return PKS_ERR_IO;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return PKS_ERR_IO;
	}
	if (pid == 0) {
		int fd = open(sponsor->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fds[1], 1);
		if (fd >= 0)
			dup2(fd, 2);
		close(fds[0]);
		execl(bench_cli_bin, bench_cli_bin, "--state-dir", sponsor->state, "pair", "--json",
		      "--timeout", "120", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	if (f == NULL) {
		close(fds[0]);
		goto out;
	}
	if (fgets(line, sizeof(line), f) == NULL)
		goto out;
	first = json_loads(line, 0, NULL);
	code = json_string_value(json_object_get(first, "code"));
	if (code == NULL)
		goto out;
	r = bench_cli(joiner, "join", code, "--peer", sponsor->addr, "--name", joiner->name,
		      "--no-passphrase");
out:
	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL)
			continue;
		fclose(f);
	}
	if (r != PKS_OK)
		kill(pid, SIGTERM);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		r = PKS_ERR_IO;
	json_decref(first);
	if (r != PKS_OK)
		fprintf(stderr, "pksync-bench: %s could not join through %s (see %s)\n",
			joiner->name, sponsor->name, joiner->log);
	return r;
}

/* Waits until every device shows the same digest. */
static int bench_wait_equal(struct bench_dev *const *devs, size_t n, double timeout)
{
	double deadline = bench_now() + timeout;

	while (bench_now() < deadline) {
		char first[80] = "";
		bool same = true;
		for (size_t i = 0; i < n && same; i++) {
			json_t *st = NULL;
			const char *dg;
			if (bench_status(devs[i], &st) != PKS_OK)
				return PKS_ERR_IO;
			dg = json_string_value(json_object_get(st, "digest"));
			if (dg == NULL)
				same = false;
			else if (i == 0)
				snprintf(first, sizeof(first), "%s", dg);
			else
				same = strcmp(first, dg) == 0;
			json_decref(st);
		}
		if (same)
			return PKS_OK;
		usleep(20000);
	}
	fprintf(stderr, "pksync-bench: no convergence within %.0f s\n", timeout);
	return PKS_ERR_TIMEOUT;
}

/* Whether d shows the peer named name connected, synced and holding our digest. */
static int bench_peer_in_sync(const struct bench_dev *d, const char *name, bool *yes)
{
	json_t *st = NULL, *p;
	size_t i;
	int r = bench_status(d, &st);

	if (r != PKS_OK)
		return r;
	*yes = false;
	json_array_foreach(json_object_get(st, "peers"), i, p)
	{
		const char *pn = json_string_value(json_object_get(p, "name"));
		if (pn != NULL && strcmp(pn, name) == 0 &&
		    json_is_true(json_object_get(p, "connected")) &&
		    json_is_string(json_object_get(p, "last_sync")) &&
		    json_is_true(json_object_get(p, "in_sync")))
			*yes = true;
	}
	json_decref(st);
	return PKS_OK;
}

static int bench_wait_peer(const struct bench_dev *d, const char *name, double timeout,
			   useconds_t poll_us)
{
	double deadline = bench_now() + timeout;
	bool yes = false;

	while (bench_now() < deadline) {
		if (bench_peer_in_sync(d, name, &yes) != PKS_OK)
			return PKS_ERR_IO;
		if (yes)
			return PKS_OK;
		usleep(poll_us);
	}
	fprintf(stderr, "pksync-bench: %s never showed %s in sync\n", d->name, name);
	return PKS_ERR_TIMEOUT;
}

/* `pksync sync --wait` on d: PKS_OK only when it answers in sync with at least one peer. */
static int bench_sync_wait(const struct bench_dev *d)
{
	json_t *res = NULL;
	int r = bench_call(d, json_pack("{s:s, s:b, s:i}", "cmd", "sync", "wait", 1, "timeout", 60),
			   &res);

	if (r == PKS_OK && (!json_is_true(json_object_get(res, "in_sync")) ||
			    json_integer_value(json_object_get(res, "peers")) < 1))
		r = PKS_ERR_STATE;
	json_decref(res);
	return r;
}

static int bench_edit_notes(const struct bench_dev *d, const char *id, const char *notes)
{
	return bench_call(d, json_pack("{s:s, s:s, s:s}", "cmd", "edit", "id", id, "notes", notes),
			  NULL);
}

/* The id of one live record (from a small rp filter, so 100,000 records never cross). */
static int bench_some_id(const struct bench_dev *d, char id[40])
{
	json_t *list = NULL;
	const char *s;
	int r = bench_call(d, json_pack("{s:s, s:s}", "cmd", "list", "rp", "site0.example"), &list);

	if (r != PKS_OK)
		return r;
	s = json_string_value(json_object_get(json_array_get(list, 0), "id"));
	if (s == NULL || strlen(s) >= 40)
		r = PKS_ERR_NOT_FOUND;
	else
		snprintf(id, 40, "%s", s);
	json_decref(list);
	return r;
}

/* Sum of the sealed version blobs in a stopped agent's vault: the raw size a sync must move. */
static int bench_sealed_bytes(const struct bench_dev *d, double *bytes, double *versions)
{
	char path[256];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int r = PKS_ERR_IO;

	snprintf(path, sizeof(path), "%s/vault.db", d->state);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_prepare_v2(db, "SELECT coalesce(sum(length(blob)), 0), count(*) FROM versions",
			       -1, &st, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	*bytes = (double)sqlite3_column_int64(st, 0);
	*versions = (double)sqlite3_column_int64(st, 1);
	r = PKS_OK;
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return r;
}

static int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static double bench_median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static void bench_rm_rf(const char *dir)
{
	char *rm[] = {"/bin/rm", "-rf", (char *)dir, NULL};

	bench_run(rm, 1);
}

/*
 * Session setup, one sample: alpha restarts (it dials nobody, beta dials it);
 * then from beta's `pksync sync` (which dials at once, skipping the backoff)
 * until beta's status shows alpha connected, synced and equal. That covers
 * TCP connect, the Noise handshake, membership heads, vectors and the digest
 * check with nothing to transfer, plus one control round trip and the polling
 * step (1 ms). A sample where beta's own backoff redialed first is retried.
 */
static int bench_session_setup(struct bench_dev *a, struct bench_dev *b, double *ms)
{
	for (int attempt = 0; attempt < 10; attempt++) {
		bool already = false;
		double t0;
		int r;

		bench_dev_stop(a);
		if (bench_dev_start(a, NULL) != PKS_OK)
			return PKS_ERR_IO;
		if (bench_peer_in_sync(b, a->name, &already) != PKS_OK)
			return PKS_ERR_IO;
		if (already)
			continue;
		t0 = bench_now();
		r = bench_call(b, json_pack("{s:s, s:b}", "cmd", "sync", "wait", 0), NULL);
		if (r == PKS_OK)
			r = bench_wait_peer(b, a->name, 30, 1000);
		if (r != PKS_OK)
			return r;
		*ms = (bench_now() - t0) * 1000.0;
		return PKS_OK;
	}
	return PKS_ERR_TIMEOUT;
}

/*
 * Two devices, n passkeys (10,000). First sync: a vault of n passkeys on
 * alpha, then beta joins it. Timed from the start of `pksync join` (pairing
 * included: a few small frames) until both show the same digest; bytes are
 * beta's member-socket traffic, both ways; the raw size is the sum of the
 * sealed version blobs in beta's SQLite file. Then reconnect with nothing
 * changed and session setup, on the same pair: restarting an agent of 10,000
 * records takes seconds, of 100,000 tens of seconds (it opens every version).
 * The reconnect bytes do not grow with the record count (vectors are per
 * author, the digest is 32 bytes); the setup time does a little, since the
 * agent recomputes its digest over every record.
 */
static void bench_sync_first(size_t n)
{
	char root[64], cxf[128];
	struct bench_dev a, b;
	struct bench_dev *both[2] = {&a, &b};
	double t0, t1, secs, bytes = 0, raw = 0, versions = 0, before, after, samples[5];
	bool done = false;
	int r;

	snprintf(root, sizeof(root), "/tmp/pksync-bench-sync-XXXXXX");
	if (mkdtemp(root) == NULL)
		return;
	snprintf(cxf, sizeof(cxf), "%s/first.json", root);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	r = bench_make_cxf(n, cxf);
	if (r != PKS_OK) {
		fprintf(stderr, "pksync-bench: cannot generate %zu passkeys: %s\n", n,
			pks_strerror(r));
		goto out;
	}
	if (bench_dev_setup(&a, root, "alpha") != PKS_OK ||
	    bench_dev_setup(&b, root, "beta") != PKS_OK || bench_dev_found(&a, cxf) != PKS_OK ||
	    bench_dev_start(&b, NULL) != PKS_OK)
		goto out;
	t0 = bench_now();
	if (bench_pair(&a, &b) != PKS_OK)
		goto out;
	t1 = bench_now(); /* `join` returned: beta is a member, the sync begins */
	if (bench_wait_equal(both, 2, 600) != PKS_OK)
		goto out;
	secs = bench_now() - t0;
	/* Let the last acknowledgements land before reading the counters. */
	usleep(200000);
	if (bench_traffic(&b, &bytes) != PKS_OK)
		goto out;
	bench_dev_stop(&b);
	if (bench_sealed_bytes(&b, &raw, &versions) != PKS_OK || versions < (double)n) {
		fprintf(stderr, "pksync-bench: beta's vault holds %.0f of %zu versions\n", versions,
			n);
		goto out;
	}
	/* Pairing (two CLI runs, CPace, a Noise session, a new identity) is a
	   fixed cost apart from the transfer (about 10 ms here): the
	   throughput target is the sync's, timed from `join` returning. */
	bench_add("sync_first_10k_seconds_with_pairing", secs, "s");
	bench_add("sync_first_pairing_seconds", t1 - t0, "s");
	bench_add("sync_first_10k_seconds", t0 + secs - t1, "s");
	bench_add_target("sync_first_10k_passkeys_per_s", (double)n / (t0 + secs - t1),
			 "passkeys/s", "> 20000");
	bench_add("sync_first_10k_with_pairing_passkeys_per_s", (double)n / secs, "passkeys/s");
	if (bench_ed25519_verify_per_s > 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		bench_add("sync_first_vs_verify_bound",
			  (double)n / (t0 + secs - t1) /
			      (bench_ed25519_verify_per_s * (double)(cores > 0 ? cores : 1)),
			  "fraction of the Ed25519-verify limit on all cores");
	}
	bench_add("sync_first_10k_bytes", bytes, "bytes");
	bench_add("sync_first_10k_raw_sealed_bytes", raw, "bytes");
	bench_add_target("sync_first_overhead_ratio", bytes / raw, "x raw sealed", "< 1.15");

	/*
	 * Reconnect with nothing changed: beta restarts (it remembers alpha and
	 * dials it); alpha's traffic from before beta comes back until beta shows
	 * alpha in sync (polled through status, so no extra digest check is
	 * counted); then `sync --wait` on beta must agree.
	 */
	usleep(200000);
	if (bench_traffic(&a, &before) != PKS_OK || bench_dev_start(&b, NULL) != PKS_OK ||
	    bench_wait_peer(&b, "alpha", 60, 20000) != PKS_OK)
		goto out;
	usleep(300000);
	if (bench_traffic(&a, &after) != PKS_OK)
		goto out;
	if (bench_sync_wait(&b) != PKS_OK) {
		fprintf(stderr, "pksync-bench: sync --wait on beta did not report in sync\n");
		goto out;
	}
	bench_add_target("sync_reconnect_bytes", after - before, "bytes", "< 4096");

	for (size_t i = 0; i < 5; i++)
		if (bench_session_setup(&a, &b, &samples[i]) != PKS_OK) {
			fprintf(stderr, "pksync-bench: session setup could not be measured\n");
			goto out;
		}
	bench_add("sync_session_setup_ms", bench_median(samples, 5), "ms (median of 5)");
	done = true;
out:
	if (!done)
		fprintf(stderr, "pksync-bench: sync figures left out (last error: %s)\n",
			bench_call_error[0] ? bench_call_error : "none");
	bench_dev_stop(&a);
	bench_dev_stop(&b);
	if (done)
		bench_rm_rf(root);
	else
		fprintf(stderr, "pksync-bench: logs kept in %s\n", root);
}

/*
 * Three devices on one vault of n passkeys (100,000): beta and gamma each
 * received everything from alpha. Then one change and propagation latency
 * from alpha to beta, and last beta and gamma meeting with alpha gone.
 */
static void bench_sync_devices(size_t n)
{
	char root[64], cxf[128], id[40], notes[32];
	struct bench_dev a, b, c;
	struct bench_dev *ab[2] = {&a, &b}, *abc[3] = {&a, &b, &c};
	double before, after, samples[10], t0;
	bool seen, done = false;
	int r;

	snprintf(root, sizeof(root), "/tmp/pksync-bench-sync-XXXXXX");
	if (mkdtemp(root) == NULL)
		return;
	snprintf(cxf, sizeof(cxf), "%s/vault.json", root);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	r = bench_make_cxf(n, cxf);
	if (r != PKS_OK) {
		fprintf(stderr, "pksync-bench: cannot generate %zu passkeys: %s\n", n,
			pks_strerror(r));
		goto out;
	}
	if (bench_dev_setup(&a, root, "alpha") != PKS_OK ||
	    bench_dev_setup(&b, root, "beta") != PKS_OK ||
	    bench_dev_setup(&c, root, "gamma") != PKS_OK || bench_dev_found(&a, cxf) != PKS_OK)
		goto out;
	unlink(cxf);
	/* gamma joins while beta is still receiving: two first syncs at once save minutes. */
	if (bench_dev_start(&b, NULL) != PKS_OK || bench_dev_start(&c, NULL) != PKS_OK ||
	    bench_pair(&a, &b) != PKS_OK || bench_pair(&a, &c) != PKS_OK ||
	    bench_wait_equal(abc, 3, 1200) != PKS_OK)
		goto out;
	bench_add("sync_records", (double)n, "records (scale of the figures below)");

	/* One change among n: beta's traffic until both digests match again. */
	if (bench_some_id(&a, id) != PKS_OK || bench_traffic(&b, &before) != PKS_OK ||
	    bench_edit_notes(&a, id, "one change") != PKS_OK ||
	    bench_wait_equal(ab, 2, 60) != PKS_OK)
		goto out;
	usleep(300000);
	if (bench_traffic(&b, &after) != PKS_OK)
		goto out;
	bench_add_target("sync_one_change_bytes", after - before, "bytes", "< 4096");

	/* Propagation: from the start of `edit` on alpha until `show` on beta has the notes. */
	for (size_t i = 0; i < 10; i++) {
		snprintf(notes, sizeof(notes), "propagation %zu", i);
		t0 = bench_now();
		if (bench_edit_notes(&a, id, notes) != PKS_OK)
			goto out;
		seen = false;
		while (!seen && bench_now() - t0 < 30) {
			json_t *rec = NULL;
			if (bench_call(&b, json_pack("{s:s, s:s}", "cmd", "show", "id", id),
				       &rec) != PKS_OK)
				goto out;
			const char *got = json_string_value(json_object_get(rec, "notes"));
			seen = got != NULL && strcmp(got, notes) == 0;
			json_decref(rec);
			if (!seen)
				usleep(500);
		}
		if (!seen) {
			fprintf(stderr, "pksync-bench: an edit never reached beta\n");
			goto out;
		}
		samples[i] = (bench_now() - t0) * 1000.0;
	}
	bench_add("sync_propagation_ms", bench_median(samples, 10), "ms (median of 10)");

	/*
	 * Equal devices: alpha and beta stop; gamma stays up alone (its session
	 * with alpha ends), beta comes back dialing gamma. Both hold the same n
	 * records, received from alpha (both still try the remembered alpha,
	 * which refuses: no member bytes). beta's traffic since it started, until
	 * it shows gamma in sync, is the whole beta<->gamma exchange.
	 */
	bench_dev_stop(&a);
	bench_dev_stop(&b);
	if (bench_dev_start(&b, c.addr) != PKS_OK ||
	    bench_wait_peer(&b, "gamma", 60, 20000) != PKS_OK)
		goto out;
	usleep(300000);
	if (bench_traffic(&b, &after) != PKS_OK)
		goto out;
	bench_add_target("sync_equal_devices_bytes", after, "bytes", "< 65536");
	done = true;
out:
	if (!done)
		fprintf(
		    stderr,
		    "pksync-bench: some sync figures left out (last error: %s; logs kept in %s)\n",
		    bench_call_error[0] ? bench_call_error : "none", root);
	bench_dev_stop(&a);
	bench_dev_stop(&b);
	bench_dev_stop(&c);
	if (done)
		bench_rm_rf(root);
}

static void bench_print(int json)
{
	if (json) {
		printf("{");
		for (size_t i = 0; i < nresults; i++)
			printf("%s\"%s\": %.6g", i ? ", " : "", results[i].name, results[i].value);
		printf("}\n");
		return;
	}
	for (size_t i = 0; i < nresults; i++) {
		printf("%-34s %14.2f %s", results[i].name, results[i].value, results[i].unit);
		if (results[i].target != NULL)
			printf(" (target %s)", results[i].target);
		printf("\n");
	}
}

/* ---- the security key: latency through the whole CTAPHID path ---- */

#define BENCH_HID_MAX 7609

/* One CTAPHID transaction over the test socket; keepalives and other channels skipped. */
static int bench_hid_xfer(int fd, uint32_t cid, uint8_t cmd, const uint8_t *req, size_t len,
			  uint8_t *resp, size_t cap, size_t *resp_len)
{
	uint8_t pkt[64];
	size_t off = 0, want = 0, got = 0;
	uint8_t seq = 0;

	memset(pkt, 0, sizeof(pkt));
	pkt[0] = (uint8_t)(cid >> 24), pkt[1] = (uint8_t)(cid >> 16);
	pkt[2] = (uint8_t)(cid >> 8), pkt[3] = (uint8_t)cid;
	pkt[4] = cmd;
	pkt[5] = (uint8_t)(len >> 8), pkt[6] = (uint8_t)len;
	off = len < 57 ? len : 57;
	memcpy(pkt + 7, req, off);
	if (send(fd, pkt, 64, 0) != 64)
		return PKS_ERR_IO;
	while (off < len) {
		size_t n = len - off < 59 ? len - off : 59;
		memset(pkt + 4, 0, 60);
		pkt[4] = seq++;
		memcpy(pkt + 5, req + off, n);
		off += n;
		if (send(fd, pkt, 64, 0) != 64)
			return PKS_ERR_IO;
	}
	seq = 0;
	for (;;) {
		ssize_t n = recv(fd, pkt, sizeof(pkt), 0);
		uint32_t rcid;
		if (n != 64)
			return PKS_ERR_IO;
		rcid = (uint32_t)pkt[0] << 24 | (uint32_t)pkt[1] << 16 | (uint32_t)pkt[2] << 8 |
		       pkt[3];
		if (rcid != cid)
			continue;
		if (want == 0 && got == 0) {
			if (pkt[4] == 0xbb)
				continue; /* KEEPALIVE */
			if (pkt[4] != cmd)
				return PKS_ERR_MALFORMED;
			want = (size_t)pkt[5] << 8 | pkt[6];
			if (want > cap)
				return PKS_ERR_TOO_LARGE;
			got = want < 57 ? want : 57;
			memcpy(resp, pkt + 7, got);
		} else {
			size_t k = want - got < 59 ? want - got : 59;
			if (pkt[4] != seq++)
				return PKS_ERR_MALFORMED;
			memcpy(resp + got, pkt + 5, k);
			got += k;
		}
		if (got >= want)
			break;
	}
	*resp_len = want;
	return PKS_OK;
}

static void bench_cbor_text(uint8_t **p, const char *s)
{
	size_t n = strlen(s);

	*(*p)++ = (uint8_t)(0x60 | n); /* short texts only */
	memcpy(*p, s, n);
	*p += n;
}

/* makeCredential (ES256, resident) for user number i, or getAssertion (up true/false). */
static size_t bench_ctap_request(uint8_t *buf, int kind, uint32_t i)
{
	uint8_t *p = buf;
	uint8_t cdh[32];

	memset(cdh, 0x42, sizeof(cdh));
	if (kind == 0) {
		*p++ = 0x01, *p++ = 0xa5;
		*p++ = 0x01, *p++ = 0x58, *p++ = 0x20;
		memcpy(p, cdh, 32), p += 32;
		*p++ = 0x02, *p++ = 0xa2;
		bench_cbor_text(&p, "id"), bench_cbor_text(&p, "bench.example");
		bench_cbor_text(&p, "name"), bench_cbor_text(&p, "Bench");
		*p++ = 0x03, *p++ = 0xa3;
		bench_cbor_text(&p, "id");
		*p++ = 0x44, *p++ = (uint8_t)(i >> 24), *p++ = (uint8_t)(i >> 16);
		*p++ = (uint8_t)(i >> 8), *p++ = (uint8_t)i;
		bench_cbor_text(&p, "name"), bench_cbor_text(&p, "user");
		bench_cbor_text(&p, "displayName"), bench_cbor_text(&p, "User");
		*p++ = 0x04, *p++ = 0x81, *p++ = 0xa2;
		bench_cbor_text(&p, "alg"), *p++ = 0x26;
		bench_cbor_text(&p, "type"), bench_cbor_text(&p, "public-key");
		*p++ = 0x07, *p++ = 0xa1;
		bench_cbor_text(&p, "rk"), *p++ = 0xf5;
	} else {
		*p++ = 0x02, *p++ = 0xa3;
		*p++ = 0x01, bench_cbor_text(&p, "bench.example");
		*p++ = 0x02, *p++ = 0x58, *p++ = 0x20;
		memcpy(p, cdh, 32), p += 32;
		*p++ = 0x05, *p++ = 0xa1;
		bench_cbor_text(&p, "up"), *p++ = kind == 1 ? 0xf4 : 0xf5;
	}
	return (size_t)(p - buf);
}

static void bench_authn(void)
{
	struct bench_dev d;
	char root[128], hidsock[192], pin[192];
	struct sockaddr_un sa;
	uint8_t req[512], *resp = NULL;
	size_t req_len, resp_len = 0;
	uint32_t cid;
	double t, mean[3] = {0, 0, 0};
	const int rounds[3] = {40, 200, 40};
	int fd = -1, r = PKS_ERR_IO;
	FILE *f;
	pid_t pid;

	/* Its own directory: the agent benchmark removed bench_dir when it ended. */
	snprintf(root, sizeof(root), "/tmp/pksync-bench-authn-XXXXXX");
	memset(&d, 0, sizeof(d));
	if (mkdtemp(root) == NULL || bench_dev_setup(&d, root, "key") != PKS_OK) {
		fprintf(stderr, "pksync-bench: the security-key figures are left out: %s: %s\n",
			root, strerror(errno));
		return;
	}
	snprintf(hidsock, sizeof(hidsock), "%s/hid.sock", root);
	snprintf(pin, sizeof(pin), "%s/pinentry-allow", root);
	/* A pinentry that says yes at once: the person's time is not the authenticator's. */
	f = fopen(pin, "w");
	if (f == NULL) {
		fprintf(stderr, "pksync-bench: the security-key figures are left out: %s: %s\n",
			pin, strerror(errno));
		return;
	}
	fprintf(f, "#!/bin/sh\necho 'OK ready'\nwhile read -r l; do echo OK; case \"$l\" in "
		   "BYE*) exit 0;; esac; done\n");
	fclose(f);
	chmod(pin, 0700);
	mkdir(d.state, 0700);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "pksync-bench: the security-key figures are left out: fork: %s\n",
			strerror(errno));
		return;
	}
	if (pid == 0) {
		int lfd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (lfd >= 0) {
			dup2(lfd, 1);
			dup2(lfd, 2);
		}
		execl(bench_agent_bin, bench_agent_bin, "--state-dir", d.state, "--no-listen",
		      "--no-mdns", "--no-ble", "--ctaphid-socket", hidsock, "--pinentry", pin,
		      (char *)NULL);
		_exit(127);
	}
	d.pid = pid;
	for (int i = 0; i < 400 && access(d.sock, F_OK) != 0; i++)
		usleep(25000);
	resp = malloc(BENCH_HID_MAX);
	if (resp == NULL ||
	    bench_cli(&d, "init", "--no-passphrase", "--name", "key", NULL, NULL, NULL) != PKS_OK)
		goto out;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(hidsock) >= sizeof(sa.sun_path))
		goto out;
	memcpy(sa.sun_path, hidsock, strlen(hidsock));
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto out;
	{
		uint8_t nonce[8] = {1, 2, 3, 4, 5, 6, 7, 8};
		if (bench_hid_xfer(fd, 0xffffffffu, 0x86, nonce, 8, resp, BENCH_HID_MAX,
				   &resp_len) != PKS_OK ||
		    resp_len < 12)
			goto out;
		cid = (uint32_t)resp[8] << 24 | (uint32_t)resp[9] << 16 | (uint32_t)resp[10] << 8 |
		      resp[11];
	}
	/* kind 0 makeCredential, 1 getAssertion without presence, 2 with presence. */
	for (int kind = 0; kind < 3; kind++) {
		t = bench_now();
		for (int i = 0; i < rounds[kind]; i++) {
			req_len = bench_ctap_request(req, kind, (uint32_t)i);
			if (bench_hid_xfer(fd, cid, 0x90, req, req_len, resp, BENCH_HID_MAX,
					   &resp_len) != PKS_OK ||
			    resp_len < 1 || resp[0] != 0) {
				fprintf(stderr,
					"pksync-bench: CTAP request %d failed (status %d)\n", kind,
					resp_len ? resp[0] : -1);
				goto out;
			}
		}
		mean[kind] = (bench_now() - t) * 1000.0 / rounds[kind];
	}
	bench_add("ctap_get_assertion_ms", mean[1], "ms (full CTAPHID path, no prompt: up=false)");
	bench_add("ctap_get_assertion_confirmed_ms", mean[2],
		  "ms (with an instant pinentry script)");
	bench_add("ctap_make_credential_ms", mean[0],
		  "ms (ES256, with an instant pinentry script)");
	bench_add("ctap_make_credential_minus_prompt_ms", mean[0] - (mean[2] - mean[1]),
		  "ms (make minus the prompt's cost measured on getAssertion)");
	r = PKS_OK;
out:
	if (r != PKS_OK)
		fprintf(stderr, "pksync-bench: the security-key figures are left out (see %s)\n",
			d.log);
	if (fd >= 0)
		close(fd);
	free(resp);
	bench_dev_stop(&d);
	if (r == PKS_OK) {
		char *rm[] = {"/bin/rm", "-rf", root, NULL};
		bench_run(rm, 1);
	}
}

/*
 * The discovery and BLE figures need the network-namespace lab and the
 * simulated bluetoothd, which are Python programs in the source tree; they
 * live in tools/bench-lab, and --lab hands over to it with the other
 * arguments and this build directory, so there is one entry point. Returns
 * only when the exec failed.
 */
static int bench_exec_lab(const char *self, int argc, char **argv)
{
	char script[PATH_MAX], build[PATH_MAX];
	char **args = calloc((size_t)argc + 3, sizeof(*args));
	int n = 0;

	if (args == NULL)
		return 1;
	snprintf(script, sizeof(script), "%s/tools/bench-lab", PKSYNC_SOURCE_ROOT);
	/* This program is BUILD/tools/pksync-bench: two names off its real path. */
	if (realpath(self, build) == NULL)
		snprintf(build, sizeof(build), "%s", self);
	for (int up = 0; up < 2; up++) {
		char *slash = strrchr(build, '/');
		if (slash == NULL || slash == build) {
			snprintf(build, sizeof(build), "..");
			break;
		}
		*slash = '\0';
	}
	args[n++] = script;
	args[n++] = "--build";
	args[n++] = build;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--lab") != 0)
			args[n++] = argv[i];
	args[n] = NULL;
	execv(script, args);
	fprintf(stderr, "pksync-bench: cannot run %s: %s\n", script, strerror(errno));
	free(args);
	return 1;
}

int main(int argc, char **argv)
{
	size_t records = 10000, sync_records = 100000;
	int json = 0;
	bool only_authn = false, only_first_sync = false;

	if (sodium_init() < 0)
		return 1;
	if (argc == 4 && strcmp(argv[1], "--make-cxf") == 0) {
		long n = strtol(argv[2], NULL, 10);
		if (n <= 0 || n > 100000) {
			fprintf(stderr, "pksync-bench: N must be 1..100000\n");
			return 2;
		}
		return bench_make_cxf((size_t)n, argv[3]) == PKS_OK ? 0 : 1;
	}
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--lab") == 0)
			return bench_exec_lab(argv[0], argc, argv);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if (strcmp(argv[i], "--records") == 0 && i + 1 < argc) {
			long n = strtol(argv[++i], NULL, 10);
			if (n <= 0 || n > 100000) {
				fprintf(stderr, "pksync-bench: --records must be 1..100000\n");
				return 2;
			}
			records = (size_t)n;
		} else if (strcmp(argv[i], "--sync-records") == 0 && i + 1 < argc) {
			long n = strtol(argv[++i], NULL, 10);
			if (n < 100 || n > 100000) {
				fprintf(stderr,
					"pksync-bench: --sync-records must be 100..100000\n");
				return 2;
			}
			sync_records = (size_t)n;
		} else if (strcmp(argv[i], "--only-authn") == 0) {
			only_authn = true;
		} else if (strcmp(argv[i], "--only-first-sync") == 0) {
			only_first_sync = true;
		} else {
			fprintf(stderr,
				"usage: pksync-bench [--json] [--records N] [--sync-records N] "
				"[--only-authn | --only-first-sync]\n"
				"       pksync-bench --make-cxf N FILE\n"
				"       pksync-bench --lab [--json] [tools/bench-lab options]\n");
			return 2;
		}
	}
	if (only_authn) {
		/* The security-key figures alone (a quick look while working on it). */
		bench_find_binaries(argv[0]);
		bench_authn();
		bench_print(json);
		return 0;
	}
	if (only_first_sync) {
		bench_ed25519_verify();
		bench_find_binaries(argv[0]);
		bench_sync_first(10000);
		bench_print(json);
		return 0;
	}
	bench_x25519();
	bench_noise();
	if (nresults == 2)
		/* Per handshake pair: 2 key generations and 3 DHs on each side = 10 X25519. */
		bench_add("noise_handshake_vs_x25519_limit",
			  results[1].value * 10.0 / results[0].value, "fraction of DH-bound limit");
	bench_records();
	bench_ed25519_verify();
	bench_find_binaries(argv[0]);
	bench_agent(records);
	bench_authn();
	bench_sync_first(10000);
	bench_sync_devices(sync_records);
	bench_print(json);
	return 0;
}
