/*
 * pksync-bench: prints the figures that show the design is right, as ratios
 * measured in one run on one machine (these machines are shared and noisy,
 * so no figure here is a pass/fail test).
 *
 *   pksync-bench [--json] [--records N]     run every benchmark
 *   pksync-bench --make-cxf N FILE          write N fresh passkeys as CXF
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/export.h"
#include "agent/import.h"
#include "agent/passkey.h"
#include "common/err.h"
#include "proto/noise.h"
#include "proto/record.h"

struct bench_result {
	const char *name;
	double value;
	const char *unit;
};

static struct bench_result results[32];
static size_t nresults;

static void bench_add(const char *name, double value, const char *unit)
{
	if (nresults < sizeof(results) / sizeof(results[0]))
		results[nresults++] = (struct bench_result){name, value, unit};
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

static int bench_make_items(size_t n, struct passkey_item **out)
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
		snprintf(buf, sizeof(buf), "site%zu.example", i % 997);
		it->rp_id = strdup(buf);
		snprintf(buf, sizeof(buf), "user%zu", i);
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

static int bench_make_cxf(size_t n, const char *path)
{
	struct passkey_item *items = NULL;
	char *json = NULL;
	FILE *f = NULL;
	int r = bench_make_items(n, &items);

	if (r == PKS_OK)
		r = export_cxf(items, n, "pksync-bench", (uint64_t)time(NULL), &json);
	if (r == PKS_OK) {
		f = fopen(path, "w");
		if (f == NULL || fputs(json, f) < 0)
			r = PKS_ERR_IO;
		if (f != NULL && fclose(f) != 0)
			r = PKS_ERR_IO;
	}
	if (json != NULL) {
		sodium_memzero(json, strlen(json));
		free(json);
	}
	bench_free_items(items, n);
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
	if (bench_make_items(1, &items) != PKS_OK || (v = record_version_new()) == NULL)
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

static void bench_agent(const char *self, size_t records)
{
	char bin_dir[PATH_MAX], agent[PATH_MAX + 32], cli[PATH_MAX + 32];
	char state[128], cxf[128], sock[160];
	char *slash;
	pid_t pid;
	double t0;
	int rc;

	snprintf(bin_dir, sizeof(bin_dir), "%s", self);
	slash = strrchr(bin_dir, '/');
	if (slash == NULL)
		snprintf(bin_dir, sizeof(bin_dir), ".");
	else
		*slash = '\0';
	snprintf(agent, sizeof(agent), "%s/../agent/pksync-agent", bin_dir);
	snprintf(cli, sizeof(cli), "%s/pksync", bin_dir);
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

static void bench_print(int json)
{
	if (json) {
		printf("{");
		for (size_t i = 0; i < nresults; i++)
			printf("%s\"%s\": %.6g", i ? ", " : "", results[i].name, results[i].value);
		printf("}\n");
		return;
	}
	for (size_t i = 0; i < nresults; i++)
		printf("%-34s %14.2f %s\n", results[i].name, results[i].value, results[i].unit);
}

int main(int argc, char **argv)
{
	size_t records = 10000;
	int json = 0;

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
		} else {
			fprintf(stderr, "usage: pksync-bench [--json] [--records N]\n"
					"       pksync-bench --make-cxf N FILE\n");
			return 2;
		}
	}
	bench_x25519();
	bench_noise();
	if (nresults == 2)
		/* Per handshake pair: 2 key generations and 3 DHs on each side = 10 X25519. */
		bench_add("noise_handshake_vs_x25519_limit",
			  results[1].value * 10.0 / results[0].value, "fraction of DH-bound limit");
	bench_records();
	bench_agent(argv[0], records);
	bench_print(json);
	return 0;
}
