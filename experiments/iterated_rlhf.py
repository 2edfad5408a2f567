"""Iterated RLHF: PPO against the course's reward model, with the reward model retrained on the policy's own samples.

In short (the last section): refreshed every 50 steps with 8 answers a prompt and 3 epochs over all the fresh pairs,
the reward model keeps up with the policy, and PPO with it reaches 80.0-86.4 % held-out exact match in every
evaluation from step 300 on (+45 to +52 points; four runs, on an H200 and on this CPU, where a run takes 80 minutes).

The first results below were measured with chapter 9a's reward model trained on comparisons from the 835 RL prompts
(`--rm-prompts 835`, the default here, so they can be rerun). The course RM now learns from comparisons on 8000
prompts (`--rm-prompts 8000`); `experiments/rm_scale.py` measures what that changes.

Chapter 9b measures reward hacking: PPO against the reward model trained on the alignment start's samples gains
little on held-out exact match, while the same PPO against the exact checker gains more. The reward model is right
about answers like the start's and can be wrong about the answers the policy moves to. InstructGPT and later work
collect new comparisons on the policy's samples as it drifts. This script measures that fix at the course's scale:

    python experiments/iterated_rlhf.py --every 5 --phases 8                 # refresh every 5 PPO steps, 40 steps in all
    python experiments/iterated_rlhf.py --every 40 --phases 1                # the control: no refresh (chapter 9b's run)

Every `--every` PPO steps (chapter 9b's settings: 16 prompts x 4 samples, 2 epochs, lr 2e-4, beta 0.2; value head,
optimizer and KL reference carried over through resumable checkpoints), it samples `--k` answers (4 by default) per RL prompt from the
current policy, lets the checker label them (correct preferred to wrong, as in 9a), adds the pairs to a growing pool
and trains the reward model `--rm-epochs` more epochs on the pool (1 by default; lr `--rm-lr`), then `--new-epochs` on
the fresh pairs alone (0 by default), renormalised on the start's samples.
One JSON line per phase: held-out exact match, proxy and gold reward, KL, the reward model's accuracy on the fresh
pairs before and after the refresh. Takes about 3-7 minutes on one CPU thread.

Measured 2026-11-27, one thread; held-out exact match of the 34.5 % start after 40 PPO steps (110 test examples, so
one standard error is about 4.5 points; the evaluation every 5 steps wanders by several points, so ranges are given).

With the course reward model of chapter 9a (Bradley-Terry + LM loss, `--lm-coef 1`, the default; the control
reproduces chapter 9b's run, 39.1 %):

| seed | no refresh (`--every 40 --phases 1`) | refresh every 5 steps (`--every 5 --phases 8`) |
|---|---|---|
| 0 | 39.1 % | 45.5 % (30.0-45.5 % over steps 5-40) |
| 1 | 40.0 % | 45.5 % (28.2-45.5 % over steps 5-40) |

With the Bradley-Terry-only reward model (`--lm-coef 0`):

| seed | no refresh | refresh every 5 steps |
|---|---|---|
| 0 | 36.4 % | 42.7 % (40.0-42.7 % over the last 15 steps) |
| 1 | 36.4 % | 38.2 % (peak 41.8 % at step 25) |

The refresh helps (+6.4 and +5.5 points with the course RM, +6.3 and +1.8 with Bradley-Terry alone) and, with the
course RM, ends level with a perfect reward (chapter 9b's checker run: 46.4 %) after 40 steps, on a noisy path.
The reward model's accuracy on the policy's fresh pairs is 88-92 % before each refresh and 90-96 % after it with the
course RM (75-86 % and 82-90 % with Bradley-Terry alone). The refreshes cost about seven times the PPO steps' own
time (about 350 s against 49 s in all: sampling 4 x 835 answers, then an epoch over a growing pool of pairs).

## 600 steps against the course RM, refreshed every 50 steps (measured 2026-11-27 on an NVIDIA H200)

    python experiments/iterated_rlhf.py --rm-prompts 8000 --every 50 --phases 12 --refresh-prompts 2000 --beta 0.1 --seed S --device cuda

The course RM (comparisons on 8000 prompts, 97.9 % on held-out pairs) as the reward, beta = 0.1, and after every 50
PPO steps 4 answers of the current policy on 2000 prompts it has not been refreshed on before (beyond the RL
prompts), labelled by the checker (about 650-1100 pairs each time), then one epoch over all the fresh pairs so far.
Each run took about 250 s on the GPU (fp32; four runs side by side), from the 34.5 % start built on the CPU here
and carried over. Held-out greedy exact match every 50 steps (raw records:
`benchmarks/results/rlhf_long_h200_2026-11-27.jsonl`):

| seed | step 100 | 200 | 300 | 400 | 500 | 550 | 600 | checker's reward on PPO's samples, steps 551-600 |
|---|---|---|---|---|---|---|---|---|
| 0 | 51.8 % | 60.0 % | 53.6 % | 60.0 % | 70.0 % | 74.5 % | **78.2 %** | 0.72 |
| 1 | 44.5 % | 60.0 % | 58.2 % | 63.6 % | 76.4 % | 67.3 % | 69.1 % | 0.67 |
| 2 | 49.1 % | 62.7 % | 70.0 % | 66.4 % | 76.4 % | 77.3 % | **77.3 %** | 0.71 |
| 3 | 50.0 % | 59.1 % | 65.5 % | 60.9 % | 69.1 % | 71.8 % | 62.7 % | 0.68 |
| 0, on this machine's CPU (one thread, 2199 s) | 44.5 % | 48.2 % | 45.5 % | 70.9 % | 63.6 % | 71.8 % | 73.6 % | 0.66 |
| 1, on this machine's CPU (one thread, 2448 s) | 42.7 % | 60.9 % | 70.0 % | 65.5 % | 70.0 % | 68.2 % | 69.1 % | 0.68 |
| 2, on this machine's CPU (one thread, 2402 s) | 50.0 % | 50.0 % | 60.9 % | 70.9 % | 73.6 % | 80.0 % | 73.6 % | 0.73 |

Beside them, in the same GPU session, `experiments/rm_scale.py`'s PPO
for 600 steps with the same settings but no refresh: 60.0 % (58-64 % from step 200 on; the checker's reward on its
samples 0.57 at the end), and with the checker as the reward (beta 0.05): 73.6 % (76.4 % at step 500; 0.82).

What it says:
- With its reward model refreshed on the policy's own samples, PPO with a learned reward reaches +25 points in
  every GPU seed (by step 400) and the course's 75 % in two of four seeds at step 600 (78.2 and 77.3 %; mean 71.8 %,
  +37 points). The same PPO against the fixed reward model levels off at 60 %: the refresh is worth about 12 points.
- The same command on this machine's CPU (CUDA and the CPU draw different samples from the same seed) ended at
  73.6, 69.1 and 73.6 % for seeds 0-2, after 37-41 minutes of one thread each (seed 2 was at 80.0 % at step 550).
  Over all seven runs: 71.9 % on average at step 600 (+37.4 points), +25 in every one, 75 % in two.
- The refreshed reward model comes close to the checker itself: 71.8 % on average against the checker run's 73.6 %
  (one seed, same batch), though the checker's reward on PPO's samples ends lower (0.67-0.72 against 0.82).
- The reward model's accuracy on the policy's fresh pairs falls from about 90 % (phase 0) to 73-84 % as the policy
  improves, and each refresh lifts it by 5-10 points: the better the policy, the subtler the mistakes it must judge.
- The evaluations of one run wander by 5-10 points between phases (110 held-out examples: one standard error is
  about 4.5 points): seed 1 was at 76.4 % at step 500 and ended at 69.1 %; seed 3 peaked at 71.8 %.

## The same, with rollouts eight times bigger (measured 2026-11-27 on this machine's CPU)

    python experiments/iterated_rlhf.py --rm-prompts 8000 --every 50 --phases 12 --refresh-prompts 2000 --beta 0.1 \
        --prompts-per-step 64 --samples-per-prompt 8 --minibatches 4 --seed S

64 prompts x 8 samples a rollout, as in the GPU run that took the checker's PPO to 98.2 %, split into 4 minibatches,
so 8 gradient steps a rollout instead of 2 (on one CPU thread a step took 8.0 s with 4 minibatches, 10.0 s with 1:
one pass over the logits of 512 sequences is the slow part). Two seeds side by side, one
thread each, 90 minutes a run (raw records: `benchmarks/results/rlhf_long_cpu_2026-11-27.jsonl`):

| seed | step 50 | 100 | 200 | 300 | 400 | 500 | 550 | 600 | checker's reward on PPO's samples, steps 551-600 | RM accuracy on fresh pairs before the last refresh |
|---|---|---|---|---|---|---|---|---|---|---|
| 0 | 62.7 % | 60.9 % | 57.3 % | 73.6 % | 75.5 % | 70.9 % | 74.5 % | 70.9 % | 0.76 | 55 % |
| 1 | 63.6 % | 65.5 % | 70.9 % | 71.8 % | 76.4 % | 77.3 % | 73.6 % | **79.1 %** | 0.77 | 56 % |

- Bigger rollouts buy speed, not a higher ceiling. Both seeds pass +25 points in the first 50 steps (62.7 and
  63.6 %, where the 16 x 4 runs were at 42-52 % after 100) and reach 75 % by step 400, then wander between 71 and
  79 %: 70.9 and 79.1 % at step 600, 72.7 and 75.5 % averaged over steps 450-600. With the nine runs of this
  docstring, 75 % at step 600 in three.
- The checker's reward on PPO's own samples climbs higher (0.76-0.77, against 0.66-0.73 with 16 x 4) while
  greedy exact match does not follow, because the reward model falls behind: its accuracy on the policy's fresh
  pairs drops from 80 % (phase 0) to 55-57 % before the late refreshes, and each refresh now brings it only to
  67-76 %. The better the policy, the more its wrong answers look like right ones, and a reward model that is
  barely better than a coin on them gives PPO little to climb. At this scale the reward model, not PPO or its
  batch, is what stands between PPO and a reliable 75 %; the next section refreshes it harder, and that removes it.
- The extra gradient steps need the big rollout: the same 4 minibatches on 9b's 16 x 4 rollouts (16 completions a
  gradient step) made PPO worse, not faster: 26.4 % after 40 steps (2 epochs; 19.1 % with 4), from the 34.5 %
  start, against 45.5 and 49.1 % with 1 minibatch (two processes).

## Refreshing the reward model harder: 8 answers a prompt, 3 epochs a refresh (measured 2026-11-27 on an NVIDIA H200)

    python experiments/iterated_rlhf.py --rm-prompts 8000 --every 50 --phases 12 --refresh-prompts 2000 --beta 0.1 \
        --prompts-per-step 64 --samples-per-prompt 8 --minibatches 4 --k 8 --rm-epochs 3 --seed S [--device cuda]

The runs above blame the reward model, and its own numbers say how: after a refresh's one epoch over the pool, it
judged the fresh pairs it had just been trained on right only 67-85 % of the time. It underfits them. So three
harder refreshes, each beside the recipe above (A), all with 64 x 8 rollouts in 4 minibatches on one H200:
8 runs side by side (the GPU 99 % busy), then 4 more, each stopped by `--budget-s` when the session's
15 minutes of device time ran out, so the runs end at steps 200-400, not 600 (raw records:
`benchmarks/results/rlhf_rm_levers_h200_2026-11-27.jsonl`). Held-out greedy exact match:

| refresh every 50 steps | pairs a refresh | seed | step 100 | 200 | 250 | 300 | 350 | 400 | RM on its fresh pairs, steps 100-300: before / after the refresh |
|---|---|---|---|---|---|---|---|---|---|
| A: 4 answers a prompt, 1 epoch over the pool (as above) | 560-1030 | 0 | 63.6 % | 65.5 % | 64.5 % | 70.0 % | 72.7 % | 72.7 % | 58-73 / 73-85 % |
| | | 1 | 60.9 % | 66.4 % | 72.7 % | 80.0 % | 71.8 % | 76.4 % | 62-69 / 75-85 % |
| | | 2 | 62.7 % | 60.9 % | 71.8 % | | | | 59-65 / 74-84 % |
| **B: 8 answers a prompt, 3 epochs over the pool** | 960-2130 | 0 | 54.5 % | 76.4 % | 82.7 % | **85.5 %** | | | 65-81 / 91-94 % |
| | | 1 | 61.8 % | 69.1 % | 76.4 % | **84.5 %** | | | 64-71 / 91-98 % |
| | | 2 | 65.5 % | 74.5 % | | | | | 63-69 / 92-94 % |
| | | 3 | 57.3 % | 70.9 % | | | | | 61-75 / 91-94 % |
| | | 4 | 67.3 % | 78.2 % | | | | | 63-72 / 89-92 % |
| C: 4 answers a prompt, 3 epochs over the pool | 720-1030 | 0 | 50.0 % | 70.0 % | 68.2 % | 70.9 % | 78.2 % | | 60-72 / 84-91 % |
| | | 1 | 62.7 % | 62.7 % | 70.9 % | 73.6 % | 70.9 % | | 60-71 / 84-90 % |
| D: 8 answers a prompt, 1 epoch over the pool, then 2 over the fresh pairs alone | 1290-2380 | 0 | 59.1 % | 67.3 % | 67.3 % | 74.5 % | 50.9 % | | 54-65 / 93-95 % |
| | | 1 | 60.9 % | 65.5 % | 64.5 % | 60.9 % | 68.2 % | | 57-63 / 91-94 % |

- B, more fresh pairs *and* fitting them, is the lever: at step 200 it averages 73.8 % over five seeds, against
  64.3 % for A (three seeds) and 66.4 % for C and D (two each), and the two B runs that got to step 300 are at
  85.5 and 84.5 %, past every A run at any step, with the checker's reward on PPO's own samples at 0.85 and 0.83
  (A: 0.70 and 0.73 at step 300). After each refresh the reward model now fits its fresh pairs (89-98 %), and,
  what PPO feels, it judges the *next* policy's pairs better too (61-81 % before the refresh, against 58-73 %).
- Either half alone does little: 3 epochs on the same 4 answers a prompt (C) fit the pairs better (84-91 %) but
  the policy moves to mistakes they do not cover; 8 answers a prompt with the extra epochs on the newest pairs
  alone (D) fit those (91-95 %) and forget the pool: its accuracy on the next policy's pairs is the worst of the
  four (54-65 %), and D0 fell from 74.5 to 50.9 % in one phase.
- What it costs: twice the sampling and about six times the reward-model training of a refresh. On the H200 the
  B runs took 440 s to step 300 with 8 runs sharing the GPU, against 337 s for A.

The same B recipe on this machine's CPU, 400 steps (`--phases 8`), two seeds side by side, one thread each, 80 minutes
a run (raw records: `benchmarks/results/rlhf_long_cpu_2026-11-27.jsonl`):

| seed | step 50 | 100 | 150 | 200 | 250 | 300 | 350 | 400 | RM on its fresh pairs, before / after each refresh | checker's reward on PPO's samples, steps 351-400 |
|---|---|---|---|---|---|---|---|---|---|---|
| 0 | 52.7 % | 54.5 % | 69.1 % | 76.4 % | 82.7 % | 80.9 % | 82.7 % | **80.0 %** | 65-94 / 92-97 % | 0.88 |
| 1 | 67.3 % | 59.1 % | 67.3 % | 70.9 % | 80.0 % | 82.7 % | 80.0 % | **86.4 %** | 64-92 / 90-99 % | 0.86 |

- Every evaluation from step 250 on is at 80 % or more, in both seeds: +45.5 and +51.9 points at step 400. With
  the 4 runs of B that reached step 250 on either machine, all 12 evaluations from step 250 on are at 76.4 % or
  more (80.0-86.4 % from step 300). The refreshed reward model with the one-epoch refresh got there in 3 runs of 9,
  at step 600.
- The reward model keeps up with the policy instead of falling behind it: its accuracy on the next policy's fresh
  pairs, before the refresh, dips to 64-66 % at step 100 and then *climbs* to 92-94 % by step 350, where the
  one-epoch refresh fell to 55-57 %. As the policy improves it makes fewer mistakes (pairs a refresh fall from
  about 2000 to 730-860), and a reward model that fits each round of them learns the kinds that remain.
"""
import argparse, copy, json, tempfile, time
import torch
from datasets import concatenate_datasets
from rl_reach import add_ppo_run_args, add_rm_prompts_arg
from ft_course.data import instruction_dataset
from ft_course.evaluate import alpaca_prompt
from ft_course.ppo import PPOConfig, ppo
from ft_course.reward import RL_PROMPTS, comparison_prompts, pair_accuracy, sample_comparisons, train_reward_model, trained_reward_model
from ft_course.rollout import alignment_start, rl_prompts, sample

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_rm_prompts_arg(ap, RL_PROMPTS)
    ap.add_argument('--every', type=int, default=5, help='PPO steps between reward-model refreshes')
    ap.add_argument('--phases', type=int, default=8, help='number of phases (total steps = every x phases)')
    ap.add_argument('--rm-lr', type=float, default=1e-3, help='learning rate of each refresh epoch')
    ap.add_argument('--k', type=int, default=4, help='samples per prompt for the fresh comparisons')
    ap.add_argument('--seed', type=int, default=0, help="seed of PPO's prompt order and sampling")
    ap.add_argument('--lm-coef', type=float, default=1.0,
                    help="the reward model's LM-loss weight (1: the course RM of 9a; 0: Bradley-Terry alone)")
    ap.add_argument('--beta', type=float, default=0.2, help="PPO's KL coefficient")
    ap.add_argument('--refresh-prompts', type=int, default=0,
                    help='sample each refresh on this many prompts beyond the RL prompts (`comparison_prompts`, new ones each time; 0: the RL prompts)')
    ap.add_argument('--rm-epochs', type=int, default=1, help='epochs over the whole pool of fresh pairs at each refresh')
    ap.add_argument('--new-epochs', type=int, default=0,
                    help="then this many epochs over the refresh's own fresh pairs alone (weights the newest mistakes; 0: none)")
    ap.add_argument('--budget-s', type=float, default=None, help='start no new phase after this many seconds')
    add_ppo_run_args(ap)
    a = ap.parse_args()
    if a.rm_epochs < 1 or a.new_epochs < 0: ap.error(f"--rm-epochs {a.rm_epochs} --new-epochs {a.new_epochs}: a refresh needs at least one epoch over the pool, and no negative count")
    torch.set_num_threads(1)
    start, tok = alignment_start(device=a.device); rows = rl_prompts(); test = instruction_dataset()['test'].to_list()
    rm = trained_reward_model(lm_coef=a.lm_coef, prompts=a.rm_prompts, device=a.device)
    start_samples = sample(start, tok, [alpaca_prompt(r) for r in rows], n=1, seed=1)
    more = comparison_prompts(len(rows) + a.phases * a.refresh_prompts) if a.refresh_prompts else None   # drawn once: phases get disjoint slices
    policy, out, pool, t0 = copy.deepcopy(start), tempfile.mkdtemp(), None, time.time()
    for ph in range(a.phases):
        cfg = PPOConfig(max_steps=a.every * (ph + 1), prompts_per_step=a.prompts_per_step, samples_per_prompt=a.samples_per_prompt,
                        epochs=2, minibatches=a.minibatches, lr=2e-4,
                        beta=a.beta, vf_coef=0.5, seed=a.seed, progress=False, save_every=a.every)
        h = ppo(policy, tok, rows, lambda roll, rs: rm.score(roll), cfg, ref=start, eval_ds=test, out_dir=out, resume=ph > 0)
        st = h['steps'][-a.every:]
        rec = dict(phase=ph, step=cfg.max_steps, exact_match=h['evals'][-1]['exact_match'], proxy=sum(s['reward'] for s in st) / len(st),
                   gold=sum(s['gold'] for s in st) / len(st), kl=st[-1]['kl'], seconds=round(time.time() - t0))
        if ph < a.phases - 1 and (a.budget_s is None or time.time() - t0 < a.budget_s):
            n = a.refresh_prompts
            fresh = more[len(rows) + ph * n:len(rows) + (ph + 1) * n] if n else rows
            new = sample_comparisons(policy, tok, fresh, k=a.k, seed=100 * (a.seed + 1) + ph)
            new = new.filter(lambda r: bool(r['chosen'].strip() and r['rejected'].strip()))   # an empty answer cannot be a pair
            rec.update(new_pairs=len(new), rm_acc_fresh_before=pair_accuracy(rm, tok, new))
            pool = new if pool is None else concatenate_datasets([pool, new])
            train_reward_model(rm, tok, pool.shuffle(seed=ph), epochs=a.rm_epochs, lr=a.rm_lr, seed=ph, progress=False, lm_coef=a.lm_coef)
            if a.new_epochs: train_reward_model(rm, tok, new, epochs=a.new_epochs, lr=a.rm_lr, seed=ph, progress=False, lm_coef=a.lm_coef)
            rm.normalize_(start_samples); rm.eval()
            rec['rm_acc_fresh_after'] = pair_accuracy(rm, tok, new)
        print(json.dumps(rec), flush=True)
        if 'rm_acc_fresh_after' not in rec: break

if __name__ == '__main__': main()
