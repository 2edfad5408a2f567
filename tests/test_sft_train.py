"`ft_course.sft` and `ft_course.train` on a tiny random GPT-2: batches, resume, failures, and parity with TRL."
import json, math
from pathlib import Path

import pytest, torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from ft_course.data import format_prompt, instruction_dataset
from ft_course.pretrain import _param_groups, load_checkpoint, lr_at
from ft_course.sft import SFTCollator, batch_order, pack_dataset, sft_loss, tokenize_dataset
from ft_course.train import TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return instruction_dataset(200, seed=3)

def tiny(tokenizer, dropout=0.1):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id))

CFG = dict(lr=3e-3, max_steps=8, batch_size=8, warmup=2, eval_every=3, progress=False)

def stop_at(k):
    def cb(step, hist):
        if step == k: raise KeyboardInterrupt
    return cb


# --- batches ---------------------------------------------------------------------------------------------------------

def test_collator_pads_masks_and_labels(tokenizer, data):
    tds = tokenize_dataset(data['train'].select(range(3)), tokenizer)
    rows = [tds[i] for i in range(3)]
    b = SFTCollator(tokenizer.pad_token_id)(rows)
    L = max(len(r['input_ids']) for r in rows)
    assert b['input_ids'].shape == b['labels'].shape == b['attention_mask'].shape == (3, L)
    for i, r in enumerate(rows):
        n, n_prompt = len(r['input_ids']), sum(l == -100 for l in r['labels'])
        assert b['input_ids'][i, :n].tolist() == r['input_ids']
        assert b['input_ids'][i, n:].eq(tokenizer.pad_token_id).all()
        assert b['attention_mask'][i].tolist() == [1] * n + [0] * (L - n)
        assert b['labels'][i, :n_prompt].eq(-100).all()                         # the prompt is not learned
        assert b['labels'][i, n_prompt:n].tolist() == r['input_ids'][n_prompt:]  # the response is its own label
        assert b['labels'][i, n:].eq(-100).all()                                 # nor is padding
        assert tokenizer.decode(r['input_ids'][:n_prompt]) == format_prompt(data['train'][i]['instruction'], data['train'][i]['input'])

def test_packed_batch_does_not_leak_across_examples(tokenizer, data):
    "Each example of a packed row gets exactly the logits it has alone: no attention mask, restarting position_ids."
    tds = tokenize_dataset(data['train'].select(range(12)), tokenizer)
    rows = pack_dataset(tds, 400).to_list()
    assert any(r['position_ids'].count(0) > 1 for r in rows)                    # some row really holds several examples
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=400, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0,
                                       embd_pdrop=0, attn_pdrop=0, pad_token_id=tokenizer.pad_token_id)).eval()
    b = SFTCollator(tokenizer.pad_token_id)(rows)
    assert 'attention_mask' not in b and 'position_ids' in b
    with torch.no_grad():
        packed = model(input_ids=b['input_ids'], position_ids=b['position_ids'], use_cache=False).logits
        leaky = model(input_ids=b['input_ids'], position_ids=b['position_ids'], attention_mask=torch.ones_like(b['input_ids']),
                      use_cache=False).logits
        worst_leak, checked = 0.0, 0
        for i, r in enumerate(rows):
            starts = [t for t, p in enumerate(r['position_ids']) if p == 0] + [len(r['position_ids'])]
            for s, e in zip(starts, starts[1:]):
                alone = model(torch.tensor([r['input_ids'][s:e]])).logits[0]
                assert (packed[i, s:e] - alone).abs().max() < 1e-5
                worst_leak = max(worst_leak, (leaky[i, s:e] - alone).abs().max().item()); checked += 1
    assert checked > len(rows) and worst_leak > 1e-3                             # an all-ones mask would have leaked
    # and the SFT loss of the packed rows is the loss of the same examples padded
    padded = sft_loss(model, SFTCollator(tokenizer.pad_token_id)(tds.to_list()))
    assert abs(sft_loss(model, b).item() - padded.item()) < 1e-5

def test_training_with_packing_counts_real_tokens(tokenizer, data):
    h = train(tiny(tokenizer), data['train'], None, TrainConfig(**{**CFG, 'max_steps': 2, 'packing': True, 'max_length': 128}), tokenizer=tokenizer)
    assert len(h['train']) == 2 and all(math.isfinite(x) for x in h['train'])
    per_row = sum(map(len, pack_dataset(tokenize_dataset(data['train'], tokenizer, max_length=128), 128)['input_ids']))
    assert 0 < h['tokens'][-1] <= per_row                                       # real tokens only, no padding

