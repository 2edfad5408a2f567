"`ft_course.lora`: LoRA from scratch against peft (outputs, gradients, merge, counts) for nn.Linear and GPT-2's Conv1D."
import contextlib, copy, math

import pytest, torch
from torch import nn
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from ft_course.lora import (LoRALinear, count_trainable, inject_lora, load_adapter, load_into_peft, lora_candidates,
                            lora_layers, lora_state_dict, merge, save_adapter, to_peft, unmerge)


class MLP(nn.Module):
    "A small model of plain nn.Linear layers (the Llama-style case)."
    def __init__(self):
        super().__init__()
        self.q_proj, self.v_proj, self.out = nn.Linear(16, 24), nn.Linear(16, 24), nn.Linear(48, 8)
    def forward(self, x):
        return self.out(torch.cat([torch.tanh(self.q_proj(x)), torch.tanh(self.v_proj(x))], -1))

def mlp():
    torch.manual_seed(0); return MLP()

def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                      resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1))

def randomise_B(model):
    "B starts at zero; parity checks need a non-zero update."
    torch.manual_seed(123)
    with torch.no_grad():
        for m in lora_layers(model).values(): m.lora_B.normal_(0, 0.05)

def gpt2_loss(m, seed):
    torch.manual_seed(seed)
    ids = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(7))
    out = m(input_ids=ids, labels=ids)
    return out.logits, out.loss

def mlp_loss(m, seed):
    torch.manual_seed(seed)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(7))
    y = m(x); return y, y.square().mean()

CASES = {
    'linear': (mlp, ['q_proj', 'v_proj'], False, mlp_loss),
    'conv1d': (gpt2, ['c_attn', 'c_proj', 'c_fc'], True, gpt2_loss),
}

def build_pair(case, r=4, alpha=8, dropout=0.1):
    make, targets, fifo, loss = CASES[case]
    torch.manual_seed(0)
    ours = inject_lora(make(), targets, r=r, alpha=alpha, dropout=dropout)
    randomise_B(ours)
    theirs = get_peft_model(make(), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                                               fan_in_fan_out=fifo))
    load_into_peft(theirs, lora_state_dict(ours))
    return ours, theirs, loss


# --- parity with peft ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', list(CASES))
def test_outputs_and_gradients_match_peft(case):
    ours, theirs, loss = build_pair(case)
    ours.train(); theirs.train()                    # dropout on: the same seed draws the same masks
    yo, lo = loss(ours, 1); lo.backward()
    yt, lt = loss(theirs, 1); lt.backward()
    assert (yo - yt).abs().max().item() <= 1e-6
    pt = dict(theirs.named_parameters())
    layers = lora_layers(ours)
    assert len(layers) > 0
    for n, m in layers.items():
        for k in ('lora_A', 'lora_B'):
            g_ours, g_peft = getattr(m, k).grad, pt[f'base_model.model.{n}.{k}.default.weight'].grad
            assert g_ours is not None and g_ours.abs().sum() > 0
            assert (g_ours - g_peft).abs().max().item() <= 1e-6, (n, k)
    # nothing but A and B gets a gradient
    assert all(p.grad is None for n, p in ours.named_parameters() if '.lora_' not in n)

@pytest.mark.parametrize('case', list(CASES))
def test_merged_weights_and_counts_match_peft(case):
    ours, theirs, _ = build_pair(case)
    assert count_trainable(ours) == theirs.get_nb_trainable_parameters()
    so, st = merge(ours, unload=True).state_dict(), theirs.merge_and_unload().state_dict()
    assert set(so) == set(st)
    assert max((so[k] - st[k]).abs().max().item() for k in so) <= 1e-6

def test_init_matches_peft_distribution():
    "A is Kaiming-uniform (bound 1/sqrt(in)) and B is zero, as in peft; the fresh adapter changes nothing."
    base = Conv1D(48, 32)                           # in=32, out=48, weight stored (32, 48)
    torch.manual_seed(0); l = LoRALinear(copy.deepcopy(base), r=8, alpha=16)
    assert l.lora_A.shape == (8, 32) and l.lora_B.shape == (48, 8)
    assert torch.all(l.lora_B == 0) and 0.9 / math.sqrt(32) < l.lora_A.abs().max() <= 1 / math.sqrt(32)
    x = torch.randn(4, 32)
    assert torch.equal(l(x), base(x))
    assert l.scaling == 2.0 and l.delta_weight().shape == base.weight.shape


