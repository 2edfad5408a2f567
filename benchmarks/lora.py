"""Training step time and memory of LoRA: `ft_course.lora` vs peft, and QLoRA: `ft_course.quant` vs bitsandbytes + peft.

Five methods train the same model (the shipped base, or `--base DIR`) on the same batch: `full` fine-tuning (the
reference), `lora` (our `inject_lora`), `peft` (`get_peft_model` with `fan_in_fan_out=True`, GPT-2's Conv1D),
`qlora` (our from-scratch NF4 `quantize_model`, then `inject_lora`) and `qlora_bnb` (`load_4bit`, i.e. transformers'
`BitsAndBytesConfig` NF4, then `get_peft_model`). All four adapters start from the same A and B (B set to small random
values rather than zeros, so that the update branch counts); our LoRA and peft must give the same loss on the batch
(|diff| <= 1e-5), which is checked and printed before any timing.

The batch is `--batch-size` real SFT examples (the course's `instruction_dataset()` train split, Alpaca template, loss on
the response only), padded on the right to `--seq-len` tokens. One training step = forward with labels, backward,
AdamW step (foreach) over the trainable parameters, `zero_grad(set_to_none=True)`, all in fp32 (or the forward pass
under bf16 autocast with `--bf16`, bitsandbytes computing in bf16). After `--warmup`
untimed steps each, the methods take turns: `--repeats` rounds of `--steps` steps per method, so that a change in
machine load hits all of them; ms/step is the median over rounds (the best round is printed too).

Memory comes from `ft_course.memory.training_step_memory` (one AdamW step with lr=0): bytes of weights, gradients,
optimizer states and saved activations; on CUDA also the allocator's peak during that step above what was allocated
before it. MB = 1e6 bytes.

    python benchmarks/lora.py                               # ~1 minute on 2 CPU cores
    python benchmarks/lora.py --methods lora peft --repeats 3 --threads 1

The goal: our LoRA's step time <= 1.05x peft's. The last line printed is one JSON object.
"""
from __future__ import annotations
import argparse, copy, json, logging, os, platform, statistics, sys, time, warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.utils.logging import disable_progress_bar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from ft_course.data import instruction_dataset
from ft_course.lora import count_trainable, inject_lora, load_into_peft, lora_state_dict
from ft_course.memory import training_step_memory
from ft_course.models import load_base
from ft_course.quant import load_4bit, quantize_model
from ft_course.sft import SFTCollator, tokenize_dataset

METHODS = {"full": "full fine-tuning", "lora": "ours: LoRA", "peft": "peft LoRA",
           "qlora": "ours: QLoRA (NF4)", "qlora_bnb": "bitsandbytes NF4 + peft"}
