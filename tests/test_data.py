"Bad input, determinism and checkers of `ft_course.data`."
import json, warnings
import pytest
from datasets import Dataset
from ft_course.data import (TASKS, DataWarning, instruction_dataset, load_instructions, parse, preference_dataset,
                            pretraining_corpus, render, save_jsonl, tokenize_example, prompt_and_response, format_prompt)

GOOD = dict(instruction="Negate the sentence.", input="The chef cooks the meal.", output="The chef does not cook the meal.",
            task="negation")

def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding='utf-8')
    return p

# ---- bad input: each a clear error naming the problem -------------------------------------------------------------
@pytest.mark.parametrize("rows, exc, words", [
    ([{k: v for k, v in GOOD.items() if k != 'output'}], ValueError, ["Row 0", "missing the field 'output'"]),
    ([{k: v for k, v in GOOD.items() if k != 'instruction'}], ValueError, ["Row 0", "'instruction'"]),
    ([GOOD, {**GOOD, 'output': None}], ValueError, ["Row 1", "'output'"]),
    ([{**GOOD, 'output': 42}], TypeError, ["Row 0", "'output'", "must be a string", "int"]),
    ([{**GOOD, 'input': ['a', 'list']}], TypeError, ["'input'", "list"]),
    ([{**GOOD, 'task': 7}], TypeError, ["'task'", "int"]),
    ([{**GOOD, 'instruction': '   '}], ValueError, ["Row 0", "'instruction'", "empty string"]),
    ([GOOD, GOOD, {**GOOD, 'output': ''}], ValueError, ["Row 2", "'output'", "empty"]),
    ([{**GOOD, 'task': 'translate'}], ValueError, ["unknown task 'translate'", "known_tasks=None"]),
    (["just a string"], TypeError, ["Row 0", "not a record"]),
    ([], ValueError, ["empty"]),
])
def test_bad_records(rows, exc, words):
    with pytest.raises(exc) as e: load_instructions(rows)
    for w in words: assert w in str(e.value), (w, str(e.value))

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No data file"): load_instructions(tmp_path / 'nope.jsonl')

def test_unsupported_extension(tmp_path):
    with pytest.raises(ValueError, match=r"Unsupported file type '\.csv'.*\.jsonl"): load_instructions(write(tmp_path, 'd.csv', 'a,b'))

