"GRPO: parity with TRL's GRPOTrainer loss, padding invariance, the shared-prompt forward, bad inputs, KL stop and resume."
import copy, json, tempfile
from pathlib import Path
import pytest, torch
from ft_course.evaluate import alpaca_prompt
from ft_course.grpo import GRPOConfig, KLBlowUp, group_advantages, grpo, grpo_loss
from ft_course.rollout import token_logprobs
from ft_course.models import load_base
from ft_course.rollout import encode, exact_reward, rl_prompts, sample, token_logprobs


@pytest.fixture(scope="module")
def base():
    return load_base()


@pytest.fixture(scope="module")
def rows():
    return rl_prompts(64)


def parity_reward(roll, rows):
    "A reward that varies within most groups (parity of the answer's length in characters), so they carry a gradient."
    return torch.tensor([float(len(t) % 2) for t in roll.texts])


def _batch(tok, rows, same_length:bool):
    "Two prompts × four completions; prompts of one length, or of two (left padding)."
    by_len = {}
    for r in rows: by_len.setdefault(len(tok(alpaca_prompt(r))['input_ids']), []).append(r)
    if same_length: pick = max(by_len.values(), key=len)[:2]
    else: pick = [min(by_len.items())[1][0], max(by_len.items())[1][0]]
    comps = [pick[0]['output'], 'No.', 'the the the', pick[0]['output'] + ' yes', pick[1]['output'], 'a', '', 'b c']
    return encode(tok, [alpaca_prompt(r) for r in pick for _ in range(4)], comps), pick


@pytest.mark.parametrize("loss_type,beta", [("grpo", 0.0), ("grpo", 0.04), ("dapo", 0.04), ("dr_grpo", 0.04)])
def test_loss_and_grads_match_trl(base, rows, loss_type, beta):
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig, GRPOTrainer
    model, tok = copy.deepcopy(base[0]), base[1]
    roll, pick = _batch(tok, rows, same_length=True)
    assert roll.prompt_mask.all()                      # TRL numbers positions by column: compare on unpadded prompts
    args = TRLConfig(output_dir=tempfile.mkdtemp(), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to='none',
                     save_strategy='no', per_device_train_batch_size=8, num_generations=4, max_completion_length=16,
                     loss_type=loss_type, beta=beta)
    tr = GRPOTrainer(model=model, reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)], args=args,
                     train_dataset=Dataset.from_list([{'prompt': 'x'}] * 8), processing_class=tok)
    tr.current_gradient_accumulation_steps = 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(): lp0 = token_logprobs(model, roll)
    cm = roll.completion_mask
    old = (lp0 + 0.3 * torch.randn(lp0.shape, generator=g)) * cm
    ref = (lp0 + 0.3 * torch.randn(lp0.shape, generator=g)) * cm
    adv = group_advantages(torch.tensor([1., 0, 0, 1, 1, 0, 0, 0]), 4)
    inputs = dict(prompt_ids=roll.prompt_ids, prompt_mask=roll.prompt_mask, completion_ids=roll.completion_ids, completion_mask=cm,
                  advantages=adv, old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=cm.sum())
    model.train()
    model.zero_grad(); l_trl = tr.compute_loss(model, inputs); l_trl.backward()
    g_trl = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    l_ours, st = grpo_loss(token_logprobs(model, roll), old, adv, cm, 0.2, beta, ref, loss_type, 16, kl_correction=True)
    l_ours.backward()
    assert abs(l_trl.item() - l_ours.item()) < 1e-5
    assert max((a - p.grad).abs().max().item() for a, p in zip(g_trl, model.parameters())) < 1e-5
    assert 0 < st['clip_frac'] < 1                     # the perturbed old log-probs exercise the clip