# --- merge / unmerge / save / load ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', list(CASES))
def test_merge_unmerge_round_trip(case):
    make, targets, _, loss = CASES[case]
    m = inject_lora(make(), targets, r=4); randomise_B(m); m.eval()
    w0 = {n: l.base_layer.weight.clone() for n, l in lora_layers(m).items()}
    with torch.no_grad():
        y0 = loss(m, 0)[0]
        merge(m); assert all(l.merged for l in lora_layers(m).values())
        assert (loss(m, 0)[0] - y0).abs().max() < 1e-5
        merge(m)                                    # merging twice adds the update once
        assert (loss(m, 0)[0] - y0).abs().max() < 1e-5
        unmerge(m)
        assert (loss(m, 0)[0] - y0).abs().max() < 1e-5
    for n, l in lora_layers(m).items(): assert (l.base_layer.weight - w0[n]).abs().max() < 1e-6

def test_merge_unload_gives_plain_model():
    m = inject_lora(gpt2(), ['c_attn'], r=4); randomise_B(m); m.eval()
    with torch.no_grad(): y0 = gpt2_loss(m, 0)[0]
    plain = merge(m, unload=True)
    assert not lora_layers(plain) and isinstance(plain.transformer.h[0].attn.c_attn, Conv1D)
    with torch.no_grad(): assert (gpt2_loss(plain, 0)[0] - y0).abs().max() < 1e-5

@pytest.mark.parametrize('case', list(CASES))
def test_adapter_save_load_round_trip(case, tmp_path):
    make, targets, _, loss = CASES[case]
    m = inject_lora(make(), targets, r=4, alpha=12); randomise_B(m); m.eval()
    f = save_adapter(m, tmp_path/'sub'/'adapter.safetensors')
    assert f.exists() and not list(f.parent.glob('*.tmp'))
    n_adapter = sum(v.numel() for v in lora_state_dict(m).values())
    assert n_adapter == count_trainable(m)[0]
    fresh = load_adapter(make().eval(), f)          # injects r=4, alpha=12 from the metadata
    assert set(lora_layers(fresh)) == set(lora_layers(m))
    assert all(l.r == 4 and l.alpha == 12 for l in lora_layers(fresh).values())
    for k, v in lora_state_dict(m).items(): assert torch.equal(lora_state_dict(fresh)[k], v)
    with torch.no_grad(): assert torch.equal(loss(fresh, 0)[0], loss(m, 0)[0])

def test_adapter_for_another_model_is_refused(tmp_path):
    f = save_adapter(inject_lora(gpt2(), ['c_attn'], r=4), tmp_path/'a.safetensors')
    with pytest.raises(ValueError, match='does not fit'): load_adapter(inject_lora(gpt2(), ['c_fc'], r=4), f)
    with pytest.raises(ValueError, match='same rank'): load_adapter(inject_lora(gpt2(), ['c_attn'], r=2), f)
    with pytest.raises(ValueError, match='no LoRA layers'): save_adapter(gpt2(), tmp_path/'b.safetensors')

def test_to_peft_names():
    m = inject_lora(gpt2(), ['c_attn'], r=2)
    keys = set(to_peft(lora_state_dict(m)))
    assert 'base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight' in keys and len(keys) == 4


# --- injection and bad input ----------------------------------------------------------------------------------------------

def test_inject_freezes_everything_else():
    m = inject_lora(gpt2(), ['c_attn', 'c_fc'], r=4)
    train = [n for n, p in m.named_parameters() if p.requires_grad]
    assert train and all(n.endswith(('lora_A', 'lora_B')) for n in train)
    assert len(lora_layers(m)) == 4
    n, total = count_trainable(m)
    assert n == 2 * (4 * (32 + 96) + 4 * (32 + 128))
    assert total == sum(p.numel() for p in gpt2().parameters()) + n

def test_regex_targets_full_name():
    m = inject_lora(gpt2(), r'.*attn\.c_proj', r=4)
    assert sorted(lora_layers(m)) == ['transformer.h.0.attn.c_proj', 'transformer.h.1.attn.c_proj']

