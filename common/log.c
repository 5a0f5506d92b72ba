#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

const char *pks_log_level_name(enum pks_log_level level)
{
	switch (level) {
	case PKS_LOG_ERROR:
		return "error";
	case PKS_LOG_WARN:
		return "warning";
	case PKS_LOG_INFO:
		return "info";
	case PKS_LOG_DEBUG:
		return "debug";
	}
	return "log";
}

void pks_log(const struct pks_logger *lg, enum pks_log_level level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (lg == NULL || lg->fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lg->fn(lg->user_data, level, msg);
}

void pks_log_stderr(void *user_data, enum pks_log_level level, const char *msg)
{
	(void)user_data;
	fprintf(stderr, "pksync: %s: %s\n", pks_log_level_name(level), msg);
}
