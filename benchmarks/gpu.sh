#!/usr/bin/env bash
# Everything the course checks on a CUDA GPU, in one run (about 8 minutes on one H100 / H200):
#
#   bash benchmarks/gpu.sh [OUTDIR] [SECONDS]
#
# 1. tests/test_cuda.py: NF4 against bitsandbytes' CUDA kernels, load_4bit in bf16, bf16-autocast training, the
#    sampler against generate, left padding, and SFT / reward model / DPO / PPO / GRPO on CUDA.
# 2. benchmarks/rlhf.py --device cuda: our KV-cache sampler vs model.generate, and PPO steps/s; benchmarks/grpo.py
#    --device cuda: our GRPO vs TRL GRPOTrainer for 30 s each, then chapter 9c's recipe with four seeds.
# 3. benchmarks/lora.py on CUDA: the shipped base in fp32 and bf16, then a GPT-2-small-shaped model (124M, random
#    weights, the course tokenizer) in bf16 — LoRA vs peft, our QLoRA vs bitsandbytes' CUDA kernels, step memory
#    predicted vs the allocator's peak.
# 4. benchmarks/sft.py --device cuda --bf16: our loop vs TRL SFTTrainer vs transformers Trainer, and exact match.
# 5. benchmarks/pretrain.py --device cuda --bf16: our GPT vs GPT2LMHeadModel at GPT-2 small's shape, MFU against
#    the bf16 matmul rate measured on the card.
#
# OUTDIR (default gpu_results/) gets gpu.log (everything) and results.jsonl (each benchmark's last JSON line).
# The steps run in this order until SECONDS (default 600) are spent; a step that fails does not stop the others.
# ONLY=REGEX runs only the steps whose names match (e.g. ONLY='test_cuda|grpo').
# The alignment start is a seeded SFT run, and another CPU or torch build trains a different one (27.3 % on an H200
# host's torch 2.11, 34.5 % here). To compare with this machine's numbers, copy ~/.cache/ft_course/alignment_start
# into a folder that travels with the run and export FT_COURSE_CACHE=<that folder's parent> before this script.
set -u
OUT=${1:-gpu_results}; BUDGET=${2:-600}; ONLY=${ONLY:-.}
mkdir -p "$OUT"; LOG="$OUT/gpu.log"; RES="$OUT/results.jsonl"; : > "$LOG"; : > "$RES"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s); TMP=$(mktemp -d)

step() {   # step NAME LIMIT_S CMD...: run CMD with at most LIMIT_S (or what is left), log it, keep its last JSON line
    local name=$1 limit=$2; shift 2
    [[ $name =~ $ONLY ]] || return 0
    local left=$(( BUDGET - ($(date +%s) - T0) ))
    if (( left < 20 )); then echo "=== $name: skipped, the budget is spent" | tee -a "$LOG"; return; fi
    (( limit > left )) && limit=$left
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local s=$(date +%s)
    timeout "$limit" "$@" > "$TMP/step.log" 2>&1; local rc=$?
    cat "$TMP/step.log" >> "$LOG"
    echo "=== $name: exit $rc after $(( $(date +%s) - s ))s" | tee -a "$LOG"
    local js; js=$(grep '^{' "$TMP/step.log" | tail -n 1)
    [[ -n "$js" ]] && echo "{\"step\": \"$name\", \"exit\": $rc, \"result\": $js}" >> "$RES"
    grep -v '^{' "$TMP/step.log" | grep -E 'passed|failed|skipped|error|x |ours|goal|exact match|MFU|peak|tokens/s|ms/step|^(full|lora|peft|qlora)' | tail -n 30
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers, peft, trl, bitsandbytes; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|', torch.cuda.get_device_name(), '| transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'bitsandbytes', bitsandbytes.__version__)"
} 2>&1 | tee -a "$LOG"

step test_cuda 200 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider -rs
step rlhf_sampler 120 $PY benchmarks/rlhf.py --device cuda
step grpo_vs_trl 120 $PY benchmarks/grpo.py --device cuda --seconds 30
step grpo_seeds 150 $PY benchmarks/grpo.py --device cuda --seeds 4 --setting 'over 100'
step lora_base_fp32 60 $PY benchmarks/lora.py --device cuda --repeats 5
step lora_base_bf16 60 $PY benchmarks/lora.py --device cuda --bf16 --repeats 5
[[ lora_124m_bf16 =~ $ONLY ]] && $PY - "$TMP/gpt2-small" >> "$LOG" 2>&1 <<'EOF'
import sys
from ft_course.models import load_base
from ft_course.pretrain import PretrainConfig, make_model
_, tok = load_base(device='cpu')
m = make_model(PretrainConfig(n_embd=768, n_layer=12, n_head=12, block_size=512), tok)   # GPT-2 small's shape, 512 context
m.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
print(f"GPT-2-small-shaped model: {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters")
EOF
step lora_124m_bf16 120 $PY benchmarks/lora.py --device cuda --bf16 --base "$TMP/gpt2-small" --seq-len 512 --repeats 5
step sft_bf16 150 $PY benchmarks/sft.py --device cuda --bf16 --budget-s 30
step pretrain_124m_bf16 90 $PY benchmarks/pretrain.py --device cuda --bf16 --n-embd 768 --n-layer 12 --n-head 12 --n-ctx 1024 --batch-size 16 --peak-size 8192
echo "=== done in $(( $(date +%s) - T0 ))s; $(wc -l < "$RES") results in $RES" | tee -a "$LOG"
