"`ft_course.memory`: the QLoRA paper's 65B figure, monotonicity, agreement with the tensors of a real step, bad input."
import pytest, torch

from ft_course.memory import METHODS, MODELS, NF4_BYTES, finetune_memory, lora_params, model_shape, vram_table


def test_published_parameter_counts():
    assert model_shape('Llama-2-7B').n_params == 6_738_415_616
    assert model_shape('LLaMA-65B').n_params == 65_285_660_672
    assert model_shape('Llama-2-70B').n_params == 68_976_648_192
    assert model_shape('GPT-2 (124M)').n_params == 124_439_808
    from transformers import GPT2Config, LlamaConfig
    assert model_shape(LlamaConfig(**MODELS['Llama-2-7B'])).n_params == 6_738_415_616
    assert model_shape(GPT2Config()).n_params == 124_439_808

def test_qlora_65b_fits_48gb_and_full_does_not_fit_780gb():
    kw = dict(seq_len=512, batch_size=1, lora_r=64, gradient_checkpointing=True)
    paper = dict(kw, optimizer='paged_adamw_32bit', adapter_bytes=2)      # qlora.py: bf16 adapters, paged 32-bit AdamW
    q = finetune_memory('LLaMA-65B', 'qlora', **paper)
    assert q['total'] < 48e9 and q['gb'] == q['total'] / 1e9
    assert q['total'] == q['weights'] + q['gradients'] + q['optimizer'] + q['activations']
    assert finetune_memory('LLaMA-65B', 'qlora', **dict(paper, adapter_bytes=4))['total'] > 48e9   # fp32 adapters do not fit
    assert finetune_memory('LLaMA-65B', 'full_bf16_mixed', **kw)['total'] > 700e9
    assert 780e9 < 12 * model_shape('LLaMA-65B').n_params < 1.01 * 780e9   # the paper's 16-bit weights + grads + fp32 Adam

def test_adapter_bytes_and_paged_32bit():
    m = lambda **k: finetune_memory('Llama-2-7B', 'qlora', **k)
    fp32, bf16 = m(), m(adapter_bytes=2)
    n = fp32['trainable_params']
    assert fp32['weights'] - bf16['weights'] == 2 * n and fp32['gradients'] == 2 * bf16['gradients'] == 4 * n
    assert m(optimizer='paged_adamw_32bit')['optimizer'] == m(optimizer='adamw')['optimizer'] == 8 * n   # paging: same bytes
    with pytest.raises(ValueError, match='adapter_bytes'): m(adapter_bytes=0)

def test_nf4_bytes_match_the_quantiser():
    from ft_course.quant import quantize_nf4
    q = quantize_nf4(torch.randn(512, 512, generator=torch.Generator().manual_seed(0)))
    assert abs(q.nbytes() / q.numel - NF4_BYTES) < 1e-4

@pytest.mark.parametrize('model', ['Llama-2-7B', 'LLaMA-65B', 'GPT-2 (124M)', 3e9])
@pytest.mark.parametrize('ckpt', [True, False])
def test_methods_ordered(model, ckpt):
    tot = [finetune_memory(model, m, seq_len=512, batch_size=2, gradient_checkpointing=ckpt)['total'] for m in METHODS]
    assert tot == sorted(tot, reverse=True) and len(set(tot)) == 4     # fp32 > bf16 mixed > LoRA > QLoRA

@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('ckpt', [True, False])
def test_activations_grow_with_seq_and_batch(method, ckpt):
    a = lambda s, b: finetune_memory('Llama-2-7B', method, seq_len=s, batch_size=b, gradient_checkpointing=ckpt)['activations']
    assert a(256, 1) < a(512, 1) < a(2048, 1) and a(512, 1) < a(512, 2) < a(512, 8)
    no = finetune_memory('Llama-2-7B', method, gradient_checkpointing=False)['activations']
    assert finetune_memory('Llama-2-7B', method, gradient_checkpointing=True)['activations'] < no

def test_eight_bit_optimizer_and_rank():
    m = lambda **k: finetune_memory('Llama-2-7B', 'lora', **k)
    assert m(optimizer='paged_adamw_8bit')['optimizer'] * 4 == m(optimizer='adamw')['optimizer']
    assert m(lora_r=8)['trainable_params'] * 2 == m(lora_r=16)['trainable_params']
    assert m(lora_targets='attn')['trainable_params'] < m(lora_targets='all')['trainable_params']
    assert m(lora_targets=1000)['trainable_params'] == 1000
    assert m(lora_targets=0.01)['trainable_params'] == round(0.01 * 6_738_415_616)

def _alive(model, opt):
    nb = lambda ts: sum(t.numel() * t.element_size() for t in ts)
    ps = list(model.parameters())
    return (nb(ps) + nb(p.grad for p in ps if p.grad is not None)
            + nb(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)))

