#!/usr/bin/env bash
# Every GPU check of the project in one command, from the repository root of a CUDA machine:
#
#     bash bench/run_gpu.sh
#
# 1. builds the extension with its CUDA sources and checks that the CUDA kernels are registered;
# 2. compiles every Triton launch configuration for this GPU's arch (registers, spills, shared
#    memory, the occupancy they allow), runs the kernels, and sets the driver's registers and
#    spills beside the compile-time figures: a spill on the device fails (compiled.log);
# 3. runs the whole test suite natively (Triton compiled for the GPU, no interpreter);
# 4. runs every benchmark file on CUDA (pytest-benchmark, JSON + table);
# 5. measures the device copy bandwidth and the Triton mixing kernel against cuBLAS;
# 6. when a CIFAR folder is at EXPERIMENT_DATA (default data/cifar10; carry it to the device),
#    runs the paper's experiment (bench/shuffle_experiment.py: fixed, none, random, learned and
#    a late-penalty recipe, 3 seeds, 30 epochs, 4 training processes sharing the GPU) for at most
#    EXPERIMENT_SECONDS (default 300); the same command again resumes it where it stopped.
#
# Results go to $OUT when set, else bench/gpu-results/. Needs python3 with a CUDA torch, triton,
# pytest, numpy, scipy. Without internet, pytest-benchmark and hypothesis are installed from a
# folder of wheels when missing: WHEELS (default bench/wheels), made on a machine with internet by
#     python3 -m pip download pytest-benchmark hypothesis -d bench/wheels
# (the .whl files of both and of their dependencies). The script goes on after a failing step and
# exits non-zero if any failed; each step's log is in the results folder.
set -uo pipefail

cd "$(dirname "$0")/.."
RESULTS="${OUT:-bench/gpu-results}"
WHEELS="${WHEELS:-bench/wheels}"
mkdir -p "$RESULTS"
unset TRITON_INTERPRET
failed=()

step() {  # step NAME COMMAND...: runs, logs to $RESULTS/NAME.log, records a failure
    local name=$1
    shift
    echo "== $name"
    if "$@" >"$RESULTS/$name.log" 2>&1; then
        tail -n 3 "$RESULTS/$name.log"
    else
        tail -n 30 "$RESULTS/$name.log"
        failed+=("$name")
    fi
}

{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"; } \
    >"$RESULTS/machine.txt" 2>&1
tail -n 1 "$RESULTS/machine.txt"

for pkg in pytest_benchmark:pytest-benchmark hypothesis:hypothesis; do
    if ! python3 -c "import ${pkg%%:*}" 2>/dev/null; then
        python3 -m pip install -q --no-index --find-links "$WHEELS" "${pkg##*:}" \
            || echo "missing ${pkg##*:}: put its wheels in $WHEELS"
    fi
done

step build python3 -m pip install -e . --no-build-isolation --no-deps

step registered python3 - <<'EOF'
import torch

import autoshuffle_ext as asx

assert torch.cuda.is_available(), "no CUDA device"
assert asx.extension_available(), "the compiled library did not load"
for op in ("channel_gather", "shuffle_mix_fwd", "shuffle_mix_bwd", "ell_mix", "sparse_mix",
           "l1l2_penalty_fwd", "l1l2_penalty_bwd"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"autoshuffle_ext::{op}", "CUDA"), op
    print("CUDA kernel registered:", op)
EOF

# Compile-time figures for this arch (the same as `make test` checks for sm_80 and sm_90), then
# the driver's for the kernels as loaded: expected occupancy = resident warps per SM allowed by
# registers and shared memory, over the SM's maximum.
step compiled python3 -m autoshuffle_ext.kernels.gpu_compile --device --markdown \
    --json "$RESULTS/compiled.json"

step tests python3 -m pytest -q -ra tests --junitxml="$RESULTS/tests.xml"

step bench python3 -m pytest -q bench -k cuda --benchmark-only --benchmark-sort=name \
    --benchmark-columns=median,iqr,min,rounds --benchmark-json="$RESULTS/bench.json"

step kernels python3 - <<'EOF'
# Copy bandwidth (the memory-bound floor) and the mixing forward: Triton (product + penalty, one
# launch) vs cuBLAS (torch.matmul, product only), medians from triton.testing.do_bench.
import torch
from triton.testing import do_bench

from autoshuffle_ext.kernels.mixing import shuffle_mix_forward
from autoshuffle_ext.ops.mixing import empty_mix_output, mix_aten

torch.set_float32_matmul_precision("highest")
big = torch.empty(2**28, device="cuda")  # 1 GiB
ms = do_bench(lambda: big.clone(), return_mode="median")
print(f"clone of 1 GiB: {ms:.3f} ms, {2 * big.nbytes / ms / 1e6:.0f} GB/s (read + write)")
print(f"{'shape':>20} {'layout':>14} {'dtype':>9} {'triton ms':>10} {'cublas ms':>10} "
      f"{'clone ms':>9} {'triton GB/s':>12}")
for shape in [(64, 240, 16, 16), (32, 232, 14, 14), (1, 116, 28, 28), (256, 464, 7, 7)]:
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
            M = torch.rand(shape[1], shape[1], device="cuda")
            y = empty_mix_output(x)
            t = do_bench(lambda: shuffle_mix_forward(x, M, y), return_mode="median")
            c = do_bench(lambda: mix_aten(x, M), return_mode="median")
            k = do_bench(lambda: x.clone(), return_mode="median")
            gbs = 2 * x.nbytes / t / 1e6
            print(f"{str(shape):>20} {str(fmt)[6:]:>14} {str(dtype)[6:]:>9} {t:10.4f} {c:10.4f} "
                  f"{k:9.4f} {gbs:12.0f}")
EOF
cat "$RESULTS/kernels.log"

EXPERIMENT_DATA="${EXPERIMENT_DATA:-data/cifar10}"
if [[ -d "$EXPERIMENT_DATA" ]]; then
    # timeout stops it mid-run at worst: every run keeps its last epoch's checkpoint, and the
    # report is written from whatever has finished (--report-only after a timeout).
    step experiment timeout "${EXPERIMENT_SECONDS:-300}" python3 -m bench.shuffle_experiment \
        --data-dir "$EXPERIMENT_DATA" --device cuda --parallel 4 --epochs 30 --seeds 0,1,2 \
        --out "$RESULTS/experiment" \
        --recipe late="--shuffle-init uniform --penalty-start 0.5 --penalty-ramp 0.9"
    python3 -m bench.shuffle_experiment --data-dir "$EXPERIMENT_DATA" --epochs 30 \
        --seeds 0,1,2 --out "$RESULTS/experiment" --report-only \
        --recipe late="--shuffle-init uniform --penalty-start 0.5 --penalty-ramp 0.9" \
        >"$RESULTS/experiment.md" 2>&1
    tail -n 40 "$RESULTS/experiment.md"
else
    echo "== experiment skipped: no CIFAR folder at $EXPERIMENT_DATA"
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (logs in $RESULTS)"
    exit 1
fi
echo "all GPU checks passed; results in $RESULTS"
