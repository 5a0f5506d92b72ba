#!/usr/bin/env bash
# Lint: every .c/.h in the source folders must be left unchanged by
# clang-format 14 with the repository's .clang-format. Prints a short diff
# for each file that is not, and fails.
#
# Usage: clang-format.sh [ROOT]   (ROOT defaults to the repository root)
# Exit: 0 clean, 1 unformatted files (or no files found), 77 skip (no
# clang-format 14).
set -euo pipefail

root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$root"
dirs=(common proto transport agent tools tests)

# Other major versions format differently; a wrong verdict is worse than none.
formatter=
for candidate in clang-format-14 clang-format; do
	if command -v "$candidate" >/dev/null &&
		"$candidate" --version | grep -Eq 'version 14\.'; then
		formatter=$candidate
		break
	fi
done
if [ -z "$formatter" ]; then
	echo "SKIP: clang-format 14 not found (tools/setup-deps installs it)"
	exit 77
fi
if [ ! -f .clang-format ]; then
	echo "FAIL: no .clang-format in $root"
	exit 1
fi

existing=()
for d in "${dirs[@]}"; do
	[ -d "$d" ] && existing+=("$d")
done
# Fuzz corpora are data, and build folders hold generated files.
mapfile -t files < <(find "${existing[@]}" \
	\( -type d \( -name corpus -o -name build -o -name 'build-*' \) -prune \) -o \
	\( -type f \( -name '*.c' -o -name '*.h' \) -print \) | LC_ALL=C sort)
if [ ${#files[@]} -eq 0 ]; then
	echo "FAIL: no .c/.h files found under ${dirs[*]} in $root"
	exit 1
fi

bad=0
for f in "${files[@]}"; do
	if ! "$formatter" --style=file:.clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
		bad=$((bad + 1))
		echo "$f: not clang-formatted; run: clang-format -i $f"
		"$formatter" --style=file:.clang-format "$f" | diff -u "$f" - | sed -n '3,22p' | sed 's/^/    /' || true
	fi
done
echo "$formatter: ${#files[@]} files checked, $bad not formatted"
[ "$bad" -eq 0 ]
