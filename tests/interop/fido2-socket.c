/*
 * libfido2 (1.12) as the client of pksync-agent's --ctaphid-socket: the agent
 * is driven exactly as a browser linked with libfido2 drives a USB key, with
 * libfido2's own CTAPHID framing, CBOR encoding and verification. Only the
 * four HID I/O functions are ours: they carry 64-byte reports over a Unix
 * SOCK_SEQPACKET socket instead of a hidraw node.
 *
 *   fido2-socket PATH make RP USER [--alg es256|eddsa] [--pubkey-out FILE]
 *	makes a resident credential, prints it (fmt, authdata, flags,
 *	sigcount, x5c, id, user_id, pubkey) one "key: value" per line,
 *	checks it (attestation signature when there is one, rp id hash and UP
 *	flag always) and writes the public key as PEM to FILE.
 *   fido2-socket PATH assert RP CRED_ID_B64|- PUBKEY_FILE [--alg es256|eddsa]
 *	gets an assertion (allowList of CRED_ID, or none with "-") and
 *	verifies every one returned with fido_assert_verify against the key.
 *
 * Exit status: 0 when everything was made and verified, 1 when libfido2 or
 * the verification failed (the libfido2 error is printed as
 * "error: NAME (0xNN)" so a test can check which CTAP error it was), 2 for a
 * usage error.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fido.h>
#include <fido/eddsa.h>
#include <fido/es256.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define REPORT_LEN 64
/* libfido2 passes -1 ("wait for ever") while a request is pending; a test
   must never wait for ever, so a read gives up after this long. */
#define READ_CAP_MS 60000
#define TIMEOUT_MS 45000
#define CRED_ID_MAX 1024

struct socket_handle {
	int fd;
};

static void *socket_open(const char *path)
{
	struct sockaddr_un sa;
	struct socket_handle *h = NULL;
	int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "socket path too long\n");
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("socket");
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		goto out;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		goto out;
	h->fd = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return h;
}

static void socket_close(void *handle)
{
	struct socket_handle *h = handle;

	if (h == NULL)
		return;
	close(h->fd);
	free(h);
}

/* One input report; libfido2 asks for exactly rx_len (64) bytes. */
static int socket_read(void *handle, unsigned char *buf, size_t len, int ms)
{
	struct socket_handle *h = handle;
	struct pollfd pfd = {.fd = h->fd, .events = POLLIN};
	unsigned char report[REPORT_LEN + 1];
	ssize_t n;
	int r;

	if (ms < 0 || ms > READ_CAP_MS)
		ms = READ_CAP_MS;
	do {
		r = poll(&pfd, 1, ms);
	} while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	n = recv(h->fd, report, sizeof(report), 0);
	if (n != REPORT_LEN || len < REPORT_LEN)
		return -1;
	memcpy(buf, report, REPORT_LEN);
	return REPORT_LEN;
}

/* libfido2 writes a report id byte (0) before the 64-byte report, as for
   hidraw; the socket carries the report alone. */
static int socket_write(void *handle, const unsigned char *buf, size_t len)
{
	struct socket_handle *h = handle;
	ssize_t n;

	if (len != REPORT_LEN + 1 || buf[0] != 0)
		return -1;
	n = send(h->fd, buf + 1, REPORT_LEN, MSG_NOSIGNAL);
	if (n != REPORT_LEN)
		return -1;
	return (int)len;
}

static char *b64url_encode(const unsigned char *data, size_t len)
{
	char *s = malloc(4 * ((len + 2) / 3) + 1);
	size_t i, n;

	if (s == NULL)
		return NULL;
	n = (size_t)EVP_EncodeBlock((unsigned char *)s, data, (int)len);
	while (n > 0 && s[n - 1] == '=')
		n--;
	s[n] = '\0';
	for (i = 0; i < n; i++) {
		if (s[i] == '+')
			s[i] = '-';
		else if (s[i] == '/')
			s[i] = '_';
	}
	return s;
}

