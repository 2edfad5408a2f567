"""DPO training throughput and agreement: our DPO step (`ft_course.dpo`) vs TRL's `DPOTrainer` on the same batches.

Both train fresh copies of the same model (chapter 9's alignment start, else the shipped base, else `--base DIR`)
against a live frozen reference (a second copy), on the same preference pairs (`preference_dataset`) in the same
order (TRL with `train_sampling_strategy='sequential'`), the same batch size, AdamW at a constant learning rate with
no weight decay, gradient clipping at 1.0, fp32 on the CPU, sigmoid loss. TRL is given `bf16=False` and
`gradient_checkpointing=False` (its defaults are True, which on a CPU only slows it down) and the reference model
explicitly. Tokens/s is the number of real (non-padding) tokens of the policy's batches over the wall-clock time of
the training loop (TRL's dataset tokenization, done once up front, is excluded; our per-step tokenization is
included). Rounds alternate between the two so that a change in machine load hits both; the best round counts.
The loss difference is the largest |ours − TRL| over the steps of a round (the same batches from the same weights).

    python benchmarks/dpo.py                       # ~1 minute on one CPU thread
    python benchmarks/dpo.py --steps 8 --rounds 1

The last line printed is one JSON object.
"""
import argparse, copy, json, os, platform, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="a saved model directory to use instead of the alignment start")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per round")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per trainer (alternating); the best counts")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from datasets import Dataset
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from ft_course.data import preference_dataset
    from ft_course.dpo import DPOConfig, dpo_batch_loss, encode_pairs, sequence_logps
    from ft_course.models import load_base
    from ft_course.rollout import alignment_start
    from trl import DPOConfig as TRLConfig, DPOTrainer
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers; transformers.logging.set_verbosity_error()

    model, tok = load_base(args.base, device='cpu') if args.base else alignment_start()
    model.eval()
    rows = preference_dataset(args.steps * args.batch_size, seed=args.seed).to_list()
    batches = [rows[s * args.batch_size:(s + 1) * args.batch_size] for s in range(args.steps)]
    tokens = sum(int(encode_pairs(tok, b).attention_mask.sum()) for b in batches)
    cfg = DPOConfig(beta=args.beta)

    def ours():
        torch.manual_seed(args.seed)
        policy, ref = copy.deepcopy(model).train(), copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
        losses, t0 = [], time.perf_counter()
        for b in batches:
            batch = encode_pairs(tok, b)
            with torch.no_grad(): ref_lp = sequence_logps(ref, batch)
            loss, _ = dpo_batch_loss(policy, batch, ref_lp, cfg)
            loss.backward(); torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step(); opt.zero_grad(set_to_none=True); losses.append(loss.item())
        return time.perf_counter() - t0, losses

    def trl():
        policy, ref = copy.deepcopy(model), copy.deepcopy(model)
        with tempfile.TemporaryDirectory() as d:
            targs = TRLConfig(output_dir=d, beta=args.beta, loss_type=['sigmoid'], bf16=False, gradient_checkpointing=False,
                              use_cpu=True, report_to='none', per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                              learning_rate=args.lr, lr_scheduler_type='constant', warmup_steps=0, weight_decay=0.0,
                              max_grad_norm=1.0, optim='adamw_torch', logging_steps=1, save_strategy='no', disable_tqdm=True,
                              train_sampling_strategy='sequential', max_length=None, seed=args.seed, dataloader_num_workers=0)
            tr = DPOTrainer(model=policy, ref_model=ref, args=targs, processing_class=tok,
                            train_dataset=Dataset.from_list([{k: r[k] for k in ('prompt', 'chosen', 'rejected')} for r in rows]))
            t0 = time.perf_counter(); tr.train(); dt = time.perf_counter() - t0
        return dt, [h['loss'] for h in tr.state.log_history if 'loss' in h and 'train_runtime' not in h]

    best = dict(ours=float('inf'), trl=float('inf')); gaps, first = [], []
    for r in range(args.rounds):
        t_o, l_o = ours(); t_t, l_t = trl()
        best['ours'], best['trl'] = min(best['ours'], t_o), min(best['trl'], t_t)
        assert len(l_o) == len(l_t) == args.steps, (len(l_o), len(l_t))
        gaps.append(max(abs(a - b) for a, b in zip(l_o, l_t))); first.append(abs(l_o[0] - l_t[0]))
        print(f"round {r + 1}: ours {t_o:.2f} s, DPOTrainer {t_t:.2f} s, max |Δ loss| {gaps[-1]:.2e}", file=sys.stderr)
    speed = {k: tokens / v for k, v in best.items()}
    ratio = speed['ours'] / speed['trl']
    print(f"\n{'trainer':<28}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'ours (ft_course.dpo)':<28}{best['ours']:>10.2f}{speed['ours']:>12,.0f}")
    print(f"{'TRL DPOTrainer':<28}{best['trl']:>10.2f}{speed['trl']:>12,.0f}")
    print(f"ours / TRL: {ratio:.2f}x tokens/s; max |loss difference| over {args.steps} steps: {max(gaps):.2e} "
          f"({args.steps} steps x {args.batch_size} pairs, {tokens:,} tokens, {args.threads} thread(s), best of {args.rounds})\n")
    print(json.dumps(dict(benchmark='dpo', ours_tokens_per_s=round(speed['ours'], 1), trl_tokens_per_s=round(speed['trl'], 1),
                          speedup=round(ratio, 3), max_loss_diff=max(gaps), first_step_loss_diff=max(first),
                          steps=args.steps, batch_size=args.batch_size, tokens=tokens, threads=args.threads,
                          torch=torch.__version__, trl=__import__('trl').__version__, machine=platform.machine())))


if __name__ == "__main__":
    main()