def test_batch_order_depends_only_on_seed_and_epoch():
    assert batch_order(50, 8, seed=1, epoch=2) == batch_order(50, 8, seed=1, epoch=2)
    assert batch_order(50, 8, seed=1, epoch=2) != batch_order(50, 8, seed=1, epoch=3)
    assert sorted(sum(batch_order(50, 8, seed=1, epoch=2), [])) == list(range(50))


# --- the loop ----------------------------------------------------------------------------------------------------------

def test_single_process_loop_is_plain_torch(tokenizer, data):
    "With one process on a CPU, the accelerate-based loop gives the losses of a hand-written PyTorch loop."
    cfg = TrainConfig(**{**CFG, 'max_steps': 3})
    hist = train(tiny(tokenizer), data['train'], None, cfg, tokenizer=tokenizer)
    model = tiny(tokenizer); model.train()
    torch.manual_seed(cfg.seed)
    rows = tokenize_dataset(data['train'], tokenizer, max_length=128).to_list()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, foreach=True)
    sched = type('S', (), dict(lr=cfg.lr, min_lr=cfg.lr / 10, warmup=cfg.warmup, max_steps=3))
    collate, losses = SFTCollator(tokenizer.pad_token_id), []
    for step, idx in enumerate(batch_order(len(rows), cfg.batch_size, cfg.seed, 0)[:3]):
        b = collate([rows[i] for i in idx])
        for g in opt.param_groups: g['lr'] = lr_at(step, sched)
        s = sft_loss(model, b, reduction='sum'); n = (b['labels'][:, 1:] != -100).sum()
        (s * (1 / n.double()).float()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step(); opt.zero_grad(set_to_none=True)
        losses.append((s.double() / n).item())
    assert hist['train'] == losses

def test_grad_accumulation_matches_a_big_batch(tokenizer, data):
    "4 micro-batches of 4 make the same step as one batch of 16 (the loss is normalised over the whole step)."
    a = train(tiny(tokenizer, 0.0), data['train'], None, TrainConfig(**{**CFG, 'max_steps': 2, 'batch_size': 4, 'grad_accum': 4}), tokenizer=tokenizer)
    b = train(tiny(tokenizer, 0.0), data['train'], None, TrainConfig(**{**CFG, 'max_steps': 2, 'batch_size': 16}), tokenizer=tokenizer)
    assert a['train'] == pytest.approx(b['train'], rel=1e-5) and a['tokens'] == b['tokens']

@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_gives_identical_losses(tokenizer, data, tmp_path, grad_accum):
    cfg = TrainConfig(**CFG, grad_accum=grad_accum)
    full = train(tiny(tokenizer), data['train'], data['val'], cfg, tokenizer=tokenizer)
    with pytest.raises(KeyboardInterrupt):          # interrupted after step 5 (not a checkpoint step)
        train(tiny(tokenizer), data['train'], data['val'], cfg, out_dir=tmp_path, tokenizer=tokenizer, callback=stop_at(5))
    assert json.loads((tmp_path/'checkpoint'/'state.json').read_text())['step'] == 5
    resumed = train(tiny(tokenizer), data['train'], data['val'], cfg, out_dir=tmp_path, resume=True, tokenizer=tokenizer)
    assert resumed['train'] == full['train'] and resumed['val'] == full['val']   # exact, dropout included
    assert resumed['step'] == list(range(1, 9))
    assert (tmp_path/'model.safetensors').exists() and (tmp_path/'tokenizer.json').exists()

def test_interrupt_inside_a_step_saves_a_checkpoint_that_resumes(tokenizer, data, tmp_path):
    "Ctrl-C in the middle of a forward pass: the half-done step is dropped, and the resumed run is exact."
    cfg = TrainConfig(**CFG)
    full = train(tiny(tokenizer), data['train'], data['val'], cfg, tokenizer=tokenizer)
    model, calls = tiny(tokenizer), [0]
    def hook(mod, inp, out):
        calls[0] += mod.training
        if calls[0] == 5: raise KeyboardInterrupt          # the 5th training forward: inside step 5
    h = model.lm_head.register_forward_hook(hook)
    with pytest.raises(KeyboardInterrupt):
        train(model, data['train'], data['val'], cfg, out_dir=tmp_path, tokenizer=tokenizer)
    h.remove()
    assert json.loads((tmp_path/'checkpoint'/'state.json').read_text())['step'] == 4
    resumed = train(tiny(tokenizer), data['train'], data['val'], cfg, out_dir=tmp_path, resume=True, tokenizer=tokenizer)
    assert resumed['train'] == full['train'] and resumed['val'] == full['val']

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tokenizer, data, tmp_path):
    model, calls = tiny(tokenizer), [0]
    def hook(mod, inp, out):
        calls[0] += mod.training
        if calls[0] >= 5: return out * float('nan')        # from step 5 on, the logits are NaN
    model.lm_head.register_forward_hook(hook)
    cfg = TrainConfig(**CFG)
    with pytest.raises(FloatingPointError, match=r"at step 5.*Lower the learning rate.*last good checkpoint \(step 3\)"):
        train(model, data['train'], data['val'], cfg, out_dir=tmp_path, tokenizer=tokenizer)
    fresh = tiny(tokenizer)
    opt = torch.optim.AdamW(_param_groups(fresh, 0.0))
    step, hist = load_checkpoint(tmp_path/"checkpoint", fresh, opt)
    assert step == 3 and all(math.isfinite(x) for x in hist['train'])
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    done = train(tiny(tokenizer), data['train'], data['val'], cfg, out_dir=tmp_path, resume=True, tokenizer=tokenizer)
    assert done['step'][-1] == 8

