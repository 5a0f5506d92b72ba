/*
 * Logging goes through a callback the agent supplies, so proto and transport
 * never decide where text ends up. Messages must never contain keys, codes,
 * credential ids, user names or payloads.
 */
#ifndef PKS_LOG_H
#define PKS_LOG_H

enum pks_log_level {
	PKS_LOG_ERROR,
	PKS_LOG_WARN,
	PKS_LOG_INFO,
	PKS_LOG_DEBUG,
};

typedef void (*pks_log_fn)(void *user_data, enum pks_log_level level, const char *msg);

/* A plain value: a callback and its context. A NULL fn discards messages. */
struct pks_logger {
	pks_log_fn fn;
	void *user_data;
};

/* Formats and forwards one message; lg may be NULL. */
void pks_log(const struct pks_logger *lg, enum pks_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A pks_log_fn that writes "pksync: LEVEL: msg" lines to stderr; user_data unused. */
void pks_log_stderr(void *user_data, enum pks_log_level level, const char *msg);

const char *pks_log_level_name(enum pks_log_level level);

#endif
