"""Parity of `ft_course.gpt.GPT` with Hugging Face's `GPT2LMHeadModel`, plus its error messages.

Everything is built from configs with random weights: nothing is downloaded.
"""
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ft_course.gpt import GPT, GPTConfig, build_attn_mask, generate, gpt_generate, gpt_from_hf, gpt_to_hf

TOL = 1e-5
SMALL = dict(vocab_size=512, n_ctx=128, n_embd=64, n_layer=2, n_head=4)


def maxdiff(a, b): return (a - b).abs().max().item()


def hf_logits(hf, idx, **kw):
    with torch.no_grad(): return hf(idx, **kw).logits


def our_logits(model, idx, **kw):
    with torch.no_grad(): return model(idx, **kw)[0]


# ---------------------------------------------------------------- full-size GPT-2 small (124M)

@pytest.fixture(scope="module")
def full():
    "HF GPT-2 small built from its default config (random weights), and our copy of it."
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    return hf, gpt_from_hf(hf).eval()


def test_full_size_from_hf_logits(full):
    hf, ours = full
    assert ours.config == GPTConfig(dropout=0.1)
    assert ours.num_params() == hf.num_parameters() == 124_439_808
    torch.manual_seed(1)
    idx = torch.randint(0, 50257, (2, 16))
    d = maxdiff(our_logits(ours, idx), hf_logits(hf, idx))
    assert d <= TOL, d


def test_full_size_loss_and_padding(full):
    hf, ours = full
    torch.manual_seed(4)
    idx = torch.randint(0, 50257, (2, 16))
    labels = idx.clone(); labels[0, :5] = -100
    am = torch.ones_like(idx); am[0, :6] = 0; am[1, -3:] = 0      # left-pad row 0, right-pad row 1
    with torch.no_grad():
        assert abs(ours(idx, labels=labels)[1].item() - hf(idx, labels=labels).loss.item()) <= TOL
    real = am.bool()
    d = maxdiff(our_logits(ours, idx, attention_mask=am)[real], hf_logits(hf, idx, attention_mask=am)[real])
    assert d <= TOL, d


def test_full_size_to_hf_round_trip(full):
    hf, ours = full
    hf2 = gpt_to_hf(ours).eval()
    assert hf2.lm_head.weight is hf2.transformer.wte.weight
    for k, v in hf.state_dict().items(): assert torch.equal(v, hf2.state_dict()[k]), k
    torch.manual_seed(2)
    idx = torch.randint(0, 50257, (2, 16))
    d = maxdiff(hf_logits(hf2, idx), our_logits(ours, idx))
    assert d <= TOL, d


# ---------------------------------------------------------------- small config, both attention kernels

@pytest.fixture(params=["sdpa", "eager"])
def small(request):
    "Our small GPT (seeded) and its HF copy using the given attention implementation."
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**SMALL)).eval()
    hf = gpt_to_hf(ours, attn_implementation=request.param).eval()
    assert hf.config._attn_implementation == request.param
    return ours, hf


@pytest.fixture
def batch():
    torch.manual_seed(3)
    return torch.randint(0, SMALL["vocab_size"], (3, 24))


def test_small_logits(small, batch):
    ours, hf = small
    d = maxdiff(our_logits(ours, batch), hf_logits(hf, batch))
    assert d <= TOL, d


def test_small_loss_with_ignored_labels(small, batch):
    ours, hf = small
    labels = batch.clone()
    labels[0, :10] = -100; labels[1, 5:9] = -100; labels[2, -1] = -100
    with torch.no_grad():
        _, loss = ours(batch, labels=labels)
        ref = hf(batch, labels=labels).loss
    assert abs(loss.item() - ref.item()) <= TOL
    # and it is the plain mean next-token cross-entropy over the kept labels
    logits = our_logits(ours, batch)
    keep = labels[:, 1:] != -100
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    assert abs(loss.item() - manual.item()) <= TOL


@pytest.mark.parametrize("side", ["left", "right", "mixed"])
def test_small_padding_mask(small, batch, side):
    ours, hf = small
    am = torch.ones_like(batch)
    if side in ("left", "mixed"): am[0, :9] = 0; am[1, :1] = 0
    if side in ("right", "mixed"): am[2, -7:] = 0
    ol, hl = our_logits(ours, batch, attention_mask=am), hf_logits(hf, batch, attention_mask=am)
    assert torch.isfinite(ol).all()
    real = am.bool()
    d = maxdiff(ol[real], hl[real])
    assert d <= TOL, d
    # real positions of a right-padded row do not depend on the pads at all
    if side == "right":
        alone = our_logits(ours, batch[2:, :-7])
        assert maxdiff(ol[2, :-7], alone[0]) <= TOL


def test_all_ones_mask_is_plain_causal(small, batch):
    ours, _ = small
    assert build_attn_mask(torch.ones_like(batch)) is None
    assert maxdiff(our_logits(ours, batch, attention_mask=torch.ones_like(batch)), our_logits(ours, batch)) == 0


