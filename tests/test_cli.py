"The `ft-course` command line end to end on a JSONL file and a local model directory, run as `python -m ft_course.cli`."
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path
import pytest
from ft_course.cli import main
from ft_course.data import instruction_dataset, preference_dataset, save_jsonl
from ft_course.models import load_base

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
CLI = [sys.executable, '-m', 'ft_course.cli']

def cli(*args, stdin=None, prefix=CLI, timeout=180, env=None):
    "Run the command line in a fresh process: (exit code, stdout, stderr)."
    r = subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True, env={**ENV, **(env or {})}, input=stdin,
                       timeout=timeout, cwd=ROOT)
    return r.returncode, r.stdout, r.stderr

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    ds = instruction_dataset()
    save_jsonl(ds['train'].select(range(64)), d/'train.jsonl'); save_jsonl(ds['test'].select(range(8)), d/'test.jsonl')
    m, t = load_base(device='cpu'); m.save_pretrained(d/'base'); t.save_pretrained(d/'base')   # a local model directory
    return d

def test_help_for_every_command():
    code, out, _ = cli('--help')
    assert code == 0 and all(c in out for c in ('sft', 'dpo', 'eval', 'generate', 'chat', 'pretrain'))
    for cmd in ('sft', 'dpo', 'eval', 'generate', 'chat', 'pretrain'):
        with pytest.raises(SystemExit) as e: main([cmd, '--help'])
        assert e.value.code == 0

def test_sft_in_a_process_then_eval_from_the_saved_directory(work, capsys):
    code, out, err = cli('sft', '--model', work/'base', '--data', work/'train.jsonl', '--eval-data', work/'test.jsonl',
                         '--method', 'lora', '--max-steps', 4, '--batch-size', 8, '--lr', 3e-3, '--out', work/'run')
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res['steps'] == 4 and 0 <= res['exact_match'] <= 1 and res['method'] == 'lora'
    assert 'train' in err and 'it/s' in err                                  # the tqdm bar, on stderr
    assert (work/'run'/'config.json').exists() and (work/'run'/'adapter').exists()
    assert main(['eval', '--model', str(work/'run'), '--data', str(work/'test.jsonl'), '--no-progress']) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev['exact_match'] == res['exact_match'] and ev['n'] == 8             # the saved model scores what the trained one did

def test_generate_and_chat_in_process(work, monkeypatch, capsys):
    import io
    prompts = ['Make it passive.', 'Rewrite the sentence in the past tense.']
    assert main(['generate', '--model', str(work/'base'), *[x for p in prompts for x in ('--prompt', p)]]) == 0
    direct = capsys.readouterr().out
    monkeypatch.setattr('sys.stdin', io.StringIO('\n'.join(prompts) + '\n'))
    assert main(['generate', '--model', str(work/'base')]) == 0                   # one prompt per stdin line
    assert capsys.readouterr().out == direct and direct.strip()
    monkeypatch.setattr('sys.stdin', io.StringIO(prompts[0] + '\n\n' + prompts[1] + '\n'))
    assert main(['chat', '--model', str(work/'base')]) == 0                       # an empty line ends the chat
    chat = capsys.readouterr().out
    assert main(['generate', '--model', str(work/'base'), '--prompt', prompts[0]]) == 0
    assert chat == capsys.readouterr().out
    assert main(['generate', '--model', str(work/'base'), '--prompt', 'Hi', '--temperature', '0.7', '--seed', '1']) == 0
    a = capsys.readouterr().out
    assert main(['generate', '--model', str(work/'base'), '--prompt', 'Hi', '--temperature', '0.7', '--seed', '1']) == 0
    assert capsys.readouterr().out == a                                            # a seed fixes the sample

def test_dpo_and_pretrain_in_process(work, tmp_path, capsys):
    save_jsonl(preference_dataset(16, seed=1), tmp_path/'pairs.jsonl')
    assert main(['dpo', '--model', str(work/'base'), '--data', str(tmp_path/'pairs.jsonl'), '--max-steps', '2', '--batch-size', '4',
                 '--out', str(tmp_path/'dpo'), '--no-progress']) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res['steps'] == 2 and (tmp_path/'dpo'/'model.safetensors').exists()
    assert load_base(tmp_path/'dpo', device='cpu')[0].config.n_embd == load_base(work/'base', device='cpu')[0].config.n_embd
    assert main(['pretrain', '--out', str(tmp_path/'pre'), '--max-steps', '3', '--n-docs', '100', '--vocab-size', '300',
                 '--n-embd', '32', '--n-layer', '1', '--n-head', '2', '--block-size', '64', '--batch-size', '4',
                 '--eval-every', '3', '--warmup', '1', '--no-progress']) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res['steps'] == 3 and load_base(tmp_path/'pre', device='cpu')[0].config.n_embd == 32

def test_exit_codes_and_messages(work, tmp_path, monkeypatch, capsys):
    code, _, err = cli('sft', '--method', 'fancy', '--out', tmp_path/'x')                 # a fresh process, as a script sees it
    assert code == 2 and "invalid choice: 'fancy'" in err
    assert main(['sft', '--data', str(tmp_path/'missing.jsonl'), '--out', str(tmp_path/'x')]) == 2
    err = capsys.readouterr().err
    assert 'check the path' in err and 'Traceback' not in err
    save_jsonl([dict(instruction='Say hi.')], tmp_path/'bad.jsonl')
    assert main(['sft', '--data', str(tmp_path/'bad.jsonl'), '--out', str(tmp_path/'x')]) == 2
    assert "Row 0 is missing the field 'output'" in capsys.readouterr().err
    assert main(['eval', '--model', str(tmp_path), '--no-progress']) == 2                        # a directory with no model in it
    assert 'config.json' in capsys.readouterr().err
    import ft_course.finetune
    def diverge(*a, **k): raise FloatingPointError("The loss is nan at step 3: training diverged. Lower the learning rate")
    monkeypatch.setattr(ft_course.finetune, 'train', diverge)
    assert main(['sft', '--data', str(work/'train.jsonl'), '--max-steps', '1', '--out', str(tmp_path/'y')]) == 1
    assert 'the run failed: FloatingPointError' in capsys.readouterr().err
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(ft_course.finetune, 'train', interrupted)
    assert main(['sft', '--data', str(work/'train.jsonl'), '--max-steps', '1', '--out', str(tmp_path/'y')]) == 130

