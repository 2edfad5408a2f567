"Reward model (ft_course.reward): parity with TRL's RewardTrainer, padding invariance, save/load, and clear errors on bad input."
import pytest, torch
from datasets import Dataset
from ft_course.evaluate import alpaca_prompt, first_line, is_correct
from ft_course.reward import (RewardModel, bt_loss, check_pairs, collate_pairs, encode_pair_ids, pair_rewards,
                              sample_comparisons, train_reward_model)
from ft_course.rollout import alignment_start, encode, rl_prompts


@pytest.fixture(scope="module")
def start():
    return alignment_start(device='cpu')


@pytest.fixture(scope="module")
def pairs():
    rows = rl_prompts(6)
    wrong = ["the " + r['input'].split()[1] for r in rows]                       # plausible but wrong answers
    return Dataset.from_list([dict(prompt=alpaca_prompt(r), chosen=r['output'], rejected=w, task=r['task'], input=r['input'])
                              for r, w in zip(rows, wrong) if w != r['output']][:4])


def test_trl_reward_trainer_loss_parity(start, pairs, tmp_path):
    "TRL 1.16 RewardTrainer.compute_loss on GPT2ForSequenceClassification equals our bt_loss on the same weights and batch."
    from transformers import GPT2ForSequenceClassification
    from trl import RewardConfig, RewardTrainer
    model, tok = start
    torch.manual_seed(0)
    rm = RewardModel.from_causal_lm(model)
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in ('id2label', 'label2id')}
    cfg.update(num_labels=1, pad_token_id=tok.pad_token_id)
    hf = GPT2ForSequenceClassification(type(model.config).from_dict(cfg))
    hf.transformer.load_state_dict(rm.backbone.state_dict())
    hf.score.weight.data.copy_(rm.head.weight.data)
    args = RewardConfig(output_dir=str(tmp_path), bf16=False, gradient_checkpointing=False, per_device_train_batch_size=4,
                        report_to='none', use_cpu=True, dataset_num_proc=None, max_length=None, logging_strategy='no')
    trainer = RewardTrainer(model=hf, args=args, train_dataset=pairs.select_columns(['prompt', 'chosen', 'rejected']),
                            processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    hf.eval()
    with torch.no_grad(): trl_loss = trainer.compute_loss(hf, dict(batch)).item()
    # The same sequences through our model: TRL tokenized prompt+answer, appended EOS and right-padded.
    ids, mask = batch['input_ids'].cpu(), batch['attention_mask'].cpu()
    assert (ids[mask.bool()] != tok.pad_token_id).all()                           # pad differs from EOS: HF reads at EOS
    with torch.no_grad():
        rc, rr = rm(ids, mask).chunk(2)
        ours = bt_loss(rc, rr).item()
    print(f"TRL RewardTrainer loss {trl_loss:.6f}, ours {ours:.6f}, |delta| {abs(ours - trl_loss):.1e}")
    assert abs(ours - trl_loss) < 1e-5, (ours, trl_loss)
    # and our own encoding of the pairs gives TRL's token ids, in the same order of rows
    ours_ids, ours_mask = collate_pairs(encode_pair_ids(tok, pairs), tok.pad_token_id)
    order = {tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)}
    assert order == {tuple(r[m.bool()].tolist()) for r, m in zip(ours_ids, ours_mask)}


def test_score_invariant_to_padding(start, pairs):
    "A pair's reward alone equals its reward inside a batch padded on the left (prompts) and right (completions)."
    model, tok = start
    rm = RewardModel.from_causal_lm(model).eval()
    p, c = list(pairs['prompt']), list(pairs['chosen'])
    p[1] = p[1] + "Also, " * 20                                                   # a long prompt forces left padding
    c[2] = c[2] + " and more words here" * 3                                      # a long answer forces right padding
    batch = rm.score(encode(tok, p, c))
    alone = torch.cat([rm.score(encode(tok, [p[i]], [c[i]])) for i in range(len(p))])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    naive = rm.score(encode(tok, p, c), batch_size=1)                             # trimming padding columns changes nothing
    torch.testing.assert_close(naive, alone, atol=1e-5, rtol=0)
    # the reward is read at the EOS: changing the answer's last word changes it
    other = rm.score(encode(tok, [p[0]], [c[0] + " x"]))
    assert (other - alone[0]).abs().item() > 1e-4


def test_save_load_roundtrip(start, pairs, tmp_path):
    model, tok = start
    rm = RewardModel.from_causal_lm(model)
    rm.r_mean.fill_(0.5); rm.r_std.fill_(2.0)
    path = rm.save(tmp_path/'rm')
    assert sorted(x.name for x in path.iterdir()) == ['config.json', 'model.safetensors']
    back = RewardModel.load(path)
    r = encode(tok, list(pairs['prompt']), list(pairs['chosen']))
    torch.testing.assert_close(rm.eval().score(r), back.score(r))
    with pytest.raises(FileNotFoundError, match="holds no reward model"): RewardModel.load(tmp_path)


