#!/usr/bin/env bash
# The test command (CI's .ci/run calls exactly this). Works on a fresh machine: installs and
# starts what the tests need (Docker engine, the local busybox image, iproute2, iptables),
# then checks formatting and lints, builds the binaries the end-to-end tests drive, and runs
# every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
# wg (wireguard-tools): overlay/tests/two_namespaces.rs checks `wg show` with it. Without
# recommends, which would pull in a kernel image.
command -v wg >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-tools >/dev/null; }
# promtool (Debian's prometheus package): node/tests/metrics.rs checks /metrics with
# `promtool check metrics`; under CI=true its absence fails that test.
command -v promtool >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build binaries (the end-to-end tests run warren-node and warren-cli)"
cargo build --workspace --bins --quiet
echo "== doc tests"
cargo test --workspace --doc --quiet
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