def test_ctrl_c_exits_130(work, tmp_path):
    p = subprocess.Popen([*CLI, 'sft', '--model', str(work/'base'), '--data', str(work/'train.jsonl'), '--eval-frac', '0',
                          '--max-steps', '100000', '--batch-size', '4', '--out', str(tmp_path/'run')],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**ENV, 'PYTHONFAULTHANDLER': '1'}, cwd=ROOT,
                         # a shell's background job (`bash test.sh &`, nohup) ignores SIGINT, and the child would inherit that:
                         # Python then installs no KeyboardInterrupt handler and Ctrl-C is never seen
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, err = threading.Event(), []
    def read():
        for chunk in iter(lambda: p.stderr.read(64), ''):
            err.append(chunk)
            if 'loss=' in ''.join(err[-3:]): seen.set()          # a step has been taken: the loop is running
    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(90), ''.join(err)
    time.sleep(1); p.send_signal(signal.SIGINT)
    try: code = p.wait(120)
    except subprocess.TimeoutExpired:                             # hung: SIGABRT makes faulthandler print every thread's stack
        p.send_signal(signal.SIGABRT); p.wait(30); time.sleep(0.5)
        pytest.fail('no exit within 120 s of Ctrl-C; the stacks at the time:\n' + ''.join(err)[-6000:])
    finally: p.kill()
    assert code == 130, ''.join(err)[-2000:]
    time.sleep(0.2)
    assert 'interrupted' in ''.join(err)

def test_accelerate_launch_runs_a_tiny_job(work, tmp_path):
    accelerate = Path(sys.executable).parent/'accelerate'
    if not accelerate.exists(): pytest.skip('accelerate is not installed')
    code, out, err = cli('sft', '--model', work/'base', '--data', work/'train.jsonl', '--eval-frac', '0', '--max-steps', 2,
                         '--batch-size', 4, '--out', tmp_path/'acc', '--no-progress',
                         prefix=[str(accelerate), 'launch', '--cpu', '--num_processes', '1', '--num_machines', '1',
                                 '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'ft_course.cli'])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])['steps'] == 2 and (tmp_path/'acc'/'model.safetensors').exists()

SHARDED = '''
import json, sys
import ft_course.finetune as F
from accelerate import PartialState
from ft_course.data import load_instructions
from ft_course.models import load_base
seen = []
_evaluate = F.evaluate
F.evaluate = lambda m, t, rows, *a, **k: (seen.append(len(rows)), _evaluate(m, t, rows, *a, **k))[1]   # count each process's rows
m, t = load_base(sys.argv[1], device='cpu')
res = F.evaluate_sharded(m, t, load_instructions(sys.argv[2], known_tasks=None), 'm')
rank = PartialState().process_index                 # one file each: two processes printing to one pipe can interleave their lines
open(f'{sys.argv[3]}/rank{rank}.json', 'w').write(json.dumps(dict(rank=rank, own=seen, predictions=[r['prediction'] for r in res.rows])))
F.end_processes()
'''

# Two CPU processes: `accelerate launch` starts several CPU processes only through mpirun, so these use torch's own launcher,
# torchrun, with ACCELERATE_USE_CPU=1 as `accelerate launch --cpu` sets it; accelerate then joins the processes over gloo.
TWO_CPU = dict(prefix=[sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517'],
               env=dict(ACCELERATE_USE_CPU='1'))

def test_evaluation_is_split_between_processes(work, tmp_path):
    "With two processes each answers half of the rows, and both get every answer, in the rows' order."
    from ft_course.data import load_instructions
    from ft_course.evaluate import evaluate
    script = tmp_path/'sharded.py'; script.write_text(SHARDED)
    rows = load_instructions(work/'test.jsonl', known_tasks=None)
    m, t = load_base(work/'base', device='cpu')
    alone = [r['prediction'] for r in evaluate(m, t, rows).rows]
    code, out, err = cli(script, work/'base', work/'test.jsonl', tmp_path, prefix=TWO_CPU['prefix'], env=TWO_CPU['env'])
    assert code == 0, err
    runs = [json.loads((tmp_path/f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [d['rank'] for d in runs] == [0, 1]
    assert [d['own'] for d in runs] == [[len(rows) // 2], [len(rows) - len(rows) // 2]]   # each its share, not all of them
    assert runs[0]['predictions'] == runs[1]['predictions'] == alone

def test_eval_command_prints_once_under_two_processes(work):
    code, out, err = cli('-m', 'ft_course.cli', 'eval', '--model', work/'base', '--data', work/'test.jsonl', '--no-progress', **TWO_CPU)
    assert code == 0 and 'terminate called' not in err, err   # each process leaves the gloo group before it exits
    lines = [l for l in out.splitlines() if l.startswith('{')]
    assert len(lines) == 1 and json.loads(lines[0])['n'] == 8, out