def test_training_learns_and_is_seeded(start):
    "A few steps on easy pairs (gold vs an echo of the input) raise the accuracy; the same seed gives the same losses."
    model, tok = start
    rows = rl_prompts(48)
    ds = Dataset.from_list([dict(prompt=alpaca_prompt(r), chosen=r['output'], rejected=r['input']) for r in rows if r['input'] != r['output']])
    def run():
        torch.manual_seed(0)
        return train_reward_model(RewardModel.from_causal_lm(model), tok, ds, epochs=4, lr=2e-3, batch_size=16, seed=0, progress=False)
    rm, hist = run()
    rc, rr = pair_rewards(rm, tok, ds)
    assert (rc > rr).float().mean().item() >= 0.9
    assert hist[-1]['loss'] < hist[0]['loss']
    _, hist2 = run()
    assert [h['loss'] for h in hist] == [h['loss'] for h in hist2]


def test_lm_loss_is_the_answer_nll_and_trains(start):
    "The auxiliary LM loss equals the start's own answer NLL before training; lm_coef trains, and bad settings fail clearly."
    from transformers import AutoModel
    from ft_course.reward import _lm_logits, _prompt_ids, _right_pad, answer_lm_loss
    from ft_course.rollout import token_logprobs
    model, tok = start
    rows = rl_prompts(8)
    p, c = [alpaca_prompt(r) for r in rows], [r['output'] for r in rows]
    rm = RewardModel.from_causal_lm(model)
    ids, mask = _right_pad([x for x, _ in encode_pair_ids(tok, Dataset.from_dict(dict(prompt=p, chosen=c, rejected=['-'] * 8)))], tok.pad_token_id)
    with torch.no_grad():
        h, m = rm.hidden(ids, mask)
        ours = answer_lm_loss(_lm_logits(rm), h, ids, m, [len(x) for x in _prompt_ids(tok, p)])
        enc = encode(tok, p, c)
        ref = -token_logprobs(model, enc)[enc.completion_mask.bool()].mean()
    assert abs(ours.item() - ref.item()) < 1e-5
    ds = Dataset.from_list([dict(prompt=alpaca_prompt(r), chosen=r['output'], rejected=r['input']) for r in rl_prompts(32) if r['input'] != r['output']])
    torch.manual_seed(0)
    _, hist = train_reward_model(RewardModel.from_causal_lm(model), tok, ds, epochs=2, lr=1e-3, batch_size=16, progress=False, lm_coef=1.0)
    assert all('lm_loss' in h for h in hist) and hist[-1]['lm_loss'] < hist[0]['lm_loss']
    with pytest.raises(ValueError, match="lm_coef=-1"): train_reward_model(rm, tok, ds, lm_coef=-1, progress=False)
    untied = RewardModel(AutoModel.from_config(type(model.config).from_dict({**model.config.to_dict(), 'tie_word_embeddings': False})))
    with pytest.raises(ValueError, match="pass lm_head="): train_reward_model(untied, tok, ds, lm_coef=1.0, progress=False)
    head = torch.nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False)
    before = head.weight.detach().clone()
    train_reward_model(untied, tok, ds.select(range(8)), epochs=1, lm_coef=1.0, lm_head=head, progress=False)
    assert not torch.equal(before, head.weight)                                   # an explicit head is trained with the model


def test_sample_comparisons_follow_the_checker(start):
    model, tok = start
    rows = rl_prompts(24)
    ds = sample_comparisons(model, tok, rows, k=4, seed=0)
    assert {'prompt', 'chosen', 'rejected', 'task', 'input', 'failure'} <= set(ds.column_names)
    by_prompt = {alpaca_prompt(r): r for r in rows}
    assert len(ds) > 0
    for e in ds:
        r = by_prompt[e['prompt']]
        assert is_correct(r, first_line(e['chosen'])) and e['chosen'] != e['rejected']
        assert not is_correct(r, first_line(e['rejected'])) or e['failure'] == 'no_eos'
    with pytest.raises(ValueError, match="at least two samples"): sample_comparisons(model, tok, rows, k=1)


def test_sample_comparisons_drop_empty_answers(start):
    "A policy that often says EOS at once: its empty answers make no pair, so what it gives passes check_pairs."
    import copy
    model, tok = start
    mute = copy.deepcopy(model)
    with torch.no_grad(): mute.lm_head.weight[tok.eos_token_id] += 3.0
    rows = rl_prompts(24)
    from ft_course.rollout import exact_reward, sample
    roll = sample(mute, tok, [alpaca_prompt(r) for r in rows], n=4, seed=0)
    ok, empty = exact_reward(roll, rows).view(24, 4), torch.tensor([not t.strip() for t in roll.texts]).view(24, 4)
    assert ((ok.sum(1) > 0) & empty.any(1)).any()                  # the situation: a prompt with a right and an empty answer
    ds = sample_comparisons(mute, tok, rows, k=4, seed=0)
    assert len(ds) > 0 and all(e['chosen'].strip() and e['rejected'].strip() for e in ds)
    check_pairs(ds)


