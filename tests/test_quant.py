"`ft_course.quant`: NF4 from scratch against bitsandbytes' `quantize_4bit` (nf4, block 64, double quantisation)."
import dataclasses

import pytest, torch
import bitsandbytes.functional as bnbf

from ft_course.quant import NF4, absmax_quantize, dynamic_map, nf4_from_quantiles, pack4, quantize_nf4, unpack4


def tensors():
    g = torch.Generator().manual_seed(0)
    return {'normal 256x128': torch.randn(256, 128, generator=g) * 0.02,
            'remainder 1000x333': torch.randn(1000, 333, generator=g) * 0.02,          # 333000 = 64 * 5203 + 8
            'outliers': torch.randn(64 * 300, generator=g) * torch.where(torch.rand(64 * 300, generator=g) < 0.01, 50.0, 1.0),
            'uniform odd count': torch.rand(1001, generator=g) - 0.5,
            'bf16': (torch.randn(128, 192, generator=g) * 0.05).to(torch.bfloat16)}


def test_levels_are_normal_quantiles_and_bnb_table():
    assert torch.equal(NF4, bnbf.get_4bit_type('nf4', device='cpu'))
    assert (nf4_from_quantiles() - NF4).abs().max() <= 2e-7
    assert NF4[7] == 0 and NF4[0] == -1 and NF4[-1] == 1 and len(NF4.unique()) == 16

def test_dynamic_map_equals_bnb():
    assert torch.equal(dynamic_map(), bnbf.create_dynamic_map())

@pytest.mark.parametrize('n', [1, 2, 7, 64, 101])
def test_pack_unpack_round_trip(n):
    c = torch.randint(0, 16, (n,), generator=torch.Generator().manual_seed(n)).to(torch.uint8)
    p = pack4(c)
    assert p.dtype == torch.uint8 and p.numel() == (n + 1) // 2
    assert torch.equal(unpack4(p, n), c)
    assert pack4(torch.tensor([1, 2, 15, 0])).tolist() == [0x12, 0xF0]

def check_parity_without_double_quant(w):
    "Our NF4 of `w` against bitsandbytes' on w's device (its CPU or CUDA kernels): the same codes, scales and values."
    ours = quantize_nf4(w, double_quant=False)
    packed, st = bnbf.quantize_4bit(w, quant_type='nf4', blocksize=64, compress_statistics=False)
    assert torch.equal(ours.packed, packed.reshape(-1))                 # identical 4-bit codes
    assert torch.equal(ours.absmax, st.absmax)
    d = ours.dequantize()
    assert torch.equal(d.reshape(-1), bnbf.dequantize_4bit(packed, st).reshape(-1))   # bnb returns 1-D input as (1, n)
    return ours, d

def check_parity_double_quant(w):
    "The same with double quantisation; returns (ours, bnb's dequantised tensor)."
    ours = quantize_nf4(w)
    packed, st = bnbf.quantize_4bit(w, quant_type='nf4', blocksize=64, compress_statistics=True)
    theirs = bnbf.dequantize_4bit(packed, st).reshape(w.shape)
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.offset, st.offset)
    assert (ours.absmax2 - st.state2.absmax).abs().max() <= 1e-6
    # bnb's CPU search occasionally picks the neighbour of the nearest 8-bit level; we take the nearest
    assert (ours.absmax != st.absmax).float().mean() < 0.01
    # with bnb's own 8-bit codes, our dequantisation is bnb's, bit for bit
    assert torch.equal(dataclasses.replace(ours, absmax=st.absmax).dequantize(), theirs)
    return ours, theirs

@pytest.mark.parametrize('name', list(tensors()))
def test_parity_with_bnb_without_double_quant(name):
    w = tensors()[name]
    _, d = check_parity_without_double_quant(w)
    assert d.dtype == w.dtype and d.shape == w.shape

@pytest.mark.parametrize('name', list(tensors()))
def test_parity_with_bnb_double_quant(name):
    w = tensors()[name]
    ours, theirs = check_parity_double_quant(w)
    err_ours = (ours.dequantize().float() - w.float()).abs().mean().item()
    err_bnb = (theirs.float() - w.float()).abs().mean().item()
    assert abs(err_ours - err_bnb) <= 1e-6

