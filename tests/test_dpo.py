"`ft_course.dpo` on a tiny random GPT-2: parity with TRL's DPOTrainer (loss and gradients), the trainer, and bad inputs."
import copy, tempfile, warnings
from dataclasses import asdict

import pytest, torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from ft_course.data import preference_dataset
from ft_course.dpo import (DPOConfig, check_pairs, dpo, dpo_batch_loss, dpo_loss, encode_pairs, reference_logps,
                           sequence_logps)
from ft_course.rollout import encode, token_logprobs


def tiny(tokenizer, seed=0, n_positions=128):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id))

@pytest.fixture(scope="module")
def pairs():
    return preference_dataset(12, seed=1).to_list()

def perturbed(model, scale=0.02, seed=1):
    "A copy of `model` with every weight nudged: a policy that has moved away from its reference."
    m = copy.deepcopy(model); g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


# --- parity with TRL ---------------------------------------------------------------------------------------------------

def trl_loss_and_grads(policy, ref, tokenizer, rows, loss_type, loss_weights=None, beta=0.1):
    "TRL 1.16 DPOTrainer's loss and gradients on `rows` as one batch (its own tokenization and collation)."
    from trl import DPOConfig as TRLConfig, DPOTrainer
    policy, ref = copy.deepcopy(policy), copy.deepcopy(ref)        # TRL patches the models' forward (fused LM head)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        args = TRLConfig(output_dir=d, beta=beta, loss_type=loss_type, loss_weights=loss_weights, bf16=False,
                         gradient_checkpointing=False, use_cpu=True, report_to='none', per_device_train_batch_size=len(rows),
                         max_length=None, dataset_num_proc=None, disable_dropout=True)
        ds = Dataset.from_list([{k: r[k] for k in ('prompt', 'chosen', 'rejected')} for r in rows])
        tr = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tokenizer)
        batch = tr.data_collator([tr.train_dataset[i] for i in range(len(rows))])
        tr.model.train()
        loss = tr.compute_loss(tr.model, batch)
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in tr.model.named_parameters()}, batch

@pytest.mark.parametrize("loss_type,nll,trl_types,trl_weights", [
    ('sigmoid', 0.0, ['sigmoid'], None),
    ('sigmoid', 1.0, ['sigmoid', 'sft'], [1.0, 1.0]),
    ('ipo', 0.0, ['ipo'], None),
    ('norm', 0.0, ['sigmoid_norm'], None),
])
def test_loss_and_gradients_match_trl(tokenizer, pairs, loss_type, nll, trl_types, trl_weights):
    ref = tiny(tokenizer); policy = perturbed(ref)
    rows = pairs[:6]
    trl_loss, trl_grads, trl_batch = trl_loss_and_grads(policy, ref, tokenizer, rows, trl_types, trl_weights)
    batch = encode_pairs(tokenizer, rows)
    # the same tokens: TRL's right-padded prompt+answer rows are our left-padded prompt + right-padded answer
    for i in range(len(batch)):
        ours = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
        theirs = trl_batch['input_ids'][i][trl_batch['attention_mask'][i].bool()].tolist()
        assert ours == theirs
    with torch.no_grad(): ref_lp = sequence_logps(ref, batch)
    loss, _ = dpo_batch_loss(policy, batch, ref_lp, DPOConfig(beta=0.1, loss_type=loss_type, nll=nll))
    policy.zero_grad(); loss.backward()
    assert abs(loss.item() - trl_loss.item()) < 1e-5, (loss.item(), trl_loss.item())
    assert loss.item() > 0.01                                       # a real loss, not a degenerate zero
    for n, p in policy.named_parameters():
        assert torch.allclose(p.grad, trl_grads[n], atol=1e-5, rtol=1e-4), (n, (p.grad - trl_grads[n]).abs().max())

def test_precomputed_reference_equals_live(tokenizer, pairs):
    ref = tiny(tokenizer)
    table = reference_logps(ref, tokenizer, pairs, batch_size=5)     # uneven batches: padding differs from the live one
    assert table.shape == (len(pairs), 2)
    with torch.no_grad(): live = sequence_logps(ref, encode_pairs(tokenizer, pairs))
    torch.testing.assert_close(table, torch.stack(live.chunk(2), 1), atol=1e-5, rtol=1e-5)


# --- the loss ----------------------------------------------------------------------------------------------------------

def test_dpo_loss_values():
    z = torch.zeros(3)
    losses, rc, rr = dpo_loss(z, z, z, z, beta=0.1)
    torch.testing.assert_close(losses, torch.full((3,), 0.6931), atol=1e-4, rtol=0)   # log 2 at the reference
    lc, lr_ = torch.tensor([-1.0]), torch.tensor([-5.0])
    losses, rc, rr = dpo_loss(lc, lr_, torch.tensor([-2.0]), torch.tensor([-3.0]), beta=0.5)
    torch.testing.assert_close(rc, torch.tensor([0.5])); torch.testing.assert_close(rr, torch.tensor([-1.0]))
    torch.testing.assert_close(losses, -torch.nn.functional.logsigmoid(torch.tensor([1.5])))
    # IPO: zero loss exactly at the target margin 1/(2β) of per-token log-ratios
    l, _, _ = dpo_loss(torch.tensor([5.0]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 0.1, 'ipo', torch.ones(1), torch.ones(1))
    assert l.item() == 0.0
    with pytest.raises(ValueError, match="beta"): dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="loss_type"): dpo_loss(z, z, z, z, loss_type='hinge2')