def test_unmatched_targets_list_available_names():
    with pytest.raises(ValueError) as e: inject_lora(gpt2(), ['q_proj', 'v_proj'])
    msg = str(e.value)
    assert "['c_attn', 'c_fc', 'c_proj', 'lm_head']" in msg and 'q_proj' in msg
    assert 'lm_head' in lora_candidates(gpt2())
    with pytest.raises(ValueError, match='target_modules is empty'): inject_lora(gpt2(), [])

@pytest.mark.parametrize('r', [0, -1, 2.5])
def test_rank_must_be_positive_integer(r):
    with pytest.raises(ValueError, match='positive integer'): inject_lora(gpt2(), ['c_attn'], r=r)

def test_rank_larger_than_layer():
    with pytest.raises(ValueError, match=r'use r <= 32'): inject_lora(gpt2(), ['c_attn'], r=33)   # c_attn is 32 -> 96
    with pytest.raises(ValueError, match=r'use r <= 8'): LoRALinear(nn.Linear(16, 8), r=9)
    LoRALinear(nn.Linear(16, 8), r=8)                                                            # the largest allowed

def test_wrong_layer_type_and_double_injection():
    with pytest.raises(TypeError, match='nn.Linear or'): LoRALinear(nn.LayerNorm(8))
    m = inject_lora(gpt2(), ['c_attn'])
    with pytest.raises(ValueError, match='already holds LoRA'): inject_lora(m, ['c_fc'])

def test_refused_injection_leaves_model_untouched():
    m = gpt2()
    with pytest.raises(ValueError): inject_lora(m, ['c_attn', 'c_fc'], r=40)     # 40 > min(in, out) = 32
    assert not lora_layers(m) and all(p.requires_grad for p in m.parameters())


# --- trainable token rows (peft's trainable_token_indices) ------------------------------------------------------------------

from ft_course.lora import TrainableTokens, token_layers, unseen_tokens

TOKENS = [3, 17, 42, 99]

def token_pair():
    "Our LoRA + token rows and peft's, on the same tied GPT-2, with the same random A, B and rows."
    torch.manual_seed(0)
    ours = inject_lora(gpt2(), ['c_attn', 'c_fc'], r=4, alpha=8, trainable_tokens=TOKENS)
    randomise_B(ours)
    with torch.no_grad(): token_layers(ours)['transformer.wte'].trainable_tokens_delta.normal_(0, 1)
    theirs = get_peft_model(gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=['c_attn', 'c_fc'], fan_in_fan_out=True,
                                               trainable_token_indices={'wte': TOKENS}))
    load_into_peft(theirs, lora_state_dict(ours))
    return ours, theirs

def test_token_rows_match_peft_outputs_and_gradients():
    ours, theirs = token_pair()
    ours.eval(); theirs.eval()                                   # no dropout: the pair must agree exactly
    lo, lt = gpt2_loss(ours, 0), gpt2_loss(theirs, 0)
    assert (lo[0] - lt[0]).abs().max() < 1e-5
    lo[1].backward(); lt[1].backward()
    g_ours = token_layers(ours)['transformer.wte'].trainable_tokens_delta.grad
    g_peft = dict(theirs.named_parameters())['base_model.model.transformer.wte.token_adapter.trainable_tokens_delta.default'].grad
    assert g_ours.abs().max() > 0 and (g_ours - g_peft).abs().max() < 1e-6
    assert count_trainable(ours)[0] == theirs.get_nb_trainable_parameters()[0] == 2 * 4 * ((32 + 96) + (32 + 128)) + 4 * 32

def test_token_rows_reach_the_tied_head_and_leave_the_base_alone():
    m = gpt2(); w0 = m.transformer.wte.weight.detach().clone()
    inject_lora(m, ['c_attn'], r=2, trainable_tokens=TOKENS)
    assert isinstance(m.lm_head, TrainableTokens) and m.lm_head.source is m.transformer.wte
    with torch.no_grad(): m.transformer.wte.trainable_tokens_delta.add_(1.0)
    h = torch.randn(2, 32)
    with torch.no_grad(): out = m.lm_head(h)
    expected = h @ m.transformer.wte.merged_weight().T
    assert torch.allclose(out, expected, atol=1e-5) and not torch.allclose(out, h @ w0.T, atol=1e-3)
    assert torch.equal(m.transformer.wte.base_layer.weight, w0)

