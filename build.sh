#!/usr/bin/env bash
# shellcheck disable=SC2086  # $CC, $CFLAGS and $LDLIBS are word-split on purpose
# build.sh - the one entry point of humanvit: build, test, asan, bench, demo, clean.
# `./build.sh help` lists the verbs. Outputs go to build/ (build-asan/ for the sanitizer build);
# nothing is installed. Needs bash and a C compiler only: no make, cmake or Python.
#
# Decisions worth knowing:
#  - Every program links build/humanvit.o (tests/hv_impl.c = the IMPLEMENTATION define + the
#    header). A test or example whose source itself has a line `#define HUMANVIT_IMPLEMENTATION`
#    (say, to try HV_MALLOC overrides or HUMANVIT_STATIC) is built alone, without humanvit.o.
#  - A target is rebuilt when it is missing or older than humanvit.h, its source, tests/*.h (for
#    tests), examples/*.h (for examples) or humanvit.o. When the compiler or flags change, the
#    whole build folder is thrown away (a stamp file records them).
#  - `test` never stops at the first problem: a target that does not compile counts as one failed
#    test, and the run goes on, so the last line is always the totals.
#  - Vulkan: kernels_vulkan/*.comp are compiled by `shaders` (glslangValidator) into the committed
#    kernels_vulkan/hv_shaders.h, which records an FNV-1a hash of every source. Every build
#    compares those hashes with the sources: when they differ the header is regenerated, or, without
#    glslangValidator (or under CI=true, where the committed header must be right), the build stops
#    with an error. A test whose source has a line `#define HUMANVIT_VULKAN` is built with the Vulkan
#    backend (needs the Vulkan headers, libvulkan-dev; no -lvulkan: the loader is opened at run time)
#    and skipped with a visible SKIP line when the headers are missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" # the repo root: tests find their fixtures relative to it
shopt -s nullglob

CC=${CC:-gcc}

