#!/usr/bin/env bash
# test_cli.sh - the programs in examples/ as a user meets them: --help, bad flags, a missing data
# set, an unreadable image, a model that does not fit the weights: each must exit non-zero with a
# clear message and leave the output folder as it was. Then small real runs: mae_pretrain ->
# finetune (and --resume) -> extract_features, tc_train (--resume, a train_tc.py .tar as weights),
# and the quick demo end to end with sanity bounds.
# Run by ./build.sh test (and asan, where the long runs are skipped); the last line is the usual
# "N passed, M failed".
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${HV_BUILD_DIR:-build}
MODE=${HV_MODE:-normal}
MINI=examples/data/fmnist-mini
export OMP_WAIT_POLICY=passive
passed=0
failed=0
T=$(mktemp -d /tmp/hv_test_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT

ok() { passed=$((passed + 1)); echo "PASS $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

# expect NAME RC PATTERN CMD...: CMD exits with RC and its stderr+stdout contain PATTERN (grep -E)
expect() {
    local name=$1 want=$2 pat=$3 rc out
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        bad "$name" "exit $rc, wanted $want; output: $(echo "$out" | tail -n 3)"
    elif ! grep -qE -- "$pat" <<<"$out"; then
        bad "$name" "output lacks /$pat/: $(echo "$out" | tail -n 3)"
    else
        ok "$name"
    fi
}

# losses_close A B ROWS [TOL]: "ok" when two log.csv files have ROWS steps whose losses agree
# within TOL (relative, default 1e-4), else what differs
losses_close() {
    paste -d, "$1" "$2" 2>/dev/null | awk -F, -v rows="$3" -v tol="${4:-1e-4}" 'NR > 1 { n++; d = $3 - $9; if (d < 0) d = -d; if (d > tol * $9) bad = bad " step " $1 ": " $3 " vs " $9 }
        END { if (n != rows) print "rows " n; else if (bad != "") print bad; else print "ok" }'
}

# a folder's listing with sizes and times, to prove a failed run touched nothing
snapshot() { (cd "$1" && find . -type f -exec stat -c '%n %s %Y' {} + | sort); }

TINY=(--model custom --img-size 28 --patch-size 7 --embed-dim 32 --depth 2 --num-heads 2 --in-chans 1)
TINY_DEC=(--decoder-embed-dim 32 --decoder-depth 1 --decoder-num-heads 2)
FM=(--norm-mean 0.286 --norm-std 0.353)
TRAIN=$MINI/train-images-idx3-ubyte.gz
TEST=$MINI/t10k-images-idx3-ubyte.gz

for prog in mae_pretrain finetune extract_features fmnist_demo tc_train; do
    if [ ! -x "$B/$prog" ]; then
        bad "$prog" "$B/$prog was not built"
        continue
    fi
    expect "$prog --help" 0 "usage: $prog" "$B/$prog" --help
    expect "$prog unknown flag" 2 "unknown flag '--no-such-flag'" "$B/$prog" --no-such-flag 3
    expect "$prog not a number" 2 "is not a number" "$B/$prog" --threads many
    expect "$prog --backend cuda" 2 "not compiled in" "$B/$prog" --backend=cuda
    expect "$prog --backend unknown" 2 "unknown \(cpu, vulkan\)" "$B/$prog" --backend=tpu
done
expect "pmae_train --help" 0 "usage: pmae_train" "$B/pmae_train" --help
expect "pmae_train unknown flag" 2 "unknown flag '--no-such-flag'" "$B/pmae_train" --no-such-flag 3
expect "pmae_train not 224" 2 "takes 224x224 images.*128x128" "$B/pmae_train" --model custom --img-size 128 --patch-size 32 --embed-dim 32 --depth 1 --num-heads 2 --data-path "$TRAIN" --output-dir "$T/x" --iters 1
expect "mae_pretrain value missing" 2 "needs a value" "$B/mae_pretrain" --lr
expect "mae_pretrain bad range" 2 "mask-ratio" "$B/mae_pretrain" --data-path "$TRAIN" --output-dir "$T/x" --mask_ratio 1.5
expect "finetune no data" 2 "required" "$B/finetune" --output-dir "$T/x"
expect "fmnist_demo positional" 2 "unexpected argument" "$B/fmnist_demo" quick

# a missing data set: a clear message naming it, and an existing output folder left as it was
mkdir -p "$T/out"
echo "previous run" >"$T/out/log.csv"
echo "weights" >"$T/out/model.safetensors"
before=$(snapshot "$T/out")
expect "mae_pretrain missing data" 1 "/no/such/data.*No such file" "$B/mae_pretrain" "${TINY[@]}" --data-path /no/such/data --output-dir "$T/out" --iters 2
expect "finetune missing data" 1 "/no/such/data" "$B/finetune" "${TINY[@]}" --data-path /no/such/data --output-dir "$T/out" --iters 2
expect "finetune missing val" 1 "/no/such/val" "$B/finetune" "${TINY[@]}" --data-path "$TRAIN" --val-path /no/such/val --output-dir "$T/out" --iters 2
expect "extract_features missing data" 1 "/no/such/data" "$B/extract_features" "${TINY[@]}" --random-init --data-path /no/such/data --output "$T/out/f.npy"
expect "extract_features missing folder" 1 "not an existing folder" "$B/extract_features" "${TINY[@]}" --random-init --data-path "$TEST" --output "$T/nowhere/f.npy"
expect "fmnist_demo missing data" 1 "not found" "$B/fmnist_demo" --data-dir /no/such/dir --output-dir "$T/out"
expect "finetune missing weights" 1 "no such file" "$B/finetune" "${TINY[@]}" --finetune /no/such/weights.safetensors --data-path "$TRAIN" --output-dir "$T/out"

# an image folder with an unreadable image: the error names the file
mkdir -p "$T/folder/a" "$T/folder/b"
printf 'P5\n28 28\n255\n' >"$T/folder/a/ok.pgm"
head -c 784 /dev/zero >>"$T/folder/a/ok.pgm"
cp "$T/folder/a/ok.pgm" "$T/folder/b/ok.pgm"
printf '\x89PNG\r\n\x1a\nthis is not a png' >"$T/folder/b/broken.png"
expect "mae_pretrain unreadable image" 1 "broken.png" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" --data-path "$T/folder" --output-dir "$T/out" --iters 2 --batch-size 3 --workers 0
expect "finetune unreadable image" 1 "broken.png" "$B/finetune" "${TINY[@]}" --data-path "$T/folder" --output-dir "$T/out" --iters 2 --batch-size 3
expect "extract_features unreadable image" 1 "broken.png" "$B/extract_features" "${TINY[@]}" --random-init --data-path "$T/folder" --output "$T/out/f.npy"
after=$(snapshot "$T/out")
if [ "$before" = "$after" ]; then ok "failed runs leave the output folder untouched"; else bad "failed runs leave the output folder untouched" "$(diff <(echo "$before") <(echo "$after") | head -5)"; fi

# temporal classification: a folder of episodes (3 folders of 4 random 40 x 36 PPM frames) and a
# tiny ResNeXt; the fixture's train_tc.py .tar (module.-prefixed, model_state_dict) as --weights
EP="$T/episodes"
for e in 0 1 2; do
    mkdir -p "$EP/ep00$e"
    for i in 0 1 2 3; do # seeded noise: the same frames on every run
        { printf 'P6\n40 36\n255\n'; LC_ALL=C awk -v seed=$((10 * e + i + 1)) 'BEGIN { srand(seed); for (k = 0; k < 4320; k++) printf "%c", int(rand() * 256) }'; } >"$EP/ep00$e/f$i.ppm"
    done
done
TC_TINY=(--model custom --depths 1,2,1,1 --groups 4 --width-per-group 16 --base-planes 4 --img-size 32 --batch-size 4 --threads 1)
TC_TAR=tests/fixtures/models/resnext_tiny_tc.tar
expect "tc_train unknown model" 2 "unknown model" "$B/tc_train" --model resnext7 --data-path "$EP" --output-dir "$T/out"
expect "tc_train custom needs depths" 2 "needs --depths" "$B/tc_train" --model custom --data-path "$EP" --output-dir "$T/out"
expect "tc_train bad depths" 2 "four block counts" "$B/tc_train" --model custom --depths 1,2,0,1 --data-path "$EP" --output-dir "$T/out"
expect "tc_train missing data" 1 "/no/such/data" "$B/tc_train" "${TC_TINY[@]}" --data-path /no/such/data --output-dir "$T/out" --iters 2
expect "tc_train too few classes" 2 "fewer than the 3 episode folders" "$B/tc_train" "${TC_TINY[@]}" --num-classes 2 --data-path "$EP" --output-dir "$T/out" --iters 2
expect "tc_train weights of another shape" 1 "layer1.0.conv2.weight" "$B/tc_train" "${TC_TINY[@]}" --groups 2 --width-per-group 32 --num-classes 5 --weights "$TC_TAR" --data-path "$EP" --output-dir "$T/out" --iters 2
after=$(snapshot "$T/out")
if [ "$before" = "$after" ]; then ok "failed tc_train runs leave the output folder untouched"; else bad "failed tc_train runs leave the output folder untouched" "$(diff <(echo "$before") <(echo "$after") | head -5)"; fi

if [ "$MODE" != normal ]; then
    echo "(the training runs and the quick demo are skipped in the $MODE build)"
    echo "$passed passed, $failed failed"
    exit 0
fi

# small real runs: pretrain, resume, finetune from it, probe, features
P="$T/pre"
expect "mae_pretrain runs" 0 "done: 6 steps" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$P" --iters 6 --batch-size 32 --threads 1 --save-every 3
for f in checkpoint.hvts model.safetensors log.csv loss.svg; do
    if [ -s "$P/$f" ]; then ok "mae_pretrain wrote $f"; else bad "mae_pretrain wrote $f" "missing"; fi
done
if [ "$(wc -l <"$P/log.csv")" -eq 7 ]; then ok "log.csv has a row per step"; else bad "log.csv has a row per step" "$(wc -l <"$P/log.csv") lines"; fi
if grep -q '<polyline' "$P/loss.svg" && grep -q '</svg>' "$P/loss.svg"; then ok "loss.svg is a plot"; else bad "loss.svg is a plot" "no polyline"; fi
expect "mae_pretrain --resume" 0 "resumed from .*at step 6" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$P" --iters 9 --batch-size 32 --threads 1 --resume
# resumed with no step left: the final loss is the one the checkpoint saved (log.csv's last row), not NaN
last_loss=$(awk -F, 'END { printf "%.4f", $3 }' "$P/log.csv")
expect "mae_pretrain --resume with no step left reports the checkpoint's loss" 0 "no step left to run \(resumed at step 9\), final loss $last_loss as saved then" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$P" --iters 9 --batch-size 32 --threads 1 --resume
expect "mae_pretrain resume of another model" 1 "resume" "$B/mae_pretrain" --model custom --img-size 28 --patch-size 7 --embed-dim 64 --depth 2 --num-heads 2 --in-chans 1 "${TINY_DEC[@]}" --data-path "$TRAIN" --output-dir "$P" --iters 12 --batch-size 32 --resume
expect "finetune from the MAE" 0 "top-1" "$B/finetune" "${TINY[@]}" "${FM[@]}" --finetune "$P/model.safetensors" --data-path "$TRAIN" --val-path "$TEST" --frac-retained 0.02 --batch-size 20 --iters 4 --eval-resize 28 --output-dir "$T/ft" --threads 1
expect "finetune refuses a train state" 1 "model.safetensors beside it" "$B/finetune" "${TINY[@]}" --finetune "$P/checkpoint.hvts" --data-path "$TRAIN" --output-dir "$T/ft2"
expect "finetune wrong architecture" 1 "patch_embed.*checkpoint .*model" "$B/finetune" --model custom --img-size 28 --patch-size 4 --embed-dim 32 --depth 2 --num-heads 2 --in-chans 1 --finetune "$P/model.safetensors" --data-path "$TRAIN" --output-dir "$T/ft2"

# upstream's evaluation: the validation set after every epoch (40 retained images, batch 10: 4 steps
# an epoch), the best top-1 kept in model_best.safetensors and eval.txt, and across --resume
E="$T/ep"
FT_EP=("$B/finetune" "${TINY[@]}" "${FM[@]}" --finetune "$P/model.safetensors" --data-path "$TRAIN" --val-path "$TEST" --frac-retained 0.02 --batch-size 10 --eval-resize 28 --threads 1)
out=$("${FT_EP[@]}" --output-dir "$E" --epochs 3 2>&1)
n=$(grep -cE "validation at step (4|8|12) \(epoch [123]\): top-1" <<<"$out")
if [ "$n" -eq 3 ]; then ok "finetune evaluates after every epoch"; else bad "finetune evaluates after every epoch" "$n lines: $(tail -n 3 <<<"$out")"; fi
# the best of log.csv's evaluated rows (val_top1 is column 7) is eval.txt's best, at its step
best_of_log() { awk -F, 'NR > 1 && $7 != "" { n++; if (n == 1 || $7 > b) { b = $7; s = $1 } } END { printf "%d %.4f %d", n, b, s }' "$E/log.csv"; }
best_of_eval() { awk '$1 == "best_top1" { b = $2 } $1 == "best_step" { s = $2 } $1 == "best_epoch" { e = $2 } $1 == "best_top5" { f = $2 }
    END { if (e == "" || f == "") print "no best_epoch/best_top5"; else printf "%.4f %d", b, s }' "$E/eval.txt"; }
got=$(best_of_log)
if [ "${got%% *}" = 3 ] && [ "${got#* }" = "$(best_of_eval)" ]; then ok "eval.txt has the best epoch of log.csv's 3 evaluations"; else bad "eval.txt has the best epoch" "log: $got, eval.txt: $(best_of_eval)"; fi
if [ -s "$E/model_best.safetensors" ]; then ok "finetune wrote model_best.safetensors"; else bad "finetune wrote model_best.safetensors" "missing"; fi
expect "model_best.safetensors loads" 0 "500 x 32 float32" "$B/extract_features" "${TINY[@]}" "${FM[@]}" --weights "$E/model_best.safetensors" --data-path "$TEST" --resize 28 --output "$T/best.npy" --threads 1
expect "finetune --resume keeps the best-so-far" 0 "resumed from .*at step 12, best-so-far kept" "${FT_EP[@]}" --output-dir "$E" --epochs 5 --resume
got=$(best_of_log)
if [ "${got%% *}" = 5 ] && [ "${got#* }" = "$(best_of_eval)" ]; then ok "after --resume, eval.txt's best is that of all 5 evaluations"; else bad "after --resume, the best of all evaluations" "log: $got, eval.txt: $(best_of_eval)"; fi
last_loss=$(awk -F, 'END { printf "%.6f", $3 }' "$E/log.csv")
expect "finetune --resume with no step left reports the checkpoint's loss" 0 "no step left to run \(resumed at step 20\), final loss $(awk -F, 'END { printf "%.4f", $3 }' "$E/log.csv") as saved then" "${FT_EP[@]}" --output-dir "$E" --epochs 5 --resume
if grep -qx "final_loss $last_loss" "$E/eval.txt"; then ok "eval.txt's final_loss after a resume with no step left"; else bad "eval.txt's final_loss after a resume with no step left" "$(grep final_loss "$E/eval.txt"), log.csv: $last_loss"; fi
out=$("${FT_EP[@]}" --output-dir "$T/ep2" --epochs 3 --eval-every 2 2>&1)
n=$(grep -oE "validation at step [0-9]+" <<<"$out" | tr '\n' ' ')
if [ "$n" = "validation at step 8 validation at step 12 " ]; then ok "finetune --eval-every 2 (and at the end)"; else bad "finetune --eval-every 2" "got: $n"; fi
out=$("${FT_EP[@]}" --output-dir "$T/ep3" --iters 6 --eval-every-steps 4 2>&1)
n=$(grep -oE "validation at step [0-9]+" <<<"$out" | tr '\n' ' ')
if [ "$n" = "validation at step 4 validation at step 6 " ]; then ok "finetune --iters --eval-every-steps 4 (and at the end)"; else bad "finetune --iters --eval-every-steps 4" "got: $n"; fi
# a checkpoint of another image size: pos_embed interpolated (4x4 grid at 28 pixels -> 6x6 at 42)
expect "finetune at another --img-size interpolates pos_embed" 0 "interpolated pos_embed from grid 4x4 to 6x6" "$B/finetune" --model custom --img-size 42 --patch-size 7 --embed-dim 32 --depth 2 --num-heads 2 --in-chans 1 "${FM[@]}" --finetune "$P/model.safetensors" --data-path "$TRAIN" --val-path "$TEST" --frac-retained 0.02 --batch-size 20 --iters 2 --output-dir "$T/ft42" --threads 1
expect "extract_features at another --img-size" 0 "interpolated pos_embed from grid 4x4 to 6x6" "$B/extract_features" --model custom --img-size 42 --patch-size 7 --embed-dim 32 --depth 2 --num-heads 2 --in-chans 1 "${FM[@]}" --weights "$P/model.safetensors" --data-path "$TEST" --output "$T/f42.npy" --threads 1
expect "finetune --freeze-trunk" 0 "linear probe" "$B/finetune" "${TINY[@]}" "${FM[@]}" --finetune "$P/model.safetensors" --freeze-trunk --data-path "$TRAIN" --val-path "$TEST" --batch-size 50 --iters 3 --eval-resize 28 --output-dir "$T/lp" --threads 1
expect "extract_features writes .npy" 0 "500 x 32 float32" "$B/extract_features" "${TINY[@]}" "${FM[@]}" --weights "$P/model.safetensors" --data-path "$TEST" --resize 28 --output "$T/feats.npy" --threads 1
if [ -s "$T/feats.npy" ] && [ -s "$T/feats.labels.npy" ] && [ "$(head -c 6 "$T/feats.npy" | tail -c 5)" = "NUMPY" ]; then ok "features and labels .npy"; else bad "features and labels .npy" "missing or not .npy"; fi

# --backend vulkan (lavapipe in CI): the same tiny runs with the model and optimizer on the device;
# the losses follow the CPU's (same seed, data and masks) within float rounding. A build without the
# Vulkan headers, or a machine without a loader or device, gets one visible SKIP.
V="$T/vk"
vk_out=$("$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$V/pre" --iters 4 --batch-size 32 --threads 1 --backend vulkan 2>&1)
vk_rc=$?
if [ "$vk_rc" -ne 0 ] && grep -qiE "vulkan.*(not compiled|loader|device|VK_)" <<<"$vk_out"; then
    echo "SKIP --backend vulkan runs: $(echo "$vk_out" | tail -n 1)"
else
    if [ "$vk_rc" -eq 0 ] && grep -q "done: 4 steps" <<<"$vk_out"; then ok "mae_pretrain --backend vulkan runs"; else bad "mae_pretrain --backend vulkan runs" "exit $vk_rc: $(echo "$vk_out" | tail -n 2)"; fi
    for f in checkpoint.hvts model.safetensors log.csv; do
        if [ -s "$V/pre/$f" ]; then ok "vulkan mae_pretrain wrote $f"; else bad "vulkan mae_pretrain wrote $f" "missing"; fi
    done
    "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$V/cpu" --iters 4 --batch-size 32 --threads 1 >/dev/null 2>&1
    verdict=$(losses_close "$V/pre/log.csv" "$V/cpu/log.csv" 4)
    if [ "$verdict" = ok ]; then ok "vulkan losses follow the CPU's (1e-4)"; else bad "vulkan losses follow the CPU's" "$verdict"; fi
    expect "tc_train --backend vulkan" 0 "done: 6 steps" "$B/tc_train" "${TC_TINY[@]}" --data-path "$EP" --output-dir "$V/tc" --iters 6 --backend vulkan
    "$B/tc_train" "${TC_TINY[@]}" --data-path "$EP" --output-dir "$V/tc_cpu" --iters 6 >/dev/null 2>&1
    # the first step's loss to 1e-4; later ones drift (Adam's normalised update turns the device's
    # float differences in near-zero gradients into whole lr-sized steps; 5e-4 seen at step 6)
    verdict=$(losses_close "$V/tc/log.csv" "$V/tc_cpu/log.csv" 6 5e-3)
    if [ "$verdict" = ok ] && [ "$(losses_close <(head -2 "$V/tc/log.csv") <(head -2 "$V/tc_cpu/log.csv") 1)" = ok ]; then
        ok "vulkan tc_train losses follow the CPU's (1e-4 at step 1, 5e-3 after)"
    else bad "vulkan tc_train losses follow the CPU's" "$verdict"; fi
    expect "mae_pretrain --backend vulkan --resume" 0 "resumed from .*at step 4" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.1 --output-dir "$V/pre" --iters 5 --batch-size 32 --threads 1 --backend vulkan --resume
    expect "finetune --backend vulkan" 0 "top-1" "$B/finetune" "${TINY[@]}" "${FM[@]}" --finetune "$V/pre/model.safetensors" --data-path "$TRAIN" --val-path "$TEST" --frac-retained 0.02 --batch-size 20 --iters 3 --eval-resize 28 --output-dir "$V/ft" --threads 1 --backend vulkan
    expect "extract_features --backend vulkan" 0 "500 x 32 float32" "$B/extract_features" "${TINY[@]}" "${FM[@]}" --weights "$V/pre/model.safetensors" --data-path "$TEST" --resize 28 --output "$V/feats.npy" --threads 1 --backend vulkan
fi

# Perceptual MAE: a tiny generator at 224 px (the discriminator's size) and a tiny discriminator;
# 20 images in batches of 4 = 5 batches an epoch, the generator's lr x 0.9 after each (--lr-step 1)
G="$T/pmae"
PM=(--model custom --img-size 224 --patch-size 32 --embed-dim 32 --depth 1 --num-heads 2 --in-chans 1 --decoder-embed-dim 16 --decoder-depth 1 --decoder-num-heads 2 --ndf 4 "${FM[@]}" --data-path "$TRAIN" --data-fraction 0.01 --batch-size 4 --threads 1 --lr-step 1)
expect "pmae_train runs" 0 "done: 4 steps" "$B/pmae_train" "${PM[@]}" --output-dir "$G" --iters 4
for f in checkpoint.hvts model.safetensors discriminator.hvts discriminator_copy.safetensors log.csv loss.svg; do
    if [ -s "$G/$f" ]; then ok "pmae_train wrote $f"; else bad "pmae_train wrote $f" "missing"; fi
done
expect "pmae_train --resume" 0 "resumed from .*at step 4" "$B/pmae_train" "${PM[@]}" --output-dir "$G" --iters 7 --resume
expect "pmae_train straight through" 0 "done: 7 steps" "$B/pmae_train" "${PM[@]}" --output-dir "$G/straight" --iters 7
if diff <(cut -d, -f1-4,7- "$G/log.csv") <(cut -d, -f1-4,7- "$G/straight/log.csv") >/dev/null; then ok "pmae_train resumed = straight run (losses, lr)"; else bad "pmae_train resumed = straight run" "$(diff <(cut -d, -f1-4,7- "$G/log.csv") <(cut -d, -f1-4,7- "$G/straight/log.csv") | head -4)"; fi
if awk -F, 'NR == 6 && $4 == 0.00015 { a = 1 } NR == 7 && $4 == 0.000135 { b = 1 } END { exit !(a && b) }' "$G/log.csv"; then ok "pmae_train StepLR per epoch"; else bad "pmae_train StepLR per epoch" "$(cut -d, -f1-4 "$G/log.csv" | sed -n 6,7p | tr '\n' ' ')"; fi
expect "finetune reads the PMAE generator" 0 "top-1" "$B/finetune" --model custom --img-size 224 --patch-size 32 --embed-dim 32 --depth 1 --num-heads 2 --in-chans 1 "${FM[@]}" --finetune "$G/model.safetensors" --data-path "$TRAIN" --val-path "$TEST" --frac-retained 0.01 --batch-size 10 --iters 1 --eval-resize 224 --output-dir "$G/ft" --threads 1

# tc_train: 6 steps straight, and 3 + 3 with --resume, give the same losses; a train_tc.py .tar as --weights
C="$T/tc"
expect "tc_train runs" 0 "done: 6 steps" "$B/tc_train" "${TC_TINY[@]}" --data-path "$EP" --output-dir "$C/full" --iters 6
for f in checkpoint.hvts model.safetensors log.csv loss.svg; do
    if [ -s "$C/full/$f" ]; then ok "tc_train wrote $f"; else bad "tc_train wrote $f" "missing"; fi
done
expect "tc_train first half" 0 "done: 3 steps" "$B/tc_train" "${TC_TINY[@]}" --data-path "$EP" --output-dir "$C/half" --iters 3
expect "tc_train --resume" 0 "resumed from .*at step 3" "$B/tc_train" "${TC_TINY[@]}" --data-path "$EP" --output-dir "$C/half" --iters 6 --resume
if [ -s "$C/half/log.csv" ] && [ "$(cut -d, -f1-3 "$C/full/log.csv")" = "$(cut -d, -f1-3 "$C/half/log.csv")" ]; then ok "tc_train resumed run = straight run"; else bad "tc_train resumed run = straight run" "$(diff <(cut -d, -f1-3 "$C/full/log.csv") <(cut -d, -f1-3 "$C/half/log.csv") | head -4)"; fi
expect "tc_train from a train_tc.py .tar" 0 "loaded 122 tensors from .*resnext_tiny_tc.tar; 0 not in the file" "$B/tc_train" "${TC_TINY[@]}" --num-classes 5 --weights "$TC_TAR" --data-path "$EP" --output-dir "$C/tar" --iters 2
expect "tc_train from its own model.safetensors" 0 "loaded [0-9]+ tensors from .*model.safetensors; 0 not in the file" "$B/tc_train" "${TC_TINY[@]}" --weights "$C/full/model.safetensors" --data-path "$EP" --output-dir "$C/again" --iters 1

# a loss that turns NaN: the run stops before the update, the last good checkpoint (step 1) stays
N="$T/nan"
expect "mae_pretrain stops on NaN" 1 "loss is (nan|NaN|inf).*stopped before the update.*last good checkpoint" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" --data-path "$TRAIN" --output-dir "$N" --iters 8 --batch-size 16 --threads 1 --lr 1e30 --save-every 1
expect "the last good checkpoint resumes" 0 "resumed from .*at step 1" "$B/mae_pretrain" "${TINY[@]}" "${TINY_DEC[@]}" --data-path "$TRAIN" --output-dir "$N" --iters 1 --batch-size 16 --threads 1 --resume

# the quick demo end to end
D="$T/demo"
start=$SECONDS
out=$("$B/fmnist_demo" --quick --output-dir "$D" 2>&1)
rc=$?
echo "$out" | tail -n 8
echo "(quick demo: $((SECONDS - start)) s)"
if [ "$rc" -eq 0 ]; then ok "quick demo exits 0"; else bad "quick demo exits 0" "exit $rc"; fi
n=$(grep -c "best top-1 .* at step [0-9]*, kept in .*/model_best.safetensors" <<<"$out")
if [ "$n" -eq 8 ]; then ok "quick demo says where each finetuning run kept its best"; else bad "quick demo says where it kept the best" "$n of 8 lines"; fi
for f in results.md results.csv accuracy.svg pretrain_0.01/loss.svg pretrain_1/model.safetensors finetune_mae100pct_labels2pct/log.csv \
    finetune_none_labels1pct/model_best.safetensors finetune_mae100pct_labels2pct/model_best.safetensors; do
    if [ -s "$D/$f" ]; then ok "quick demo wrote $f"; else bad "quick demo wrote $f" "missing"; fi
done
if [ -f "$D/results.csv" ]; then
    # every model reported; every accuracy above chance (10%) with margin; pretrained rows present
    verdict=$(awk -F, 'NR > 1 { n++; if ($5 < 20 || $7 < 13 || $9 < 13) low = low " " $1 ":" $5 "/" $7 "/" $9; if ($3 > 0) pre++ }
        END { if (n != 4) print "rows " n; else if (pre != 3) print "pretrained rows " pre; else if (low != "") print "near chance:" low; else print "ok" }' "$D/results.csv")
    if [ "$verdict" = ok ]; then ok "quick demo accuracies above chance, 3 pretrained + baseline"; else bad "quick demo accuracies" "$verdict"; fi
fi
if grep -q '<polyline' "$D/accuracy.svg" 2>/dev/null && grep -q 'log scale' "$D/accuracy.svg"; then ok "accuracy.svg is a plot"; else bad "accuracy.svg is a plot" "no polyline"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