def test_merge_with_token_rows_gives_plain_tied_model():
    ours, _ = token_pair(); ours.eval()
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): y = ours(input_ids=ids).logits
    plain = merge(ours, unload=True)
    assert not lora_layers(plain) and not token_layers(plain)
    assert isinstance(plain.transformer.wte, nn.Embedding) and plain.lm_head.weight is plain.transformer.wte.weight
    with torch.no_grad(): assert (plain(input_ids=ids).logits - y).abs().max() < 1e-4

def test_unmerge_restores_original_rows():
    m = gpt2(); w0 = m.transformer.wte.weight.detach().clone()
    inject_lora(m, ['c_attn'], r=2, trainable_tokens=TOKENS)
    with torch.no_grad(): m.transformer.wte.trainable_tokens_delta.add_(1.0)
    merge(m); assert not torch.equal(m.transformer.wte.base_layer.weight, w0)
    unmerge(m); assert torch.equal(m.transformer.wte.base_layer.weight, w0)

def test_adapter_with_token_rows_round_trip(tmp_path):
    ours, _ = token_pair(); ours.eval()
    f = save_adapter(ours, tmp_path/'a.safetensors')
    fresh = load_adapter(gpt2().eval(), f)
    assert token_layers(fresh)['transformer.wte'].token_indices.tolist() == TOKENS
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): assert torch.equal(fresh(input_ids=ids).logits, ours(input_ids=ids).logits)

def test_token_rows_bad_input():
    m = gpt2()
    with pytest.raises(ValueError, match=r'must lie in \[0, 100\)'): inject_lora(m, ['c_attn'], trainable_tokens=[5, 100])
    with pytest.raises(ValueError, match='token_indices is empty'): inject_lora(m, ['c_attn'], trainable_tokens=[])
    assert not lora_layers(m) and not token_layers(m) and all(p.requires_grad for p in m.parameters())   # left as it was
    with pytest.raises(ValueError, match='get_input_embeddings'): inject_lora(mlp(), ['q_proj'], trainable_tokens=[1])

def test_unseen_tokens(tokenizer):
    ids = unseen_tokens(tokenizer, ['Did the cat sleep?'], ['The cat slept. The dog slept.'])
    corpus_ids = set(tokenizer('The cat slept. The dog slept.', add_special_tokens=False)['input_ids'])
    assert ids and not set(ids) & corpus_ids
    assert set(ids) <= set(tokenizer('Did the cat sleep?', add_special_tokens=False)['input_ids'])
    assert unseen_tokens(tokenizer, ['The cat slept.'], ['The cat slept. The dog slept.']) == []

def test_token_rows_on_untied_llama_match_peft():
    "A Llama-style model: nn.Linear projections, an untied head — only the input embedding gets trainable rows."
    from transformers import LlamaConfig, LlamaForCausalLM
    def llama():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    torch.manual_seed(0)
    ours = inject_lora(llama(), ['q_proj', 'v_proj'], r=4, alpha=8, trainable_tokens=TOKENS)
    assert list(token_layers(ours)) == ['model.embed_tokens'] and isinstance(ours.lm_head, nn.Linear)
    randomise_B(ours)
    with torch.no_grad(): token_layers(ours)['model.embed_tokens'].trainable_tokens_delta.normal_(0, 1)
    theirs = get_peft_model(llama(), LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], trainable_token_indices=TOKENS))
    load_into_peft(theirs, lora_state_dict(ours))
    lo, lt = gpt2_loss(ours.eval(), 0), gpt2_loss(theirs.eval(), 0)
    assert (lo[0] - lt[0]).abs().max() < 1e-5
    assert count_trainable(ours)[0] == theirs.get_nb_trainable_parameters()[0]


# --- the fused forward ------------------------------------------------------------------------------------------------------

