#!/usr/bin/env bash
# Checks that every tracked C/C++ file is formatted by clang-format with the
# committed .clang-format (CI runs this first: a formatting slip fails in
# seconds, before the builds).
#
#   bash scripts/check-format.sh          # check; list the files that differ
#   bash scripts/check-format.sh --fix    # reformat them in place
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
case ${1:-} in
  --fix) fix=1 ;;
  "") ;;
  *) echo "usage: $0 [--fix]" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null || { echo "clang-format is not installed (scripts/install-deps.sh)" >&2; exit 1; }

mapfile -t files < <(git ls-files '*.h' '*.cc' '*.c' '*.cpp')
if [[ $fix == 1 ]]; then
  printf '%s\0' "${files[@]}" | xargs -0 -n 32 clang-format -i
  echo "check-format: formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not clang-formatted:"
  printf '  %s\n' "${bad[@]}"
  echo "fix with: bash scripts/check-format.sh --fix   (or clang-format -i FILE)"
  exit 1
fi
echo "check-format: all ${#files[@]} C/C++ files formatted ($(clang-format --version))"