def test_bad_jsonl_line(tmp_path):
    p = write(tmp_path, 'd.jsonl', json.dumps(GOOD) + '\n{"instruction": "x", \n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"): load_instructions(p)

def test_bad_json_file(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"): load_instructions(write(tmp_path, 'd.json', '[{"a": 1},'))

def test_json_not_a_list(tmp_path):
    with pytest.raises(ValueError, match="must hold a JSON list"): load_instructions(write(tmp_path, 'd.json', '{"x": 1}'))

def test_wrong_source_type():
    with pytest.raises(TypeError, match="Cannot load data from a int"): load_instructions(3)

def test_bad_on_long():
    with pytest.raises(ValueError, match="on_long='skip'"): load_instructions([GOOD], on_long='skip')

def test_too_long_error():
    with pytest.raises(ValueError, match="Row 0 is .* long, over max_length=20"): load_instructions([GOOD], max_length=20, on_long='error')

def test_all_too_long():
    with pytest.raises(ValueError, match="Every row is longer"), warnings.catch_warnings():
        warnings.simplefilter('ignore', DataWarning)
        load_instructions([GOOD], max_length=20)

def test_unknown_task_in_generator():
    with pytest.raises(ValueError, match="Unknown task"): instruction_dataset(10, tasks=['translate'])

def test_bad_split():
    with pytest.raises(ValueError, match="add up to 1"): instruction_dataset(100, split=(0.5, 0.1, 0.1))

def test_parse_rejects_foreign_sentence():
    with pytest.raises(ValueError, match="not a sentence of the course's world"): parse("Colorless green ideas sleep furiously.")

def test_chat_template_required():
    with pytest.raises(ValueError, match="chat template"): prompt_and_response(GOOD, None, 'chat')

def test_unknown_template():
    with pytest.raises(ValueError, match="Unknown template 'vicuna'"): prompt_and_response(GOOD, None, 'vicuna')

# ---- repairs are reported -------------------------------------------------------------------------------------------
def test_duplicates_dropped_with_warning():
    with pytest.warns(DataWarning, match=r"Dropped 2 duplicate row\(s\) \(first: row 2\)"):
        ds = load_instructions([GOOD, {**GOOD, 'output': 'The chef did not cook the meal.'}, GOOD, GOOD])
    assert len(ds) == 2
    assert len(load_instructions([GOOD, GOOD], dedupe=False)) == 2

def test_long_rows_dropped_or_truncated():
    long = {**GOOD, 'output': 'word ' * 100}
    with pytest.warns(DataWarning, match=r"1 row\(s\) longer than max_length=150 characters were dropped \(first: row 1\)"):
        assert load_instructions([GOOD, long], max_length=150)['output'] == [GOOD['output']]
    with pytest.warns(DataWarning, match="were truncated"):
        out = load_instructions([GOOD, long], max_length=150, on_long='truncate')
    assert len(out) == 2 and len(format_prompt(long['instruction'], long['input']) + out[1]['output']) <= 150

def test_formats_round_trip(tmp_path):
    rows = instruction_dataset(40, seed=1)['train']
    p = save_jsonl(rows, tmp_path / 'sub' / 'd.jsonl')
    assert load_instructions(p).to_list() == rows.to_list()
    (tmp_path / 'd.json').write_text(json.dumps(rows.to_list()))
    assert load_instructions(tmp_path / 'd.json').to_list() == rows.to_list()
    (tmp_path / 'w.json').write_text(json.dumps({'data': rows.to_list()}))
    assert len(load_instructions(tmp_path / 'w.json')) == len(rows)
    assert load_instructions(Dataset.from_list(rows.to_list())).to_list() == rows.to_list()
    no_input = load_instructions([{'instruction': 'Say hi.', 'output': 'hi'}])
    assert no_input[0]['input'] == '' and no_input[0]['task'] == ''

def test_save_jsonl_is_atomic(tmp_path):
    p = save_jsonl([GOOD], tmp_path / 'd.jsonl')
    def boom():
        yield GOOD
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): save_jsonl(boom(), p)
    assert load_instructions(p).to_list() == [GOOD]  # the old file survives the interrupted write
    assert [f.name for f in tmp_path.iterdir()] == ['d.jsonl']  # and no temp file is left behind

# ---- determinism ------------------------------------------------------------------------------------------------------
def test_instruction_dataset_deterministic():
    a, b, c = instruction_dataset(200, seed=5), instruction_dataset(200, seed=5), instruction_dataset(200, seed=6)
    for k in a: assert a[k].to_list() == b[k].to_list()
    assert a['train'].to_list() != c['train'].to_list()

def test_preference_and_corpus_deterministic():
    assert preference_dataset(50, seed=2).to_list() == preference_dataset(50, seed=2).to_list()
    assert preference_dataset(50, seed=2).to_list() != preference_dataset(50, seed=3).to_list()
    assert pretraining_corpus(30, seed=2) == pretraining_corpus(30, seed=2) != pretraining_corpus(30, seed=3)

def test_split_sizes_and_heldout_combinations():
    ds = instruction_dataset()
    assert {k: len(v) for k, v in ds.items()} == dict(train=935, val=55, test=110)
    combo = lambda split: {(parse(r['input']).verb.base, parse(r['input']).obj) for r in split}
    assert not combo(ds['test']) & (combo(ds['train']) | combo(ds['val']))
    assert set(ds['test']['task']) == set(TASKS) == set(ds['train']['task'])

# ---- checkers ------------------------------------------------------------------------------------------------------------
def test_every_checker_accepts_every_reference():
    ds = instruction_dataset(2000, seed=11)
    for split in ds.values():
        for r in split: assert TASKS[r['task']].check(r['input'], r['output']), r

def test_every_checker_rejects_every_rejected_answer():
    prefs = preference_dataset(2000, seed=4)
    assert set(prefs['failure']) == {'echo', 'swap', 'wrong_voice', 'wrong_tense'}
    for r in prefs:
        t = TASKS[r['task']]
        assert t.check(r['input'], r['chosen']), r
        assert not t.check(r['input'], r['rejected']), r
        assert r['prompt'].endswith('### Response:\n') and r['input'] in r['prompt']

def test_checker_is_whitespace_insensitive_but_exact():
    t = TASKS['active_to_passive']
    inp = "The chef cooks the meal every day."
    assert t.check(inp, "  The meal is cooked by the chef every day. \n")
    assert not t.check(inp, "The meal is cooked by the chef.")
    assert not t.check(inp, "the meal is cooked by the chef every day.")

def test_classic_example():
    assert TASKS['active_to_passive'].answer("The chef cooks the meal every day.") == "The meal is cooked by the chef every day."
    assert TASKS['yes_no_question'].answer("The poet wrote the letter.") == "Did the poet write the letter?"
    assert TASKS['extract_agent'].answer("The letter was written by the poet.") == "the poet"

# ---- tokenisation with the prompt masked -----------------------------------------------------------------------------------
def test_tokenize_masks_prompt(tokenizer):
    enc = tokenize_example(GOOD, tokenizer)
    n_prompt = len(tokenizer(format_prompt(GOOD['instruction'], GOOD['input']), add_special_tokens=False)['input_ids'])
    assert enc['labels'][:n_prompt] == [-100] * n_prompt
    assert enc['labels'][n_prompt:] == enc['input_ids'][n_prompt:]
    assert tokenizer.decode(enc['input_ids'][n_prompt:]) == GOOD['output'] + tokenizer.eos_token
    chat = tokenize_example(GOOD, tokenizer, template='chat')
    trained = [i for i, l in zip(chat['input_ids'], chat['labels']) if l != -100]
    assert tokenizer.decode(trained) == GOOD['output'] + tokenizer.eos_token
    assert len(tokenize_example(GOOD, tokenizer, max_length=10)['input_ids']) == 10

def test_max_length_counts_eos_like_tokenize_dataset():
    "load_instructions and tokenize_dataset count the same tokens (EOS included): a row at the limit is kept or dropped by both."
    from ft_course.models import load_base
    from ft_course.sft import tokenize_dataset
    _, tok = load_base()
    n = len(tokenize_example(GOOD, tok)['input_ids'])
    assert tokenize_example(GOOD, tok)['input_ids'][-1] == tok.eos_token_id
    for limit, kept in ((n, 1), (n - 1, 0)):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DataWarning)
            if kept: ours = load_instructions([GOOD], tok, max_length=limit)
            else:
                with pytest.raises(ValueError, match='Every row is longer'): load_instructions([GOOD], tok, max_length=limit)
            if kept: assert len(tokenize_dataset(ours, tok, max_length=limit)) == 1
            else:
                with pytest.raises(ValueError, match='longer than max_length'): tokenize_dataset([GOOD], tok, max_length=limit)

