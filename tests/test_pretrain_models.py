"The pretraining command line, checkpoints, and `load_base` on local directories (no downloads)."
import json, math, subprocess, sys, warnings
import pytest, torch
from ft_course.models import load_base, pick_device
from ft_course.pretrain import (PretrainConfig, build_base, load_checkpoint, main, make_model, pack, pretrain,
                                pretraining_cost, save_checkpoint, lr_at)
from ft_course.data import pretraining_corpus

TINY = ['--n_docs', '120', '--val_docs', '20', '--n_embd', '32', '--n_layer', '1', '--n_head', '2', '--block_size', '64',
        '--max_steps', '6', '--eval_every', '3', '--batch_size', '4', '--warmup', '2', '--vocab_size', '400']

def test_cli_builds_a_loadable_base(tmp_path):
    info = main(['--out', str(tmp_path / 'base'), *TINY])
    assert info['steps'] == 6 and math.isfinite(info['final_val_loss'])
    model, tok = load_base(tmp_path / 'base', device='cpu')
    assert model.config.n_embd == 32 and len(tok) == model.config.vocab_size
    assert json.loads((tmp_path / 'base' / 'recipe.json').read_text())['config']['max_steps'] == 6
    assert not (tmp_path / 'base.run').exists()          # the checkpoint is cleaned up once the model is saved

def test_cli_is_deterministic(tmp_path):
    a = main(['--out', str(tmp_path / 'a'), *TINY]); b = main(['--out', str(tmp_path / 'b'), *TINY])
    assert a['final_val_loss'] == b['final_val_loss']

def test_cli_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'ft_course.pretrain', '--help'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and '--out' in out.stdout and '--n_embd' in out.stdout

def test_out_is_a_file(tmp_path):
    f = tmp_path / 'file'; f.write_text('x')
    with pytest.raises(NotADirectoryError, match="is a file"): build_base(f, PretrainConfig(n_docs=50, val_docs=10, max_steps=1))

def test_zero_lr_and_tiny_corpus(tokenizer):
    with pytest.raises(ValueError, match="learning rate must be positive"):
        pretrain(make_model(PretrainConfig(n_embd=16, n_layer=1, n_head=2, block_size=32), tokenizer),
                 torch.zeros(4, 33, dtype=torch.long), torch.zeros(1, 33, dtype=torch.long), PretrainConfig(lr=0))
    with pytest.raises(ValueError, match="fewer than one block"): pack(["The chef cooks."], tokenizer, 256)

def test_resume_without_checkpoint(tmp_path, tokenizer):
    cfg = PretrainConfig(n_embd=16, n_layer=1, n_head=2, block_size=32, max_steps=2)
    m = make_model(cfg, tokenizer)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        pretrain(m, torch.zeros(4, 33, dtype=torch.long), torch.zeros(1, 33, dtype=torch.long), cfg, out_dir=tmp_path, resume=True)

def test_interrupt_keeps_the_checkpoint(tmp_path, tokenizer):
    cfg = PretrainConfig(n_embd=16, n_layer=1, n_head=2, block_size=32, max_steps=20, eval_every=5, batch_size=2, progress=False)
    blocks = pack(pretraining_corpus(60), tokenizer, 32)
    m = make_model(cfg, tokenizer)
    calls = {'n': 0}
    def boom(module, inp, out):
        calls['n'] += 1
        if calls['n'] == 8: raise KeyboardInterrupt
    h = m.transformer.register_forward_hook(boom)
    with pytest.raises(KeyboardInterrupt): pretrain(m, blocks, blocks[:2], cfg, out_dir=tmp_path / 'run')
    h.remove()
    state = json.loads((tmp_path / 'run' / 'checkpoint' / 'state.json').read_text())
    assert state['step'] >= 5                                   # saved on the interrupt, after the step-5 checkpoint
    resumed = pretrain(m, blocks, blocks[:2], cfg, out_dir=tmp_path / 'run', resume=True)
    fresh = pretrain(make_model(cfg, tokenizer), blocks, blocks[:2], cfg)
    assert resumed['train'] == fresh['train']

def test_checkpoint_keeps_an_untied_head(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, tie_word_embeddings=False))
    opt = torch.optim.AdamW(m.parameters())
    save_checkpoint(tmp_path / 'c', m, opt, 3, {})
    m2 = GPT2LMHeadModel(m.config); opt2 = torch.optim.AdamW(m2.parameters())
    load_checkpoint(tmp_path / 'c', m2, opt2)
    assert torch.equal(m2.lm_head.weight, m.lm_head.weight) and torch.equal(m2.transformer.wte.weight, m.transformer.wte.weight)

def test_load_base_errors(tmp_path):
    with pytest.raises(OSError, match="Could not load"): load_base(tmp_path / 'missing-model')
    with pytest.raises(FileNotFoundError, match="holds no config.json"): load_base(tmp_path)

def test_load_base_pad_token_fix_up(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / 'tokenizer_config.json').read_text())
    cfg.pop('pad_token', None); (tmp_path / 'tokenizer_config.json').write_text(json.dumps(cfg))
    smap = tmp_path / 'special_tokens_map.json'
    if smap.exists():
        s = json.loads(smap.read_text()); s.pop('pad_token', None); smap.write_text(json.dumps(s))
    with pytest.warns(UserWarning, match="no pad token"):
        model, tok = load_base(tmp_path, device='cpu')
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id

def test_pick_device():
    assert pick_device('cpu').type == 'cpu'
    assert pick_device().type in ('cpu', 'cuda', 'mps')

