"""Training throughput of `ft_course.gpt.GPT` vs Hugging Face `GPT2LMHeadModel`, same config and batch.

One training step = forward + loss + backward + AdamW step (foreach; fused on CUDA), fp32 (or bf16 autocast with
`--bf16`), on random tokens, on `--device` (CUDA when there is one). Both models start
from identical weights (the HF one is `gpt_to_hf` of ours) and get the same optimizer settings. Timed
steps alternate between the two models, so that any drift in machine speed hits both equally.

MFU = 6 * N * tokens_per_s / peak, where N counts all parameters once (embeddings included: the tied
`wte` is also the output head's matmul) and peak is this machine's best `torch.mm` rate in the same dtype, measured here.
Tokens/s come from the median step time, peak from the best matmul sample (matmuls are sampled
before, between and after the training steps). The fastest steps are printed too; on a quiet machine
the two agree, and where they don't, other processes were competing for the CPU.
6N leaves out attention's own T^2 matmuls (reported as `attn_flops_share`).

    python benchmarks/pretrain.py                  # ~2 minutes on 2 CPU cores
    python benchmarks/pretrain.py --n-layer 4 --steps 3
    python benchmarks/pretrain.py --device cuda --bf16 --n-embd 768 --n-layer 12 --n-head 12 --n-ctx 1024 --batch-size 16

The last line printed is one JSON object.
"""
import argparse, json, math, os, platform, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from ft_course.gpt import GPT, GPTConfig, gpt_to_hf


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--n-ctx", type=int, default=256, help="sequence length T (and the model's context)")
    p.add_argument("--n-embd", type=int, default=512)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    p.add_argument("--steps", type=int, default=6, help="timed steps per model")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, all cores)")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul used to measure peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both models (weights stay fp32); the peak is then bf16's")
    p.add_argument("--hf-fused-gelu", action="store_true",
                   help="ablation: swap HF's Python gelu_new for F.gelu(approximate='tanh')")
    return p.parse_args(argv)


def sync(device):
    if str(device).startswith("cuda"): torch.cuda.synchronize()