/* Base64 or base64url, padded or not. Returns the length, -1 if bad. */
static int b64_decode(const char *in, unsigned char *out, size_t cap)
{
	size_t len = strlen(in), i, padded;
	char *s = NULL;
	unsigned char *tmp = NULL;
	int n, r = -1;

	if (len == 0 || len > 4 * CRED_ID_MAX)
		goto out;
	padded = (len + 3) / 4 * 4;
	s = calloc(1, padded + 1);
	tmp = malloc(padded);
	if (s == NULL || tmp == NULL)
		goto out;
	for (i = 0; i < len; i++)
		s[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	for (; i < padded; i++)
		s[i] = '=';
	n = EVP_DecodeBlock(tmp, (unsigned char *)s, (int)padded);
	if (n < 0)
		goto out;
	/* EVP_DecodeBlock counts padding as zero bytes. */
	if (s[padded - 1] == '=')
		n--;
	if (s[padded - 2] == '=')
		n--;
	if (n <= 0 || (size_t)n > cap)
		goto out;
	memcpy(out, tmp, (size_t)n);
	r = n;
out:
	free(s);
	free(tmp);
	return r;
}

static void print_b64(const char *key, const unsigned char *data, size_t len)
{
	char *s = b64url_encode(data, len);

	printf("%s: %s\n", key, s != NULL ? s : "?");
	free(s);
}

static int parse_alg(const char *name)
{
	if (strcmp(name, "es256") == 0)
		return COSE_ES256;
	if (strcmp(name, "eddsa") == 0)
		return COSE_EDDSA;
	return 0;
}

static fido_dev_t *open_dev(const char *path)
{
	static const fido_dev_io_t io = {socket_open, socket_close, socket_read, socket_write};
	fido_dev_t *dev = fido_dev_new();
	int r;

	if (dev == NULL)
		return NULL;
	if ((r = fido_dev_set_io_functions(dev, &io)) != FIDO_OK ||
	    (r = fido_dev_set_timeout(dev, TIMEOUT_MS)) != FIDO_OK ||
	    (r = fido_dev_open(dev, path)) != FIDO_OK) {
		printf("error: open %s (0x%02x)\n", fido_strerr(r), r);
		fido_dev_free(&dev);
		return NULL;
	}
	printf("device: protocol %u, version %u.%u.%u, caps 0x%02x, fido2 %s\n",
	       fido_dev_protocol(dev), fido_dev_major(dev), fido_dev_minor(dev),
	       fido_dev_build(dev), fido_dev_flags(dev), fido_dev_is_fido2(dev) ? "yes" : "no");
	return dev;
}

/* The first 32 bytes of authenticator data are SHA-256 of the rp id. */
static bool rp_id_hash_ok(const char *rp, const unsigned char *authdata, size_t len)
{
	unsigned char h[SHA256_DIGEST_LENGTH];

	if (len < 37)
		return false;
	SHA256((const unsigned char *)rp, strlen(rp), h);
	return memcmp(h, authdata, sizeof(h)) == 0;
}

static int write_pubkey_pem(const fido_cred_t *cred, const char *file)
{
	const unsigned char *pk = fido_cred_pubkey_ptr(cred);
	size_t pk_len = fido_cred_pubkey_len(cred);
	es256_pk_t *es = NULL;
	eddsa_pk_t *ed = NULL;
	EVP_PKEY *pkey = NULL;
	FILE *f = NULL;
	int r = -1;

	switch (fido_cred_type(cred)) {
	case COSE_ES256:
		if ((es = es256_pk_new()) == NULL || es256_pk_from_ptr(es, pk, pk_len) != FIDO_OK ||
		    (pkey = es256_pk_to_EVP_PKEY(es)) == NULL)
			goto out;
		break;
	case COSE_EDDSA:
		if ((ed = eddsa_pk_new()) == NULL || eddsa_pk_from_ptr(ed, pk, pk_len) != FIDO_OK ||
		    (pkey = eddsa_pk_to_EVP_PKEY(ed)) == NULL)
			goto out;
		break;
	default:
		goto out;
	}
	if ((f = fopen(file, "w")) == NULL || PEM_write_PUBKEY(f, pkey) != 1)
		goto out;
	r = 0;
out:
	if (f != NULL && fclose(f) != 0)
		r = -1;
	EVP_PKEY_free(pkey);
	es256_pk_free(&es);
	eddsa_pk_free(&ed);
	return r;
}

static int cmd_make(const char *path, const char *rp, const char *user, int alg,
		    const char *pubkey_out)
{
	unsigned char cdh[32], user_id[16];
	fido_dev_t *dev = NULL;
	fido_cred_t *cred = NULL;
	const char *fmt;
	int r, ret = 1;

	if (RAND_bytes(cdh, sizeof(cdh)) != 1 || RAND_bytes(user_id, sizeof(user_id)) != 1)
		goto out;
	if ((dev = open_dev(path)) == NULL)
		goto out;
	if ((cred = fido_cred_new()) == NULL)
		goto out;
	if ((r = fido_cred_set_type(cred, alg)) != FIDO_OK ||
	    (r = fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh))) != FIDO_OK ||
	    (r = fido_cred_set_rp(cred, rp, "Example")) != FIDO_OK ||
	    (r = fido_cred_set_user(cred, user_id, sizeof(user_id), user, user, NULL)) != FIDO_OK ||
	    (r = fido_cred_set_rk(cred, FIDO_OPT_TRUE)) != FIDO_OK) {
		printf("error: set %s (0x%02x)\n", fido_strerr(r), r);
		goto out;
	}
	if ((r = fido_dev_make_cred(dev, cred, NULL)) != FIDO_OK) {
		printf("error: %s (0x%02x)\n", fido_strerr(r), r);
		goto out;
	}
	fmt = fido_cred_fmt(cred);
	printf("fmt: %s\n", fmt != NULL ? fmt : "(none)");
	print_b64("authdata", fido_cred_authdata_raw_ptr(cred), fido_cred_authdata_raw_len(cred));
	printf("flags: 0x%02x\n", fido_cred_flags(cred));
	printf("sigcount: %u\n", fido_cred_sigcount(cred));
	if (fido_cred_x5c_len(cred) == 0)
		printf("x5c: none\n");
	else
		printf("x5c: %zu bytes\n", fido_cred_x5c_len(cred));
	print_b64("id", fido_cred_id_ptr(cred), fido_cred_id_len(cred));
	print_b64("user_id", user_id, sizeof(user_id));
	printf("type: %d\n", fido_cred_type(cred));
	print_b64("pubkey", fido_cred_pubkey_ptr(cred), fido_cred_pubkey_len(cred));

	if (!rp_id_hash_ok(rp, fido_cred_authdata_raw_ptr(cred),
			   fido_cred_authdata_raw_len(cred))) {
		printf("error: rp id hash differs\n");
		goto out;
	}
	if (!(fido_cred_flags(cred) & 0x01)) {
		printf("error: UP flag not set\n");
		goto out;
	}
	if (fido_cred_type(cred) != alg) {
		printf("error: credential type %d, asked %d\n", fido_cred_type(cred), alg);
		goto out;
	}
	/* An attestation signature is checked when there is one: with an x5c
	   against the certificate, else (self attestation) against the new
	   key. "none" carries no signature: the assertion test then shows the
	   key works. */
	if (fmt != NULL && strcmp(fmt, "none") == 0) {
		printf(
		    "verify: none (no attestation statement; rp id hash, UP and type checked)\n");
	} else if (fido_cred_x5c_len(cred) > 0) {
		r = fido_cred_verify(cred);
		printf("verify: %s (fido_cred_verify: %s)\n", r == FIDO_OK ? "ok" : "failed",
		       fido_strerr(r));
		if (r != FIDO_OK)
			goto out;
	} else {
		r = fido_cred_verify_self(cred);
		printf("verify: %s (fido_cred_verify_self: %s)\n", r == FIDO_OK ? "ok" : "failed",
		       fido_strerr(r));
		if (r != FIDO_OK)
			goto out;
	}
	if (pubkey_out != NULL && write_pubkey_pem(cred, pubkey_out) != 0) {
		printf("error: cannot write %s\n", pubkey_out);
		goto out;
	}
	ret = 0;