def test_bad_inputs(start, pairs):
    model, tok = start
    rm = RewardModel.from_causal_lm(model)
    same = pairs.map(lambda e: dict(rejected=e['chosen']))
    with pytest.raises(ValueError, match="chosen == rejected"): check_pairs(same)
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['rejected'\]"): check_pairs(pairs.remove_columns('rejected'))
    with pytest.raises(ValueError, match="empty"): check_pairs(pairs.select([]))
    with pytest.raises(ValueError, match="empty"): train_reward_model(rm, tok, pairs.select([]), progress=False)
    long = pairs.map(lambda e: dict(chosen=e['chosen'] + " and then" * 200))
    with pytest.raises(ValueError, match="Pair 0 is .* over the reward model's context of 256"): train_reward_model(rm, tok, long, progress=False)
    r = encode(tok, list(pairs['prompt']), list(pairs['chosen']))
    with pytest.raises(ValueError, match="reward model is on cpu but the batch is on meta"):
        rm(r.input_ids.to('meta'), r.attention_mask.to('meta'))
    with pytest.raises(ValueError, match="no real token"):
        rm(r.input_ids, torch.zeros_like(r.attention_mask))
    with pytest.raises(ValueError, match="must both be"):
        rm(r.input_ids, r.attention_mask[:, 1:])


def test_the_default_reward_model_ships():
    "Chapters 9a, 9b, 10b and 11 load the course's reward models from the package (a cold build takes minutes of CPU)."
    from ft_course.models import base_dir
    from ft_course.reward import RL_PROMPTS, RM_BATCH, RM_EPOCHS, RM_K, RM_LM_COEF, RM_LR, RM_PROMPTS, RewardModel, reward_model_key
    recipes = [dict(lm_coef=RM_LM_COEF, prompts=RM_PROMPTS),      # the course RM
               dict(lm_coef=RM_LM_COEF, prompts=RL_PROMPTS),      # + LM loss, comparisons on the RL prompts only (9a)
               dict(lm_coef=0.0, prompts=RL_PROMPTS)]             # Bradley-Terry alone (9a)
    keys = [reward_model_key(**r) for r in recipes]
    assert len(set(keys)) == 3
    for r, key in zip(recipes, keys):
        shipped = base_dir().parent/'reward_model'/key
        assert (shipped/'model.safetensors').exists(), (
            f"The shipped reward model ({r}) does not match the recipe or the base (key {key}): rebuild it with "
            f"`trained_reward_model(**{r}, cache=False).save(...)` into ft_course/assets/reward_model/<key> and remove the old one.")
        rm = RewardModel.load(shipped)
        want = dict(k=RM_K, epochs=RM_EPOCHS, lr=RM_LR, batch_size=RM_BATCH, seed=0, failures=True, lm_coef=r['lm_coef'])
        if r['prompts'] != RL_PROMPTS: want['prompts'] = r['prompts']
        assert rm.meta['recipe'] == want
    assert sorted(p.name for p in (base_dir().parent/'reward_model').iterdir()) == sorted(keys), "remove stale reward models from the assets"


def test_comparison_prompts():
    "The RL prompts first, then fresh distinct training prompts; never a held-out (verb, object) combination; bad n fails clearly."
    from ft_course.data import _heldout_pairs, instruction_dataset, parse
    from ft_course.reward import comparison_prompts
    from ft_course.rollout import rl_prompts
    rows, rl = comparison_prompts(2000), rl_prompts()
    assert len(rows) == 2000 and rows[:len(rl)] == rl
    assert len({(r['task'], r['input']) for r in rows}) == 2000
    held = _heldout_pairs(0)
    assert not any((parse(r['input']).verb.base, parse(r['input']).obj) in held for r in rows)
    standard = {(r['task'], r['input']) for split in instruction_dataset().values() for r in split}
    assert not any((r['task'], r['input']) in standard for r in rows[len(rl):])
    assert comparison_prompts(10) == rl[:10]
    with pytest.raises(ValueError, match="at least one"): comparison_prompts(0)


def test_alignment_start_from_another_base(tmp_path, monkeypatch):
    "`base=` fine-tunes the model it names and caches it under a key of its own weights: the shipped base's start is never reused for it."
    from ft_course.models import base_dir, load_base
    from ft_course.rollout import _start_key
    monkeypatch.setenv('FT_COURSE_CACHE', str(tmp_path/'cache'))
    m, tok = load_base(device='cpu')
    with torch.no_grad(): m.transformer.wte.weight.mul_(0.5)               # another base: the same shapes, other weights
    other = tmp_path/'other'; m.save_pretrained(other); tok.save_pretrained(other)
    settings = dict(n_demos=4, steps=1, lr=1e-3, seed=0)
    a, _ = alignment_start(**settings, base=other)
    b, _ = alignment_start(**settings)
    assert len(list((tmp_path/'cache'/'alignment_start').iterdir())) == 2  # two starts, two keys
    assert not torch.equal(a.transformer.wte.weight, b.transformer.wte.weight)
    again, _ = alignment_start(**settings, base=other)                     # from the cache
    assert torch.equal(again.transformer.wte.weight, a.transformer.wte.weight)
    assert _start_key(None, **settings) == _start_key(base_dir(), **settings)   # the key follows the weights, not the name
