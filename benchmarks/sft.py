"""Supervised fine-tuning throughput: `ft_course.train` vs TRL `SFTTrainer` vs Hugging Face `Trainer`, then exact match.

All three train the same model (fresh copies of the same weights) on the same instruction data (the course's
`instruction_dataset()` train split, Alpaca template, loss on the response only), with the same batch size, peak
learning rate, warmup + cosine schedule, gradient clipping and fp32 on the CPU (or bf16 autocast on a GPU with
`--device cuda --bf16`), for one epoch each. Every epoch holds
the same examples, so the three process the same number of real (non-padding) tokens; tokens/s is that number over the
wall-clock time of the training call (dataset preparation, done once up front by each, is excluded). Each library keeps
its own defaults otherwise (noted in the table: the optimizer implementation differs). TRL is given
`gradient_checkpointing=False` and bf16 only with `--bf16` (its defaults are True, which on a CPU only slows it down). The rounds
alternate between the three so that a change in machine load hits all of them; the best round counts.

Then exact match on the held-out test split before and after `--budget-s` seconds of our loop from the same base.

    python benchmarks/sft.py                        # ~4 minutes on 2 CPU cores
    python benchmarks/sft.py --rounds 1 --budget-s 30 --threads 1
    python benchmarks/sft.py --device cuda --bf16          # on a GPU

The model is the shipped base (`ft_course/assets/base`) if it exists, else `--base DIR`, else a small random GPT-2
(throughput only means something then; exact match will stay near zero). The last line printed is one JSON object.
"""
import argparse, copy, json, logging, os, platform, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from ft_course.data import format_prompt, instruction_dataset
from ft_course.evaluate import evaluate
from ft_course.models import base_dir, load_base
from ft_course.sft import SFTCollator, tokenize_dataset
from ft_course.train import TrainConfig, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="a saved model directory, used when the shipped base is missing")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="timed epochs per trainer (alternating); the best counts")
    p.add_argument("--budget-s", type=float, default=120, help="seconds of our loop for the exact-match measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA for all three (TRL's and Trainer's bf16=True)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def get_model(args):
    "(model, tokenizer, description) of the model to benchmark."
    if (base_dir()/"config.json").exists(): m, t = load_base(device="cpu"); return m, t, "shipped base (ft_course/assets/base)"
    if args.base: m, t = load_base(args.base, device="cpu"); return m, t, f"{args.base} (the shipped base is missing)"
    from ft_course.data import pretraining_corpus
    from ft_course.pretrain import PretrainConfig, make_model
    from ft_course.tokenizer import train_tokenizer
    t = train_tokenizer(pretraining_corpus(2000))
    m = make_model(PretrainConfig(n_embd=128, n_layer=4, n_head=4), t)
    return m, t, "small random GPT-2 (NOTE: the shipped base is missing; exact match is meaningless)"


def run_ours(model, tok, tds, args, steps):
    cfg = TrainConfig(lr=args.lr, max_steps=steps, batch_size=args.batch_size, warmup=args.warmup, eval_every=10**9,
                      seed=args.seed, progress=False, bf16=args.bf16)
    t = time.perf_counter(); hist = train(model, tds, None, cfg, tokenizer=tok); dt = time.perf_counter() - t
    return dt, hist["train"][-1]


def _hf_args(cls, out, args, steps, **kw):
    return cls(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=steps, learning_rate=args.lr,
               warmup_steps=args.warmup, lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0,
               report_to="none", use_cpu=args.device == "cpu", save_strategy="no", logging_strategy="no", bf16=args.bf16,
               dataloader_num_workers=0, seed=args.seed, disable_tqdm=True, **kw)


def make_trl(model, tok, rows, args, steps, out):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    pc = Dataset.from_dict(dict(prompt=[format_prompt(r["instruction"], r["input"]) for r in rows], completion=list(rows["output"])))
    cfg = _hf_args(SFTConfig, out, args, steps, completion_only_loss=True, max_length=model.config.n_positions,
                   gradient_checkpointing=False, packing=False)
    return SFTTrainer(model=model, args=cfg, train_dataset=pc, processing_class=tok)


def make_hf(model, tok, tds, args, steps, out):
    from transformers import Trainer, TrainingArguments
    return Trainer(model=model, args=_hf_args(TrainingArguments, out, args, steps, remove_unused_columns=False),
                   train_dataset=tds, data_collator=SFTCollator(tok.pad_token_id))


def run_trainer(trainer):
    trainer.optimizer, trainer.lr_scheduler = None, None            # a fresh optimizer and schedule for every run
    t = time.perf_counter(); out = trainer.train(); dt = time.perf_counter() - t
    return dt, out.training_loss


def main(argv=None):
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore"); logging.getLogger("transformers").setLevel(logging.ERROR)
    load_at_start = os.getloadavg()[0]
    base, tok, desc = get_model(args)
    base.to(args.device).train()
    data = instruction_dataset(seed=args.seed)
    tds = tokenize_dataset(data["train"], tok, max_length=base.config.n_positions)
    steps = -(-len(tds) // args.batch_size)                        # one epoch
    real_tokens = sum(map(len, tds["input_ids"]))                 # what every epoch processes, padding excluded
    n_params = sum(p.numel() for p in base.parameters())
    tmp = tempfile.mkdtemp()

    # build the library trainers once (their dataset preparation is not timed), each on its own copy of the weights
    trainers = {"trl": make_trl(copy.deepcopy(base), tok, data["train"], args, steps, tmp + "/trl"),
                "hf": make_hf(copy.deepcopy(base), tok, tds, args, steps, tmp + "/hf")}
    init = {k: copy.deepcopy(t.model.state_dict()) for k, t in trainers.items()}
    # warm up every path with a few steps (allocator, kernels, lazy imports)
    run_ours(copy.deepcopy(base), tok, tds, args, 3)
    for k in trainers:
        trainers[k].args.max_steps = 3; run_trainer(trainers[k]); trainers[k].args.max_steps = steps
    times, losses = {k: [] for k in ("ours", "trl", "hf")}, {}
    for r in range(args.rounds):
        dt, losses["ours"] = run_ours(copy.deepcopy(base), tok, tds, args, steps); times["ours"].append(dt)
        for k, t in trainers.items():
            t.model.load_state_dict(init[k])                       # a fresh start from the same weights
            dt, losses[k] = run_trainer(t); times[k].append(dt)
    best = {k: min(v) for k, v in times.items()}
    tps = {k: real_tokens / best[k] for k in best}

    # exact match before and after our loop, from the same base
    model = copy.deepcopy(base)
    before = evaluate(model, tok, data["test"], "base")
    cfg = TrainConfig(lr=args.lr, epochs=None, max_seconds=args.budget_s, batch_size=args.batch_size, warmup=args.warmup,
                      eval_every=10**9, seed=args.seed, progress=False, bf16=args.bf16)
    hist = train(model, tds, None, cfg, tokenizer=tok)
    after = evaluate(model, tok, data["test"], "SFT")

    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(f"torch {torch.__version__} | {dev_name} | {'bf16 autocast' if args.bf16 else 'fp32'} | threads {torch.get_num_threads()} | "
          f"1-min load average at start {load_at_start:.2f}")
    print(f"model: {desc}; {n_params / 1e6:.2f}M parameters, context {base.config.n_positions}")
    print(f"data: {len(tds)} training examples, {real_tokens} real tokens per epoch; batch {args.batch_size}, "
          f"{steps} steps per epoch; best of {args.rounds} timed epoch(s) per trainer")
    print(f"{'trainer':<28}{'best s/epoch':>13}{'tokens/s':>10}{'vs TRL':>8}  optimizer")
    labels = {"ours": ("ft_course.train", "torch AdamW, foreach"), "trl": ("TRL SFTTrainer", "adamw_torch_fused (default)"),
              "hf": ("transformers Trainer", "adamw_torch_fused (default)")}
    for k, (name, opt) in labels.items():
        print(f"{name:<28}{best[k]:>13.2f}{tps[k]:>10.0f}{tps[k] / tps['trl']:>7.2f}x  {opt}")
    print(f"ours / TRL: {tps['ours'] / tps['trl']:.2f}x   ours / Trainer: {tps['ours'] / tps['hf']:.2f}x")
    print(f"exact match on the test split ({len(data['test'])} examples): base {before.accuracy:.1%} -> "
          f"{after.accuracy:.1%} after {hist['seconds'][-1]:.0f} s ({hist['step'][-1]} steps) of ft_course.train")
    print(after.table().to_string())
    result = dict(device=dev_name, bf16=args.bf16, ours_tokens_per_s=round(tps["ours"], 1), trl_tokens_per_s=round(tps["trl"], 1),
                  hf_tokens_per_s=round(tps["hf"], 1), ratio_ours_over_trl=round(tps["ours"] / tps["trl"], 3),
                  ratio_ours_over_hf=round(tps["ours"] / tps["hf"], 3),
                  seconds_per_epoch={k: [round(x, 2) for x in v] for k, v in times.items()},
                  exact_match_before=round(before.accuracy, 4), exact_match_after=round(after.accuracy, 4),
                  sft_seconds=round(hist["seconds"][-1], 1), sft_steps=hist["step"][-1], budget_s=args.budget_s,
                  model=desc, n_params=n_params, batch_size=args.batch_size, steps_per_epoch=steps,
                  real_tokens_per_epoch=real_tokens, threads=torch.get_num_threads(),
                  load_avg_at_start=round(load_at_start, 2), torch=torch.__version__)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
