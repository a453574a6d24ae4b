# shellcheck shell=bash
# Sourced by scripts/release-build.sh and bench/pgo.sh: how a release build of gatehouse uses
# the committed profile, and where llvm-profdata comes from.

# pgo_rustflags: RUSTFLAGS for a release build — the caller's own, then the profile by its
# absolute path (rustc runs each crate from its own folder). Without the profile flags when
# GATEHOUSE_PGO=0 or the profile is missing: a plain release build. A function whose code
# changed since the profile was recorded is built without it; LLVM's warning about that is
# off, since it would name every such function on every build.
pgo_rustflags() {
  local root profile
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  profile=$root/packaging/pgo/gatehouse.profdata
  printf '%s' "${RUSTFLAGS:-}"
  if [ "${GATEHOUSE_PGO:-1}" != 0 ] && [ -f "$profile" ]; then
    case "$profile" in *[[:space:]]*)
      # RUSTFLAGS splits on whitespace.
      echo "the checkout's path has a space; set GATEHOUSE_PGO=0 or move it: $root" >&2
      return 1 ;;
    esac
    printf -- '%s-Cprofile-use=%s -Cllvm-args=-no-pgo-warn-mismatch' "${RUSTFLAGS:+ }" "$profile"
  fi
}

# llvm_profdata: the llvm-profdata of the LLVM major version rustc is built on (a profile is
# read by the LLVM that wrote its format), installed from Debian when missing.
llvm_profdata() {
  local major
  major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  if ! command -v "llvm-profdata-$major" >/dev/null; then
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null
  fi
  command -v "llvm-profdata-$major"
}
