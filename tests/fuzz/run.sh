#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] - builds the libFuzzer targets (fuzz_safetensors, fuzz_zip,
# fuzz_pickle, fuzz_image) with clang, AddressSanitizer and UndefinedBehaviorSanitizer, seeds them from
# tests/fixtures/ckpt/ and tests/fixtures/images/, and runs each for SECONDS (default 60). Work files go to build-fuzz/:
# corpus/<target>/ grows across runs, crashes/ holds any input that crashed (then the exit status
# is 1). Needs clang with libFuzzer (apt-get install clang); python3 is used, when present, to
# pull data.pkl out of the .pth fixtures as pickle seeds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
secs=${1:-60}
out=build-fuzz
fix=tests/fixtures/ckpt
CC=${CC:-clang}
command -v "${CC%% *}" >/dev/null || { echo "run.sh: $CC not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$out/crashes"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -std=c99 -Wall -Wextra)
for t in safetensors zip pickle image; do
    echo "run.sh: building $out/fuzz_$t"
    $CC "${flags[@]}" "tests/fuzz/fuzz_$t.c" -o "$out/fuzz_$t" -lm
    mkdir -p "$out/corpus/$t" "$out/seeds/$t"
done
cp "$fix"/*.safetensors "$out/seeds/safetensors/"
cp "$fix"/*.pth "$fix"/*.tar "$out/seeds/zip/"
cp tests/fixtures/images/*.png tests/fixtures/images/*.jpg tests/fixtures/images/*.p?m "$out/seeds/image/" 2>/dev/null || true
if command -v python3 >/dev/null; then
    python3 - "$fix" "$out/seeds" <<'PY'
import os, struct, sys, zipfile
fix, seeds = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(fix)):
    p = os.path.join(fix, f)
    if zipfile.is_zipfile(p):
        z = zipfile.ZipFile(p)
        for i in z.infolist():
            if i.filename.endswith("/data.pkl") and i.compress_type == 0:
                open(os.path.join(seeds, "pickle", f + ".pkl"), "wb").write(z.read(i))
    elif f.endswith(".safetensors"):  # the bare JSON header as a seed too
        b = open(p, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        open(os.path.join(seeds, "safetensors", f + ".json"), "wb").write(b[8:8 + n])
PY
fi
status=0
for t in safetensors zip pickle image; do
    dict=()
    [ "$t" = pickle ] && dict=(-dict=tests/fuzz/pickle.dict)
    echo "run.sh: fuzz_$t for ${secs}s"
    # -max_len: the largest seed (10 KiB .pth) must fit; mutations may grow to 64 KiB
    if ! ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$out/fuzz_$t" "${dict[@]}" -max_total_time="$secs" -max_len=65536 \
        -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$out/crashes/$t-" \
        "$out/corpus/$t" "$out/seeds/$t" >"$out/fuzz_$t.log" 2>&1; then
        echo "run.sh: fuzz_$t FOUND A PROBLEM: see $out/fuzz_$t.log and $out/crashes/"
        status=1
    fi
    grep -E '^#[0-9]+ +DONE|^stat::peak_rss_mb' "$out/fuzz_$t.log" | tr '\n' ' '
    echo
done
exit $status
