"""GRPO throughput: `ft_course.grpo` vs TRL `GRPOTrainer` on the same work, then held-out exact match.

Both start from the alignment start (`ft_course.rollout.alignment_start`) and do the same work per rollout batch:
`--prompts` prompts from `rl_prompts()`, `--group` answers each at temperature 1 and at most `--max-new` tokens, the
exact checker as the reward, group-std-scaled advantages, the 'grpo' loss, no KL, then `--epochs` passes of
`--minibatches` Adam(W) steps at lr `--lr` (constant). TRL gets bf16=False and gradient_checkpointing=False (its defaults
are True, which on a CPU only slows it down), no vLLM. Each runs for `--seconds` of wall clock (TRL through a
callback that stops it after the step that passes the budget); rollout batches per second is the number of batches
completed over the training call's wall-clock time. The two runs alternate for `--rounds` rounds so that a change in
machine load hits both; the best round counts. Then both models' held-out greedy exact match (110 test examples).

    python benchmarks/grpo.py                       # ~3 minutes on one thread
    python benchmarks/grpo.py --seconds 30 --rounds 1
    python benchmarks/grpo.py --sweep               # the settings sweep recorded in nbs/09c_grpo.ipynb (~15 minutes)
    python benchmarks/grpo.py --seeds 4             # the longer runs, several seeds each, recorded there too (~25 minutes)
    python benchmarks/grpo.py --device cuda --seeds 4 --setting 'over 100'   # the chapter's recipe on a GPU

The last line printed is one JSON object.
"""
import argparse, copy, json, os, platform, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from ft_course.data import instruction_dataset
from ft_course.evaluate import alpaca_prompt, evaluate, first_line, is_correct
from ft_course.grpo import GRPOConfig, grpo, partial_reward, positions_from_mask
from ft_course.rollout import alignment_start, exact_reward, rl_prompts

SWEEP = [  # name, reward weight for partial credit (0: exact only), settings
    ('lr 1e-4', 0, dict(lr=1e-4)),
    ('lr 2e-4', 0, dict(lr=2e-4)),
    ('lr 1e-4, 32 prompts/step', 0, dict(lr=1e-4, prompts_per_step=32)),
    ('lr 2e-4, 32 prompts/step, beta 0.04', 0, dict(lr=2e-4, prompts_per_step=32, beta=0.04)),
    ('lr 1e-4, partial credit 0.5', 0.5, dict(lr=1e-4)),
    ('lr 1e-4, Dr. GRPO', 0, dict(lr=1e-4, scale_rewards='none', loss_type='dr_grpo')),
    ('lr 2e-4, 32 prompts/step', 0, dict(lr=2e-4, prompts_per_step=32)),
    ('lr 2e-4, cosine to step 50', 0, dict(lr=2e-4, max_steps=50, cosine=True)),
    ('lr 1e-4, T = 0.7', 0, dict(lr=1e-4, temperature=0.7)),
]

SEED_RUNS = [  # name, settings: each run to its last step, then held-out exact match (the chapter's SEEDS table)
    ('lr 1e-4, 120 steps', dict(lr=1e-4, max_steps=120)),
    ('lr 1e-4, cosine to 1e-5 over 100 steps', dict(lr=1e-4, max_steps=100, cosine=True)),
    ('lr 1e-4, cosine to 1e-5 over 120 steps', dict(lr=1e-4, max_steps=120, cosine=True)),
    ('lr 2e-4, cosine to 2e-5 over 120 steps', dict(lr=2e-4, max_steps=120, cosine=True)),
    ('lr 1e-4, 32 prompts a step, 60 steps', dict(lr=1e-4, max_steps=60, prompts_per_step=32)),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="wall-clock budget of each training run")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of (ours, TRL); the best counts")
    p.add_argument("--prompts", type=int, default=16, help="prompts per rollout batch")
    p.add_argument("--group", type=int, default=8, help="answers per prompt (G)")
    p.add_argument("--epochs", type=int, default=2, help="passes over each rollout batch")
    p.add_argument("--minibatches", type=int, default=2, help="optimizer steps per pass")
    p.add_argument("--max-new", type=int, default=16, help="longest answer in tokens, EOS included")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", action="store_true", help="run the settings sweep of the chapter instead (each run --seconds)")
    p.add_argument("--seeds", type=int, default=0, help="instead, run each of SEED_RUNS with seeds 0 .. N-1 to its last step")
    p.add_argument("--setting", default="", help="with --seeds: only the SEED_RUNS whose name contains this text")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both trainers, fp32)")
    p.add_argument("--trainers", nargs="+", choices=["ours", "trl"], default=["ours", "trl"], help="which to run")
    p.add_argument("--trl-positions-from-mask", action="store_true",
                   help="ablation: give TRL's model position ids from the attention mask (cumsum - 1), as generate uses")
    return p.parse_args(argv)


def run_ours(start, tok, rows, args):
    m = copy.deepcopy(start)
    cfg = GRPOConfig(lr=args.lr, max_steps=10**6, prompts_per_step=args.prompts, group_size=args.group, epochs=args.epochs,
                     minibatches=args.minibatches, max_new_tokens=args.max_new, max_seconds=args.seconds, seed=args.seed, progress=False)
    t = time.perf_counter(); h = grpo(m, tok, rows, exact_reward, cfg); dt = time.perf_counter() - t
    return m, len(h["step"]), dt


