"`ft_course.evaluate` on a tiny randomly initialised Hugging Face model."
import math
import pytest, torch
from transformers import GPT2Config, GPT2LMHeadModel
from ft_course.data import instruction_dataset
from ft_course.evaluate import compare, evaluate, generate, perplexity, score, first_line

@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1, n_head=2))

def test_empty_dataset_is_an_error(tiny, tokenizer):
    with pytest.raises(ValueError, match="empty"): evaluate(tiny, tokenizer, [])
    with pytest.raises(ValueError, match="at least one text"): perplexity(tiny, tokenizer, [])
    with pytest.raises(ValueError, match="at least one"): compare()

def test_generation_is_batch_invariant_and_restores_state(tiny, tokenizer):
    prompts = ["The chef", "Does the poet write the letter every day?", "Who"]
    tiny.train(); tokenizer.padding_side = 'right'
    out = generate(tiny, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    assert out == [generate(tiny, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert tiny.training and tokenizer.padding_side == 'right'

def test_generate_and_perplexity_leave_the_tokenizer_alone(tiny, tokenizer):
    import copy
    t = copy.deepcopy(tokenizer); t.pad_token = None
    assert t.pad_token_id is None
    assert generate(tiny, t, ["The chef", "Who"], max_new_tokens=2) == generate(tiny, tokenizer, ["The chef", "Who"], max_new_tokens=2)
    perplexity(tiny, t, ["The chef cooks.", "The meal is cooked by the chef every day."])
    assert t.pad_token is None                                                  # no side effect on the caller's tokenizer

def test_perplexity_ignores_the_padding_side(tiny, tokenizer):
    import copy
    texts = ["The chef cooks.", "The meal is cooked by the chef every day at noon.", "Who cooks the meal?"]
    right = perplexity(tiny, tokenizer, texts, batch_size=3)
    left = copy.deepcopy(tokenizer); left.padding_side = 'left'
    assert perplexity(tiny, left, texts, batch_size=3) == pytest.approx(right, rel=1e-6)
    one_by_one = [perplexity(tiny, tokenizer, [t]) for t in texts]             # batching (hence padding) changes nothing
    n = [len(tokenizer(t, add_special_tokens=False)['input_ids']) - 1 for t in texts]
    assert right == pytest.approx(math.exp(sum(k * math.log(p) for k, p in zip(n, one_by_one)) / sum(n)), rel=1e-5)
    assert left.padding_side == 'left'

def test_perplexity_puts_bos_first_for_llama_family_tokenizers():
    from transformers import LlamaTokenizer
    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
    for c in ['▁'] + list('abcdefghijklmnopqrstuvwxyz.,?! '): vocab.setdefault(c, len(vocab))
    lt = LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True)
    assert lt.bos_token_id != lt.eos_token_id
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(lt), n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    text = "the chef cooks the meal."
    ids = lt(text, add_special_tokens=False)['input_ids']
    assert ids[0] != lt.bos_token_id
    with torch.no_grad():
        with_b = math.exp(m(torch.tensor([[lt.bos_token_id] + ids]), labels=torch.tensor([[lt.bos_token_id] + ids])).loss.item())
        without = math.exp(m(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item())
    assert perplexity(m, lt, [text]) == pytest.approx(with_b, rel=1e-5) and abs(with_b - without) > 1e-3

def test_score_exact_match_and_compliance():
    ds = instruction_dataset(60, seed=2)['test']
    right = score(ds, [(o, True) for o in ds['output']], 'right')
    assert right.accuracy == 1.0 and right.compliance == 1.0
    rambling = score(ds, [(o + "\nand more", False) for o in ds['output']], 'rambling')
    assert rambling.accuracy == 1.0 and rambling.compliance == 0.0   # right answer, wrong format
    wrong = score(ds, ds['input'], 'echo')
    assert wrong.accuracy == 0.0
    table = compare(right, wrong)
    assert table.loc['overall'].tolist() == [1.0, 0.0]
    assert set(table.index) >= set(ds['task'])

def test_unknown_task_falls_back_to_reference():
    rows = [dict(instruction="Say hi.", input="", output="hi", task="greet")]
    assert score(rows, ["hi"]).accuracy == 1.0 and score(rows, ["hello"]).accuracy == 0.0

def test_perplexity_matches_hf_loss(tiny, tokenizer):
    text = "The chef cooks the meal every day. The meal is cooked by the chef every day."
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    tiny.eval()
    with torch.no_grad(): loss = tiny(ids, labels=ids).loss.item()
    assert perplexity(tiny, tokenizer, [text]) == pytest.approx(math.exp(loss), rel=1e-4)

def test_first_line():
    assert first_line("  The meal is cooked.\nThe chef") == "The meal is cooked."

def test_overlong_prompt_is_cut_from_the_left_with_a_warning(tiny, tokenizer):
    long = "The chef cooks the meal every day. " * 40          # far more than the 128-token context
    with pytest.warns(UserWarning, match="start was cut off"):
        out = generate(tiny, tokenizer, [long], max_new_tokens=4)
    assert len(out) == 1
    with pytest.raises(ValueError, match="leaves no room"): generate(tiny, tokenizer, ["The chef"], max_new_tokens=128)
