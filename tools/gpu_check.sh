#!/usr/bin/env bash
# The GPU checks as one prepared run on a GPU machine (docs/benchmarks.md, "On a GPU"):
# the CUDA / nccl training path (plain loop, then pipeline + bf16 + compile) on the demo data,
# then tools/bench_train.py at batch 10,000 for K = 1, 4, 10. Every step's log, the runs'
# metrics.json and the bench JSON land under $OUT (default gpu_check/); a summary is printed.
#
#   run(command="bash tools/gpu_check.sh", carry=[".gpu"], timeout_s=540)
#
# With .gpu/ (the GPU stack's wheels plus PyYAML, see docs/install.md) they are installed first.
# GPU_CHECK_STEPS (20) timed steps per bench row, GPU_CHECK_BATCH (10000) the bench batch:
# smaller values let the script itself be tried on a CPU machine.
# Then the throughput rows at each batch of GPU_CHECK_BATCHES (10000 65536), K = 1 and 10:
# separate and stacked per-model tables beside the naive reference (the KDEF authors'
# computation) in the same run. GPU_CHECK_PARTS=throughput runs only those (< 7 minutes);
# a CPU dry run: GPU_CHECK_PARTS=throughput GPU_CHECK_BATCHES=256 GPU_CHECK_STEPS=1
# GPU_CHECK_VOCAB_SCALE=0.01 bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
STEPS=${GPU_CHECK_STEPS:-20}
BATCH=${GPU_CHECK_BATCH:-10000}
BATCHES=${GPU_CHECK_BATCHES:-10000 65536}
PARTS=${GPU_CHECK_PARTS:-all}
VOCAB_SCALE=${GPU_CHECK_VOCAB_SCALE:-1.0}
mkdir -p "$OUT"

if [ -d .gpu ]; then  # the device has torch but no torchrec / fbgemm-gpu and no registry
  site=/tmp/site
  mkdir -p "$site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu/*.whl
  tar xJf .gpu/fbgemm_gpu-*.tar.xz -C "$site"
  export PYTHONPATH="$site:$PWD"
else
  export PYTHONPATH="$PWD"
fi

failed=0
step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name: $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "   ok, $(($(date +%s) - start)) s"
  else
    failed=$((failed + 1))
    echo "   FAILED (exit $rc), $(($(date +%s) - start)) s; the log's end:"
    tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
  fi
}

step versions 60 python3 -c "import torch, torchrec, fbgemm_gpu
print('torch', torch.__version__, 'torchrec', torchrec.__version__, 'fbgemm_gpu', fbgemm_gpu.__version__)
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
cat "$OUT/versions.log"

if [ "$PARTS" = all ]; then
step data 120 python3 -m recsys_kdef.data.synthetic --config configs/demo.yaml
train=(torchrun --standalone --nproc_per_node 1 recsys_kdef/train.py --config configs/demo.yaml
  --train.epochs 1 --train.progress_bar false --train.save_checkpoint false)
step train_plain 240 "${train[@]}" --train.output_dir "$OUT/train_plain"
step train_fast 300 "${train[@]}" --train.output_dir "$OUT/train_fast" \
  --train.pipeline true --train.autocast bf16 --train.compile true

bench=(python3 tools/bench_train.py --modes per_model --batch-size "$BATCH" --steps "$STEPS")
step bench 300 "${bench[@]}" --students 1 4 10 --pipeline both --out "$OUT/bench.json"
step bench_bf16_compile 300 "${bench[@]}" --students 1 10 --pipeline on --compile both \
  --train.autocast bf16 --out "$OUT/bench_bf16_compile.json"
fi

for b in $BATCHES; do  # ~6 rows a batch; the 65,536 rows take the longest
  step "throughput_$b" 200 python3 tools/bench_train.py --modes per_model --students 1 10 \
    --layouts separate stacked --naive --pipeline off --batch-size "$b" --steps "$STEPS" \
    --vocab-scale "$VOCAB_SCALE" --out "$OUT/throughput_$b.json"
done

echo "== summary ($failed failed)"
python3 - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
for run in ("train_plain", "train_fast"):
    path = out / run / "metrics.json"
    if path.exists():
        report = json.loads(path.read_text())
        speed = report["history"][-1]["samples_per_sec"]
        print(f"{run}: test ensemble AUC {report['test']['ensemble']['auc']:.4f}, "
              f"{report['steps']} steps, {speed:,.0f} samples/s")
names = ["bench", "bench_bf16_compile", *sorted(p.stem for p in out.glob("throughput_*.json"))]
for name in names:
    path = out / f"{name}.json"
    if path.exists():
        for r in json.loads(path.read_text())["results"]:
            print(f"{name}: K={r['students']:<3} {r.get('table_layout', ''):<9} "
                  f"b={r['batch_size']:<6} pipeline={r['pipeline']!s:<5} "
                  f"compile={r['compile']!s:<5} {r['ms_per_step']:8.2f} ms/step "
                  f"{r['samples_per_sec']:>12,.0f} samples/s  x K=1 {r['step_over_k1']:.2f}  "
                  f"ids {r.get('ids_per_step', 0):,} ops {r.get('ops_per_step', 0)} "
                  f"syncs {r.get('host_syncs_per_step', '-')}")
        for f in json.loads(path.read_text()).get("scaling", []):
            print(f"{name}: pipeline={f['pipeline']!s:<5} compile={f['compile']!s:<5} step = "
                  f"{f['fixed_ms']:.2f} ms + K x {f['per_student_ms']:.2f} ms")
EOF
exit "$failed"
