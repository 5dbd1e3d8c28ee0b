#!/usr/bin/env bash
# Heavy real-data rows on a lent H200, in one call of the device tool (see leaderboard/results/README.md):
#   carry .whl (pydantic wheels for the device's Python), .devdata (the three datasets' files), .devcache
#   (the prepared SID data, so no embedding model is needed there); REASONREC_GIT_COMMIT=$(git rev-parse HEAD)
#   (typed into the command from a clean checkout here) names the
#   commit the tree was copied from. SUITES names the suites of this folder to run (default: the Table-1 rows;
#   issue 25's LASAR rows: SUITES="lasar-beauty lasar-sports lasar-instruments"; TIGER at its paper's size on the
#   three datasets: SUITES=tiger; .devcache may then also carry
#   the teacher CoT and segment embeddings, $REASONREC_CACHE/lasar). Runs them at once (one process per run), stops
#   them at DEADLINE seconds, and packs every complete run's result files (no checkpoints) into $OUT; then, per
#   dataset with the seed-0 models, Table 4's latency JSON and the exact-scoring check into $OUT/bench (BENCH=0: not).
# Before the call, here: copy each dataset's files (Beauty: inter, item, index, item2attributes; Sports: inter,
# item, item2attributes; Instruments: inter, index) from ../shared/data into .devdata/<dataset>/, run
# `reasonrec prepare --dataset <d>` for each, `cp -r ~/.cache/reasonrec .devcache`, and download the pydantic
# wheels into .whl (the device tool's README, Python 3.12). All three folders are git-ignored.
set -u
DEADLINE=${DEADLINE:-520}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD REASONREC_DATA=$PWD/.devdata REASONREC_CACHE=$PWD/.devcache
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
rr() { python3 -c 'import sys; from bench.cli import main; sys.exit(main())' "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# smoke: a toy generative run on the GPU, seconds; stop here if the stack is broken
rr run --method minionerec --dataset toy --out /tmp/smoke --set method_config.sft.epochs=1 \
   --set method_config.backbone.preset=tiny --set eval.max_users=8 > $OUT/smoke.log 2>&1 || { tail -30 $OUT/smoke.log; exit 2; }
mkdir -p $OUT/logs
pids=()
for s in ${SUITES:-sports instruments beauty sports-hybrid}; do
  jobs=3; [ $s = sports-hybrid ] && jobs=1
  setsid bash -c "$(declare -f rr); rr suite leaderboard/suites/h200/$s.yaml --jobs $jobs" > $OUT/logs/$s.log 2>&1 &
  pids+=($!)
done
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt $DEADLINE ]; do
  alive=0; for p in "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 10
done
for p in "${pids[@]}"; do kill -- -$p 2>/dev/null; done
sleep 2
# Table 4 (latency of the saved models in one process) and the exact-scoring check (issue 29), for each dataset
# whose finished seed-0 models are here: MiniOneRec (SFT+RL), LASAR (SFT+RL), GREAM (reasoning) where made.
# BENCH=0 skips it; BENCH_SECONDS bounds each command.
if [ "${BENCH:-1}" = 1 ]; then
  mkdir -p $OUT/bench
  for ds in beauty sports instruments; do
    models=$(python3 - "$ds" <<'PY'
import json, pathlib, sys
want = {"MiniOneRec (SFT+RL)": "minionerec", "LASAR (SFT+RL)": "lasar", "GREAM (reasoning)": "gream"}
got = {}
for f in sorted(pathlib.Path("runs/table1").glob(f"*-{sys.argv[1]}-s0-*/result.json")):
    label = json.loads(f.read_text())["spec"].get("label")
    if label in want and (f.parent / "model").is_dir():
        got[want[label]] = f"{want[label]}={f.parent / 'model'}"
print(" ".join(got[m] for m in ("minionerec", "lasar", "gream") if m in got))
PY
)
    set -- $models
    [ $# -ge 2 ] || continue
    margs=(); for m in "$@"; do margs+=(--model "$m"); done
    timeout ${BENCH_SECONDS:-120} rr bench latency --dataset $ds "${margs[@]}" --users 1000 --repeats 3 \
      --out $OUT/bench/table4-$ds-h200.json > $OUT/bench/latency-$ds.log 2>&1
    timeout ${BENCH_SECONDS:-120} rr bench exact --dataset $ds --model "$1" --model "$2" --users 100 \
      --out $OUT/bench/exact-$ds-h200.json > $OUT/bench/exact-$ds.log 2>&1
  done
fi
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/device.txt
for ds in beauty sports instruments; do
  done_runs=$(cd runs/table1 2>/dev/null && ls -d *-$ds-*/result.json 2>/dev/null | xargs -r -n1 dirname)
  [ -n "$done_runs" ] && (cd runs/table1 && tar czf $OUT/$ds.tgz --exclude=model --exclude=checkpoints $done_runs)
done
for d in runs/table1/*/; do cp $d/run.log $OUT/logs/$(basename $d).run.log 2>/dev/null; done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
python3 - <<'PY'
import json, pathlib
for d in sorted(pathlib.Path("runs/table1").glob("*")):
    f = d / "result.json"
    if not f.is_file():
        print(f"{d.name:40s} incomplete"); continue
    r = json.loads(f.read_text()); t = r["training"]
    print(f"{d.name:40s} {r['spec'].get('label')!s:32s} N@10 {r['metrics']['NDCG@10']:.4f} "
          f"valid {t.get('sft', {}).get('best_valid')} train {t.get('seconds')} s")
PY
exit 0
