#!/usr/bin/env bash
# `cargo build --release` with the profile-guided optimisation profile committed in
# packaging/pgo/ (bench/pgo.sh records it): the build packaging/build ships and bench/ measures.
# Arguments go to cargo (`-p appliance`, `--locked`, ...). GATEHOUSE_PGO=0 builds without it.
#
# Every release build in this repository goes through here: cargo rebuilds every crate when
# RUSTFLAGS change, so mixing this with a plain `cargo build --release` in one target folder
# rebuilds everything each time.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=packaging/pgo/profdata.sh
. packaging/pgo/profdata.sh
RUSTFLAGS=$(pgo_rustflags)
export RUSTFLAGS
exec cargo build --release "$@"