# --- the trainer ---------------------------------------------------------------------------------------------------------

def test_dpo_learns_preferences_and_is_reproducible(tokenizer):
    rows = preference_dataset(32, seed=2).to_list()
    cfg = DPOConfig(beta=0.5, lr=3e-3, max_steps=12, batch_size=8, warmup=2, progress=False)
    m1 = tiny(tokenizer); h1 = dpo(m1, tokenizer, rows, cfg, ref='precompute')
    assert h1['reference'] == 'precomputed' and len(h1['loss']) == 12
    assert h1['accuracy'][-1] >= 0.75 and h1['margin'][-1] > h1['margin'][0] + 0.1, h1
    m2 = tiny(tokenizer); h2 = dpo(m2, tokenizer, rows, cfg)          # live frozen copy: the same numbers
    assert h2['reference'] == 'live'
    assert max(abs(a - b) for a, b in zip(h1['loss'], h2['loss'])) < 1e-4
    # the implicit reward on held pairs: chosen above rejected more often than at the start
    with torch.no_grad():
        b = encode_pairs(tokenizer, rows)
        after, before = sequence_logps(m1, b), sequence_logps(tiny(tokenizer), b)
    B = len(rows)
    assert ((after[:B] - before[:B]) > (after[B:] - before[B:])).float().mean() >= 0.75


# --- bad inputs ---------------------------------------------------------------------------------------------------------

def test_bad_pairs_get_clear_errors(tokenizer, pairs):
    good = pairs[:3]
    with pytest.raises(ValueError, match="same text"): check_pairs([dict(good[0], rejected=good[0]['chosen'])])
    with pytest.raises(ValueError, match="rejected completion is empty"): check_pairs([dict(good[0], rejected='  ')])
    with pytest.raises(ValueError, match="chosen completion is empty"): check_pairs([dict(good[0], chosen='')])
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['rejected'\]"):
        check_pairs([{'prompt': 'p', 'chosen': 'a', 'bad': 'b'}])
    with pytest.raises(ValueError, match="over the model's context of 128"):
        check_pairs([dict(good[0], prompt='word ' * 200)], tokenizer, 128)
    with pytest.raises(ValueError, match="No preference pairs"): check_pairs([])
    m = tiny(tokenizer)
    with pytest.raises(ValueError, match="over the model's context"):   # the trainer checks before it starts
        dpo(m, tokenizer, [dict(good[0], prompt='word ' * 200)], DPOConfig(max_steps=1, progress=False))

def test_bad_reference_gets_clear_errors(tokenizer, pairs):
    m = tiny(tokenizer); cfg = DPOConfig(max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"reference is torch.float64 but the policy torch.float32"):
        dpo(m, tokenizer, pairs, cfg, ref=tiny(tokenizer).double())
    with pytest.raises(ValueError, match="reference is on meta but the policy on cpu"):
        dpo(m, tokenizer, pairs, cfg, ref=tiny(tokenizer).to('meta'))
    with pytest.raises(ValueError, match="is the policy itself"): dpo(m, tokenizer, pairs, cfg, ref=m)
    with pytest.raises(ValueError, match=r"need \(12, 2\)"): dpo(m, tokenizer, pairs, cfg, ref=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="ref='nope'"): dpo(m, tokenizer, pairs, cfg, ref='nope')

def test_old_names_warn_and_still_work(tokenizer):
    "DPOConfig(steps=) and greedy_eval keep working for one release, with a DeprecationWarning; greedy_eval is `evaluate`."
    from ft_course.dpo import greedy_eval
    from ft_course.evaluate import evaluate
    with pytest.warns(DeprecationWarning, match="'steps' is deprecated.*'max_steps'"): cfg = DPOConfig(steps=3)
    assert cfg.max_steps == 3 and 'steps' not in asdict(cfg)
    m = tiny(tokenizer)
    rows = [dict(instruction='Make it passive.', input='The chef cooks the meal.', output='The meal is cooked by the chef.',
                 task='active_to_passive')] * 3
    with pytest.warns(DeprecationWarning, match="greedy_eval is deprecated"): old = greedy_eval(m, tokenizer, rows, max_new_tokens=6)
    new = evaluate(m, tokenizer, rows, max_new_tokens=6)
    assert [r['prediction'] for r in old.rows] == [r['prediction'] for r in new.rows]

def test_frozen_policy_is_refused(tokenizer, pairs):
    with pytest.raises(ValueError, match="dpo: no parameter of the policy has requires_grad=True"):
        dpo(tiny(tokenizer).requires_grad_(False), tokenizer, pairs, DPOConfig(max_steps=1, batch_size=2, progress=False))