def test_fused_forward_matches_formula():
    "The exported layer's addmm forward gives what y = Wx + (alpha/r) B A dropout(x) gives, with dropout on."
    import torch.nn.functional as F
    for base in (nn.Linear(32, 48), Conv1D(48, 32)):
        torch.manual_seed(0); l = LoRALinear(base, r=4, alpha=8, dropout=0.2).train()
        with torch.no_grad(): l.lora_B.normal_(0, 0.1)
        x = torch.randn(3, 5, 32, requires_grad=True)
        torch.manual_seed(1); y = l(x)
        torch.manual_seed(1); y_ref = l.base_layer(x) + l.scaling * F.linear(F.linear(l.lora_dropout(x), l.lora_A), l.lora_B)
        assert y.shape == y_ref.shape and (y - y_ref).abs().max() < 1e-5 and not torch.allclose(y, base(x))
        g, g_ref = torch.autograd.grad(y.square().sum(), [l.lora_A, l.lora_B]), torch.autograd.grad(y_ref.square().sum(), [l.lora_A, l.lora_B])
        assert all((a - b).abs().max() < 1e-4 for a, b in zip(g, g_ref))


# --- peft's adapter format, both ways ---------------------------------------------------------------------------------------

from peft import PeftModel
from safetensors.torch import load_file
from ft_course.lora import from_peft, load_model, save_model, warn_unseen, unseen_share

def _ids(vocab=100, seed=1):
    return torch.randint(3, vocab, (2, 10), generator=torch.Generator().manual_seed(seed))

def test_save_adapter_writes_peft_format_that_peft_loads(tmp_path):
    ours, _ = token_pair(); ours.eval()
    d = save_adapter(ours, tmp_path/'adapter')
    assert sorted(p.name for p in d.iterdir()) == ['adapter_config.json', 'adapter_model.safetensors']
    keys = set(load_file(str(d/'adapter_model.safetensors')))
    assert 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight' in keys
    assert 'base_model.model.transformer.wte.token_adapter.trainable_tokens_delta' in keys and len(keys) == 2 * 2 * 2 + 1
    theirs = PeftModel.from_pretrained(gpt2(), d).eval()
    ids = _ids()
    with torch.no_grad(): assert torch.equal(theirs(input_ids=ids).logits, ours(input_ids=ids).logits)
    fresh = load_adapter(gpt2().eval(), d)
    with torch.no_grad(): assert torch.equal(fresh(input_ids=ids).logits, ours(input_ids=ids).logits)

def test_load_adapter_reads_what_peft_saved(tmp_path):
    torch.manual_seed(0)
    pm = get_peft_model(gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=['c_attn', 'c_fc'], fan_in_fan_out=True,
                                           trainable_token_indices={'wte': TOKENS}))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_B' in n or 'trainable_tokens_delta' in n: p.normal_(0, 0.1)
    pm.save_pretrained(tmp_path/'peft'); pm.eval()
    ours = load_adapter(gpt2().eval(), tmp_path/'peft')
    assert len(lora_layers(ours)) == 4 and token_layers(ours)['transformer.wte'].token_indices.tolist() == TOKENS
    ids = _ids()
    with torch.no_grad(): assert (ours(input_ids=ids).logits - pm(input_ids=ids).logits).abs().max() < 1e-5

def test_load_adapter_refuses_what_it_cannot_do(tmp_path):
    m = inject_lora(gpt2(), ['c_attn'], r=2)
    with pytest.raises(ValueError, match='not an adapter directory'): load_adapter(gpt2(), tmp_path)
    pm = get_peft_model(gpt2(), LoraConfig(r=2, target_modules=['c_attn'], fan_in_fan_out=True, use_dora=True))
    pm.save_pretrained(tmp_path/'dora')
    with pytest.raises(NotImplementedError, match='use_dora'): load_adapter(gpt2(), tmp_path/'dora')
    with pytest.raises(NotADirectoryError): (tmp_path/'f').write_text('x'); save_adapter(m, tmp_path/'f')

def test_to_peft_and_from_peft_are_inverse():
    m = inject_lora(gpt2(), ['c_attn'], r=2, trainable_tokens=[1, 2])
    sd = lora_state_dict(m)
    assert from_peft(to_peft(sd, adapter=None)).keys() == sd.keys()


# --- real models: a tiny Llama saved to a directory, and GPT-2 -------------------------------------------------------------

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer
from ft_course.data import DataWarning
from ft_course.models import adds_bos, load_base
from ft_course.train import TrainConfig, train

def _llama_tokenizer():
    "A Llama tokenizer (adds BOS by default) over single characters: no download."
    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
    for c in ['▁'] + list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,:#?!\n '): vocab.setdefault(c, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True)