def test_huge_learning_rate_diverges_with_a_clear_error(tokenizer, data, tmp_path):
    cfg = TrainConfig(lr=1e6, max_steps=30, batch_size=8, warmup=0, eval_every=1, grad_clip=None, progress=False)
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        train(tiny(tokenizer), data['train'], None, cfg, out_dir=tmp_path, tokenizer=tokenizer)
    state = json.loads((tmp_path/'checkpoint'/'state.json').read_text())
    assert all(math.isfinite(x) for x in state['history']['train'])

def test_untied_head_survives_a_checkpoint(tokenizer, data, tmp_path):
    "Checkpoints keep an output head that is not tied to the embedding (as in many non-GPT-2 models)."
    cfg = TrainConfig(**CFG)
    def untied():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                          tie_word_embeddings=False))
    full = train(untied(), data['train'], None, cfg, tokenizer=tokenizer)
    with pytest.raises(KeyboardInterrupt):
        train(untied(), data['train'], None, cfg, out_dir=tmp_path, tokenizer=tokenizer, callback=stop_at(4))
    assert train(untied(), data['train'], None, cfg, out_dir=tmp_path, resume=True, tokenizer=tokenizer)['train'] == full['train']

def test_time_budget_fits_the_schedule(tokenizer, data):
    cfg = TrainConfig(lr=3e-3, epochs=None, max_seconds=1.5, batch_size=8, warmup=3, eval_every=1000, progress=False)
    hist = train(tiny(tokenizer), data['train'], None, cfg, tokenizer=tokenizer)
    assert hist['total_steps'] is not None and hist['step'][-1] <= hist['total_steps']
    # the run ends with the budget, or with a schedule fitted to it (the cosine went all the way down)
    assert 'stopped' in hist or (hist['step'][-1] == hist['total_steps'] and hist['lr'][-1] < cfg.lr / 5)


# --- bad input ---------------------------------------------------------------------------------------------------------

def test_empty_dataset(tokenizer):
    with pytest.raises(ValueError, match="train_ds is empty"):
        train(tiny(tokenizer), [], None, TrainConfig(**CFG), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="empty"): tokenize_dataset([], tokenizer)

def test_examples_longer_than_the_context(tokenizer, data):
    with pytest.raises(ValueError, match="longer than max_length=16.*raise max_length"):
        train(tiny(tokenizer), data['train'], None, TrainConfig(**CFG, max_length=16), tokenizer=tokenizer)
    tds = tokenize_dataset(data['train'], tokenizer)            # pre-tokenized, checked against the model's context
    short_ctx = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="longer than the context.*raise max_length"):
        train(short_ctx, tds, None, TrainConfig(**CFG))

def test_batch_whose_labels_are_all_masked(tokenizer, data):
    tds = tokenize_dataset(data['train'].select(range(8)), tokenizer)
    rows = [{**r, 'labels': [-100] * len(r['labels'])} for r in tds.to_list()]
    with pytest.raises(ValueError, match="Every label in this batch is -100.*nothing to learn"):
        sft_loss(tiny(tokenizer), SFTCollator(tokenizer.pad_token_id)(rows))
    with pytest.raises(ValueError, match="every label is -100.*Check the template"):
        train(tiny(tokenizer), Dataset.from_list(rows), None, TrainConfig(**CFG))
    mixed = rows + tds.to_list()[:1]                              # one learnable example, and batches without any
    with pytest.raises(ValueError, match="Every label in this batch is -100"):
        train(tiny(tokenizer), mixed, None, TrainConfig(**{**CFG, 'batch_size': 1}))

def test_masked_micro_batch_inside_a_step_is_fine(tokenizer, data):
    "A micro-batch without response tokens is harmless when the step as a whole has some."
    tds = tokenize_dataset(data['train'].select(range(2)), tokenizer).to_list()
    rows = [{**tds[0], 'labels': [-100] * len(tds[0]['labels'])}, tds[1]]
    hist = train(tiny(tokenizer), rows, None, TrainConfig(**{**CFG, 'max_steps': 3, 'batch_size': 1, 'grad_accum': 2}))
    assert len(hist['train']) == 3 and all(math.isfinite(x) for x in hist['train'])