def test_truncate_keeps_room_for_eos():
    "on_long='truncate' shortens the output so that the whole example, EOS included, fits."
    from ft_course.models import load_base
    _, tok = load_base()
    n = len(tokenize_example(GOOD, tok)['input_ids'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DataWarning)
        short = load_instructions([GOOD], tok, max_length=n - 2, on_long='truncate')
    t = tokenize_example(short[0], tok)['input_ids']
    assert len(t) <= n - 2 and t[-1] == tok.eos_token_id

def test_preference_pairs_can_leave_out_the_test_combinations():
    "combos='train' drops the (verb, object) combinations the test split holds out, 'heldout' keeps only those; both are the full set's subsequences."
    from ft_course.data import _heldout_pairs, parse, preference_dataset
    held = _heldout_pairs(0)
    uses = lambda r: (parse(r['input']).verb.base, parse(r['input']).obj) in held
    full = preference_dataset(600).to_list()
    train, only = preference_dataset(300, combos='train').to_list(), preference_dataset(20, combos='heldout').to_list()
    assert len(train) == 300 and len(only) == 20
    assert not any(map(uses, train)) and all(map(uses, only)) and any(map(uses, full))
    assert train == [r for r in full if not uses(r)][:300] and only == [r for r in full if uses(r)][:20]
    with pytest.raises(ValueError, match="combos='test'.*'heldout'"): preference_dataset(5, combos='test')