def test_our_scale_codes_are_nearest():
    w = tensors()['remainder 1000x333']
    ours, plain = quantize_nf4(w), quantize_nf4(w, double_quant=False)
    _, st = bnbf.quantize_4bit(w, quant_type='nf4', blocksize=64, compress_statistics=True)
    x = plain.absmax - ours.offset
    scale = ours.absmax2.repeat_interleave(256)[:x.numel()]
    m = dynamic_map()
    assert ((x / scale - m[ours.absmax.long()]).abs() <= (x / scale - m[st.absmax.long()]).abs() + 1e-9).all()

def test_storage_bytes_per_parameter():
    w = torch.randn(1024, 1024) * 0.02
    q, q1 = quantize_nf4(w), quantize_nf4(w, double_quant=False)
    assert q.nbytes() / w.numel() <= 0.53
    assert abs(q.nbytes() / w.numel() - (0.5 + 1 / 64 + 4 / (64 * 256))) < 1e-3
    assert q1.nbytes() / w.numel() == pytest.approx(0.5 + 4 / 64, abs=1e-3)

def test_quantisation_error_is_small_and_nf4_beats_int4():
    w = torch.randn(512, 512, generator=torch.Generator().manual_seed(1)) * 0.02
    assert ((quantize_nf4(w).dequantize() - w).norm() / w.norm()) < 0.12
    def err(levels):
        from ft_course.quant import absmax_dequantize
        c, a = absmax_quantize(w, levels, 64)
        return (absmax_dequantize(c, a, levels, 64) - w.reshape(-1)).abs().mean()
    assert err(NF4) < err(torch.linspace(-1, 1, 16))

def test_bad_input():
    with pytest.raises(TypeError, match='float tensor'): quantize_nf4(torch.arange(10))
    with pytest.raises(ValueError, match='empty'): quantize_nf4(torch.tensor([]))
    with pytest.raises(ValueError, match='QLoRA uses 64 and 256'): quantize_nf4(torch.randn(64), blocksize=0)


# --- QLoRA from scratch: NF4 layers under a LoRA adapter --------------------------------------------------------------------

from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D
from ft_course.lora import count_trainable, inject_lora, lora_layers, merge
from ft_course.quant import NF4Linear, quantize_model, weight_bytes

def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=2))

@pytest.mark.parametrize('kind', ['linear', 'conv1d'])
def test_nf4_linear_is_the_dequantised_layer(kind):
    torch.manual_seed(0)
    layer = nn.Linear(64, 128) if kind == 'linear' else Conv1D(128, 64)
    with torch.no_grad(): layer.weight.normal_(0, 0.02); layer.bias.normal_(0, 0.02)
    q = NF4Linear(layer)
    assert (q.in_features, q.out_features) == (64, 128)
    w = layer.weight if kind == 'linear' else layer.weight.T
    x = torch.randn(3, 5, 64)
    assert torch.equal(q.nf4().dequantize(), quantize_nf4(w.contiguous()).dequantize())
    assert torch.allclose(q(x), torch.nn.functional.linear(x, q.nf4().dequantize(), layer.bias), atol=1e-6)
    assert ((q(x) - layer(x)).norm() / layer(x).norm()) < 0.1
    assert not any(p.requires_grad for p in q.parameters())

def test_qlora_trains_only_the_adapter():
    m = quantize_model(gpt2())
    assert sum(isinstance(x, NF4Linear) for x in m.modules()) == 8 and isinstance(m.lm_head, nn.Linear)
    b = weight_bytes(m)
    assert b['nf4'] / sum(x.in_features * x.out_features for x in m.modules() if isinstance(x, NF4Linear)) <= 0.53
    inject_lora(m, ['c_attn', 'c_fc'], r=4)
    assert len(lora_layers(m)) == 4
    packed = {n: t.clone() for n, t in m.named_buffers()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        loss = m(input_ids=ids, labels=ids).loss; loss.backward(); opt.step(); opt.zero_grad()
    assert all(l.lora_B.abs().sum() > 0 for l in lora_layers(m).values())           # the adapter learned
    assert all(torch.equal(t, packed[n]) for n, t in m.named_buffers())             # the 4-bit weights did not move
    assert count_trainable(m)[0] == 2 * (4 * (64 + 192) + 4 * (64 + 256))
    with pytest.raises(TypeError, match='Dequantise the base first'): merge(m)

def test_quantize_model_bad_input():
    with pytest.raises(ValueError, match='no nn.Linear or Conv1D'): quantize_model(gpt2(), skip=('c_attn', 'c_proj', 'c_fc', 'lm_head'))
    with pytest.raises(TypeError, match='nn.Linear or Conv1D'): NF4Linear(nn.LayerNorm(8))

def test_dequantize_then_merge_for_deployment():
    from ft_course.quant import dequantize_model
    m = inject_lora(quantize_model(gpt2()), ['c_attn'], r=4).eval()
    with torch.no_grad():
        for l in lora_layers(m).values(): l.lora_B.normal_(0, 0.05)
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): y = m(input_ids=ids).logits
    plain = merge(dequantize_model(m), unload=True)
    assert not lora_layers(plain) and not any(isinstance(x, NF4Linear) for x in plain.modules())
    with torch.no_grad(): assert (plain(input_ids=ids).logits - y).abs().max() < 1e-4


