/* Project-wide error codes: 0 is success, every failure is negative. */
#ifndef PKS_ERR_H
#define PKS_ERR_H

/*
 * One list, expanded into the enum and into pks_strerror(), so a code and its
 * sentence can never drift apart.
 */
#define PKS_ERRORS(X)                                                                              \
	X(INTERNAL, -1, "internal error")                                                          \
	X(NOMEM, -2, "out of memory")                                                              \
	X(INVALID, -3, "invalid argument")                                                         \
	X(MALFORMED, -4, "malformed input")                                                        \
	X(TOO_LARGE, -5, "input exceeds a size limit")                                             \
	X(TRUNCATED, -6, "input is truncated")                                                     \
	X(CRYPTO, -7, "cryptographic operation failed")                                            \
	X(AUTH, -8, "authentication failed")                                                       \
	X(NOT_FOUND, -9, "not found")                                                              \
	X(EXISTS, -10, "already exists")                                                           \
	X(IO, -11, "input/output error")                                                           \
	X(STATE, -12, "operation not valid in the current state")                                  \
	X(UNSUPPORTED, -13, "not supported")                                                       \
	X(LOCKED, -14, "the vault is locked")                                                      \
	X(PERM, -15, "permission denied")                                                          \
	X(BUSY, -16, "resource busy, try again later")                                             \
	X(TIMEOUT, -17, "timed out")                                                               \
	X(CLOSED, -18, "connection closed")                                                        \
	X(DB, -19, "database error")                                                               \
	X(PASSPHRASE, -20, "wrong passphrase")                                                     \
	X(AMBIGUOUS, -21, "ambiguous identifier")                                                  \
	X(NONCANONICAL, -22, "non-canonical encoding")                                             \
	X(REJECTED, -23, "rejected by merge rules")                                                \
	X(PENDING, -24, "waiting for missing parents")

enum pks_err {
	PKS_OK = 0,
#define PKS_ERR_ENUM(name, value, text) PKS_ERR_##name = (value),
	PKS_ERRORS(PKS_ERR_ENUM)
#undef PKS_ERR_ENUM
};

/* A static sentence for an error code; unknown codes get a generic sentence. */
const char *pks_strerror(int err);

/* The error code for an errno value (EACCES -> PKS_ERR_PERM, ...). */
int pks_err_from_errno(int errnum);

#endif
