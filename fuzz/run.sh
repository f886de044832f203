#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60): `fuzz/run.sh 600` for a long run.
# Needs a nightly toolchain (the machine image has one) and cargo-fuzz (installed here if
# missing). Crashes are written to fuzz/artifacts/<target>/ and make this script fail.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain on this machine; skipping (the proptests still ran)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked --quiet
fi
for target in $(cargo +nightly fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  # Committed seeds (fuzz/seeds/<target>, when there are any) join the working corpus.
  corpora=("corpus/$target")
  mkdir -p "corpus/$target"
  if [ -d "seeds/$target" ]; then corpora+=("seeds/$target"); fi
  cargo +nightly fuzz run "$target" "${corpora[@]}" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
