"""PPO against an ensemble of reward models, scored conservatively: does it resist the hacking of chapter 9b?

The results below were measured with chapter 9a's reward model trained on comparisons from the 835 RL prompts
(`--rm-prompts 835`, the default here, so they can be rerun). The course RM now learns from comparisons on 8000
prompts (`--rm-prompts 8000`); `experiments/rm_scale.py` measures what that changes.

Chapter 9b's PPO, with chapter 9a's reward model as its reward, is held back by the reward model's blind spots: the
policy finds answers the reward model overrates. Ensembles are a known remedy for over-optimisation (Coste et al.,
2023, "Reward model ensembles help mitigate overoptimization"). Reward models trained with different seeds agree
where the data pins the answer down and disagree on answers unlike their training data, so a reward of
mean − λ·std over the members penalises what they are unsure about.

This script trains (or loads from the cache) `--members` reward models with `trained_reward_model(seed=s)`, s = 0 ..
members − 1, each on its own samples of the alignment start and its own order of training. Each member's scores
are normalised to mean 0 and std 1 on the start's samples. It then runs chapter 9b's main PPO setting from the
alignment start: 40 steps of 16 prompts × 4 samples, 2 epochs, lr 2e-4, β = 0.2, vf_coef 0.5. The reward is
mean − λ·std of the members' scores. It prints held-out greedy exact match at steps 0, 20 and 40, and the
sampled gold (checker) reward.

    python experiments/rm_ensemble.py --members 4 --penalty 1.0
    python experiments/rm_ensemble.py --members 1 --penalty 0        # chapter 9b's single reward model

Measured 2026-11-27 (one thread, 50–90 s a run, plus about 4 minutes to train each new member once; the start is
at 34.5 % held-out):

| reward | PPO seed | held-out at step 0 / 20 / 40 | sampled gold reward, first / last 5 steps | KL at the end |
|---|---|---|---|---|
| one reward model (chapter 9b) | 0 | 34.5 / 33.6 / 39.1 % | 0.297 → 0.306 | 1.45 |
| one reward model (chapter 9b) | 1 | 34.5 / 32.7 / 40.0 % | 0.197 → 0.253 | 1.60 |
| mean of 4 | 0 | 34.5 / 40.9 / 41.8 % | 0.284 → 0.297 | 2.98 |
| mean of 4 | 1 | 34.5 / 38.2 / 38.2 % | 0.188 → 0.297 | 1.41 |
| mean − std of 4 | 0 | 34.5 / 30.9 / 37.3 % | 0.266 → 0.284 | 2.99 |
| mean − std of 3 | 0 | 34.5 / 35.5 / 31.8 % | 0.303 → 0.237 | 4.22 |

The ensemble does not lift PPO. Its mean ends at 40.0 % over two seeds, against 39.6 % for one reward model,
and the conservative mean − std is worse (37.3 and 31.8 %). We have not measured why. Our guess: the members'
errors are correlated, because they are trained on the same model's samples with the same labeller, so
disagreement does not mark the answers the policy exploits. Chapter 9b's target (+25 points, ≥ 75 %) stays out of
reach of a learned reward at this scale.
"""
import argparse, copy, json, time
import torch
from rl_reach import add_rm_prompts_arg
from ft_course.data import instruction_dataset
from ft_course.ppo import PPOConfig, ppo
from ft_course.reward import RL_PROMPTS, trained_reward_model
from ft_course.rollout import alignment_start, rl_prompts


def ensemble_reward(rms, penalty:float):
    "reward_fn(rollout, rows) -> mean − penalty·std of the members' scores (std 0 for one member)."
    def fn(roll, rows):
        s = torch.stack([rm.score(roll) for rm in rms])                  # (members, B)
        return s.mean(0) - penalty * (s.std(0) if len(rms) > 1 else 0)
    return fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_rm_prompts_arg(ap, RL_PROMPTS)
    ap.add_argument('--members', type=int, default=4, help='reward models, seeds 0 .. members - 1')
    ap.add_argument('--penalty', type=float, default=1.0, help='lambda in mean - lambda * std')
    ap.add_argument('--beta', type=float, default=0.2)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    start, tok = alignment_start(); rows, test = rl_prompts(), instruction_dataset()['test']
    rms = [trained_reward_model(seed=s, prompts=a.rm_prompts) for s in range(a.members)]
    cfg = PPOConfig(max_steps=a.steps, prompts_per_step=16, samples_per_prompt=4, epochs=2, minibatches=1, lr=2e-4, beta=a.beta,
                    vf_coef=0.5, eval_every=a.steps // 2, seed=a.seed, progress=False)
    t0, m = time.time(), copy.deepcopy(start)
    h = ppo(m, tok, rows, ensemble_reward(rms, a.penalty), cfg, eval_ds=test)
    st = h['steps']; avg = lambda k, sl: round(sum(s[k] for s in st[sl]) / len(st[sl]), 3)
    print(json.dumps(dict(members=a.members, penalty=a.penalty, beta=a.beta, seed=a.seed, seconds=round(time.time() - t0),
                          held_out=[(e['step'], round(e['exact_match'], 3)) for e in h['evals']],
                          gold_first5=avg('gold', slice(0, 5)), gold_last5=avg('gold', slice(-5, None)),
                          reward_first5=avg('reward', slice(0, 5)), reward_last5=avg('reward', slice(-5, None)),
                          kl_end=round(st[-1]['kl'], 3))))


if __name__ == '__main__':
    main()
