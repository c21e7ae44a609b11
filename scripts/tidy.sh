#!/usr/bin/env bash
# Runs clang-tidy (the committed .clang-tidy) over the project's sources with
# every enabled check as an error.
#
#   bash scripts/tidy.sh [-p BUILD_DIR] [--all | --since REV | FILE...]
#
# Default set: the library's and the glues' own translation units
# (libvirtio/src, glue/**, not tests, fuzzers or benchmarks); the library's
# headers are checked through them (HeaderFilterRegex). --since REV checks
# the .cc files changed since REV instead; --all every .cc file in the tree
# (tests too: about 15 CPU-minutes). BUILD_DIR (default build/release) must
# hold compile_commands.json: configure it first (CI runs this after the
# release build). Files the build does not compile (another preset's, or a
# glue switched off) are skipped with a note.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

build=build/release
mode=default
files=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -p) build=$2; shift 2 ;;
    --all) mode=all; shift ;;
    --since) mode=since; since=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) mode=files; files+=("$1"); shift ;;
  esac
done
db=$build/compile_commands.json
[[ -f $db ]] || die "no $db: configure that build first (cmake --preset release)"
command -v clang-tidy >/dev/null || die "clang-tidy is not installed (scripts/install-deps.sh)"

case $mode in
  default) mapfile -t files < <(git ls-files 'libvirtio/src/*.cc' 'glue/*.cc' |
                                 grep -Ev '(^|/)tests?/|_test\.cc$|/guest/|/sim/') ;;
  all) mapfile -t files < <(git ls-files '*.cc') ;;
  since)
    git rev-parse -q --verify "$since^{commit}" >/dev/null ||
      die "tidy: $since is not a commit in this clone (shallow clone?)"
    mapfile -t files < <(git diff --name-only --diff-filter=AMR "$since" -- '*.cc')
    echo "tidy: ${#files[@]} .cc file(s) changed since ${since:0:12}" ;;
esac

# Only what this build compiles has flags to check with.
compiled=$(python3 -c 'import json,sys,os; print("\n".join(os.path.relpath(e["file"]) for e in json.load(open(sys.argv[1]))))' "$db")
todo=()
for f in "${files[@]}"; do
  if grep -qxF "$f" <<<"$compiled"; then todo+=("$f"); else echo "tidy: skipping $f (not compiled in $build)"; fi
done
[[ ${#todo[@]} -gt 0 ]] || { echo "tidy: nothing to check"; exit 0; }

start=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT
printf '%s\0' "${todo[@]}" |
  xargs -0 -P "$LIBVIRTIO_JOBS" -n 1 clang-tidy -p "$build" --quiet --warnings-as-errors='*' \
  >"$log" 2>&1 || true
errors=$(grep -cE '(warning|error): .*\[[a-z0-9.,-]+\]$' "$log" || true)
if [[ $errors -gt 0 ]]; then
  grep -E -A3 '(warning|error): .*\[[a-z0-9.,-]+\]$' "$log"
  echo "tidy: $errors finding(s) in ${#todo[@]} files ($((SECONDS - start)) s)"
  exit 1
fi
echo "tidy: ${#todo[@]} files clean ($((SECONDS - start)) s, $(clang-tidy --version | grep -o 'version [0-9.]*'))"
