#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), then runs every check
# and every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- system packages the end-to-end tests drive (real clients, real servers) -------------
# git servers for the sync agent's tests: git daemon and git http-backend (git), nginx +
# fcgiwrap for smart HTTP, sshd (openssh-server) for deploy keys; gnupg for OpenPGP
# signatures; libssl-dev and pkg-config to build libgit2's https and ssh transports.
DEBS=(curl openssl nghttp2-client wrk git nginx-light haproxy fcgiwrap openssh-server gnupg libssl-dev pkg-config)
# Packaging checks: a real systemd in a container, the Debian and RPM linters.
# Debian's Prometheus server scrapes the admin /metrics endpoint in the telemetry tests.
DEBS+=(prometheus)
# ss (iproute2) reads the gateway's upstream sockets' keepalive timers.
DEBS+=(iproute2)
# tinyproxy: the HTTP CONNECT proxy a DestinationRule `tunnel` goes through.
DEBS+=(tinyproxy)
# A virtualenv for aioquic, the HTTP/3 client.
DEBS+=(python3 python3-venv)
DEBS+=(systemd systemd-container debootstrap lintian rpm rpmlint binutils dpkg-dev)
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

# --- the HTTP/3 client of the e2e tests: aioquic from PyPI in a virtualenv under target/ ----
# (tests/e2e/harness/h3.rs runs target/h3venv/bin/python tests/e2e/h3client.py).
if ! target/h3venv/bin/python -c 'import aioquic' >/dev/null 2>&1; then
  step "installing aioquic (target/h3venv)"
  mkdir -p target
  python3 -m venv target/h3venv
  target/h3venv/bin/pip install -q 'aioquic>=1.2,<2'
fi

# --- cargo tools --------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# A clean clone builds everything once: incremental caches would only add gigabytes to target/.
export CARGO_INCREMENTAL=0
avail_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if ((avail_gb < 6)); then
  echo "warning: ${avail_gb} GB free here; a clean build and test run needs about 4 GB" >&2
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --bins

step "tests"
cargo test --workspace -- --test-threads="${TEST_THREADS:-2}"

# One packaging run at a time per target dir: the build replaces target/packages.
exec 8>target/.packaging.lock
flock 8
step "packages (deb, rpm), lintian, rpmlint, systemd-analyze"
packaging/build --upgrade-test
packaging/check

step "packages on a real systemd (nspawn): install, run, reload, upgrade and restart under load, purge"
packaging/test-nspawn.sh
flock -u 8

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
