"`ft_course.lora`: LoRA from scratch against peft (outputs, gradients, merge, counts) for nn.Linear and GPT-2's Conv1D."
import copy, math

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