usage() {
    cat <<'EOF'
usage: ./build.sh [verb] [args]

verbs:
  all            (default) build build/humanvit.o, build/tests/test_* and build/<name> for
                 every examples/<name>.c
  test           build, run every test binary and the C/C++ compile checks of the header;
                 the last line is "N passed, M failed", the exit status non-zero on any failure
  asan           the test binaries again, built in build-asan/ with AddressSanitizer and
                 UndefinedBehaviorSanitizer (OpenMP off, compile checks skipped)
  bench          build and run bench/*.c (bench/bench.c: GEMM vs the FMA peak and, when
                 python3 -c 'import torch' works, vs PyTorch; args go to it, e.g. --quick);
                 bench --backend vulkan [--quick|--smoke]: the GEMM, kernel and model-step rows
                 on the Vulkan device instead, each checked against the CPU
  neon           cross-compile test_core and test_gemm for aarch64 (NEON kernels) and run them
                 under qemu-user; skipped, saying so, without aarch64-linux-gnu-gcc/qemu-aarch64
  demo [args]    the main job: MAE pretraining on 1/10/100% of Fashion-MNIST, then linear
                 probe and few-shot finetuning (build/fmnist_demo; --quick: ~1 minute,
                 --help: its flags); installs dataset-fashion-mnist when it can
  shaders        compile kernels_vulkan/*.comp to SPIR-V into kernels_vulkan/hv_shaders.h
                 (needs glslangValidator: apt-get install glslang-tools)
  clean          remove build/, build-asan/ and build-neon/
  help           this text

environment:
  CC=gcc              the C compiler (gcc by default; clang works)
  EXTRA_CFLAGS=...    appended to the compile flags
  TEST_FILTER=text    test/asan: run only the tests (and compile-* checks) whose name contains text
  TEST_TIMEOUT=secs   test/asan: limit per test binary (default 600, asan 1800)
EOF
}

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# ---- configuration ------------------------------------------------------------------------------

# configure DIR MODE: sets OUT, MODE, CFLAGS, LDLIBS, LIB; wipes DIR when the flags changed.
configure() {
    OUT=$1
    MODE=$2
    have "${CC%% *}" || die "C compiler '${CC%% *}' not found. Install one with: apt-get install gcc   (or point CC at the compiler you have, e.g. CC=clang)"
    mkdir -p "$OUT/.probe"
    local probe=$OUT/.probe/probe
    printf 'int main(void) { return 0; }\n' >"$probe.c"
    $CC "$probe.c" -o "$probe" >/dev/null 2>&1 || die "'$CC' cannot build a trivial program (missing C library headers? apt-get install libc6-dev)"

    local base="-std=c99 -Wall -Wextra" omp="off" arch=""
    if [ "$MODE" = asan ]; then
        CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined $base"
        omp="off (asan build)"
    elif [ "$MODE" = cross ]; then
        CFLAGS="-O2 $base" # the target's baseline ISA: no -march=native
        omp="off (cross build)"
    else
        CFLAGS="-O2 $base"
    fi
    # -march=native in the sanitizer build too, so the SIMD paths that normally run are checked.
    if [ "$MODE" != cross ] && $CC -march=native "$probe.c" -o "$probe" >/dev/null 2>&1; then
        arch="-march=native"
        CFLAGS="$CFLAGS $arch"
    fi
    if [ "$MODE" = normal ]; then
        printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n' >"$probe-omp.c"
        if $CC -fopenmp "$probe-omp.c" -o "$probe-omp" >/dev/null 2>&1; then
            CFLAGS="$CFLAGS -fopenmp"
            omp="on"
        else
            omp="off ('$CC' does not accept -fopenmp; for clang: apt-get install libomp-dev)"
        fi
    fi
    if [ "$MODE" = asan ]; then
        $CC $CFLAGS "$probe.c" -o "$probe-asan" >/dev/null 2>&1 ||
            die "'$CC' cannot build with -fsanitize=address,undefined (gcc: apt-get install libasan8 libubsan1)"
        export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
        # LeakSanitizer cannot run under ptrace (some containers, debuggers): say so, go on without.
        if ! "$probe-asan" >/dev/null 2>&1; then
            echo "build.sh: note: LeakSanitizer does not work here; running with detect_leaks=0"
            export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
        fi
    fi
    CFLAGS="$CFLAGS ${EXTRA_CFLAGS:-}"
    CFLAGS=${CFLAGS% }
    LDLIBS="-lm -lpthread" # pthreads: the data loader of examples/hv_data.h
    LIB=$OUT/humanvit.o
    LIB_VK=$OUT/humanvit_vk.o

    local stamp="$CC | $CFLAGS | $LDLIBS"
    if [ -f "$OUT/.flags" ] && [ "$(cat "$OUT/.flags")" != "$stamp" ]; then
        echo "build.sh: compiler or flags changed; rebuilding $OUT/ from scratch"
        rm -rf "$OUT"
        mkdir -p "$OUT"
    fi
    printf '%s\n' "$stamp" >"$OUT/.flags"
    echo "build.sh: $CC $CFLAGS ... $LDLIBS   (OpenMP: $omp)"
}

# ---- Vulkan shaders -----------------------------------------------------------------------------

SHADER_HDR=kernels_vulkan/hv_shaders.h

# fnv1a32 FILE: the FNV-1a (32-bit) hash of a file's bytes, as 0x%08x (test_vulkan computes the same)
fnv1a32() {
    local h=2166136261 b
    for b in $(od -An -v -tu1 "$1"); do h=$((((h ^ b) * 16777619) & 0xFFFFFFFF)); done
    printf '0x%08x' "$h"
}
shader_sources() { (cd kernels_vulkan && ls -1 ./*.comp ./*.glsl 2>/dev/null | sed 's|^\./||' | LC_ALL=C sort); }
# the "file hash" lines as the header records them
shader_hash_lines() {
    local f
    for f in $(shader_sources); do printf '    {"%s", %s},\n' "$f" "$(fnv1a32 "kernels_vulkan/$f")"; done
}

gen_shaders() {
    have glslangValidator || die "glslangValidator not found: apt-get install glslang-tools (Debian/Ubuntu), or the Vulkan SDK"
    local tmp=build/shaders f name upper names=()
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for f in kernels_vulkan/*.comp; do
        name=$(basename "$f" .comp)
        if ! glslangValidator -V --target-env vulkan1.0 -o "$tmp/$name.spv" "$f" >"$tmp/$name.log" 2>&1; then
            cat "$tmp/$name.log" >&2
            die "shader $f does not compile"
        fi
        names+=("$name")
    done
    {
        echo "/* hv_shaders.h - GENERATED by \`./build.sh shaders\` from the kernels_vulkan/ sources with"
        echo "   $(glslangValidator --version | head -n 1 | tr -s ' ') (-V --target-env vulkan1.0)."
        echo "   Do not edit: edit the sources and regenerate. humanvit.h includes this under HUMANVIT_VULKAN;"
        echo "   the build and test_vulkan compare the source hashes at the end with the files. */"
        echo "#ifndef HV_SHADERS_H"
        echo "#define HV_SHADERS_H"
        echo
        printf 'enum {'
        for name in "${names[@]}"; do
            upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
            printf ' HV__VKS_%s,' "$upper"
        done
        echo ' HV__VKS_COUNT };'
        echo
        for name in "${names[@]}"; do
            echo "static const uint32_t hv__spv_${name}[] = {"
            od -An -v -tx4 "$tmp/$name.spv" | awk '{ line = "   "; for (i = 1; i <= NF; i++) line = line " 0x" $i ","; print line }'
            echo "};"
        done
        echo
        echo "static const struct hv__vk_shader {"
        echo "    const char *name;"
        echo "    const uint32_t *code;"
        echo "    size_t words;"
        echo "} hv__vk_shaders[HV__VKS_COUNT] = {"
        for name in "${names[@]}"; do
            echo "    {\"$name\", hv__spv_${name}, sizeof hv__spv_${name} / sizeof(uint32_t)},"
        done
        echo "};"
        echo
        echo "/* FNV-1a (32-bit) of every source file, .comp and included .glsl, sorted by name */"
        echo "static const struct hv__vk_shader_source {"
        echo "    const char *file;"
        echo "    uint32_t fnv1a;"
        echo "} hv__vk_shader_sources[] = {"
        shader_hash_lines
        echo "};"
        echo
        echo "#endif"
    } >"$tmp/hv_shaders.h"
    mv "$tmp/hv_shaders.h" "$SHADER_HDR"
    echo "build.sh: wrote $SHADER_HDR (${#names[@]} kernels)"
}