GOAL = 1.05   # our LoRA's step time over peft's
MB = 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="a saved model directory or hub id (default: the shipped base)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (weights and adapters stay fp32; bitsandbytes computes in bf16)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row; longer examples are left out")
    p.add_argument("--targets", nargs="+", default=["c_attn", "c_proj", "c_fc"], help="layers LoRA adapts")
    p.add_argument("-r", "--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per method")
    p.add_argument("--steps", type=int, default=5, help="timed steps per method and round")
    p.add_argument("--repeats", type=int, default=7, help="rounds; the methods take turns within each")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, or OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sft_batch(tok, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    "The first `--batch-size` training examples that fit `--seq-len`, padded to exactly `--seq-len` tokens."
    tds = tokenize_dataset(instruction_dataset(seed=args.seed)["train"], tok, max_length=args.seq_len)
    if len(tds) < args.batch_size: raise SystemExit(f"only {len(tds)} examples fit --seq-len {args.seq_len}")
    batch = SFTCollator(tok.pad_token_id, pad_to_multiple_of=args.seq_len)([tds[i] for i in range(args.batch_size)])
    return {k: v.to(args.device) for k, v in batch.items()}


def make_adapter(base: nn.Module, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    "A and B for every adapted layer (ours' names), with B random: the starting point of every LoRA method."
    torch.manual_seed(args.seed)
    sd = lora_state_dict(inject_lora(copy.deepcopy(base), args.targets, r=args.rank, alpha=args.alpha))
    return {k: torch.randn_like(v) * 0.02 if k.endswith("lora_B") else v for k, v in sd.items()}


def _ours(model: nn.Module, sd: dict[str, torch.Tensor], args: argparse.Namespace) -> nn.Module:
    inject_lora(model, args.targets, r=args.rank, alpha=args.alpha)
    unexpected = model.load_state_dict(sd, strict=False).unexpected_keys
    assert not unexpected, unexpected
    return model


def _peft(model: nn.Module, sd: dict[str, torch.Tensor], args: argparse.Namespace, fan_in_fan_out: bool) -> nn.Module:
    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=args.targets,
                     fan_in_fan_out=fan_in_fan_out, task_type="CAUSAL_LM")
    return load_into_peft(get_peft_model(model, cfg), sd)


def build(method: str, base: nn.Module, sd: dict[str, torch.Tensor], args: argparse.Namespace) -> nn.Module:
    "A fresh model for `method`, on `--device`, in training mode, with its trainable parameters set."
    fresh = lambda: copy.deepcopy(base).to(args.device)
    if method == "full": model = fresh().requires_grad_(True)
    elif method == "lora": model = _ours(fresh(), sd, args)
    elif method == "peft": model = _peft(fresh(), sd, args, fan_in_fan_out=True)
    elif method == "qlora": model = _ours(quantize_model(fresh()), sd, args)
    else:                                                                                             # Linear4bit
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        model = _peft(load_4bit(args.base, device=args.device, compute_dtype=dtype)[0], sd, args, fan_in_fan_out=False)
    return model.train()


def autocast(args: argparse.Namespace):
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16)


def make_step(model: nn.Module, batch: dict[str, torch.Tensor], args: argparse.Namespace) -> Callable[[], None]:
    "One training step of `model` on `batch`."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    def step():
        with autocast(args): loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


@torch.no_grad()
def loss_of(model: nn.Module, batch: dict[str, torch.Tensor], args: argparse.Namespace) -> float:
    with autocast(args): return model(**batch).loss.item()


def step_memory(model: nn.Module, batch: dict[str, torch.Tensor], cuda: bool, args: argparse.Namespace) -> dict[str, float]:
    "training_step_memory in MB; on CUDA with the allocator's peak during the step above what was allocated before."
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
    with autocast(args): out = {k: v / MB for k, v in training_step_memory(model, batch).items()}
    if cuda: torch.cuda.synchronize(); out["cuda_peak_above_resident"] = (torch.cuda.max_memory_allocated() - before) / MB
    return out


def time_rounds(steps: dict[str, Callable[[], None]], args: argparse.Namespace) -> dict[str, list[float]]:
    "ms/step of every method in each of `--repeats` rounds, the methods taking turns, after `--warmup` steps each."
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for step in steps.values():
        for _ in range(args.warmup): step()
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, step in steps.items():
            sync(); t = time.perf_counter()
            for _ in range(args.steps): step()
            sync(); times[k].append((time.perf_counter() - t) / args.steps * 1e3)
    return times


