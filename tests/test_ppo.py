"PPO (ft_course.ppo): GAE against a plain loop, the shared-prefix forward, and bad inputs that must fail clearly without losing work."
import copy, json
from dataclasses import asdict
import pytest, torch
from transformers import GPT2Config, GPT2LMHeadModel

from ft_course.models import load_base
from ft_course.ppo import PPOConfig, PolicyAndValue, gae, per_token_rewards, ppo, value_loss, whiten
from ft_course.rollout import KLBlowUp, check_rewards, completion_logits
from ft_course.rollout import exact_reward, masked_mean, rl_prompts, sample, token_logprobs
from ft_course.evaluate import alpaca_prompt


@pytest.fixture(scope="module")
def tiny():
    "A randomly initialised 1-layer GPT-2 with the course tokenizer: fast, and enough for the mechanics."
    _, tok = load_base(device='cpu')
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)).eval()
    return model, tok

ROWS = rl_prompts(8)
FAST = dict(max_steps=2, prompts_per_step=2, samples_per_prompt=2, epochs=1, minibatches=1, max_new_tokens=6)
def zero_reward(roll, rows): return torch.zeros(len(roll))
def length_reward(roll, rows): return roll.lengths.float()


def gae_loop(rewards, values, lengths, gamma, lam):
    "GAE straight from the definition, one sequence at a time: A_t = sum_l (gamma lam)^l delta_{t+l}."
    adv = torch.zeros_like(rewards)
    for b, L in enumerate(lengths):
        for t in range(L):
            for l in range(L - t):
                v_next = values[b, t + l + 1] if t + l + 1 < L else 0.0
                adv[b, t] += (gamma * lam) ** l * (rewards[b, t + l] + gamma * v_next - values[b, t + l])
    return adv

@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.5), (1.0, 1.0), (0.9, 0.0)])
def test_gae_matches_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(1)
    R, V = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    lengths = [9, 4, 1, 7, 2, 9]
    M = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).float()
    adv, ret = gae(R, V, M, gamma, lam)
    torch.testing.assert_close(adv, gae_loop(R * M, V * M, lengths, gamma, lam), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, (adv + V) * M)
    assert (adv[M == 0] == 0).all()

def test_gae_lambda_one_is_return_minus_value():
    R = torch.tensor([[0., 0., 1.]]); V = torch.tensor([[0.2, 0.5, 0.9]]); M = torch.ones(1, 3)
    adv, _ = gae(R, V, M, 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.8, 0.5, 0.1]]))

def test_whiten_and_value_loss():
    x, m = torch.tensor([[1., 2., 3.], [4., 0., 0.]]), torch.tensor([[1., 1., 1.], [1., 0., 0.]])
    w = whiten(x, m)
    assert abs(masked_mean(w, m)) < 1e-6 and abs(masked_mean(w ** 2, m) - 1) < 1e-4 and (w[m == 0] == 0).all()
    v, old, ret = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]])
    loss, frac = value_loss(v, old, ret, torch.ones(1, 1), clip=0.2)   # the clipped value 0.2 is further from 1: it wins
    torch.testing.assert_close(loss, torch.tensor(0.5 * 0.8 ** 2)); assert frac == 1

def test_per_token_rewards_score_at_last_token():
    m = torch.tensor([[1., 1., 0.], [1., 1., 1.]])
    r, kl = per_token_rewards(torch.tensor([1., 2.]), torch.zeros(2, 3), torch.full((2, 3), -0.5) * m, m, 0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.95, 0.], [-0.05, -0.05, 1.95]]))

def test_shared_prefix_forward_equals_token_logprobs(tiny):
    model, tok = tiny
    roll = sample(model, tok, [alpaca_prompt(r) for r in ROWS[:3]], n=3, max_new_tokens=5, seed=0)
    logits, h = completion_logits(model, roll, group=3, hidden=True)
    lp = logits.float().log_softmax(-1).gather(-1, roll.completion_ids[..., None]).squeeze(-1) * roll.completion_mask
    torch.testing.assert_close(lp, token_logprobs(model, roll), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="whole prompt groups"): completion_logits(model, roll.select([0, 1]), group=3)
    with pytest.raises(ValueError, match="do not share their prompt"): completion_logits(model, roll.select([0, 3, 6]), group=3)

def test_check_rewards_messages():
    with pytest.raises(TypeError, match="returned None"): check_rewards(None, 4)
    with pytest.raises(ValueError, match=r"shape \(3,\) for 4 completions"): check_rewards([1, 2, 3], 4)
    with pytest.raises(ValueError, match=r"NaN or inf for completions \[2\]"): check_rewards([0, 1, float('nan'), 0], 4)
    with pytest.raises(TypeError, match="not all numbers"): check_rewards(['a', 'b'], 2)