def test_cost_arithmetic():
    c = pretraining_cost(70e9, 15e12, gpus=1000, mfu=0.4, usd_per_gpu_hour=2.0)
    assert c['flops'] == pytest.approx(6 * 70e9 * 15e12)
    assert c['gpu_hours'] == pytest.approx(c['flops'] / (989e12 * 0.4) / 3600)
    assert 1e3 < c['wall_clock_hours'] < 1e5 and 1e6 < c['usd'] < 1e8

def test_schedule():
    cfg = PretrainConfig(max_steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


# --- one place for each thing: pad token, BOS, module replacement ----------------------------------------------------------

def _llama_tokenizer():
    from transformers import LlamaTokenizer
    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
    for c in ['▁'] + list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,:#?!\n '): vocab.setdefault(c, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True)

def test_bos_for_llama_family_tokenizers(tokenizer):
    "A tokenizer that adds BOS by default gets it in front of every prompt the course encodes; the course's gets none."
    from ft_course.data import tokenize_example
    from ft_course.models import adds_bos, with_bos
    from ft_course.rollout import encode
    lt = _llama_tokenizer(); lt.pad_token = lt.eos_token
    assert adds_bos(lt) and not adds_bos(tokenizer)
    assert with_bos(lt, [5, 6]) == [1, 5, 6] and with_bos(lt, [1, 5]) == [1, 5] and with_bos(lt, [[5], [1, 6]]) == [[1, 5], [1, 6]]
    assert with_bos(tokenizer, [5, 6]) == [5, 6]
    ex = dict(instruction='Reverse the words.', input='red fox', output='fox red')
    e = tokenize_example(ex, lt)
    assert e['input_ids'][0] == 1 and e['input_ids'].count(1) == 1 and e['labels'][0] == -100
    assert tokenize_example(ex, tokenizer)['input_ids'][0] != tokenizer.bos_token_id or tokenizer.bos_token_id == tokenizer.eos_token_id
    r = encode(lt, ['ab', 'abcd'])
    firsts = [row[m.bool()][0].item() for row, m in zip(r.prompt_ids, r.prompt_mask)]
    assert firsts == [1, 1]

def test_ensure_pad_token_and_replace_module(tokenizer):
    import copy
    from torch import nn
    from ft_course.models import ensure_pad_token, pad_token_id, replace_module
    t = copy.deepcopy(tokenizer); t.pad_token = None
    cfg = type('C', (), {'pad_token_id': None})(); m = type('M', (), {'config': cfg})()
    assert ensure_pad_token(t, m) == t.eos_token_id == t.pad_token_id == cfg.pad_token_id == pad_token_id(t)
    with pytest.warns(UserWarning, match='no pad token'):
        t2 = copy.deepcopy(tokenizer); t2.pad_token = None; ensure_pad_token(t2, warn=True)
    seq = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    old = replace_module(seq, '0.0', nn.Identity())
    assert isinstance(old, nn.Linear) and isinstance(seq[0][0], nn.Identity)

def test_old_names_still_work_with_a_warning(tmp_path, tokenizer):
    "steps, max_minutes, ckpt_dir, until and progress= keep working for one release, with a DeprecationWarning."
    with pytest.warns(DeprecationWarning, match="'steps' is deprecated.*'max_steps'"): cfg = PretrainConfig(steps=4)
    assert cfg.max_steps == 4
    with pytest.warns(DeprecationWarning, match="max_minutes"): assert PretrainConfig(max_minutes=2).max_seconds == 120
    with warnings.catch_warnings():
        warnings.simplefilter('error')                          # the new names raise no warning
        new = PretrainConfig(max_steps=4, max_seconds=120, n_embd=16, n_layer=1, n_head=2, block_size=32, batch_size=2, eval_every=2, progress=False)
    blocks = pack(pretraining_corpus(40), tokenizer, 32)
    old_cfg = PretrainConfig(n_embd=16, n_layer=1, n_head=2, block_size=32, max_steps=4, batch_size=2, eval_every=2)
    with pytest.warns(DeprecationWarning) as rec:
        old = pretrain(make_model(old_cfg, tokenizer), blocks, blocks[:2], old_cfg, ckpt_dir=tmp_path / 'ck', until=2, progress=False)
    assert {str(w.message).split(':')[1].split()[0] for w in rec} >= {"'ckpt_dir'", "'until'", "'progress'"}
    assert old['step'] == [1, 2] and (tmp_path / 'ck' / 'state.json').exists()
    assert pretrain(make_model(new, tokenizer), blocks, blocks[:2], new)['train'][:2] == old['train']
    from types import SimpleNamespace
    with pytest.warns(DeprecationWarning, match="cfg.steps"):                   # a schedule object with the old field
        assert lr_at(50, SimpleNamespace(lr=1.0, min_lr=0.1, warmup=10, steps=100)) == lr_at(50, PretrainConfig(max_steps=100, warmup=10, lr=1.0, min_lr=0.1))

def test_defaults_are_the_shipped_recipe():
    "PretrainConfig() rebuilds the config that recipe.json of the shipped base records (old names mapped)."
    from dataclasses import asdict
    from ft_course.models import base_dir
    recorded = json.loads((base_dir() / 'recipe.json').read_text())['config']
    recorded = {('max_steps' if k == 'steps' else k): v for k, v in recorded.items()}
    minutes = recorded.pop('max_minutes', None)
    defaults = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(PretrainConfig()).items()}
    assert defaults.pop('progress') is True
    assert defaults.pop('max_seconds') == (None if minutes is None else 60 * minutes)
    assert defaults == recorded