def ratio(times: dict[str, float], a: str, b: str) -> float | None:
    return round(times[a] / times[b], 3) if a in times and b in times else None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore"); logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR); disable_progress_bar()
    load_at_start = os.getloadavg()[0]
    cuda = args.device.startswith("cuda")
    methods = [m for m in METHODS if m in args.methods]
    base, tok = load_base(args.base, device="cpu")
    batch = sft_batch(tok, args)
    sd = make_adapter(base, args)
    models = {m: build(m, base, sd, args) for m in methods}

    losses = {m: loss_of(model, batch, args) for m, model in models.items()}
    diff = abs(losses["lora"] - losses["peft"]) if {"lora", "peft"} <= losses.keys() else None
    tol = 1e-2 if args.bf16 else 1e-5             # bf16 keeps 8 bits of mantissa: the two orders of the sums round apart
    assert diff is None or diff <= tol, f"our LoRA and peft disagree on the loss: {losses}"
    trainable = {m: count_trainable(model)[0] for m, model in models.items()}
    memory = {m: step_memory(model, batch, cuda, args) for m, model in models.items()}
    torch.manual_seed(args.seed)
    times = time_rounds({m: make_step(model, batch, args) for m, model in models.items()}, args)
    med = {m: statistics.median(v) for m, v in times.items()}
    best = {m: min(v) for m, v in times.items()}
    paired = (round(statistics.median(o / p for o, p in zip(times["lora"], times["peft"])), 3)
              if {"lora", "peft"} <= times.keys() else None)
    ours_vs_peft = ratio(med, "lora", "peft")

    print(f"torch {torch.__version__} | {platform.machine()} | device {args.device} | threads {torch.get_num_threads()} | "
          f"1-min load average at start {load_at_start:.2f}")
    print(f"model: {args.base or 'shipped base'}, {count_trainable(base)[1] / 1e6:.2f}M parameters; LoRA r={args.rank}, "
          f"alpha={args.alpha} on {args.targets}; batch {args.batch_size} x {args.seq_len} tokens "
          f"({int((batch['labels'] != -100).sum())} with a loss); {'bf16 autocast' if args.bf16 else 'fp32'}")
    print(f"{args.repeats} rounds x {args.steps} timed steps per method (after {args.warmup} warmup); median and best round")
    print(f"{'method':<10}{'':<26}{'ms/step':>9}{'best':>8}{'vs full':>9}{'trainable':>11}{'loss':>9}"
          "  (adapters: with the random B)")
    for m in methods:
        vs_full = f"{med[m] / med['full']:.2f}x" if "full" in med else "-"
        print(f"{m:<10}{METHODS[m]:<26}{med[m]:>9.1f}{best[m]:>8.1f}{vs_full:>9}{trainable[m]:>11,}{losses[m]:>9.5f}")
    if diff is not None:
        print(f"loss |ours - peft| = {diff:.2e} (<= {tol:g}: the same computation)")
        print(f"ours / peft (LoRA): {ours_vs_peft:.3f}x (median rounds), {paired:.3f}x (median of per-round ratios), "
              f"{best['lora'] / best['peft']:.3f}x (best rounds); goal <= {GOAL}: "
              f"{'met' if ours_vs_peft <= GOAL else 'NOT met'}")
    if {"qlora", "qlora_bnb"} <= med.keys():
        print(f"ours / bitsandbytes (QLoRA): {med['qlora'] / med['qlora_bnb']:.3f}x; loss |ours - bnb| = "
              f"{abs(losses['qlora'] - losses['qlora_bnb']):.2e} (the two NF4 roundings may differ slightly)")
    for m in ("lora", "qlora"):
        if {"full", m} <= med.keys(): print(f"full / {m}: {med['full'] / med[m]:.2f}x")
    cols = list(next(iter(memory.values())))
    print("memory of one training step (MB):")
    print(f"{'method':<10}" + "".join(f"{c.replace('cuda_peak_above_resident', 'cuda peak'):>13}" for c in cols))
    for m in methods: print(f"{m:<10}" + "".join(f"{memory[m][c]:>13.2f}" for c in cols))

    result = dict(benchmark="lora", device=args.device, bf16=args.bf16, batch_size=args.batch_size, seq_len=args.seq_len,
                  ms_per_step={m: round(v, 2) for m, v in med.items()},
                  ms_per_step_best={m: round(v, 2) for m, v in best.items()},
                  ours_vs_peft=ours_vs_peft, ours_vs_peft_paired=paired, goal_ours_vs_peft_le=GOAL,
                  goal_met=None if ours_vs_peft is None else ours_vs_peft <= GOAL,
                  qlora_ours_vs_bnb=ratio(med, "qlora", "qlora_bnb"), full_vs_lora=ratio(med, "full", "lora"),
                  memory_mb={m: {k: round(v, 3) for k, v in d.items()} for m, d in memory.items()},
                  trainable=trainable, loss={m: round(v, 6) for m, v in losses.items()},
                  loss_diff_ours_peft=diff, rank=args.rank, alpha=args.alpha, targets=args.targets,
                  warmup=args.warmup, steps=args.steps, repeats=args.repeats, threads=torch.get_num_threads(),
                  load_avg_at_start=round(load_at_start, 2), torch=torch.__version__)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