# the committed header must match the sources: regenerate it, or stop with the reason
check_shaders() {
    local f newer=0
    [ -d kernels_vulkan ] || return 0
    if [ -f "$SHADER_HDR" ]; then
        for f in kernels_vulkan/*.comp kernels_vulkan/*.glsl; do
            if [ "$f" -nt "$SHADER_HDR" ]; then newer=1; fi
        done
        [ "$newer" -eq 1 ] || return 0 # nothing edited since the header was written
        if [ "$(shader_hash_lines)" = "$(sed -n 's/^\(    {"[^"]*", 0x[0-9a-f]*},\)$/\1/p' "$SHADER_HDR")" ]; then
            touch "$SHADER_HDR"
            return 0
        fi
    fi
    if [ -n "${CI:-}" ]; then
        die "$SHADER_HDR does not match kernels_vulkan/*.comp: run ./build.sh shaders and commit the header"
    fi
    have glslangValidator ||
        die "kernels_vulkan/*.comp changed since $SHADER_HDR was generated, and glslangValidator is not installed: apt-get install glslang-tools, then ./build.sh shaders"
    echo "build.sh: kernels_vulkan sources changed; regenerating $SHADER_HDR"
    gen_shaders
}

# can this machine compile the Vulkan backend? (headers only: the loader is opened at run time)
VULKAN_PROBED=""
HAVE_VULKAN_HEADERS=0
probe_vulkan() {
    [ -z "$VULKAN_PROBED" ] || return 0
    VULKAN_PROBED=1
    printf '#include <vulkan/vulkan.h>\nint main(void) { return VK_SUCCESS; }\n' >"$OUT/.probe/vk.c"
    if $CC "$OUT/.probe/vk.c" -o "$OUT/.probe/vk" >/dev/null 2>&1; then HAVE_VULKAN_HEADERS=1; fi
}
needs_vulkan() { grep -q '^[[:space:]]*#[[:space:]]*define[[:space:]][[:space:]]*HUMANVIT_VULKAN' "$1"; }
VULKAN_LDLIBS=""
vulkan_ldlibs() { # dlopen lives in libc from glibc 2.34 on; older systems need -ldl
    if [ -z "$VULKAN_LDLIBS" ]; then
        if printf 'int main(void) { return 0; }\n' | $CC -x c - -ldl -o "$OUT/.probe/dl" >/dev/null 2>&1; then VULKAN_LDLIBS="-ldl"; else VULKAN_LDLIBS=" "; fi
    fi
    printf '%s' "$VULKAN_LDLIBS"
}

# ---- building -----------------------------------------------------------------------------------

# stale OUT DEPS...: true when OUT is missing or any DEP is newer.
stale() {
    local out=$1 d
    shift
    [ -e "$out" ] || return 0
    for d in "$@"; do
        if [ "$d" -nt "$out" ]; then return 0; fi
    done
    return 1
}

BUILD_FAILED=() # names of targets that did not compile, in order

build_lib() {
    if stale "$LIB" humanvit.h tests/hv_impl.c; then
        echo "  CC    $LIB"
        if ! $CC $CFLAGS -c tests/hv_impl.c -o "$LIB"; then
            rm -f "$LIB"
            BUILD_FAILED+=("humanvit.o")
            return 1
        fi
    fi
}

# the library with the Vulkan backend compiled in, for the examples (when the headers exist):
# their --backend vulkan then works; the tests keep the CPU-only humanvit.o
build_lib_vulkan() {
    probe_vulkan
    [ "$HAVE_VULKAN_HEADERS" -eq 1 ] || return 0
    if stale "$LIB_VK" humanvit.h tests/hv_impl.c "$SHADER_HDR"; then
        echo "  CC    $LIB_VK"
        if ! $CC $CFLAGS -DHUMANVIT_VULKAN -c tests/hv_impl.c -o "$LIB_VK"; then
            rm -f "$LIB_VK"
            BUILD_FAILED+=("humanvit_vk.o")
            return 1
        fi
    fi
}

# build_prog SRC OUT EXTRA_DEPS...: compile and link one program; 1 when it did not build.
# PROG_LIB (default $LIB) is the library object it links.
build_prog() {
    local src=$1 out=$2 lib=${PROG_LIB:-$LIB}
    shift 2
    local objs=()
    if ! grep -q '^[[:space:]]*#[[:space:]]*define[[:space:]][[:space:]]*HUMANVIT_IMPLEMENTATION' "$src"; then
        if [ ! -e "$lib" ]; then
            echo "  SKIP  $out ($lib did not build)"
            rm -f "$out"
            return 1
        fi
        objs=("$lib")
    fi
    local extra_libs=""
    if needs_vulkan "$src" || [ "$lib" = "$LIB_VK" ]; then
        extra_libs=$(vulkan_ldlibs)
        set -- "$@" "$SHADER_HDR"
    fi
    stale "$out" "$src" humanvit.h "$@" "${objs[@]}" || return 0
    echo "  CCLD  $out"
    mkdir -p "$(dirname "$out")"
    if ! $CC $CFLAGS -I. -Itests "$src" "${objs[@]}" -o "$out" $LDLIBS $extra_libs; then
        rm -f "$out" # never leave an old binary standing in for a broken source
        return 1
    fi
}

matches_filter() { [ -z "${TEST_FILTER:-}" ] || [[ $1 == *"$TEST_FILTER"* ]]; }

build_tests() {
    local src name bin
    mkdir -p "$OUT/tests"
    for bin in "$OUT"/tests/test_*; do # drop binaries whose source is gone
        case $bin in *.log) continue ;; esac
        [ -e "tests/$(basename "$bin").c" ] || rm -f "$bin"
    done
    for src in tests/test_*.c; do
        name=$(basename "$src" .c)
        matches_filter "$name" || continue
        if needs_vulkan "$src"; then
            probe_vulkan
            if [ "$HAVE_VULKAN_HEADERS" -eq 0 ]; then
                echo "  SKIP  $name (no Vulkan headers: apt-get install libvulkan-dev)"
                rm -f "$OUT/tests/$name"
                continue
            fi
        fi
        build_prog "$src" "$OUT/tests/$name" tests/*.h examples/*.h || BUILD_FAILED+=("$name")
    done
}

build_examples() {
    local src name lib=$LIB
    if [ -e "$LIB_VK" ]; then lib=$LIB_VK; fi
    for src in examples/*.c; do
        name=$(basename "$src" .c)
        PROG_LIB=$lib build_prog "$src" "$OUT/$name" examples/*.h || BUILD_FAILED+=("$name")
    done
}

# bench/bench.c and bench/bench_vulkan.c, for tests/test_bench_vulkan.sh (bench --backend vulkan
# --smoke); normal build with the Vulkan headers only (the test says SKIP otherwise)
build_bench_vulkan() {
    local name
    matches_filter test_bench_vulkan || return 0
    probe_vulkan
    [ "$HAVE_VULKAN_HEADERS" -eq 1 ] || return 0
    for name in bench bench_vulkan; do
        build_prog "bench/$name.c" "$OUT/bench/$name" bench/*.h || BUILD_FAILED+=("$name")
    done
}

build_all() {
    check_shaders
    build_lib || true
    if [ "$MODE" = normal ]; then build_lib_vulkan || true; fi
    build_tests
    if [ "$MODE" = normal ]; then build_bench_vulkan; fi
    build_examples
    build_dispatch || true
}

# ---- testing ------------------------------------------------------------------------------------

PASSED=0
FAILED=0
FAILED_NAMES=()

fail() { # fail NAME WHY: count one failed test
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$1 ($2)")
}

describe_rc() {
    local rc=$1
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "timed out after ${TIMEOUT}s"
    elif [ "$rc" -gt 128 ]; then
        echo "killed by signal $((rc - 128))"
    else
        echo "exit $rc"
    fi
}

EMULATOR=() # runs the test binaries of a cross build (the neon verb)

# run_one NAME BIN [LOG]: run one test binary (or script) and add its "N passed, M failed" line to
# the totals; the output is kept in LOG (default BIN.log).
run_one() {
    local name=$1 bin=$2 log=${3:-$2.log} rc summary p f
    local runner=() envs=()
    if [ -f "tests/$name.c" ] && needs_vulkan "tests/$name.c" && [ "$HAVE_VULKAN_HEADERS" -eq 0 ]; then
        echo "SKIP $name (built without Vulkan headers)"
        return
    fi
    if [ "$MODE" = asan ] && [ -f "tests/$name.c" ] && needs_vulkan "tests/$name.c"; then
        # Mesa's Vulkan loader/lavapipe leak 128 bytes per process (a bare vkCreateInstance +
        # vkDestroyInstance program shows it), from a frame LeakSanitizer cannot name: leak
        # checking is off for this binary only; ASan and UBSan checks stay on.
        envs=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0")
        echo "(leak checking off for $name: the Vulkan driver's own leak)"
    fi
    if [ ! -x "$bin" ]; then
        fail "$name" "did not build"
        return
    fi
    if have timeout; then runner=(timeout -k 10 "$TIMEOUT"); fi
    # Line-buffer the tests' stdout so a crash loses no output. Not under ASan: gcc's shared ASan
    # runtime refuses to start behind stdbuf's LD_PRELOAD (tests should line-buffer themselves).
    if [ "$MODE" = normal ] && have stdbuf; then runner+=(stdbuf -oL -eL); fi
    echo "== $name"
    set +e
    "${runner[@]}" "${envs[@]}" "${EMULATOR[@]}" "$bin" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed[[:space:]]*$' "$log" | tail -n 1 || true)
    if [ -n "$summary" ]; then
        p=${summary%% passed*}
        f=${summary#*, }
        f=${f%% failed*}
        PASSED=$((PASSED + p))
        FAILED=$((FAILED + f))
        if [ "$f" -gt 0 ]; then FAILED_NAMES+=("$name ($f failed)"); fi
        # e.g. LeakSanitizer reports after the summary line and exits non-zero
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$name" "$(describe_rc "$rc") after its summary line"; fi
    else
        fail "$name" "$(describe_rc "$rc"), no 'N passed, M failed' line"
    fi
}

run_tests() {
    local src name
    for src in tests/test_*.c; do
        name=$(basename "$src" .c)
        matches_filter "$name" || continue
        run_one "$name" "$OUT/tests/$name"
    done
    for src in "${DISPATCH_TESTS[@]}"; do run_one "$(basename "$src")" "$src"; done
    # tests/test_*.sh drive the built programs (the trainers' command lines, the quick demo);
    # they find them in $HV_BUILD_DIR and learn the build kind from $HV_MODE
    if [ "${#EMULATOR[@]}" -eq 0 ]; then
        for src in tests/test_*.sh; do
            name=$(basename "$src" .sh)
            matches_filter "$name" || continue
            mkdir -p "$OUT/tests"
            HV_BUILD_DIR=$OUT HV_MODE=$MODE run_one "$name" "$src" "$OUT/tests/$name.log"
        done
    fi
}

# ---- run-time ISA choice for portable x86-64 binaries (kernels_cpu/) ----------------------------
# $OUT/humanvit_dispatch.o is the implementation built with -DHUMANVIT_CPU_DISPATCH and without
# -march=native; link it with $OUT/kernels_cpu/hv_cpu_<isa>.o, each kernels_cpu/hv_cpu_<isa>.c
# compiled with its ISA's flags. tests/test_gemm.c and tests/test_fast.c are built the same way
# (test_gemm_dispatch, test_fast_dispatch: the GEMM and the fast kernels of every ISA build).
DISPATCH_ISAS=("avx512:-mavx512f -mavx512bw -mavx512vl -mfma" "avx2:-mavx2 -mfma")
DISPATCH_SRCS=(test_gemm test_fast)
DISPATCH_TESTS=()

build_dispatch() {
    local base=${CFLAGS/-march=native/} spec isa obj objs=() lib=$OUT/humanvit_dispatch.o
    case $(uname -m) in x86_64 | amd64) ;; *) return 0 ;; esac
    mkdir -p "$OUT/kernels_cpu" "$OUT/tests"
    for spec in "${DISPATCH_ISAS[@]}"; do
        isa=${spec%%:*}
        obj=$OUT/kernels_cpu/hv_cpu_$isa.o
        objs+=("$obj")
        stale "$obj" humanvit.h "kernels_cpu/hv_cpu_$isa.c" || continue
        echo "  CC    $obj"
        if ! $CC $base ${spec#*:} -c "kernels_cpu/hv_cpu_$isa.c" -o "$obj"; then
            rm -f "$obj"
            BUILD_FAILED+=("hv_cpu_$isa.o")
            return 1
        fi
    done
    if stale "$lib" humanvit.h tests/hv_impl.c; then
        echo "  CC    $lib"
        $CC $base -DHUMANVIT_CPU_DISPATCH -c tests/hv_impl.c -o "$lib" || { rm -f "$lib"; BUILD_FAILED+=("humanvit_dispatch.o"); }
    fi
    local t bin
    for t in "${DISPATCH_SRCS[@]}"; do
        matches_filter "${t}_dispatch" || continue
        bin=$OUT/tests/${t}_dispatch
        DISPATCH_TESTS+=("$bin")
        stale "$bin" humanvit.h "tests/$t.c" tests/*.h "${objs[@]}" || continue
        echo "  CCLD  $bin"
        $CC $base -DHUMANVIT_CPU_DISPATCH -I. -Itests "tests/$t.c" "${objs[@]}" -o "$bin" $LDLIBS || rm -f "$bin"
    done
}

# The header must compile clean as C99 (gcc, clang) and as C++11 (g++, clang++), both with the
# implementation (tests/hv_impl.c) and as a plain header (tests/hv_header_only.c). The compiles
# run in parallel; their results print in a fixed order.
compile_checks() {
    local dir=$OUT/compile-checks
    mkdir -p "$dir"
    local specs=(
        "gcc-impl       gcc     required  gcc     c   tests/hv_impl.c"
        "gcc-header     gcc     required  gcc     c   tests/hv_header_only.c"
        "clang-impl     clang   optional  clang   c   tests/hv_impl.c"
        "clang-header   clang   optional  clang   c   tests/hv_header_only.c"
        "g++-impl       g++     required  g++     c++ tests/hv_impl.c"
        "g++-header     g++     required  g++     c++ tests/hv_header_only.c"
        "clang++-impl   clang++ optional  clang   c++ tests/hv_impl.c"
        "clang++-header clang++ optional  clang   c++ tests/hv_header_only.c"
        "gcc-vulkan     gcc     vulkan    gcc     c   tests/hv_impl.c -DHUMANVIT_VULKAN"
        "g++-vulkan     g++     vulkan    g++     c++ tests/hv_impl.c -DHUMANVIT_VULKAN"
    )
    local spec name cc need pkg lang src def pids=() names=()
    probe_vulkan
    for spec in "${specs[@]}"; do
        def=""
        read -r name cc need pkg lang src def <<<"$spec"
        name=compile-$name
        matches_filter "$name" || continue
        if [ "$need" = vulkan ]; then
            if [ "$HAVE_VULKAN_HEADERS" -eq 0 ]; then
                echo "SKIP $name (no Vulkan headers; apt-get install libvulkan-dev)"
                continue
            fi
            need=required
        fi
        if ! have "$cc"; then
            if [ "$need" = optional ]; then
                echo "SKIP $name ($cc not installed; apt-get install $pkg)"
            else
                echo "FAIL $name ($cc not installed; apt-get install $pkg)"
                fail "$name" "$cc not installed"
            fi
            continue
        fi
        local flags=(-std=c99 -Wall -Wextra -Werror -pedantic)
        if [ "$lang" = c++ ]; then flags=(-x c++ -std=c++11 -Wall -Wextra -Werror); fi
        ("$cc" "${flags[@]}" $def -I. -c "$src" -o "$dir/$name.o" >"$dir/$name.log" 2>&1) &
        pids+=($!)
        names+=("$name")
    done
    local i
    for i in "${!pids[@]}"; do
        name=${names[$i]}
        if wait "${pids[$i]}"; then
            echo "PASS $name"
            PASSED=$((PASSED + 1))
        else
            echo "FAIL $name"
            cat "$dir/$name.log"
            fail "$name" "does not compile clean"
        fi
    done
}

# test_suite MODE: the body of `test` and `asan`
test_suite() {
    local mode=$1
    if [ "$mode" = asan ]; then
        configure build-asan asan
        TIMEOUT=${TEST_TIMEOUT:-1800}
    else
        configure build normal
        TIMEOUT=${TEST_TIMEOUT:-600}
    fi
    build_all
    local name
    for name in "${BUILD_FAILED[@]}"; do
        case $name in
        test_*) ;; # counted once, when its turn to run comes
        *) fail "build-$name" "does not compile" ;;
        esac
    done
    run_tests
    if [ "$mode" = normal ]; then
        compile_checks
    fi
    report
}

# report: the closing lines of test/asan/neon; non-zero when anything failed or nothing ran
report() {
    echo
    if [ "${#FAILED_NAMES[@]}" -gt 0 ]; then
        echo "FAILED:"
        printf '  %s\n' "${FAILED_NAMES[@]}"
    fi
    if [ $((PASSED + FAILED)) -eq 0 ]; then
        echo "build.sh: nothing ran${TEST_FILTER:+ (TEST_FILTER=$TEST_FILTER matched nothing)}"
    fi
    echo "$PASSED passed, $FAILED failed"
    if [ "$FAILED" -eq 0 ] && [ $((PASSED + FAILED)) -gt 0 ]; then return 0; fi
    return 1
}

# neon: the aarch64 build of the core and GEMM tests (NEON kernels), run under qemu-user
neon_suite() {
    local name
    if ! have aarch64-linux-gnu-gcc || ! have qemu-aarch64 || [ ! -d /usr/aarch64-linux-gnu ]; then
        echo "build.sh: neon: SKIPPED: needs aarch64-linux-gnu-gcc and qemu-aarch64"
        echo "  (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross)"
        return 0
    fi
    CC=aarch64-linux-gnu-gcc
    configure build-neon cross
    TIMEOUT=${TEST_TIMEOUT:-600}
    EMULATOR=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
    build_lib || fail "build-humanvit.o" "does not compile"
    mkdir -p "$OUT/tests"
    for name in test_core test_gemm; do
        matches_filter "$name" || continue
        build_prog "tests/$name.c" "$OUT/tests/$name" tests/*.h || true
        run_one "$name" "$OUT/tests/$name"
    done
    report
}

# ---- verbs --------------------------------------------------------------------------------------

verb=${1:-all}
if [ $# -gt 0 ]; then shift; fi

case $verb in
all | build)
    configure build normal
    build_all
    if [ "${#BUILD_FAILED[@]}" -gt 0 ]; then
        echo "build.sh: did not build: ${BUILD_FAILED[*]}" >&2
        exit 1
    fi
    echo "build.sh: build ok"
    ;;
test)
    test_suite normal || exit 1
    ;;
asan)
    test_suite asan || exit 1
    ;;
neon)
    neon_suite || exit 1
    ;;
bench)
    srcs=(bench/*.c)
    if [ "${#srcs[@]}" -eq 0 ]; then
        echo "no benchmarks yet"
        exit 0
    fi
    configure build normal
    build_lib || die "humanvit.o did not build"
    check_shaders
    probe_vulkan
    # --backend vulkan: only bench.c's Vulkan rows (build/bench/bench_vulkan), not the CPU programs
    on_vulkan=0
    prev=""
    for a in "$@"; do
        if [ "$prev" = --backend ] && [ "$a" = vulkan ]; then on_vulkan=1; fi
        prev=$a
    done
    if [ "$on_vulkan" = 1 ]; then srcs=(bench/bench.c bench/bench_vulkan.c); fi
    status=0
    for src in "${srcs[@]}"; do
        name=$(basename "$src" .c)
        if needs_vulkan "$src" && [ "$HAVE_VULKAN_HEADERS" -eq 0 ]; then
            echo "build.sh: SKIP $name (no Vulkan headers: apt-get install libvulkan-dev)"
            continue
        fi
        if ! build_prog "$src" "build/bench/$name" bench/*.h; then
            echo "build.sh: $name did not build" >&2
            status=1
            continue
        fi
        case "$name" in
        models)
            # one process per model step (each peak RSS its own), PyTorch alongside when present
            echo "== models"
            if have python3; then
                margs=()
                prev=""
                for a in "$@"; do # --json FILE and --threads N apply to the model steps too
                    if [ "$prev" = --json ] || [ "$prev" = --threads ]; then margs+=("$prev" "$a"); fi
                    prev=$a
                done
                python3 bench/models.py "${margs[@]}" || status=1
            else
                for step in vits14_infer vitb14_infer vits14_train mae_vits14; do
                    build/bench/models --step "$step" || status=1
                done
            fi
            continue
            ;;
        ckpt_memory)
            continue # needs a checkpoint file: see its usage line
            ;;
        bench_vulkan)
            continue # bench --backend vulkan runs it (./build.sh bench --backend vulkan [--quick])
            ;;
        loader)
            echo "== loader (data pipeline images/s; compare with the model steps' images/s)"
            build/bench/loader || status=1
            continue
            ;;
        esac
        echo "== $name"
        extra=()
        # bench.c side by side with PyTorch: torch_compare.py times bench's own case list first
        if [ "$name" = bench ] && [ "$on_vulkan" = 0 ]; then
            if have python3 && python3 -c 'import torch' >/dev/null 2>&1; then
                build/bench/bench --list >build/bench/cases.jsonl
                if python3 bench/torch_compare.py build/bench/cases.jsonl build/bench/torch.jsonl "$@"; then
                    extra=(--torch build/bench/torch.jsonl)
                fi
            else
                echo "build.sh: python3 -c 'import torch' fails: no PyTorch column"
            fi
        fi
        "build/bench/$name" "${extra[@]}" "$@" || status=1
    done
    exit $status
    ;;
shaders)
    mkdir -p build
    gen_shaders
    ;;
demo)
    configure build normal
    build_lib || die "humanvit.o did not build"
    build_prog examples/fmnist_demo.c build/fmnist_demo examples/*.h || die "examples/fmnist_demo.c did not build"
    demo_quick=0 demo_data=0
    for a in "$@"; do
        case $a in --quick) demo_quick=1 ;; --data-dir | --data-dir=*) demo_data=1 ;; esac
    done
    # The full demo wants the whole Fashion-MNIST (Debian: dataset-fashion-mnist). Install it when
    # that can be done without a question (root, or sudo without a password); otherwise say how,
    # and the demo falls back to the small subset committed in examples/data/fmnist-mini/.
    if [ "$demo_quick" = 0 ] && [ "$demo_data" = 0 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            if have sudo && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
        fi
        if [ "$sudo" != none ] && have apt-get; then
            echo "build.sh: installing the Fashion-MNIST data set (apt-get install dataset-fashion-mnist)"
            export DEBIAN_FRONTEND=noninteractive
            $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
                { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } ||
                echo "build.sh: could not install dataset-fashion-mnist; the demo uses the embedded subset"
        else
            echo "build.sh: the full Fashion-MNIST is not installed; for it run: sudo apt-get install dataset-fashion-mnist"
        fi
    fi
    # OpenMP's idle threads spin by default: on a busy machine that makes 2 threads several
    # times slower than 1. Passive waiting costs little on an idle one.
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    exec build/fmnist_demo "$@"
    ;;
clean)
    rm -rf build build-asan build-neon
    echo "build.sh: removed build/, build-asan/ and build-neon/"
    ;;
help | -h | --help)
    usage
    ;;
*)
    echo "build.sh: unknown verb '$verb'" >&2
    usage >&2
    exit 2
    ;;
esac
