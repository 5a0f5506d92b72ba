#!/usr/bin/env bash
# The lints must be able to fail: run them on small temporary trees, one
# clean and some with a planted violation each, and check the verdicts and
# that each violation is reported at the right file:line. TAP output.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	sed 's/^/# /' "$tmp/out"
}

# Runs LINT on TREE; expects exit code WANT and (if given) PATTERN in its output.
expect() {
	local name=$1 lint=$2 tree=$3 want=$4 pattern=${5:-}
	local rc=0
	bash "$here/$lint" "$tree" >"$tmp/out" 2>&1 || rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "expected exit $want, got $rc" >>"$tmp/out"
		not_ok "$name"
	elif [ -n "$pattern" ] && ! grep -qF -- "$pattern" "$tmp/out"; then
		echo "expected output to contain: $pattern" >>"$tmp/out"
		not_ok "$name"
	else
		ok "$name"
	fi
}

# A small clean tree: every layer including only what it may.
clean=$tmp/clean
mkdir -p "$clean"/{common,proto,transport,agent,tools,tests/unit}
printf '#include <stddef.h>\nint common_x(void);\n' >"$clean/common/x.h"
printf '#include "common/x.h"\n#include "x.h"\n' >"$clean/common/y.h"
printf '#include "common/x.h"\n#include "proto/p.h"\n' >"$clean/proto/p.h"
printf '#include "common/x.h"\n#include "transport/t.h"\n' >"$clean/transport/t.h"
printf '#include "common/x.h"\n#include "proto/p.h"\n#include "transport/t.h"\n' >"$clean/agent/a.h"
printf '#include "common/x.h"\n#include "tools/cli.h"\n' >"$clean/tools/cli-vault.c"
printf '#include "common/x.h"\n' >"$clean/tools/cli.h"
printf '#include "common/x.h"\n#include "cli.h"\n' >"$clean/tools/pksync.c"
printf '#include "agent/a.h"\n' >"$clean/tools/bench.c"
printf '#include "agent/a.h"\n#include "tools/cli.h"\n' >"$clean/tests/unit/test-a.c"

expect "layering: clean tree passes" layering.sh "$clean" 0 "0 violations"

plant() {
	local name=$1 file=$2 text=$3 where=$4
	local tree=$tmp/$name
	rm -rf "$tree"
	cp -r "$clean" "$tree"
	printf '%b' "$text" >>"$tree/$file"
	expect "layering: $name is caught at $where" layering.sh "$tree" 1 "$where:"
}
plant common-up common/y.h '#include "proto/p.h"\n' common/y.h:3
plant common-tests common/x.h '#include "tests/check.h"\n' common/x.h:3
plant proto-transport proto/p.h '\n#  include "transport/t.h"\n' proto/p.h:4
plant transport-agent transport/t.h '#include "agent/a.h"\n' transport/t.h:3
plant agent-tools agent/a.h '#include "tools/cli.h"\n' agent/a.h:4
plant cli-agent tools/cli-vault.c '#include "agent/a.h"\n' tools/cli-vault.c:3
plant cli-main-proto tools/pksync.c '#include "proto/p.h"\n' tools/pksync.c:3
plant relative-escape common/y.h '#include "../agent/a.h"\n' common/y.h:3

# The clang-format lint: a formatted file passes, a planted mess fails.
fmt=$tmp/fmt
mkdir -p "$fmt/common" "$fmt/tests/fuzz/corpus/x"
cp "$repo/.clang-format" "$fmt/"
printf 'int common_x(int a)\n{\n\tif (a > 1)\n\t\treturn a;\n\treturn 0;\n}\n' >"$fmt/common/x.c"
# Corpus files are data and must not be checked.
printf 'int  ugly ( ){return 1;}\n' >"$fmt/tests/fuzz/corpus/x/seed.c"
rc=0
bash "$here/clang-format.sh" "$fmt" >"$tmp/out" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then
	n=$((n + 1))
	echo "ok $n - clang-format lint # SKIP $(head -n1 "$tmp/out")"
else
	expect "clang-format: formatted tree passes" clang-format.sh "$fmt" 0 "1 files checked, 0 not"
	printf 'int common_y(int a) { if (a) return 1; return 0; }\n' >"$fmt/common/y.c"
	expect "clang-format: planted mess is caught" clang-format.sh "$fmt" 1 "common/y.c: not clang-formatted"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