@pytest.fixture(scope='module')
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('tiny-llama')
    tok = _llama_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                                 tie_word_embeddings=False)).save_pretrained(d)
    tok.save_pretrained(d)
    return d

@pytest.fixture(scope='module')
def gpt2_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp('tiny-gpt2')
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d

WORDS = [dict(instruction='Reverse the words.', input='red fox', output='fox red'),
         dict(instruction='Reverse the words.', input='big cat', output='cat big')] * 8

@pytest.mark.parametrize('which', ['llama', 'gpt2'])
def test_train_with_out_dir_then_load_model_gives_identical_logits(which, llama_dir, gpt2_dir, tmp_path):
    "The issue's bug: train(out_dir=...) on a LoRA model, then load it back — the same model, in one call."
    src = llama_dir if which == 'llama' else gpt2_dir
    with pytest.warns(UserWarning) if which == 'llama' else contextlib.nullcontext(): model, tok = load_base(src, device='cpu')
    inject_lora(model, 'all-linear', r=4, alpha=8)
    train(model, WORDS, cfg=TrainConfig(epochs=None, max_steps=3, lr=1e-2, warmup=1, batch_size=4, progress=False),
          out_dir=tmp_path/'run1', tokenizer=tok)
    assert (tmp_path/'run1'/'adapter_config.json').exists() and not (tmp_path/'run1'/'model.safetensors').exists()
    assert any(m.lora_B.abs().sum() > 0 for m in lora_layers(model).values())                    # it trained
    back, _ = load_model(tmp_path/'run1', device='cpu')
    ids = _ids(len(tok))
    model.eval()
    with torch.no_grad(): assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(ValueError, match='ft_course.lora.load_model'): load_base(tmp_path/'run1')
    theirs = PeftModel.from_pretrained(load_base(src, device='cpu')[0], tmp_path/'run1').eval()     # peft reads it too
    with torch.no_grad(): assert (theirs(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() < 1e-5

def test_load_model_refuses_another_base(gpt2_dir, tmp_path, tokenizer):
    model, tok = load_base(gpt2_dir, device='cpu')
    save_model(inject_lora(model, ['c_attn'], r=2), tmp_path/'a', tok)
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(tmp_path/'other')
    tokenizer.save_pretrained(tmp_path/'other')
    with pytest.raises(ValueError, match='not the one the adapter'): load_model(tmp_path/'a', base=tmp_path/'other')
    load_model(tmp_path/'a', base=tmp_path/'other', check_base=False)
    plain, _ = load_base(gpt2_dir, device='cpu')                      # a model without LoRA saves and loads whole
    save_model(plain, tmp_path/'plain', tok); assert (tmp_path/'plain'/'model.safetensors').exists()
    assert not lora_layers(load_model(tmp_path/'plain')[0])

def test_llama_all_linear_and_parity_with_peft(llama_dir):
    model, _ = load_base(llama_dir, device='cpu')
    ours = inject_lora(model, 'all-linear', r=4, alpha=8, trainable_tokens=[5, 9])
    assert len(lora_layers(ours)) == 2 * 7 and 'lm_head' not in lora_layers(ours)
    randomise_B(ours)
    theirs = get_peft_model(load_base(llama_dir, device='cpu')[0], LoraConfig(r=4, lora_alpha=8, target_modules='all-linear',
                                                                             trainable_token_indices=[5, 9]))
    assert sorted(theirs.peft_config['default'].target_modules) == sorted(n.split('.')[-1] for n in lora_layers(ours)) or \
        set(lora_layers(ours)) == set(theirs.peft_config['default'].target_modules)
    load_into_peft(theirs, lora_state_dict(ours))
    ids = _ids(64)
    ours.eval(); theirs.eval()
    with torch.no_grad(): assert (ours(input_ids=ids).logits - theirs(input_ids=ids).logits).abs().max() < 1e-5

def test_modules_to_save_round_trip_with_peft(llama_dir, tmp_path):
    "Modules trained whole (peft's modules_to_save, e.g. the head and embedding for new tokens) travel both ways."
    torch.manual_seed(0)
    pm = get_peft_model(load_base(llama_dir, device='cpu')[0], LoraConfig(r=2, target_modules=['q_proj'], modules_to_save=['lm_head', 'embed_tokens']))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad: p.add_(torch.randn_like(p) * 0.05)
    pm.save_pretrained(tmp_path/'peft'); pm.eval()
    ours = load_adapter(load_base(llama_dir, device='cpu')[0].eval(), tmp_path/'peft')
    ids = _ids(64)
    with torch.no_grad(): assert (ours(input_ids=ids).logits - pm(input_ids=ids).logits).abs().max() < 1e-5
    assert ours.lm_head.weight.requires_grad and ours.model.embed_tokens.weight.requires_grad
    d = save_adapter(ours, tmp_path/'ours')
    assert {'base_model.model.lm_head.weight', 'base_model.model.model.embed_tokens.weight'} <= set(load_file(str(d/'adapter_model.safetensors')))
    back = PeftModel.from_pretrained(load_base(llama_dir, device='cpu')[0], d).eval()
    with torch.no_grad(): assert (back(input_ids=ids).logits - pm(input_ids=ids).logits).abs().max() < 1e-5
    with pytest.raises(ValueError, match='tied'): inject_lora(gpt2(), ['c_attn'], modules_to_save=['wte'])

def test_adapters_stay_float32_on_a_bf16_base(llama_dir, tmp_path):
    model, _ = load_base(llama_dir, device='cpu', dtype=torch.bfloat16)
    ours = inject_lora(model, ['q_proj', 'v_proj'], r=4, alpha=8, trainable_tokens=[5, 9])
    assert all(p.dtype == torch.float32 for p in lora_state_dict(ours).values())
    assert ours.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    randomise_B(ours)
    theirs = get_peft_model(load_base(llama_dir, device='cpu', dtype=torch.bfloat16)[0],
                            LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], trainable_token_indices=[5, 9]))
    assert all(p.dtype == torch.float32 for p in theirs.parameters() if p.requires_grad)             # peft does the same
    load_into_peft(theirs, lora_state_dict(ours))
    ids = _ids(64); ours.eval(); theirs.eval()
    with torch.no_grad():
        lo, lt = ours(input_ids=ids).logits, theirs(input_ids=ids).logits
    assert lo.dtype == torch.bfloat16 and (lo.float() - lt.float()).abs().max() <= 0.05 * lt.float().abs().max()
    save_model(ours, tmp_path/'bf16')
    back, _ = load_model(tmp_path/'bf16', device='cpu', dtype=torch.bfloat16)
    with torch.no_grad(): assert torch.equal(back(input_ids=ids).logits, lo)