def matmul_peak_gflops(n=2048, reps=3, device="cpu", dtype=torch.float32, _cache={}):
    "Best GFLOP/s of an n×n @ n×n `torch.mm` in `dtype` on `device` over `reps` runs."
    key = (n, str(device), dtype)
    if key not in _cache:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        _cache[key] = a, b, torch.empty(n, n, device=device, dtype=dtype)
        for _ in range(2): torch.mm(a, b, out=_cache[key][2])
    a, b, c = _cache[key]
    best = math.inf
    for _ in range(reps):
        sync(device); t = time.perf_counter(); torch.mm(a, b, out=c); sync(device); best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def make_step(model, is_hf, device="cpu", bf16=False):
    # foreach: on CPU it is ~4x faster than fused=True and ~10x faster than the default per-tensor loop; fused on CUDA
    cuda = str(device).startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=not cuda, fused=cuda)
    def step(x):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, labels=x).loss if is_hf else model(x, labels=x)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def main(argv=None):
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(args.seed)
    cfg = GPTConfig(vocab_size=args.vocab_size, n_ctx=args.n_ctx, n_embd=args.n_embd,
                    n_layer=args.n_layer, n_head=args.n_head, dropout=0.0)
    B, T = args.batch_size, args.n_ctx
    ours = GPT(cfg).train()
    hf = gpt_to_hf(ours).train().to(args.device)
    ours.to(args.device)          # same weights; HF picks its default attention ("sdpa")
    if args.hf_fused_gelu:                # ablation: give HF our fused GELU kernel
        for blk in hf.transformer.h: blk.mlp.act = torch.nn.GELU(approximate="tanh")
    N = ours.num_params()
    assert N == hf.num_parameters()
    batches = torch.randint(0, cfg.vocab_size, (args.warmup + args.steps, B, T)).to(args.device)
    mm = dict(device=args.device, dtype=torch.bfloat16 if args.bf16 else torch.float32)

    # The peak is sampled before, between and after the training steps and the best sample is kept,
    # so that a moment of load from other processes does not lower it.
    peaks = [matmul_peak_gflops(args.peak_size, reps=5, **mm)]
    runs = {"ours": make_step(ours, False, args.device, args.bf16), "hf": make_step(hf, True, args.device, args.bf16)}
    times = {k: [] for k in runs}
    losses = {k: [] for k in runs}
    for i in range(args.warmup + args.steps):
        for name, step in runs.items():
            t = time.perf_counter()
            losses[name].append(step(batches[i]))           # .item() inside waits for the GPU
            if i >= args.warmup: times[name].append(time.perf_counter() - t)
        if i >= args.warmup: peaks.append(matmul_peak_gflops(args.peak_size, reps=2, **mm))
    peak = max(peaks)
    # identical weights + identical batches: the two loss curves must agree
    # (bf16 rounds differently in the two attention kernels: a looser bound there)
    assert max(abs(a - b) for a, b in zip(losses["ours"], losses["hf"])) < (3e-2 if args.bf16 else 1e-3), losses

    # tokens/s from the median step; the fastest step is printed alongside (on a quiet machine they agree)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    tok = {k: B * T / med[k] for k in med}
    tok_best = {k: B * T / best[k] for k in best}
    # ours vs HF per round (the two steps of a round ran back to back), then the median over rounds
    paired = statistics.median(h / o for o, h in zip(times["ours"], times["hf"]))
    peak_med = statistics.median(peaks)
    mfu = {k: 6 * N * tok[k] / (peak * 1e9) for k in tok}
    attn_flops = 6 * 2 * cfg.n_layer * T * cfg.n_embd  # fwd+bwd of QK^T and AV per token (causal half not discounted)

    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(f"torch {torch.__version__} | {dev_name} | {'bf16 autocast' if args.bf16 else 'fp32'} | threads {torch.get_num_threads()} | "
          f"1-min load average at start {load_at_start:.2f}")
    print(f"config: vocab {cfg.vocab_size}, T {T}, n_embd {cfg.n_embd}, n_layer {cfg.n_layer}, n_head {cfg.n_head}, "
          f"batch {B} ({B * T} tokens/step), N = {N / 1e6:.2f}M params (all, incl. embeddings)"
          + (", HF given fused GELU" if args.hf_fused_gelu else ""))
    print(f"{'bf16' if args.bf16 else 'fp32'} matmul peak ({args.peak_size}^3 torch.mm, best of {len(peaks)} samples): {peak:.1f} GFLOP/s "
          f"(median sample {peak_med:.1f})")
    if peak_med < 0.8 * peak:
        print("WARNING: matmul speed varied during the run, so other processes were using the CPU: "
              "the numbers are noisy and the MFUs low; rerun on a quiet machine")
    print(f"{args.steps} timed steps per model after {args.warmup} warmup; MFU = 6*N*tokens_per_s / peak")
    print(f"{'model':<17}{'s/step':>8}{'tokens/s':>10}{'GFLOP/s 6N':>12}{'MFU':>7}"
          f"{'best s/step':>13}{'tokens/s':>10}{'loss':>8}")
    for k, label in (("ours", "ft_course GPT"), ("hf", "GPT2LMHeadModel")):
        print(f"{label:<17}{med[k]:>8.3f}{tok[k]:>10.0f}{6 * N * tok[k] / 1e9:>12.1f}{mfu[k]:>7.1%}"
              f"{best[k]:>13.3f}{tok_best[k]:>10.0f}{losses[k][-1]:>8.4f}")
    print(f"ours / hf: {tok['ours'] / tok['hf']:.3f}x (median steps), {paired:.3f}x (median of per-round ratios), "
          f"{tok_best['ours'] / tok_best['hf']:.3f}x (best steps)")
    result = dict(device=dev_name, bf16=args.bf16, ours_tokens_per_s=round(tok["ours"], 1), hf_tokens_per_s=round(tok["hf"], 1),
                  ratio_ours_over_hf=round(tok["ours"] / tok["hf"], 3), ratio_paired=round(paired, 3),
                  matmul_peak_gflops=round(peak, 1), matmul_median_gflops=round(peak_med, 1),
                  ours_mfu=round(mfu["ours"], 4), hf_mfu=round(mfu["hf"], 4),
                  ours_tokens_per_s_best=round(tok_best["ours"], 1), hf_tokens_per_s_best=round(tok_best["hf"], 1),
                  n_params=N, mfu_params="all (embeddings included, tied head counted once)",
                  attn_flops_share=round(attn_flops / (6 * N + attn_flops), 4),
                  threads=torch.get_num_threads(), load_avg_at_start=round(load_at_start, 2), torch=torch.__version__,
                  config=dict(vocab_size=cfg.vocab_size, n_ctx=T, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, batch_size=B, warmup=args.warmup, steps=args.steps,
                              hf_fused_gelu=args.hf_fused_gelu))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
