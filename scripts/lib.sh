# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, not executed).

# Builds use all cores but cap at the core count (the CI machine has 2).
LIBVIRTIO_JOBS=${LIBVIRTIO_JOBS:-$(nproc 2>/dev/null || echo 2)}

banner() {
  local line="=================================================================="
  printf '\n%s\n== %s\n%s\n' "$line" "$*" "$line"
}

die() {
  printf '\nERROR: %s\n' "$*" >&2
  exit 1
}