def _step(model, tok):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = tok(["### Instruction: add 2 and 3\n### Response: 5"] * 2, return_tensors='pt')
    model(**ids, labels=ids['input_ids']).loss.backward()
    opt.step()
    return _alive(model, opt)

def _states(d): return d['weights'] + d['gradients'] + d['optimizer']

def test_tiny_model_measured_matches_prediction():
    from ft_course.lora import inject_lora, count_trainable
    from ft_course.models import load_base
    model, tok = load_base()
    assert model_shape(model.config).n_params == sum(p.numel() for p in model.parameters())
    full = _step(model, tok)
    assert abs(full / _states(finetune_memory(model.config, 'full_fp32')) - 1) < 0.03
    lmodel = inject_lora(load_base()[0], ['c_attn', 'c_proj', 'c_fc'], r=16, alpha=32)
    pred = finetune_memory(lmodel.config, 'lora', lora_r=16, lora_targets='all', base_bytes=4)
    assert pred['trainable_params'] == count_trainable(lmodel)[0]
    assert abs(_step(lmodel, tok) / _states(pred) - 1) < 0.03

def test_vram_table():
    h = vram_table('Llama-2-7B', method='qlora')
    assert f"{finetune_memory('Llama-2-7B', 'qlora')['gb']:,.2f}" in h and '24 GB: ✅ fits' in h
    assert '80 GB: ❌ too big' in vram_table(None, params_b=65, method='full_bf16_mixed')
    assert vram_table('custom', params_b=7) != vram_table('custom', params_b=70)

def test_calculator_widget():
    from ft_course.memory import vram_calculator
    w = vram_calculator()
    assert w.children[-1].value == vram_table('Llama-2-7B')

def test_bad_input():
    with pytest.raises(ValueError, match="'full_fp32', 'full_bf16_mixed', 'lora', 'qlora'"): finetune_memory('Llama-2-7B', 'prefix')
    with pytest.raises(ValueError, match='paged_adamw_8bit'): finetune_memory('Llama-2-7B', optimizer='sgd')
    with pytest.raises(ValueError, match='seq_len'): finetune_memory('Llama-2-7B', seq_len=-1)
    with pytest.raises(ValueError, match='batch_size'): finetune_memory('Llama-2-7B', batch_size=0)
    with pytest.raises(ValueError, match="'num_hidden_layers'"): model_shape({'hidden_size': 4096, 'vocab_size': 32000})
    with pytest.raises(ValueError, match="'intermediate_size'"):
        model_shape({k: v for k, v in MODELS['Llama-2-7B'].items() if k != 'intermediate_size'})
    with pytest.raises(ValueError, match="'vocab_size'"): model_shape({'n_embd': 768, 'n_layer': 12})
    with pytest.raises(ValueError, match='Llama-2-7B'): model_shape('Llama-3-8B')
    with pytest.raises(ValueError, match='positive'): model_shape(-5)
    with pytest.raises(ValueError, match="'all', 'attn'"): lora_params(model_shape('Llama-2-7B'), 16, 'mlp')
    with pytest.raises(ValueError, match='rank'): finetune_memory('Llama-2-7B', 'lora', lora_r=0)


# ---- training_step_memory: the bytes one real step holds ---------------------------------------------------------------
def _batch(tok):
    ids = tok(["### Instruction: add 2 and 3\n### Response: 5"] * 2, return_tensors='pt')
    return dict(**ids, labels=ids['input_ids'])

def test_training_step_memory_counts_what_a_step_holds():
    from ft_course.memory import training_step_memory
    from ft_course.lora import inject_lora, count_trainable
    from ft_course.quant import quantize_model
    from ft_course.models import load_base
    model, tok = load_base()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    full = training_step_memory(model.train(), _batch(tok))
    n = sum(p.numel() for p in model.parameters())
    assert full['weights'] == 4 * n and full['gradients'] == 4 * n
    assert 8 * n <= full['optimizer'] <= 8 * n + 4 * 100                      # two moments, plus a step counter per tensor
    assert full['activations'] > 0 and full['total'] == sum(v for k, v in full.items() if k != 'total')
    assert all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())   # lr=0: nothing moved
    lora = training_step_memory(inject_lora(load_base()[0], ['c_attn', 'c_proj', 'c_fc'], r=16).train(), _batch(tok))
    qlora = training_step_memory(inject_lora(quantize_model(load_base()[0]), ['c_attn', 'c_proj', 'c_fc'], r=16).train(), _batch(tok))
    assert lora['gradients'] == qlora['gradients'] < full['gradients'] / 5
    assert qlora['weights'] < 0.6 * lora['weights']
    assert qlora['activations'] <= lora['activations']                        # NF4Matmul keeps no dequantised weights

def test_training_step_memory_bad_input():
    from ft_course.memory import training_step_memory
    from ft_course.models import load_base
    model, tok = load_base()
    with pytest.raises(ValueError, match="needs 'labels'"): training_step_memory(model, {'input_ids': torch.tensor([[1, 2]])})
    model.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'): training_step_memory(model, _batch(tok))