# ---- QLoRA through BitsAndBytesConfig (runs on the CPU here) ---------------------------------------------------
def test_load_4bit_matches_fp32_loss():
    from ft_course.quant import load_4bit
    from ft_course.models import load_base
    from ft_course.data import pretraining_corpus
    m4, tok = load_4bit(device='cpu')
    base, _ = load_base(device='cpu')
    ids = tok(pretraining_corpus(1, seed=3)[0], return_tensors='pt', add_special_tokens=False)['input_ids'][:, :128]
    with torch.no_grad(): l4, l32 = m4(ids, labels=ids).loss.item(), base(ids, labels=ids).loss.item()
    assert abs(l4 - l32) < 0.05 * l32
    assert m4.get_memory_footprint() < 0.5 * base.get_memory_footprint()

def test_4bit_backend_errors(monkeypatch):
    from ft_course.quant import check_4bit_backend
    with pytest.raises(RuntimeError, match="no 4-bit kernels for 'mps'.*device='cpu'"): check_4bit_backend('mps')
    import builtins
    real_import = builtins.__import__
    def no_bnb(name, *a, **k):
        if name == 'bitsandbytes': raise ImportError('no bitsandbytes')
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', no_bnb)
    with pytest.raises(ImportError, match="pip install bitsandbytes"): check_4bit_backend('cpu')


# ---- NF4Matmul: the backward pass dequantises again instead of keeping a 32-bit copy ---------------------------------
def _saved_bytes(fn, x):
    saved = {}
    def pack(t): saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes(); return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): fn(x).square().sum().backward()
    return sum(saved.values())

def test_nf4_matmul_gradient_equals_dequantised_linear_and_keeps_no_weight():
    torch.manual_seed(0)
    q = NF4Linear(nn.Linear(64, 256))
    x1 = torch.randn(3, 7, 64, requires_grad=True); x2 = x1.detach().clone().requires_grad_()
    naive = lambda x: torch.nn.functional.linear(x, q.nf4().dequantize(), q.bias)
    b_naive, b_ours = _saved_bytes(naive, x1), _saved_bytes(q, x2)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6) and x2.grad.abs().sum() > 0
    assert b_naive >= 64 * 256 * 4                     # autograd kept the dequantised fp32 weight
    assert b_ours < b_naive - 64 * 256 * 4 + 1          # ours did not


# ---- training bitsandbytes 4-bit + peft on the CPU ----------------------------------------------------------------------
def test_bnb_peft_trains_on_cpu_after_evaluation():
    "bitsandbytes repacks CPU weights for inference in eval mode; load_4bit must keep them trainable afterwards."
    from peft import LoraConfig, get_peft_model
    from ft_course.quant import load_4bit
    m4, tok = load_4bit(device='cpu')
    ids = tok(['The cat saw the dog. The dog ran away.'] * 2, return_tensors='pt')
    with torch.no_grad(): l_eval = m4(**ids, labels=ids['input_ids']).loss.item()          # eval, no grad: the repack trigger
    pm = get_peft_model(m4, LoraConfig(r=4, lora_alpha=8, target_modules=['c_attn', 'c_fc'], fan_in_fan_out=True, task_type='CAUSAL_LM'))
    w4 = {n: p.detach().clone() for n, p in pm.named_parameters() if p.dtype == torch.uint8}
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train(); losses = []
    for _ in range(5):
        loss = pm(**ids, labels=ids['input_ids']).loss; loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert abs(losses[0] - l_eval) < 1e-3 * l_eval and losses[-1] < losses[0]
    assert w4 and all(torch.equal(p, w4[n]) for n, p in pm.named_parameters() if n in w4)
    pm.eval()
    with torch.no_grad(): assert abs(pm(**ids, labels=ids['input_ids']).loss.item() - losses[-1]) < losses[0] - losses[-1]
