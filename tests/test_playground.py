"`ft_course.playground` (chapter 11): the leaderboard's row, side-by-side answers, and the widget's callbacks."
import pytest, torch
from transformers import GPT2Config, GPT2LMHeadModel

from ft_course.data import instruction_dataset
from ft_course.evaluate import alpaca_prompt
from ft_course.playground import Playground, compare_answers, leaderboard_row
from ft_course.reward import RewardModel
from ft_course.rollout import sample


@pytest.fixture(scope="module")
def models(tokenizer):
    def tiny(seed):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                          eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                          pad_token_id=tokenizer.pad_token_id)).eval()
    return {'a': tiny(0), 'b': tiny(1)}

@pytest.fixture(scope="module")
def rows():
    return instruction_dataset()['test'].select(range(6)).to_list()

def test_leaderboard_row_measures_every_column(models, tokenizer, rows):
    torch.manual_seed(0)
    rm = RewardModel.from_causal_lm(models['b']).eval()
    row, res = leaderboard_row(models['a'], tokenizer, rows, 'a', start=models['b'], rm=rm, stories=['The cat sat.', 'A dog ran.'],
                               kl_prompts=3, train_s=1.5, trainable=7)
    for k in ('exact_match', 'compliance', 'reward', 'kl_to_start', 'ppl_stories'): assert k in row, k
    assert row['train_s'] == 1.5 and row['trainable'] == 7                      # costs are copied through
    assert {f'em_{t}' for t in res.by_task} <= set(row)                           # one column per task family
    assert row['kl_to_start'] > 0                                                 # two different models
    same, _ = leaderboard_row(models['b'], tokenizer, rows, 'b', start=models['b'])
    assert same['kl_to_start'] == 0.0                                             # the start against itself
    assert 'reward' not in same and 'ppl_stories' not in same                    # only what was asked for

def test_leaderboard_row_reuses_an_evaluation_already_made(models, tokenizer, rows, monkeypatch):
    import ft_course.playground as P
    from ft_course.evaluate import evaluate
    made = evaluate(models['a'], tokenizer, rows, 'a')
    fresh, _ = leaderboard_row(models['a'], tokenizer, rows, 'a')
    monkeypatch.setattr(P, 'evaluate', lambda *a, **k: pytest.fail('evaluated again'))
    reused, res = leaderboard_row(models['a'], tokenizer, rows, 'a', result=made)
    assert reused == fresh and res.rows == made.rows
    with pytest.raises(ValueError, match='not for these 5 rows'):
        leaderboard_row(models['a'], tokenizer, rows[:5], 'a', result=made)

def test_compare_answers_is_greedy_by_default_and_checks_input(models, tokenizer, rows):
    e = rows[0]
    t = compare_answers(models, tokenizer, e['instruction'], e['input'], example=e)
    assert list(t.index) == ['a', 'b'] and list(t.columns) == ['answer', 'stopped', 'correct']
    greedy = sample(models['a'], tokenizer, [alpaca_prompt(e)], greedy=True).texts[0]
    assert t.loc['a', 'answer'] == greedy.strip().split('\n')[0].strip()
    assert t.equals(compare_answers(models, tokenizer, e['instruction'], e['input'], example=e))   # deterministic
    s1 = compare_answers(models, tokenizer, e['instruction'], e['input'], temperature=1.0, seed=1)
    assert s1.equals(compare_answers(models, tokenizer, e['instruction'], e['input'], temperature=1.0, seed=1))
    with pytest.raises(ValueError, match='instruction is empty'): compare_answers(models, tokenizer, ' ')
    with pytest.raises(ValueError, match='at least one model'): compare_answers({}, tokenizer, 'Negate it.')
    with pytest.raises(ValueError, match='temperature'): compare_answers(models, tokenizer, 'Negate it.', temperature=-1)

def test_playground_callbacks(models, tokenizer, rows):
    pg = Playground(models, tokenizer, rows)
    pg.example.value = 2
    assert (pg.instruction.value, pg.input.value) == (rows[2]['instruction'], rows[2]['input'])
    pg.pick.value = ('b',)
    pg.button.click()
    assert list(pg.result.index) == ['b'] and 'correct' in pg.result           # the example's answer is known
    pg.input.value = 'Something else.'                                          # edited: no longer the example
    pg.button.click()
    assert 'correct' not in pg.result
    pg.pick.value = ()
    pg.button.click()
    assert pg.result is None                                                    # an error message, not an exception