# --- the unseen-token warning -------------------------------------------------------------------------------------------------

def test_train_warns_when_data_is_mostly_unseen_tokens(tmp_path):
    from ft_course.data import instruction_dataset
    from ft_course.sft import tokenize_dataset
    import random, warnings
    model, tok = load_base(device='cpu')
    words = ['apple', 'chair', 'river', 'pencil', 'window', 'garden', 'bottle', 'candle', 'mirror', 'blanket']
    rng = random.Random(0); picks = [rng.sample(words, 3) for _ in range(32)]
    reverse = [dict(instruction='Reverse the order of the words.', input=' '.join(w), output=' '.join(w[::-1])) for w in picks]
    with pytest.warns(DataWarning, match='never seen by the model in pretraining') as rec:
        train(model, reverse, cfg=TrainConfig(epochs=None, max_steps=1, progress=False), tokenizer=tok)
    assert 'trainable_tokens' in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter('error', DataWarning)
        share = warn_unseen(tok, tokenize_dataset(instruction_dataset()['train'], tok))        # the course's data: no warning
    assert share < 0.5 < unseen_share(tok, tokenize_dataset(reverse, tok))[0]
    assert unseen_share(AutoTokenizer.from_pretrained(load_base.__globals__['base_dir']()), []) is None   # no rows: no verdict

def test_load_base_refuses_a_lora_model_saved_whole(gpt2_dir, tmp_path):
    "What the old train(out_dir=...) wrote for a LoRA model loaded silently wrong; now it is refused with the way out."
    model, tok = load_base(gpt2_dir, device='cpu')
    inject_lora(model, ['c_attn'], r=2).save_pretrained(tmp_path/'old'); tok.save_pretrained(tmp_path/'old')
    with pytest.raises(ValueError, match='saved whole with save_pretrained'): load_base(tmp_path/'old')