def run_trl(start, tok, rows, args):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig, GRPOTrainer

    def checker(prompts, completions, completion_ids, task, input, output, **kw):
        return [float(tok.eos_token_id in ids and is_correct(dict(task=t, input=i, output=o), first_line(c)))
                for c, ids, t, i, o in zip(completions, completion_ids, task, input, output)]

    class Budget(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw): self.t0 = time.time()
        def on_step_end(self, a, state, control, **kw):
            if time.time() - self.t0 > args.seconds: control.should_training_stop = True

    m = copy.deepcopy(start)
    if args.trl_positions_from_mask: positions_from_mask(m)
    per_batch = args.prompts * args.group
    cfg = TRLConfig(output_dir=tempfile.mkdtemp(), bf16=False, gradient_checkpointing=False, use_cpu=args.device == "cpu", report_to="none",
                    save_strategy="no", disable_tqdm=True, logging_strategy="no", per_device_train_batch_size=per_batch // args.minibatches,
                    steps_per_generation=args.minibatches, num_generations=args.group, num_iterations=args.epochs,
                    max_completion_length=args.max_new, learning_rate=args.lr, lr_scheduler_type="constant", loss_type="grpo",
                    beta=0.0, temperature=1.0, max_steps=10**6, seed=args.seed)
    ds = Dataset.from_list([dict(prompt=alpaca_prompt(r), task=r["task"], input=r["input"], output=r["output"]) for r in rows])
    tr = GRPOTrainer(model=m, reward_funcs=[checker], args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Budget()])
    t = time.perf_counter(); tr.train(); dt = time.perf_counter() - t
    return m, tr.state.global_step / (args.epochs * args.minibatches), dt


def sweep(start, tok, rows, test, args):
    out = []
    for name, weight, kw in SWEEP:
        cfg = GRPOConfig(**{**dict(max_new_tokens=args.max_new, max_steps=10**6, max_seconds=args.seconds, eval_every=5, seed=args.seed,
                                   progress=False), **kw})
        if kw.get('max_steps'): cfg.max_seconds = None
        rf = exact_reward if not weight else (lambda r, w, k=weight: partial_reward(r, w, k))
        h = grpo(copy.deepcopy(start), tok, rows, rf, cfg, eval_fn=lambda m: evaluate(m, tok, test).accuracy)
        at30 = dict(h["eval"]).get(30, float("nan"))
        best = max(h["eval"], key=lambda x: x[1])
        out.append(dict(setting=name, steps=len(h["step"]), at_step_30=at30, best=best[1], best_step=best[0], final_kl=h["kl"][-1]))
        print(json.dumps(out[-1]), flush=True)
    return out


def seed_runs(start, tok, rows, test, args):
    out = []
    for name, kw in SEED_RUNS:
        if args.setting not in name: continue
        acc, secs = [], []
        for seed in range(args.seeds):
            cfg = GRPOConfig(**{**dict(max_new_tokens=args.max_new, seed=seed, progress=False), **kw})
            m = copy.deepcopy(start)
            t = time.perf_counter(); grpo(m, tok, rows, exact_reward, cfg); secs.append(round(time.perf_counter() - t, 1))
            acc.append(evaluate(m, tok, test).accuracy)
        out.append(dict(setting=name, held_out_by_seed=acc, mean=sum(acc) / len(acc), worst=min(acc), seconds_by_seed=secs,
                        device=args.device))
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start, tok = alignment_start(device=args.device)
    rows, test = rl_prompts(), instruction_dataset()["test"]
    if args.seeds:
        print(json.dumps(dict(benchmark="grpo_seeds", runs=seed_runs(start, tok, rows, test, args))))
        return
    if args.sweep:
        res = sweep(start, tok, rows, test, args)
        print(json.dumps(dict(benchmark="grpo_sweep", seconds=args.seconds, runs=res)))
        return
    best = {}
    for _ in range(args.rounds):
        for name, fn in (("ours", run_ours), ("trl", run_trl)):
            if name not in args.trainers: continue
            m, batches, dt = fn(start, tok, rows, args)
            if name not in best or batches / dt > best[name][1] / best[name][2]: best[name] = (m, batches, dt)
    acc0 = evaluate(start, tok, test).accuracy
    res = {k: dict(batches=b, seconds=round(dt, 1), batches_per_s=b / dt, held_out=evaluate(m, tok, test).accuracy) for k, (m, b, dt) in best.items()}
    print(f"{'':6} {'rollout batches':>16} {'seconds':>8} {'batches/s':>10} {'held-out EM':>12}")
    print(f"{'start':6} {'':>16} {'':>8} {'':>10} {acc0:>12.1%}")
    for k, v in res.items(): print(f"{k:6} {v['batches']:>16.1f} {v['seconds']:>8.1f} {v['batches_per_s']:>10.3f} {v['held_out']:>12.1%}")
    ratio = res["ours"]["batches_per_s"] / res["trl"]["batches_per_s"] if len(res) == 2 else None
    if ratio: print(f"ours / TRL rollout batches per second: {ratio:.1f}x")
    print(json.dumps(dict(benchmark="grpo", machine=platform.machine(), threads=args.threads, torch=torch.__version__,
                          work=dict(prompts=args.prompts, group=args.group, epochs=args.epochs, minibatches=args.minibatches,
                                    max_new_tokens=args.max_new, lr=args.lr), seconds_budget=args.seconds,
                          trl_positions_from_mask=args.trl_positions_from_mask, device=args.device,
                          start_held_out=acc0, speedup=ratio, **res)))


if __name__ == "__main__":
    main()
