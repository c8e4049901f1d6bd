#!/usr/bin/env bash
# test_bench_vulkan.sh - `bench --backend vulkan --smoke` on whatever Vulkan device the loader
# finds (lavapipe in CI): every GEMM, kernel and model-step row of the benchmark must match the
# CPU within its tolerance (bench/bench_vulkan.c), and the JSON lines must name the backend and
# the device. A visible SKIP, and no failure, without the Vulkan headers (the program is not
# built), without a loader or device (exit 77), and in the asan build (the bench is not built
# there). Run by ./build.sh test; the last line is the usual "N passed, M failed".
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${HV_BUILD_DIR:-build}
MODE=${HV_MODE:-normal}
export OMP_WAIT_POLICY=passive
passed=0
failed=0
T=$(mktemp -d /tmp/hv_test_bench_vulkan.XXXXXX)
trap 'rm -rf "$T"' EXIT

ok() { passed=$((passed + 1)); echo "PASS $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1: $2"; }
skip() {
    echo "SKIP test_bench_vulkan ($1)"
    echo "0 passed, 0 failed"
    exit 0
}

[ "$MODE" = normal ] || skip "the benchmarks are built in the normal build only"
[ -x "$B/bench/bench_vulkan" ] || skip "$B/bench/bench_vulkan was not built: no Vulkan headers (apt-get install libvulkan-dev)"

out=$("$B/bench/bench" --backend nosuch 2>&1)
rc=$?
if [ "$rc" -eq 2 ] && grep -q "must be cpu or vulkan" <<<"$out"; then ok "bench --backend nosuch"; else bad "bench --backend nosuch" "exit $rc: $out"; fi

start=$(date +%s)
"$B/bench/bench" --backend vulkan --smoke --json "$T/rows.jsonl" >"$T/out" 2>&1
rc=$?
cat "$T/out"
echo "(bench --backend vulkan --smoke: $(($(date +%s) - start)) s)"
[ "$rc" -ne 77 ] || skip "no Vulkan loader or device: $(tail -n 1 "$T/out")"

# every row within tolerance: the count line, the exit status, and no row marked
line=$(grep -E '^correctness: [0-9]+ rows within tolerance of the CPU, [0-9]+ over or failed$' "$T/out")
good=$(sed -E 's/^correctness: ([0-9]+) rows.*/\1/' <<<"$line")
over=$(sed -E 's/.*, ([0-9]+) over or failed$/\1/' <<<"$line")
if [ -z "$line" ]; then
    bad "smoke run" "exit $rc, no correctness line"
else
    passed=$((passed + good))
    failed=$((failed + over))
    echo "$good rows match the CPU, $over do not"
    if [ "$rc" -ne 0 ] && [ "$over" -eq 0 ]; then bad "smoke run" "exit $rc"; fi
fi
# every kind of row ran: GEMM, kernels, the four model steps
for want in '"group": "gemm"' '"group": "kernel"' 'vits14_infer' 'vitb14_infer' 'vits14_train' 'mae_vits14'; do
    if grep -q "$want" "$T/rows.jsonl" 2>/dev/null; then ok "JSON has $want"; else bad "JSON has $want" "missing from $T/rows.jsonl"; fi
done
n=$(wc -l <"$T/rows.jsonl" 2>/dev/null || echo 0)
m=$(grep -c '"backend": "vulkan", "device": "[^"]' "$T/rows.jsonl" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ] && [ "$n" -eq "$m" ]; then ok "every JSON line names backend and device"; else bad "JSON backend/device" "$m of $n lines"; fi
echo "$passed passed, $failed failed"
