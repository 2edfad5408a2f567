"ft_course.sweep: the grid runner, the seed summary, the gradient-noise estimate and one short trial."
import pytest, torch
from ft_course.sweep import sweep, summarize, grad_noise, trial
from ft_course.models import load_base
from ft_course.data import instruction_dataset
from ft_course.sft import tokenize_dataset

@pytest.fixture(scope='module')
def setup():
    model, tok = load_base(device='cpu')
    d = instruction_dataset()
    return model, tok, tokenize_dataset(d['train'].select(range(128)), tok).to_list(), list(d['val'].select(range(8)))

def test_sweep_grid_and_seeds():
    df = sweep(lambda a, b, seed: dict(y=10 * a + b + seed / 10), {'a': [1, 2, 3], 'b': [0, 5]}, seeds=(0, 1), progress=False)
    assert len(df) == 12 and set(df.columns) == {'a', 'b', 'seed', 'y'}
    s = summarize(df, ['a', 'b'], 'y')
    assert s.loc[(3, 5), 'mean'] == pytest.approx(35.05) and (s['n'] == 2).all() and (s['std'] > 0).all()
    one = summarize(df[df.seed == 0], 'a', 'y')
    assert (one['std'] > 0).all()                 # several b per a: a real spread
    listed = sweep(lambda a, seed: dict(y=a), [dict(a=1), dict(a=7)], progress=False)
    assert listed.y.tolist() == [1, 7]

def test_sweep_refuses_bad_grids():
    with pytest.raises(ValueError, match='wrap a single value'): sweep(lambda a, seed: {}, {'a': 3})
    with pytest.raises(ValueError, match='empty'): sweep(lambda a, seed: {}, {})
    with pytest.raises(ValueError, match='non-empty'): sweep(lambda a, seed: {}, {'a': [1]}, seeds=())

def test_grad_noise_falls_with_batch_size(setup):
    model, tok, rows, _ = setup
    before = [p.detach().clone() for p in model.parameters()]
    small, large = (grad_noise(model, rows, b, n_batches=4, pad_token_id=tok.pad_token_id) for b in (2, 16))
    assert small['variance'] > 2 * large['variance']                  # 1/B predicts 8
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))   # the weights are not touched
    with pytest.raises(ValueError, match='disjoint batches'): grad_noise(model, rows, 64, n_batches=4)
    with pytest.raises(ValueError, match='at least 2'): grad_noise(model, rows, 2, n_batches=1)

def test_trial_trains_a_copy_and_flags_divergence(setup):
    model, tok, rows, val = setup
    w0 = model.transformer.wte.weight.detach().clone()
    ok = trial(model, tok, rows, rows[:16], val, lr=3e-3, max_steps=6, batch_size=8, warmup=2)
    assert torch.equal(model.transformer.wte.weight, w0)             # the base is copied, never changed
    assert ok['val_loss'] < 7 and not ok['diverged'] and 0 <= ok['exact_match'] <= 1
    bad = trial(model, tok, rows, None, None, lr=1.0, max_steps=6, batch_size=8, warmup=0)
    assert bad['diverged'] and bad['peak'] > 1