def test_small_gradients(small, batch):
    ours, hf = small
    labels = batch.clone(); labels[:, :4] = -100
    ours.zero_grad(); hf.zero_grad()
    ours(batch, labels=labels)[1].backward()
    hf(batch, labels=labels).loss.backward()
    d = maxdiff(ours.wte.weight.grad, hf.transformer.wte.weight.grad)
    assert d <= TOL, d
    # every other parameter too (Conv1D weights are stored transposed)
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        if name in ("wte.weight", "lm_head.weight"): continue
        g = hf_params["transformer." + name].grad
        if p.dim() == 2 and name.split(".")[-2] in ("c_attn", "c_proj", "c_fc"): g = g.t()
        assert maxdiff(p.grad, g) <= TOL, name


def test_from_hf_small_and_tied(small, batch):
    ours, hf = small
    back = gpt_from_hf(hf).eval()
    assert back.lm_head.weight is back.wte.weight
    for k, v in ours.state_dict().items(): assert torch.equal(v, back.state_dict()[k]), k
    assert maxdiff(our_logits(back, batch), hf_logits(hf, batch)) <= TOL


def test_training_mode_is_carried_over():
    ours = GPT(GPTConfig(**SMALL, dropout=0.1)).train()
    hf = gpt_to_hf(ours)
    assert hf.training and (hf.config.resid_pdrop, hf.config.embd_pdrop, hf.config.attn_pdrop) == (0.1, 0.1, 0.1)
    assert gpt_from_hf(hf.eval()).training is False


def test_save_pretrained_round_trip(tmp_path, batch):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**SMALL)).eval()
    gpt_to_hf(ours, pad_token_id=0).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert loaded.config.pad_token_id == 0 and loaded.config.activation_function == "gelu_new"
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert maxdiff(hf_logits(loaded, batch), our_logits(ours, batch)) <= TOL
    back = gpt_from_hf(loaded).eval()
    assert maxdiff(our_logits(back, batch), our_logits(ours, batch)) == 0


# ---------------------------------------------------------------- config, init and errors

def test_config_round_trip():
    cfg = GPTConfig(**SMALL, dropout=0.05, layer_norm_eps=1e-6)
    hc = cfg.to_hf(pad_token_id=7)
    assert (hc.n_positions, hc.activation_function, hc.tie_word_embeddings) == (128, "gelu_new", True)
    assert (hc.bos_token_id, hc.eos_token_id, hc.pad_token_id) == (511, 511, 7)
    assert GPTConfig.from_hf(hc) == cfg
    assert GPTConfig().to_hf().eos_token_id == 50256


def test_config_bad_heads():
    with pytest.raises(ValueError, match=r"n_embd \(100\).*n_head \(3\)"):
        GPTConfig(n_embd=100, n_head=3)


@pytest.mark.parametrize("kw", [dict(n_inner=100), dict(activation_function="relu"),
                                dict(scale_attn_by_inverse_layer_idx=True), dict(tie_word_embeddings=False)])
def test_from_hf_rejects_unsupported(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        GPTConfig.from_hf(GPT2Config(n_embd=64, n_head=4, **kw))


def test_sequence_too_long():
    model = GPT(GPTConfig(**SMALL))
    with pytest.raises(ValueError, match=r"too long.*129.*n_ctx is 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_init_like_gpt2():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=2048, n_ctx=256, n_embd=256, n_layer=8, n_head=8)
    m = GPT(cfg)
    assert m.lm_head.weight is m.wte.weight
    assert abs(m.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3
    assert abs(m.h[3].attn.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 1e-3
    assert m.h[0].attn.c_attn.bias.abs().max() == 0 and torch.equal(m.ln_f.weight, torch.ones(256))
    assert m.num_params() - m.num_params(non_embedding=True) == (2048 + 256) * 256


def test_causal():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**SMALL)).eval()
    idx = torch.randint(0, 512, (2, 20))
    idx2 = idx.clone(); idx2[:, 12] = (idx2[:, 12] + 1) % 512
    a, b = our_logits(m, idx), our_logits(m, idx2)
    assert maxdiff(a[:, :12], b[:, :12]) == 0 and maxdiff(a[:, 12:], b[:, 12:]) > 0


# ---------------------------------------------------------------- generation

def test_greedy_generate_matches_hf(batch):
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**SMALL)).eval()
    hf = gpt_to_hf(ours).eval()
    prompt = batch[:2, :6]
    out = gpt_generate(ours, prompt, 10)
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                      pad_token_id=511, eos_token_id=None)
    assert torch.equal(out, ref)


def test_generate_eos_and_top_k(batch):
    torch.manual_seed(0)
    m = GPT(GPTConfig(**SMALL)).train()
    prompt = batch[:2, :6]
    greedy = gpt_generate(m, prompt, 5)
    assert m.training                                   # mode restored
    eos = greedy[0, 7].item()                           # row 0 emits this as its 2nd new token
    out = gpt_generate(m, prompt, 5, eos_token_id=eos)
    assert (out[0, 7:] == eos).all()                    # finished row is padded with eos
    assert torch.equal(out[:, :8], greedy[:, :8])
    # top_k=1 sampling is greedy
    assert torch.equal(gpt_generate(m, prompt, 5, temperature=0.7, top_k=1), greedy)
    # long prompts are cropped to the context
    long = torch.randint(0, 512, (1, 130))
    assert gpt_generate(m, long, 2).shape == (1, 132)
    with pytest.warns(DeprecationWarning, match="use gpt_generate"): assert torch.equal(generate(m, prompt, 5), greedy)