def test_zero_learning_rate(tokenizer, data):
    with pytest.raises(ValueError, match="lr=0.*must be positive"):
        train(tiny(tokenizer), data['train'], None, TrainConfig(**{**CFG, 'lr': 0}), tokenizer=tokenizer)

def test_output_directory_that_is_a_file(tokenizer, data, tmp_path):
    f = tmp_path/'model'; f.write_text('not a directory')
    with pytest.raises(NotADirectoryError, match="is a file.*pass a directory"):
        train(tiny(tokenizer), data['train'], None, TrainConfig(**CFG), out_dir=f, tokenizer=tokenizer)

def test_resume_without_a_checkpoint(tokenizer, data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint.*resume=False"):
        train(tiny(tokenizer), data['train'], None, TrainConfig(**CFG), out_dir=tmp_path/'run', resume=True, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="needs out_dir"):
        train(tiny(tokenizer), data['train'], None, TrainConfig(**CFG), resume=True, tokenizer=tokenizer)


# --- TRL parity ----------------------------------------------------------------------------------------------------------

def test_loss_agrees_with_trl_sfttrainer(tokenizer, data, tmp_path):
    "TRL's SFTTrainer (prompt-completion data, loss on completions only) and our loss agree on the first batch."
    import copy
    from trl import SFTConfig, SFTTrainer
    rows = data['train'].select(range(8))
    pc = Dataset.from_dict(dict(prompt=[format_prompt(r['instruction'], r['input']) for r in rows], completion=rows['output']))
    model = tiny(tokenizer, 0.0)
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, per_device_train_batch_size=8, max_length=128,
                     report_to='none', use_cpu=True, save_strategy='no', bf16=False, gradient_checkpointing=False,
                     logging_strategy='no', shuffle_dataset=False)
    trainer = SFTTrainer(model=copy.deepcopy(model), args=args, train_dataset=pc, processing_class=tokenizer)
    ours_ds = tokenize_dataset(rows, tokenizer)
    assert trainer.train_dataset['input_ids'] == ours_ds['input_ids']   # the same tokens ...
    assert trainer.train_dataset['labels'] == ours_ds['labels']         # ... and the same mask
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, trl_batch).item()
        ours = sft_loss(model, SFTCollator(tokenizer.pad_token_id)(ours_ds.to_list())).item()
    assert abs(ours - trl_loss) < 1e-4, (ours, trl_loss)


# --- several processes ----------------------------------------------------------------------------------------------------

DDP_SCRIPT = '''
import json, os, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from ft_course.data import instruction_dataset, pretraining_corpus
from ft_course.tokenizer import train_tokenizer
from ft_course.train import TrainConfig, train
torch.set_num_threads(1)
tok = train_tokenizer(pretraining_corpus(300), vocab_size=600)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
data = instruction_dataset(200, seed=3)
h = train(model, data['train'], data['val'], TrainConfig(lr=3e-3, max_steps=4, batch_size=8, warmup=2, eval_every=2,
          progress=False), out_dir=sys.argv[1], tokenizer=tok)
if int(os.environ.get('RANK', 0)) == 0: print('RESULT', json.dumps(h))
'''

def test_two_processes_equal_gradient_accumulation(tokenizer, tmp_path):
    "Two data-parallel processes with batch 8 each take the same steps as one process accumulating 2 x 8."
    import os, subprocess, sys
    (tmp_path/'ddp.py').write_text(DDP_SCRIPT)
    env = {**os.environ, 'ACCELERATE_USE_CPU': 'true', 'OMP_NUM_THREADS': '1'}   # the launcher `accelerate launch` uses
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', str(tmp_path/'ddp.py'),
                        str(tmp_path/'out')], env=env, capture_output=True, text=True, timeout=240)
    lines = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    ddp = json.loads(lines[0][7:])
    from ft_course.data import pretraining_corpus
    from ft_course.tokenizer import train_tokenizer
    tok = train_tokenizer(pretraining_corpus(300), vocab_size=600)
    one = train(tiny(tok, 0.0), instruction_dataset(200, seed=3)['train'], instruction_dataset(200, seed=3)['val'],
                TrainConfig(lr=3e-3, max_steps=4, batch_size=8, grad_accum=2, warmup=2, eval_every=2, progress=False), tokenizer=tok)
    assert ddp['train'] == one['train'] and ddp['tokens'] == one['tokens']
    assert ddp['val'] == pytest.approx(one['val'], rel=1e-6)
    assert (tmp_path/'out'/'model.safetensors').exists()