def test_left_padding_gives_the_same_loss(base, rows):
    model, tok = base
    roll, pick = _batch(tok, rows, same_length=False)
    assert not roll.prompt_mask.all()                  # the short prompt is left-padded
    adv = group_advantages(torch.tensor([1., 0, 0, 1, 1, 0, 0, 0]), 4)
    with torch.no_grad():
        lp = token_logprobs(model, roll)
        old = lp - 0.1 * roll.completion_mask
        batched, _ = grpo_loss(lp, old, adv, roll.completion_mask)
        alone = []
        for i in range(8):                             # each row on its own: no padding at all
            r1 = encode(tok, [alpaca_prompt(pick[i // 4])], [roll.texts[i]])
            lp1 = token_logprobs(model, r1)
            alone.append(grpo_loss(lp1, lp1 - 0.1 * r1.completion_mask, adv[i:i + 1], r1.completion_mask)[0])
    assert abs(batched.item() - torch.stack(alone).mean().item()) < 1e-5


def test_positions_from_mask_fixes_a_bare_forward_and_trls_logprobs(base, rows):
    "A left-padded forward with no position_ids is wrong on GPT-2; patched, it equals token_logprobs, also through TRL's fused head."
    from trl import GRPOConfig as TRLConfig, GRPOTrainer
    from ft_course.grpo import positions_from_mask
    model, tok = base
    roll, _ = _batch(tok, rows, same_length=False)
    padded = ~roll.prompt_mask.bool().all(1)
    assert padded.any() and not padded.all()
    m = copy.deepcopy(model).eval()
    args = TRLConfig(output_dir=tempfile.mkdtemp(), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to='none',
                     per_device_train_batch_size=8, num_generations=4, max_completion_length=16)
    tr = GRPOTrainer(model=m, reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)], args=args,
                     train_dataset=__import__('datasets').Dataset.from_list([dict(prompt='a')] * 8), processing_class=tok)
    T = roll.completion_ids.shape[1]
    with torch.no_grad():
        ours = token_logprobs(model, roll)
        gap = lambda: (tr._get_per_token_logps_and_entropies(m, roll.input_ids, roll.attention_mask, T)[0] * roll.completion_mask - ours).abs().amax(1)
        before = gap()
        assert before[padded].min() > 0.1 and before[~padded].max() < 1e-4      # only the left-padded rows are wrong
        assert positions_from_mask(m) is m
        assert gap().max() < 1e-4
        plain = m(input_ids=roll.input_ids, attention_mask=roll.attention_mask).logits   # a bare forward, patched too
        ref = model(input_ids=roll.input_ids, attention_mask=roll.attention_mask,
                    position_ids=(roll.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
        assert (plain - ref).abs().max() < 1e-4


def test_shared_prompt_logprobs_match_token_logprobs(base, rows):
    model, tok = base
    roll = sample(model, tok, [alpaca_prompt(r) for r in rows[:6]], n=4, max_new_tokens=12, seed=0)
    assert not roll.prompt_mask.all()
    a, ea = token_logprobs(model, roll, 0.9, with_entropy=True)
    b, eb = token_logprobs(model, roll, 0.9, with_entropy=True, group=4)
    assert (a - b).abs().max() < 1e-4 and (ea - eb).abs().max() < 1e-4
    with pytest.raises(ValueError, match="whole prompt groups"): token_logprobs(model, roll, group=5)


def test_group_advantages():
    a = group_advantages(torch.tensor([1., 0, 0, 0, 1, 1, 1, 1]), 4)
    assert a[4:].abs().max() == 0 and a[0] > 0 > a[1]
    assert torch.allclose(group_advantages(torch.tensor([1., 0, 0, 0]), 4, 'none'), torch.tensor([.75, -.25, -.25, -.25]))


TINY = dict(max_steps=2, prompts_per_step=2, group_size=2, epochs=1, minibatches=1, max_new_tokens=8, progress=False)


@pytest.mark.parametrize("fn,msg", [
    (lambda r, w: torch.full((len(r),), float('nan')), 'NaN'),
    (lambda r, w: None, 'returned None'),
    (lambda r, w: [1.0, None, 0.0, 1.0], 'not all numbers'),
    (lambda r, w: [1.0], r'shape \(1,\) for 4 completions'),
])
def test_bad_rewards(base, rows, fn, msg):
    with pytest.raises((TypeError, ValueError), match=msg): grpo(copy.deepcopy(base[0]), base[1], rows, fn, GRPOConfig(**TINY))


def test_prompt_longer_than_context(base, rows):
    long_row = dict(rows[0], input=' '.join(['the cat'] * 200))
    with pytest.raises(ValueError, match='context'): grpo(copy.deepcopy(base[0]), base[1], [long_row], exact_reward, GRPOConfig(**TINY))


def test_all_empty_completions(base, rows):
    mute = copy.deepcopy(base[0])
    with torch.no_grad(): mute.lm_head.weight[base[1].eos_token_id] += 100
    with pytest.raises(RuntimeError, match='every completion is empty'): grpo(mute, base[1], rows, exact_reward, GRPOConfig(**TINY))


def test_bad_settings(base, rows):
    with pytest.raises(ValueError, match='group_size'): grpo(base[0], base[1], rows, exact_reward, GRPOConfig(**{**TINY, 'group_size': 1}))
    with pytest.raises(ValueError, match='out_dir'): grpo(base[0], base[1], rows, exact_reward, GRPOConfig(**TINY), resume=True)


def test_kl_blowup_stops_and_keeps_last_good_checkpoint(base, rows):
    model, tok = copy.deepcopy(base[0]), base[1]
    with tempfile.TemporaryDirectory() as d:
        cfg = GRPOConfig(**{**TINY, 'max_steps': 8, 'prompts_per_step': 4, 'group_size': 4}, lr=5e-2, max_kl=0.3, save_every=1)
        with pytest.raises(KLBlowUp, match='beta.*lr') as e: grpo(model, tok, rows, parity_reward, cfg, out_dir=d)
        bad_step = int(str(e.value).split()[1].rstrip(':'))
        state = json.loads((Path(d)/'checkpoint'/'state.json').read_text())
        assert state['step'] == bad_step                # saved after the last step whose KL was fine, not after the bad one
        assert max(state['history']['kl']) <= 0.3


def test_resume_continues_exactly(base, rows):
    tok = base[1]
    with tempfile.TemporaryDirectory() as d:
        kw = dict(TINY, max_steps=4, save_every=1, lr=1e-3)
        straight = copy.deepcopy(base[0]); h1 = grpo(straight, tok, rows, parity_reward, GRPOConfig(**kw), out_dir=d)
        resumed = copy.deepcopy(base[0]); grpo(resumed, tok, rows, parity_reward, GRPOConfig(**{**kw, 'max_steps': 2}), out_dir=d)
        h2 = grpo(resumed, tok, rows, parity_reward, GRPOConfig(**kw), out_dir=d, resume=True)
    assert h2['step'] == [1, 2, 3, 4] and h2['reward'] == h1['reward']
    assert max((a - b).abs().max().item() for a, b in zip(straight.parameters(), resumed.parameters())) < 1e-6
    assert max((a - p).abs().max().item() for a, p in zip(straight.parameters(), base[0].parameters())) > 0   # it did train

def test_old_names_warn_and_still_work(base, tmp_path):
    "GRPOConfig(steps=, out_dir=) keep working for one release, with a DeprecationWarning; the new out_dir also gets the final model."
    rows = rl_prompts(8)
    with pytest.warns(DeprecationWarning) as rec: old = GRPOConfig(**{k: v for k, v in TINY.items() if k != 'max_steps'}, steps=1, save_every=1, out_dir=str(tmp_path/'old'))
    assert old.max_steps == 1 and len(rec) == 2
    h_old = grpo(copy.deepcopy(base[0]), base[1], rows, exact_reward, old)
    h_new = grpo(copy.deepcopy(base[0]), base[1], rows, exact_reward, GRPOConfig(**{**TINY, 'max_steps': 1}, save_every=1), out_dir=tmp_path/'new')
    assert h_old['reward'] == h_new['reward'] and (tmp_path/'old'/'checkpoint'/'state.json').exists()
    assert (tmp_path/'new'/'checkpoint'/'state.json').exists() and (tmp_path/'new'/'model.safetensors').exists()


def test_best_of_k_keeps_each_prompts_best_and_never_an_empty_answer(base, rows):
    "Rejection sampling: the kept answer is the judge's favourite of its prompt's k; empty answers and prompts under `min_score` drop out."
    from ft_course.grpo import best_of_k
    from ft_course.rollout import alignment_start
    m, tok = alignment_start(device='cpu')
    m = copy.deepcopy(m)                                                  # a policy that often says EOS at once
    with torch.no_grad(): m.lm_head.weight[tok.eos_token_id] += 3.0
    seen = {}
    def loves_empty_then_long(roll, rs):                                  # scores empty answers highest: they must still never be kept
        seen['roll'] = roll
        return torch.tensor([100.0 if not t.strip() else float(len(t)) for t in roll.texts])
    data = best_of_k(m, tok, rows[:6], loves_empty_then_long, k=4, min_score=None, max_new_tokens=8, seed=0)
    texts = seen['roll'].texts
    assert any(not t.strip() for t in texts) and any(t.strip() for t in texts)   # the situation: empty answers beside real ones
    expect = []
    for i in range(6):
        cands = [t for t in texts[4 * i:4 * i + 4] if t.strip()]
        if cands: expect.append((rows[i]['instruction'], rows[i]['input'], max(cands, key=len)))   # the first of the longest, on ties
    assert [(d['instruction'], d['input'], d['output']) for d in data] == expect
    assert all(d['output'].strip() and d['score'] == len(d['output']) for d in data)
    assert len(best_of_k(m, tok, rows[:6], lambda roll, rs: torch.zeros(len(roll)), k=2, min_score=1.0, max_new_tokens=8)) == 0
    right = best_of_k(m, tok, rows[:6], k=2, max_new_tokens=8)           # the default judge: the checker, right answers only
    assert all(d['score'] == 1.0 for d in right)


def test_best_of_k_refuses_bad_judges(base, rows):
    from ft_course.grpo import best_of_k
    m, tok = base
    with pytest.raises(ValueError, match='k=0'): best_of_k(m, tok, rows[:2], k=0)
    with pytest.raises(ValueError, match='one score per completion'): best_of_k(m, tok, rows[:2], lambda roll, rs: torch.zeros(3), k=2, max_new_tokens=4)
    with pytest.raises(ValueError, match='NaN'): best_of_k(m, tok, rows[:2], lambda roll, rs: torch.full((len(roll),), float('nan')), k=2, max_new_tokens=4)
    with pytest.raises(TypeError, match='returned None'): best_of_k(m, tok, rows[:2], lambda roll, rs: None, k=2, max_new_tokens=4)


def test_flat_groups_are_neither_scored_nor_trained(base, rows):
    "A reward that every answer earns alike gives every group zero advantage: no update, and no KL measured (nan, not a stale 0)."
    model, tok = copy.deepcopy(base[0]), base[1]
    h = grpo(model, tok, rows, lambda roll, rs: torch.ones(len(roll)), GRPOConfig(**TINY))
    assert all(k != k for k in h['kl']) and all(e != e for e in h['entropy'])
    assert max((a - p).abs().max().item() for a, p in zip(model.parameters(), base[0].parameters())) == 0
    h2 = grpo(copy.deepcopy(base[0]), tok, rows, parity_reward, GRPOConfig(**{**TINY, 'group_size': 4, 'prompts_per_step': 4}))
    assert all(k == k and k >= 0 for k in h2['kl'])    # groups that differ are scored, and their KL is a number


def test_frozen_policy_is_refused(base, rows):
    with pytest.raises(ValueError, match="grpo: no parameter of the policy has requires_grad=True"):
        grpo(copy.deepcopy(base[0]).requires_grad_(False), base[1], rows, exact_reward, GRPOConfig(**TINY))
