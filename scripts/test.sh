#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), then runs every check
# and every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- system packages the end-to-end tests drive (real clients, real servers) -------------
DEBS=(curl openssl nghttp2-client wrk git nginx-light haproxy)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- cargo tools --------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --bins

step "tests"
cargo test --workspace -- --test-threads="${TEST_THREADS:-2}"

step "fuzz smoke (YAML loader, validator)"
if rustup toolchain list | grep -q nightly; then
  (cd tenants/fuzz &&
    for t in yaml validate; do
      mkdir -p "corpus/$t"
      cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="${FUZZ_SECONDS:-20}" 2>&1 | tail -n 1
    done)
else
  echo "no nightly toolchain: fuzz smoke skipped" >&2
  exit 1
fi

step "ok"
