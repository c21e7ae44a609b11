#!/usr/bin/env bash
# Checks that every tracked C/C++ file is formatted by clang-format with the
# committed .clang-format (CI runs this first: a formatting slip fails in
# seconds, before the builds).
#
#   bash scripts/check-format.sh [--since REV]        # check; list the files that differ
#   bash scripts/check-format.sh [--since REV] --fix  # reformat them in place
#
# --since REV: only the files changed (added or modified) since REV. CI
# passes the commit in .ci/lint-base: everything changed after it must be
# formatted, while the older files are reformatted when they are next
# touched (a whole-tree reformat would rewrite 122 files at once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
since=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --fix) fix=1; shift ;;
    --since) since=${2:?--since needs a revision}; shift 2 ;;
    *) echo "usage: $0 [--since REV] [--fix]" >&2; exit 2 ;;
  esac
done
command -v clang-format >/dev/null || { echo "clang-format is not installed (scripts/install-deps.sh)" >&2; exit 1; }

if [[ -n $since ]]; then
  git rev-parse -q --verify "$since^{commit}" >/dev/null ||
    { echo "check-format: $since is not a commit in this clone (shallow clone?)" >&2; exit 1; }
  mapfile -t files < <(git diff --name-only --diff-filter=AMR "$since" -- '*.h' '*.cc' '*.c' '*.cpp')
  echo "check-format: ${#files[@]} C/C++ file(s) changed since ${since:0:12}"
else
  mapfile -t files < <(git ls-files '*.h' '*.cc' '*.c' '*.cpp')
fi
[[ ${#files[@]} -gt 0 ]] || { echo "check-format: nothing to check"; exit 0; }
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
