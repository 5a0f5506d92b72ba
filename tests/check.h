/*
 * A tiny TAP test harness. Cases register with CHECK_CASE and run from
 * check_main(); CHECK_* macros print both sides on failure and mark the
 * current case failed without aborting the program. Never use assert():
 * NDEBUG would remove it.
 */
#ifndef PKS_CHECK_H
#define PKS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check_case {
	const char *name;
	void (*fn)(void);
};

extern int check_failed_current;

#define CHECK_FAIL_AT(...)                                                                         \
	do {                                                                                       \
		printf("# %s:%d: ", __FILE__, __LINE__);                                           \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
		check_failed_current = 1;                                                          \
	} while (0)

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			CHECK_FAIL_AT("CHECK(%s) failed", #cond);                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);                    \
		if (check_a_ != check_b_)                                                          \
			CHECK_FAIL_AT("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, check_a_,          \
				      check_b_);                                                   \
	} while (0)

#define CHECK_OK(expr)                                                                             \
	do {                                                                                       \
		int check_r_ = (expr);                                                             \
		if (check_r_ != 0)                                                                 \
			CHECK_FAIL_AT("CHECK_OK(%s): returned %d", #expr, check_r_);               \
	} while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
	do {                                                                                       \
		const char *check_a_ = (a), *check_b_ = (b);                                       \
		if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0)       \
			CHECK_FAIL_AT("CHECK_STR_EQ(%s, %s): \"%s\" != \"%s\"", #a, #b,            \
				      check_a_ ? check_a_ : "(null)",                              \
				      check_b_ ? check_b_ : "(null)");                             \
	} while (0)

#define CHECK_MEM_EQ(a, b, n)                                                                      \
	do {                                                                                       \
		if (memcmp((a), (b), (n)) != 0) {                                                  \
			CHECK_FAIL_AT("CHECK_MEM_EQ(%s, %s, %s) differ", #a, #b, #n);              \
			check_hexdump_("left ", (const unsigned char *)(a), (n));                  \
			check_hexdump_("right", (const unsigned char *)(b), (n));                  \
		}                                                                                  \
	} while (0)

static inline void check_hexdump_(const char *label, const unsigned char *p, size_t n)
{
	printf("#   %s: ", label);
	for (size_t i = 0; i < n && i < 64; i++)
		printf("%02x", p[i]);
	printf("%s\n", n > 64 ? "..." : "");
}

/*
 * Runs every case (or only those whose name contains argv[1]) and prints TAP.
 * Returns the process exit code.
 */
static inline int check_run(const struct check_case *cases, size_t n, int argc, char **argv)
{
	size_t planned = 0, failed = 0, k = 0;
	const char *filter = argc > 1 ? argv[1] : NULL;

	for (size_t i = 0; i < n; i++)
		if (filter == NULL || strstr(cases[i].name, filter) != NULL)
			planned++;
	printf("1..%zu\n", planned);
	for (size_t i = 0; i < n; i++) {
		if (filter != NULL && strstr(cases[i].name, filter) == NULL)
			continue;
		check_failed_current = 0;
		cases[i].fn();
		k++;
		printf("%s %zu %s\n", check_failed_current ? "not ok" : "ok", k, cases[i].name);
		if (check_failed_current)
			failed++;
		fflush(stdout);
	}
	return failed ? 1 : 0;
}

#define CHECK_MAIN(...)                                                                            \
	int check_failed_current;                                                                  \
	int main(int argc, char **argv)                                                            \
	{                                                                                          \
		static const struct check_case cases[] = {__VA_ARGS__};                            \
		return check_run(cases, sizeof(cases) / sizeof(cases[0]), argc, argv);             \
	}

#endif
