#!/usr/bin/env bash
# Lint: the layers include only what is below them (DESIGN/STYLE layering).
#
#   common/     common/
#   proto/      common/ proto/
#   transport/  common/ transport/
#   agent/      common/ proto/ transport/ agent/
#   tools/      anything, except the CLI (tools/pksync*, tools/cli*):
#               common/ tools/ only -- it talks to the agent over the socket
#   tests/      anything
#
# Every `#include "..."` is resolved the way the compiler does it: first next
# to the including file, then from the repository root (the one include
# directory). Each violation is printed as file:line and the script fails.
#
# Usage: layering.sh [ROOT]   (ROOT defaults to the repository root)
set -euo pipefail

root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$root"

# Prints the folders that FILE (a path relative to the root) may include.
allowed_for() {
	case "$1" in
	common/*) echo "common" ;;
	proto/*) echo "common proto" ;;
	transport/*) echo "common transport" ;;
	agent/*) echo "common proto transport agent" ;;
	tools/pksync* | tools/cli*) echo "common tools" ;;
	tools/* | tests/*) echo "*" ;;
	esac
}

# Prints the top folder an include of TARGET from FILE lands in.
target_folder() {
	local file=$1 target=$2 dir resolved
	dir=$(dirname "$file")
	if [ -e "$dir/$target" ] || [[ $target != */* ]]; then
		# Next to the includer (also for a missing file without a folder).
		resolved=$(realpath -m --relative-to=. "$dir/$target")
	else
		resolved=$(realpath -m --relative-to=. "$target")
	fi
	case "$resolved" in
	*/*) echo "${resolved%%/*}" ;;
	*) echo "(root)" ;;
	esac
}

mapfile -t files < <(find common proto transport agent tools tests \
	\( -type d \( -name corpus -o -name build -o -name 'build-*' \) -prune \) -o \
	\( -type f \( -name '*.c' -o -name '*.h' \) -print \) 2>/dev/null | LC_ALL=C sort)
if [ ${#files[@]} -eq 0 ]; then
	echo "FAIL: no .c/.h files found in $root"
	exit 1
fi

violations=0
includes=0
for f in "${files[@]}"; do
	allowed=$(allowed_for "$f")
	[ "$allowed" = "*" ] && continue
	while IFS=: read -r line text; do
		target=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/' <<<"$text")
		includes=$((includes + 1))
		folder=$(target_folder "$f" "$target")
		if [[ " $allowed " != *" $folder "* ]]; then
			echo "$f:$line: includes \"$target\" ($folder/), but may include only: $allowed"
			violations=$((violations + 1))
		fi
	done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" || true)
done
echo "layering: ${#files[@]} files, $includes includes checked, $violations violations"
[ "$violations" -eq 0 ]