@pytest.mark.parametrize("bad,err,msg", [
    (lambda roll, rows: torch.full((len(roll),), float('nan')), ValueError, "NaN or inf"),
    (lambda roll, rows: None, TypeError, "returned None"),
    (lambda roll, rows: torch.zeros(len(roll) + 1), ValueError, "one score per completion"),
])
def test_bad_reward_fn_fails_before_any_update(tiny, bad, err, msg):
    model, tok = tiny
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(err, match=msg): ppo(model, tok, ROWS, bad, PPOConfig(**FAST), gold_fn=None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # nothing was changed

def test_prompt_longer_than_context(tiny):
    model, tok = tiny
    long_row = dict(ROWS[0], input=ROWS[0]['input'] + ' word' * 300)
    with pytest.raises(ValueError, match="training prompt 1 is .* tokens long.*lower max_new_tokens"):
        ppo(model, tok, [ROWS[0], long_row], zero_reward, PPOConfig(**FAST))

def test_prompt_check_counts_bos():
    "A Llama-style tokenizer puts BOS in front of every prompt the sampler feeds: the up-front context check counts it too."
    from ft_course.grpo import GRPOConfig, grpo
    from ft_course.rollout import check_prompts_fit, prompt_ids
    from test_pretrain_models import _llama_tokenizer
    lt = _llama_tokenizer(); lt.pad_token = lt.eos_token
    cfg = GPT2Config(vocab_size=len(lt), n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=lt.bos_token_id, eos_token_id=lt.eos_token_id)
    m = GPT2LMHeadModel(cfg)
    n = len(lt('abc def', add_special_tokens=False)['input_ids'])
    assert prompt_ids(lt, ['abc def']) == [[lt.bos_token_id] + lt('abc def', add_special_tokens=False)['input_ids']]
    check_prompts_fit(m, lt, ['abc def'], 32 - n - 1)                  # BOS + prompt fills the room exactly
    with pytest.raises(ValueError, match=f"prompt 0 is {n + 1} tokens long, but the context leaves it only {n}"):
        check_prompts_fit(m, lt, ['abc def'], 32 - n)                  # without BOS it would have fitted
    rows = [dict(instruction='abc', input='def', output='x')]
    L = len(prompt_ids(lt, [alpaca_prompt(rows[0])])[0])             # BOS counted
    m = GPT2LMHeadModel(GPT2Config(**{**cfg.to_dict(), 'n_positions': L + 4}))
    with pytest.raises(ValueError, match=f"training prompt 0 is {L} tokens long, but the context leaves it only {L - 1}"):
        ppo(m, lt, rows, lambda r, x: torch.zeros(len(r)), PPOConfig(**{**FAST, 'max_new_tokens': 5}), gold_fn=None)
    with pytest.raises(ValueError, match=f"the prompt of row 0 is {L} tokens long"):
        grpo(m, lt, rows, lambda r, x: torch.zeros(len(r)), GRPOConfig(max_steps=1, prompts_per_step=1, group_size=2, max_new_tokens=5, save_every=0))

def test_every_completion_empty(tiny):
    model, tok = tiny
    eos_only = copy.deepcopy(model)
    with torch.no_grad():                       # the final layer norm outputs EOS's embedding, scaled up: EOS always wins
        eos_only.transformer.ln_f.weight.zero_()
        eos_only.transformer.ln_f.bias.copy_(1e4 * eos_only.transformer.wte.weight[tok.eos_token_id])
    with pytest.raises(RuntimeError, match="every completion is empty.*lower lr"):
        ppo(eos_only, tok, ROWS, zero_reward, PPOConfig(**FAST))

def test_kl_blow_up_stops_and_restores_last_good_checkpoint(tiny, tmp_path):
    model, tok = tiny
    policy = copy.deepcopy(model)
    cfg = PPOConfig(**{**FAST, 'max_steps': 6, 'epochs': 4}, lr=3e-2, beta=0.0, max_kl=0.5, save_every=1)
    with pytest.raises(KLBlowUp, match=r"max_kl=0.5: lower lr \(now 0.03\) or raise beta.*restored from the last good checkpoint") as e:
        ppo(policy, tok, ROWS, length_reward, cfg, gold_fn=None, out_dir=tmp_path/'run')
    state = json.loads((tmp_path/'run'/'checkpoint'/'state.json').read_text())
    good = state['step']
    assert f"(step {good})" in str(e.value) and all(s['kl'] <= 0.5 for s in state['history']['steps'])
    from safetensors.torch import load_file
    saved = load_file(tmp_path/'run'/'checkpoint'/'model.safetensors')
    assert 'v_head.weight' in saved
    assert torch.equal(saved['policy.transformer.h.0.mlp.c_fc.weight'], policy.transformer.h[0].mlp.c_fc.weight)
    calmer = PPOConfig(**{**FAST, 'max_steps': good + 1}, lr=1e-5, beta=0.0, max_kl=0.5, save_every=1)   # the knob turned: resume
    h = ppo(policy, tok, ROWS, length_reward, calmer, gold_fn=None, out_dir=tmp_path/'run', resume=True)
    assert [s['step'] for s in h['steps']] == list(range(1, good + 2))

def test_resume_continues_exactly(tiny, tmp_path):
    model, tok = tiny
    cfg = PPOConfig(**{**FAST, 'max_steps': 4}, lr=1e-3, save_every=2)
    full = copy.deepcopy(model)
    h_full = ppo(full, tok, ROWS, length_reward, cfg)
    class Interrupt(Exception): pass
    calls = []
    def dies_at_step_3(roll, rows):
        calls.append(1)
        if len(calls) == 4: raise Interrupt()              # the 4th rollout (step index 3): after the step-2 checkpoint
        return length_reward(roll, rows)
    part = copy.deepcopy(model)
    with pytest.raises(Interrupt): ppo(part, tok, ROWS, dies_at_step_3, cfg, out_dir=tmp_path/'run')
    resumed = copy.deepcopy(model)                        # a fresh process: the start weights, then the checkpoint
    h_res = ppo(resumed, tok, ROWS, length_reward, cfg, out_dir=tmp_path/'run', resume=True)
    assert [s['step'] for s in h_res['steps']] == [1, 2, 3, 4]
    assert [s['reward'] for s in h_res['steps']] == [s['reward'] for s in h_full['steps']]
    for a, b in zip(full.parameters(), resumed.parameters()): torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

def test_config_errors():
    with pytest.raises(ValueError, match="minibatches=4 is more than prompts_per_step=2"): PPOConfig(prompts_per_step=2, minibatches=4)
    with pytest.raises(ValueError, match="lr=0"): PPOConfig(lr=0)
    with pytest.raises(ValueError, match="epochs=0"): PPOConfig(epochs=0)

def test_history_logs_the_diagnostics_and_max_seconds_stops(tiny):
    model, tok = tiny
    h = ppo(copy.deepcopy(model), tok, ROWS, length_reward, PPOConfig(**{**FAST, 'max_steps': 5}, max_seconds=1e-6))
    assert len(h['steps']) == 1                                   # the budget was spent by the first step
    assert {'reward', 'gold', 'kl', 'entropy', 'approx_kl', 'clipfrac', 'value_loss', 'policy_loss', 'seconds'} <= set(h['steps'][0])

def test_old_names_warn_and_still_work(tiny, tmp_path):
    "steps, max_grad_norm, time_budget, and ppo(eval_data=, checkpoint=, progress=) keep working for one release, with a warning."
    model, tok = tiny
    with pytest.warns(DeprecationWarning) as rec:
        old = PPOConfig(**{k: v for k, v in FAST.items() if k != 'max_steps'}, steps=2, max_grad_norm=0.5, time_budget=100.0, kl_coef=0.1)
    assert (old.max_steps, old.grad_clip, old.max_seconds, old.beta) == (2, 0.5, 100.0, 0.1) and len(rec) == 4
    assert any("'kl_coef' is deprecated" in str(w.message) and "use 'beta'" in str(w.message) for w in rec)
    new = PPOConfig(**FAST, grad_clip=0.5, max_seconds=100.0, beta=0.1)
    assert asdict(old) == asdict(new)
    with pytest.warns(DeprecationWarning, match="'checkpoint' is deprecated"):
        h_old = ppo(copy.deepcopy(model), tok, ROWS, length_reward, old, checkpoint=tmp_path/'ck', eval_data=ROWS[:2], progress=False)
    h_new = ppo(copy.deepcopy(model), tok, ROWS, length_reward, new, out_dir=tmp_path/'run', eval_ds=ROWS[:2])
    assert [s['reward'] for s in h_old['steps']] == [s['reward'] for s in h_new['steps']] and h_old['evals'] == h_new['evals']
    assert (tmp_path/'ck'/'state.json').exists() and (tmp_path/'run'/'checkpoint'/'state.json').exists()
    assert (tmp_path/'run'/'model.safetensors').exists()          # the final policy, loadable with from_pretrained

def test_reference_is_left_trainable_and_a_frozen_policy_is_refused(tiny):
    "ppo(ref=start) used to freeze `start` itself, so a later `copy.deepcopy(start)` trained only the value head, silently."
    model, tok = tiny
    start = copy.deepcopy(model)
    ppo(copy.deepcopy(start), tok, ROWS, length_reward, PPOConfig(**FAST), ref=start)
    assert all(p.requires_grad for p in start.parameters())        # the caller's model is as it was
    second = copy.deepcopy(start)                                  # ... so a second run from it trains
    ppo(second, tok, ROWS, length_reward, PPOConfig(**FAST, lr=1e-2), ref=start)
    assert any(not torch.equal(a, b) for a, b in zip(second.parameters(), start.parameters()))
    with pytest.raises(ValueError, match=r"ppo: no parameter of the policy has requires_grad=True.*requires_grad_\(True\)"):
        ppo(copy.deepcopy(start).requires_grad_(False), tok, ROWS, length_reward, PPOConfig(**FAST))
