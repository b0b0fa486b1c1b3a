#!/usr/bin/env bash
# Runs every fuzz target for SECONDS_PER_TARGET seconds (default 30) and prints, per target, the
# executions and the corpus size. Exits non-zero if a target crashes (panic, failed check,
# sanitizer report, timeout, out of memory) or did not run, and when no nightly toolchain is
# installed (cargo fuzz needs one): it never passes without fuzzing.
#
#   tests/fuzz/run.sh            # 30 s per target
#   tests/fuzz/run.sh 600        # a longer campaign
#   FUZZ_TARGETS="config mqtt_decode" tests/fuzz/run.sh 60
#
# Each target starts from the committed corpus (tests/fuzz/corpus/TARGET, read only) plus what
# earlier local runs found (tests/fuzz/target/corpus/TARGET, ignored by git). A crash input lands
# in tests/fuzz/artifacts/TARGET/; replay it with
#   cargo +nightly fuzz run --fuzz-dir tests/fuzz TARGET tests/fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: tests/fuzz/run.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi
fuzz_dir=tests/fuzz
targets=${FUZZ_TARGETS:-"mqtt_decode link_frame link_handshake discovery_datagram config broker_session"}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "FUZZING NOT RUN: no nightly Rust toolchain is installed (cargo fuzz needs one:" >&2
    echo "rustup toolchain install nightly). Failing rather than passing without fuzzing." >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo +nightly fuzz --version

echo "building the fuzz targets"
cargo +nightly fuzz build --fuzz-dir "$fuzz_dir"

failed=()
summary=()
for target in $targets; do
    work=$fuzz_dir/target/corpus/$target
    seeds=$fuzz_dir/corpus/$target
    log=$fuzz_dir/target/$target.log
    mkdir -p "$work" "$seeds"
    echo "=== $target: ${seconds}s"
    started=$SECONDS
    status=0
    cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    took=$((SECONDS - started))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    corpus=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$done_line")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    if [ "$status" -ne 0 ] || [ -z "$execs" ] || [ -z "$done_line" ]; then
        echo "--- $target FAILED (exit $status); the end of its log ($log):" >&2
        tail -n 60 "$log" >&2
        ls "$fuzz_dir/artifacts/$target" 2>/dev/null | sed "s|^|    artifact: $fuzz_dir/artifacts/$target/|" >&2 || true
        failed+=("$target")
        summary+=("$(printf '%-20s %12s %14s %8s %6ss  FAILED' "$target" "${execs:-?}" "${corpus:-?}" "${cov:-?}" "$took")")
    else
        summary+=("$(printf '%-20s %12s %14s %8s %6ss  ok' "$target" "$execs" "$corpus" "$cov" "$took")")
    fi
done

echo
printf '%-20s %12s %14s %8s %7s\n' target executions "corpus (n/size)" cov time
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found a crash in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: no crash in ${seconds}s per target"
