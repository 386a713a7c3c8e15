#!/usr/bin/env bash
# Run-to-run spread of one vLLM config measured by `vllm bench serve` alone, each run with its
# own random prompts (--seed), so no run can hit the prefix cache of another (device machine):
#   bash bench/real/bench_serve_repeats.sh MODEL_DIR OUT_DIR RUNS [extra `vllm serve` flags...]
set -euo pipefail
model=$1 out=$2 runs=$3; shift 3
mkdir -p "$out"
port=8311
python3 -m vllm.entrypoints.cli.main serve "$model" --host 127.0.0.1 --port $port \
  --load-format dummy "$@" > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
for seed in $(seq 1 "$runs"); do
  python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url "http://127.0.0.1:$port" \
    --model "$model" --tokenizer "$model" --dataset-name random --random-input-len 1024 \
    --random-output-len 256 --num-prompts 800 --max-concurrency 256 --num-warmups 64 \
    --ignore-eos --temperature 0 --seed "$seed" --percentile-metrics ttft,tpot,itl,e2el \
    --metric-percentiles 50,90,99 --save-result --result-dir "$out" \
    --result-filename "bench-seed-$seed.json" --disable-tqdm > "$out/bench-seed-$seed.log" 2>&1
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('seed', sys.argv[2], round(d['output_throughput']), 'tok/s, TTFT p50', round(d['median_ttft_ms']), 'p99', round(d['p99_ttft_ms']), 'TPOT p50', round(d['median_tpot_ms'],1))" "$out/bench-seed-$seed.json" "$seed"
done
