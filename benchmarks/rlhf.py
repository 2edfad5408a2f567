"""Rollouts are the cost of RL: our KV-cache sampler vs `model.generate`, and PPO steps per second.

Sampler vs generate: the same model (the alignment start, `ft_course.rollout.alignment_start`), the same prompts
(`--prompts` RL prompts, Alpaca template), `--n` completions per prompt at temperature 1 (no top-k / top-p),
at most `--max-new-tokens` new tokens, stop at EOS. `generate` gets the prompts repeated n times (its usual use for
k samples: `num_return_sequences` does the same), left-padded. Tokens = completion tokens produced, EOS included,
padding not. The two take turns for `--repeats` rounds after one untimed warm-up each; the best round counts.

PPO: `ft_course.ppo.ppo` for `--ppo-steps` steps (16 prompts x 4 samples, 2 epochs, 1 minibatch by default; the
reward is the exact checker, or the learned reward model with `--reward rm`); steps/s is over the steps after the
first. GRPO's numbers come from its own benchmark.

    python benchmarks/rlhf.py                 # ~1 minute on one CPU thread
    python benchmarks/rlhf.py --prompts 32 --repeats 2 --ppo-steps 4

The goal: our sampler >= 2x the tokens/s of `generate`. The last line printed is one JSON object.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path

GOAL = 2.0   # sampler tokens/s over generate's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=64, help="RL prompts per sampling run")
    p.add_argument("--n", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per sampler (best counts)")
    p.add_argument("--ppo-steps", type=int, default=6, help="PPO steps to time (the first is not counted); 0 skips PPO")
    p.add_argument("--reward", choices=["checker", "rm"], default="checker", help="PPO's reward: the exact checker or the learned reward model")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
    from ft_course.evaluate import alpaca_prompt
    from ft_course.rollout import alignment_start, rl_prompts, sample, exact_reward
    from ft_course.ppo import PPOConfig, ppo
    torch.set_num_threads(args.threads)
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = alignment_start(device=dev)
    rows = rl_prompts(args.prompts)
    prompts = [alpaca_prompt(r) for r in rows]
    tok.padding_side = 'left'
    enc = tok(prompts, return_tensors='pt', padding=True, add_special_tokens=False).to(dev)
    ids, am = enc['input_ids'].repeat_interleave(args.n, 0), enc['attention_mask'].repeat_interleave(args.n, 0)

    def ours():
        r = sample(model, tok, prompts, n=args.n, max_new_tokens=args.max_new_tokens, seed=0)
        return int(r.completion_mask.sum())
    def hf():
        with torch.no_grad():
            g = model.generate(input_ids=ids, attention_mask=am, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out = g[:, ids.shape[1]:]
        ended = (out == tok.eos_token_id).cumsum(1)        # count up to and including the first EOS
        return int(((ended == 0) | ((ended == 1) & (out == tok.eos_token_id))).sum())
    runs = {"ours": ours, "generate": hf}
    best, toks = {k: float("inf") for k in runs}, {}
    for f in runs.values(): f()                            # warm-up
    for _ in range(args.repeats):
        for k, f in runs.items():
            if dev == "cuda": torch.cuda.synchronize()
            t = time.perf_counter(); toks[k] = f()
            if dev == "cuda": torch.cuda.synchronize()
            best[k] = min(best[k], time.perf_counter() - t)
    tps = {k: toks[k] / best[k] for k in runs}
    speedup = tps["ours"] / tps["generate"]

    ppo_stats = {}
    if args.ppo_steps > 0:
        policy, _ = alignment_start(device=dev)
        if args.reward == "rm":
            from ft_course.reward import trained_reward_model
            rm = trained_reward_model(device=dev)
            reward_fn = lambda roll, rows_: rm.score(roll)
        else: reward_fn = exact_reward
        cfg = PPOConfig(max_steps=args.ppo_steps, prompts_per_step=16, samples_per_prompt=4, epochs=2, minibatches=1, lr=2e-4, progress=False)
        h = ppo(policy, tok, rl_prompts(), reward_fn, cfg)
        secs = [s["seconds"] for s in h["steps"]][1:] or [h["steps"][0]["seconds"]]
        ppo_stats = dict(ppo_seconds_per_step=sum(secs) / len(secs), ppo_steps_per_s=len(secs) / sum(secs),
                         ppo_completions_per_step=cfg.prompts_per_step * cfg.samples_per_prompt, ppo_reward=args.reward)

    print(f"{'sampler':<10} {'seconds':>8} {'tokens':>8} {'tokens/s':>10}")
    for k in runs: print(f"{k:<10} {best[k]:>8.2f} {toks[k]:>8d} {tps[k]:>10,.0f}")
    print(f"speed-up: {speedup:.2f}x (goal >= {GOAL}x){'' if speedup >= GOAL else '  MISSED'}")
    if ppo_stats:
        print(f"PPO ({ppo_stats['ppo_completions_per_step']} completions/step, reward={args.reward}): "
              f"{ppo_stats['ppo_seconds_per_step']:.2f} s/step = {ppo_stats['ppo_steps_per_s']:.2f} steps/s")
    result = dict(benchmark="rlhf", device=dev, threads=args.threads, machine=platform.machine(), prompts=args.prompts, n=args.n,
                  max_new_tokens=args.max_new_tokens, ours_tokens_per_s=round(tps["ours"], 1), generate_tokens_per_s=round(tps["generate"], 1),
                  ours_seconds=round(best["ours"], 3), generate_seconds=round(best["generate"], 3), speedup=round(speedup, 2),
                  goal=GOAL, met=speedup >= GOAL, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in ppo_stats.items()})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
