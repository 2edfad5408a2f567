"""Iterated RLHF: PPO against the course's reward model, with the reward model retrained on the policy's own samples.

The results below were measured with chapter 9a's reward model trained on comparisons from the 835 RL prompts
(`--rm-prompts 835`, the default here, so they can be rerun). The course RM now learns from comparisons on 8000
prompts (`--rm-prompts 8000`); `experiments/rm_scale.py` measures what that changes.

Chapter 9b measures reward hacking: PPO against the reward model trained on the alignment start's samples gains
little on held-out exact match, while the same PPO against the exact checker gains more. The reward model is right
about answers like the start's and can be wrong about the answers the policy moves to. InstructGPT and later work
collect new comparisons on the policy's samples as it drifts. This script measures that fix at the course's scale:

    python experiments/iterated_rlhf.py --every 5 --phases 8                 # refresh every 5 PPO steps, 40 steps in all
    python experiments/iterated_rlhf.py --every 40 --phases 1                # the control: no refresh (chapter 9b's run)

Every `--every` PPO steps (chapter 9b's settings: 16 prompts x 4 samples, 2 epochs, lr 2e-4, beta 0.2; value head,
optimizer and KL reference carried over through resumable checkpoints), it samples 4 answers per RL prompt from the
current policy, lets the checker label them (correct preferred to wrong, as in 9a), adds the pairs to a growing pool
and trains the reward model one more epoch on the pool (lr `--rm-lr`), renormalised on the start's samples.
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
"""
import argparse, copy, json, tempfile, time
import torch
from datasets import concatenate_datasets
from rl_reach import add_rm_prompts_arg
from ft_course.data import instruction_dataset
from ft_course.evaluate import alpaca_prompt
from ft_course.ppo import PPOConfig, ppo
from ft_course.reward import RL_PROMPTS, pair_accuracy, sample_comparisons, train_reward_model, trained_reward_model
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
    a = ap.parse_args()
    torch.set_num_threads(1)
    start, tok = alignment_start(); rows = rl_prompts(); test = instruction_dataset()['test'].to_list()
    rm = trained_reward_model(lm_coef=a.lm_coef, prompts=a.rm_prompts)
    start_samples = sample(start, tok, [alpaca_prompt(r) for r in rows], n=1, seed=1)
    policy, out, pool, t0 = copy.deepcopy(start), tempfile.mkdtemp(), None, time.time()
    for ph in range(a.phases):
        cfg = PPOConfig(max_steps=a.every * (ph + 1), prompts_per_step=16, samples_per_prompt=4, epochs=2, minibatches=1, lr=2e-4,
                        beta=0.2, vf_coef=0.5, seed=a.seed, progress=False, save_every=a.every)
        h = ppo(policy, tok, rows, lambda roll, rs: rm.score(roll), cfg, ref=start, eval_ds=test, out_dir=out, resume=ph > 0)
        st = h['steps'][-a.every:]
        rec = dict(phase=ph, step=cfg.max_steps, exact_match=h['evals'][-1]['exact_match'], proxy=sum(s['reward'] for s in st) / len(st),
                   gold=sum(s['gold'] for s in st) / len(st), kl=st[-1]['kl'], seconds=round(time.time() - t0))
        if ph < a.phases - 1:
            new = sample_comparisons(policy, tok, rows, k=a.k, seed=100 * (a.seed + 1) + ph)
            new = new.filter(lambda r: bool(r['chosen'].strip() and r['rejected'].strip()))   # an empty answer cannot be a pair
            rec.update(new_pairs=len(new), rm_acc_fresh_before=pair_accuracy(rm, tok, new))
            pool = new if pool is None else concatenate_datasets([pool, new])
            train_reward_model(rm, tok, pool.shuffle(seed=ph), epochs=1, lr=a.rm_lr, seed=ph, progress=False, lm_coef=a.lm_coef)
            rm.normalize_(start_samples); rm.eval()
            rec['rm_acc_fresh_after'] = pair_accuracy(rm, tok, new)
        print(json.dumps(rec), flush=True)

if __name__ == '__main__': main()