out:
	fido_cred_free(&cred);
	if (dev != NULL) {
		fido_dev_close(dev);
		fido_dev_free(&dev);
	}
	return ret;
}

static int load_pubkey(const char *file, int alg, void **pk)
{
	FILE *f = fopen(file, "r");
	EVP_PKEY *pkey = NULL;
	es256_pk_t *es = NULL;
	eddsa_pk_t *ed = NULL;
	int r = -1;

	if (f == NULL || (pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL)) == NULL)
		goto out;
	if (alg == COSE_ES256) {
		if ((es = es256_pk_new()) == NULL || es256_pk_from_EVP_PKEY(es, pkey) != FIDO_OK)
			goto out;
		*pk = es;
		es = NULL;
	} else {
		if ((ed = eddsa_pk_new()) == NULL || eddsa_pk_from_EVP_PKEY(ed, pkey) != FIDO_OK)
			goto out;
		*pk = ed;
		ed = NULL;
	}
	r = 0;
out:
	if (f != NULL)
		fclose(f);
	EVP_PKEY_free(pkey);
	es256_pk_free(&es);
	eddsa_pk_free(&ed);
	return r;
}

static int cmd_assert(const char *path, const char *rp, const char *cred_b64,
		      const char *pubkey_file, int alg)
{
	unsigned char cdh[32], id[CRED_ID_MAX];
	fido_dev_t *dev = NULL;
	fido_assert_t *as = NULL;
	void *pk = NULL;
	size_t i;
	int r, id_len = 0, ret = 1;

	if (RAND_bytes(cdh, sizeof(cdh)) != 1)
		goto out;
	if (strcmp(cred_b64, "-") != 0 && (id_len = b64_decode(cred_b64, id, sizeof(id))) < 0) {
		printf("error: bad credential id\n");
		ret = 2;
		goto out;
	}
	if (load_pubkey(pubkey_file, alg, &pk) != 0) {
		printf("error: cannot read the public key %s\n", pubkey_file);
		ret = 2;
		goto out;
	}
	if ((dev = open_dev(path)) == NULL || (as = fido_assert_new()) == NULL)
		goto out;
	if ((r = fido_assert_set_rp(as, rp)) != FIDO_OK ||
	    (r = fido_assert_set_clientdata_hash(as, cdh, sizeof(cdh))) != FIDO_OK ||
	    (r = fido_assert_set_up(as, FIDO_OPT_TRUE)) != FIDO_OK ||
	    (id_len > 0 && (r = fido_assert_allow_cred(as, id, (size_t)id_len)) != FIDO_OK)) {
		printf("error: set %s (0x%02x)\n", fido_strerr(r), r);
		goto out;
	}
	if ((r = fido_dev_get_assert(dev, as, NULL)) != FIDO_OK) {
		printf("error: %s (0x%02x)\n", fido_strerr(r), r);
		goto out;
	}
	printf("count: %zu\n", fido_assert_count(as));
	if (fido_assert_count(as) == 0) {
		printf("error: no assertion\n");
		goto out;
	}
	for (i = 0; i < fido_assert_count(as); i++) {
		print_b64("id", fido_assert_id_ptr(as, i), fido_assert_id_len(as, i));
		print_b64("user_id", fido_assert_user_id_ptr(as, i),
			  fido_assert_user_id_len(as, i));
		printf("flags: 0x%02x\n", fido_assert_flags(as, i));
		printf("sigcount: %u\n", fido_assert_sigcount(as, i));
		if (id_len > 0 && (fido_assert_id_len(as, i) != (size_t)id_len ||
				   memcmp(fido_assert_id_ptr(as, i), id, (size_t)id_len) != 0)) {
			printf("error: assertion %zu names another credential\n", i);
			goto out;
		}
	}
	/* Only the credential the key belongs to can verify; with no allowList
	   the key file names which one the caller means. */
	for (i = 0; i < fido_assert_count(as); i++) {
		r = fido_assert_verify(as, i, alg, pk);
		printf("verify %zu: %s (fido_assert_verify: %s)\n", i,
		       r == FIDO_OK ? "ok" : "failed", fido_strerr(r));
		if (r == FIDO_OK)
			ret = 0;
	}
	if (ret != 0)
		printf("error: no assertion verified\n");
out:
	if (alg == COSE_ES256) {
		es256_pk_t *es = pk;
		es256_pk_free(&es);
	} else {
		eddsa_pk_t *ed = pk;
		eddsa_pk_free(&ed);
	}
	fido_assert_free(&as);
	if (dev != NULL) {
		fido_dev_close(dev);
		fido_dev_free(&dev);
	}
	return ret;
}

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: fido2-socket PATH make RP USER [--alg es256|eddsa] [--pubkey-out FILE]\n"
	    "       fido2-socket PATH assert RP CRED_ID_B64|- PUBKEY_FILE [--alg es256|eddsa]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *pubkey_out = NULL;
	int alg = COSE_ES256, nargs, i, ret;

	if (argc < 3)
		return usage();
	nargs = strcmp(argv[2], "make") == 0 ? 5 : strcmp(argv[2], "assert") == 0 ? 6 : 0;
	if (nargs == 0 || argc < nargs)
		return usage();
	for (i = nargs; i < argc; i++) {
		if (strcmp(argv[i], "--alg") == 0 && i + 1 < argc) {
			alg = parse_alg(argv[++i]);
			if (alg == 0)
				return usage();
		} else if (strcmp(argv[i], "--pubkey-out") == 0 && i + 1 < argc) {
			pubkey_out = argv[++i];
		} else {
			return usage();
		}
	}
	fido_init(getenv("FIDO2_SOCKET_DEBUG") != NULL ? FIDO_DEBUG : 0);
	if (nargs == 5)
		ret = cmd_make(argv[1], argv[3], argv[4], alg, pubkey_out);
	else
		ret = cmd_assert(argv[1], argv[3], argv[4], argv[5], alg);
	fflush(stdout);
	return ret;
}
