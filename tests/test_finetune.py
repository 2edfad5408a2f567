"`finetune` and its parts: data forms, config names, saving that loads back, the chat template."
import json, warnings
import pytest, torch
from datasets import Dataset
from ft_course.data import instruction_dataset, save_jsonl
from ft_course.finetune import finetune, load_data, make_config, prepare_model, save_finetuned
from ft_course.lora import lora_layers
from ft_course.models import load_base

@pytest.fixture(scope='module')
def rows():
    return instruction_dataset()['train'].select(range(40)).to_list()

def test_data_in_every_form_gives_the_same_split(rows, tmp_path):
    save_jsonl(rows, tmp_path/'d.jsonl'); (tmp_path/'d.json').write_text(json.dumps(rows))
    splits = [load_data(x, eval_frac=0.25, seed=3) for x in (rows, Dataset.from_list(rows), tmp_path/'d.jsonl', tmp_path/'d.json')]
    for tr, ev in splits:
        assert (len(tr), len(ev)) == (30, 10) and ev['input'] == splits[0][1]['input']
    assert load_data(rows, eval_frac=0.25, seed=4)[1]['input'] != splits[0][1]['input']       # the seed decides
    assert load_data(rows, eval_frac=0)[1] is None
    with pytest.raises(ValueError, match='eval_frac'): load_data(rows, eval_frac=1.0)
    with pytest.raises(ValueError, match='at least 2'): load_data(rows[:1])

def test_make_config_names_the_closest_setting():
    assert make_config(max_steps=5).epochs is None and make_config(max_steps=5).max_steps == 5
    with pytest.raises(TypeError, match="did you mean 'batch_size'"): make_config(batchsize=4)

@pytest.mark.parametrize('method', ['lora', 'qlora'])
def test_save_model_loads_back_with_the_same_outputs(method, tmp_path):
    m, tok = load_base(device='cpu')
    torch.manual_seed(0); prepare_model(m, method)
    with torch.no_grad():
        for l in lora_layers(m).values(): l.lora_B.normal_(0, 0.05)            # a trained-looking adapter
    ids = torch.tensor([tok('### Instruction:\nMake it passive.\n\n### Input:\nThe cat sees the dog.\n\n### Response:\n')['input_ids']])
    save_finetuned(m, tok, tmp_path/'out')
    back, _ = load_base(tmp_path/'out', device='cpu')
    m.eval()
    with torch.no_grad(): gap = (back(ids).logits - m(ids).logits).abs().max().item()
    assert gap < 1e-3 and (tmp_path/'out'/'adapter').exists()
    plain, _ = load_base(device='cpu')
    with torch.no_grad(): assert (plain(ids).logits - m(ids).logits).abs().max().item() > 100 * gap   # the adapter is in there

def test_finetune_with_the_chat_template_and_a_check_fn(rows, tmp_path):
    seen = []
    def check(e, a): seen.append(a); return False
    run = finetune(data=rows, method='lora', template='chat', max_steps=2, batch_size=4, eval_frac=0.1, progress=False,
                   check_fn=check, out_dir=tmp_path/'run')
    assert run.result.accuracy == 0 and len(seen) == 4 and run.history['step'][-1] == 2
    info = json.loads((tmp_path/'run'/'finetune.json').read_text())
    assert info['method'] == 'lora' and info['config']['template'] == 'chat' and info['eval_rows'] == 4
    with pytest.raises(ValueError, match='use one of'): finetune(data=rows, method='adapter')
