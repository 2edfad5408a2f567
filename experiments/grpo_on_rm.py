"""GRPO against the learned reward model instead of the checker: does a per-prompt baseline make the reward model usable?

The results below were measured with chapter 9a's reward model trained on comparisons from the 835 RL prompts
(`--rm-prompts 835`, the default here, so they can be rerun). The course RM now learns from comparisons on 8000
prompts (`--rm-prompts 8000`); `experiments/rm_scale.py` measures what that changes.

Chapter 9a's reward model ranks the answers to one prompt well (its favourite of 8 start samples on a held-out prompt
is right 39.1 % of the time, against 42.7 % for an oracle; see `expert_iteration.py`), but its scores do not compare
across prompts. GRPO's group-relative advantage uses only the ranking within a prompt, so it is the natural way to
use such a judge. This script runs chapter 9c's GRPO recipe (lr 1e-4 with a cosine to 1e-5, 16 prompts × 8 answers,
2 epochs of 2 minibatches, no KL penalty, 100 steps) from the alignment start with `rm.score` as the reward, and logs
the held-out greedy exact match, the checker's exact match of the sampled answers and the reward model's score.

    python experiments/grpo_on_rm.py --seed 0
    python experiments/grpo_on_rm.py --seed 0 --beta 0.04

Measured 2026-11-27 (one thread, about 150 s a run; the start is at 34.5 % held-out):

| seed | held-out at step 25 / 50 / 75 / 100 | sampled exact match, first / last 10 steps | RM score, first / last 10 steps | KL at the end |
|---|---|---|---|---|
| 0 | 26.4 / 23.6 / 16.4 / 14.5 % | 23.1 → 10.1 % | 0.10 → 0.71 | 1.11 |
| 1 | 8.2 / 7.3 / 10.0 / 9.1 % | 27.0 → 7.8 % | 0.22 → 0.99 | 2.12 |
| 0, β = 0.04 | 37.3 / 23.6 / 7.3 / 6.4 % | 23.4 → 5.6 % | 0.08 → 0.86 | 1.55 |

The reward model is hacked at once: its score rises while the checker's falls, and held-out exact match drops far
below the start. With the checker as reward the same recipe reaches 63.6 % (chapter 9c). A per-prompt baseline does
not rescue a learned reward: in a group where every answer is wrong (about half of them at the start), the reward
model's favourite wrong answer is pushed up just as a right one would be, and the policy finds the answers the
reward model overrates. A small KL penalty (β = 0.04) only delays it by a few steps; chapter 9b's PPO keeps β = 0.2.
"""
import argparse, copy, json, time
import torch
from rl_reach import add_rm_prompts_arg
from ft_course.data import instruction_dataset
from ft_course.evaluate import evaluate
from ft_course.grpo import GRPOConfig, grpo
from ft_course.reward import RL_PROMPTS, trained_reward_model
from ft_course.rollout import alignment_start, rl_prompts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_rm_prompts_arg(ap, RL_PROMPTS)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--beta', type=float, default=0.0, help='weight of the k3 KL penalty to the start')
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    start, tok = alignment_start(); rows, test = rl_prompts(), instruction_dataset()['test']
    rm = trained_reward_model(prompts=a.rm_prompts)
    cfg = GRPOConfig(lr=1e-4, cosine=True, max_steps=a.steps, prompts_per_step=16, group_size=8, epochs=2, minibatches=2,
                     max_new_tokens=16, beta=a.beta, eval_every=25, seed=a.seed, progress=False)
    t0, m = time.time(), copy.deepcopy(start)
    h = grpo(m, tok, rows, lambda roll, rs: rm.score(roll), cfg, eval_fn=lambda m_: evaluate(m_, tok, test).accuracy)
    avg = lambda v: round(sum(v) / len(v), 3)
    print(json.dumps(dict(seed=a.seed, beta=a.beta, seconds=round(time.time() - t0), held_out=[(s, round(v, 3)) for s, v in h['eval']],
                          exact_first=avg(h['exact'][:10]), exact_last=avg(h['exact'][-10:]), rm_first=avg(h['reward'][:10]),
                          rm_last=avg(h['reward'][-10:]), kl_end=round(h['kl'][-1], 2))))


if __name__ == '__main__':
    main()
