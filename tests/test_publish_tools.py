"The checker and executor behind the published notebooks (tools/execute_notebooks.py), on small synthetic notebooks."
import base64, importlib.util, json, os, subprocess, sys, zlib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('execute_notebooks', ROOT / 'tools' / 'execute_notebooks.py')
ex = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(ex)

def code(src, outputs=()): return dict(cell_type='code', source=src, metadata={}, outputs=list(outputs), execution_count=None)
def md(src): return dict(cell_type='markdown', source=src, metadata={})
def nbook(*cells): return dict(cells=list(cells), metadata={}, nbformat=4, nbformat_minor=5)
def result(text): return dict(output_type='execute_result', data={'text/plain': text}, metadata={}, execution_count=1)
def png(w, h, extra=0):
    "A valid w×h grey PNG, padded with `extra` incompressible bytes."
    chunk = lambda t, d: len(d).to_bytes(4, 'big') + t + d + zlib.crc32(t + d).to_bytes(4, 'big')
    raw = zlib.compress(b''.join(b'\0' + b'\x80' * w for _ in range(h)))
    b = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', w.to_bytes(4, 'big') + h.to_bytes(4, 'big') + bytes([8, 0, 0, 0, 0])) \
        + chunk(b'IDAT', raw) + (chunk(b'tEXt', os.urandom(extra)) if extra else b'') + chunk(b'IEND', b'')
    return dict(output_type='display_data', data={'image/png': base64.b64encode(b).decode(), 'text/plain': '<Figure>'}, metadata={})

GOOD = nbook(md('# T'), code('import math'), code('x = math.pi\nx', [result('3.14')]), code('#| slow\ny = 1\ny'))
def entry(nb): return dict(code_sha256=ex.code_hash(nb), seconds=1.0)

def test_code_hash_follows_code_only():
    h = ex.code_hash(GOOD)
    same = nbook(md('# Other title'), code('import math  \n'), code('\nx = math.pi\nx\n\n', []), code('#| slow\ny = 1\ny'))
    assert ex.code_hash(same) == h                                     # markdown, outputs, trailing blanks don't count
    assert ex.code_hash(nbook(*GOOD['cells'][:2], code('x = math.e\nx'), GOOD['cells'][3])) != h
    assert ex.code_hash(nbook(*GOOD['cells'][:3])) != h               # a deleted (even slow) cell counts

def test_good_notebook_passes():
    assert ex.problems(GOOD, 'good.ipynb', entry(GOOD), size=10_000) == []

def test_stale_or_missing_manifest_names_the_command():
    changed = nbook(*GOOD['cells'][:2], code('x = 2 * math.pi\nx', [result('6.28')]))
    p = ex.problems(changed, '03_x.ipynb', entry(GOOD))
    assert len(p) == 1 and 'code changed' in p[0] and 'python tools/execute_notebooks.py nbs/03_x.ipynb' in p[0]
    assert 'not in nbs/_executed.json' in ex.problems(GOOD, 'g.ipynb', None)[0]

def test_missing_outputs():
    bare = nbook(md('# T'), code('import math'), code('x = math.pi\nx'), code('print(1)'))
    p = ex.problems(bare, 'b.ipynb', entry(bare))
    assert any('no outputs at all' in o for o in p) and any('cell 2: ends in an expression' in o for o in p)
    # calls, assignments, `;` and flagged cells may be silent
    quiet = nbook(code('x = 1'), code('x', [result('1')]), code('test_eq(x, 1)'), code('x;'), code('#| gpu\nx'))
    assert ex.problems(quiet, 'q.ipynb', entry(quiet)) == []

@pytest.mark.parametrize('out,why', [
    (dict(output_type='error', ename='ValueError', evalue='bad', traceback=['...']), 'an error output'),
    (dict(output_type='stream', name='stderr', text='Traceback (most recent call last):\n  File "x"'), 'an error output'),
    (dict(output_type='stream', name='stdout', text='saved to /tmp/tmpk2j/ckpt\n'), 'machine path'),
    (result("PosixPath('/work/main/nbs')"), 'machine path'),
    (result('/root/.cache/ft_course'), 'machine path'),
    (dict(output_type='display_data', data={'text/html': '<p>/home/ann/x</p>'}, metadata={}), 'machine path'),
    (png(3000, 10), 'px figure'),
    (png(10, 10, extra=300_000), 'PNG >'),
])
def test_bad_outputs_are_caught(out, why):
    nb = nbook(code('x = 1\nx', [out]))
    p = ex.problems(nb, 'n.ipynb', entry(nb))
    assert any(why in o for o in p), p

def test_widget_needs_a_static_view():
    note = dict(output_type='execute_result', metadata={}, execution_count=1,
                data={'text/markdown': f'*{ex.WIDGET_NOTE}*', 'text/plain': ex.WIDGET_NOTE})
    table = dict(output_type='execute_result', metadata={}, execution_count=1, data={'text/html': '<table></table>', 'text/plain': 't'})
    alone = nbook(code('calc', [note]), code('x = 1'))
    assert 'no static view' in ex.problems(alone, 'w.ipynb', entry(alone))[0]
    beside = nbook(code('calc', [note]), md('Static:'), code('x = 1'), code('HTML(t)', [table]))
    assert ex.problems(beside, 'w.ipynb', entry(beside)) == []

def test_size_limit():
    assert ex.problems(GOOD, 'g.ipynb', entry(GOOD), size=ex.MAX_NB_BYTES + 1)[0].startswith('g.ipynb: 2,000,001 bytes')
    assert ex.problems(nbook(code('x', [png(800, 300)])), 'g.ipynb', entry(nbook(code('x')))) == []

def test_neutral_paths_and_bars():
    home, root = str(Path.home()), str(ex.ROOT)
    txt = ex.neutral(f'{root}/nbs/a.ipynb {home}/.cache/ft_course /tmp/tmpab_1/ckpt.safetensors {sys.prefix}/lib')
    assert txt == 'ft-course/nbs/a.ipynb ~/.cache/ft_course $TMPDIR/ckpt.safetensors .venv/lib'
    assert not ex.MACHINE_PATH.search(txt)
    bars = 'UserWarning: keep me\nLoading weights:   0%|          | 0/52 [00:00<?, ?it/s]\rLoading weights: 100%|##| 52/52 [00:00<00:00, 9.1it/s]\n'
    assert ex.neutral('<ipython-input-5-c5041bc3d4b0>:27: UserWarning') == '<cell>:27: UserWarning'
    assert ex.drop_bars(bars) == 'UserWarning: keep me\n'
    nb = ex.clean_outputs(nbook(code('x', [dict(output_type='stream', name='stderr', text=bars.split('\n', 1)[1])])))
    assert nb['cells'][0]['outputs'] == []                             # a stream of only bars goes away
    widget = dict(output_type='execute_result', metadata={}, execution_count=1,
                  data={ex.WIDGET: {'model_id': 'f00d', 'version_major': 2, 'version_minor': 0}, 'text/plain': 'VBox(...)'})
    clear = dict(output_type='stream', name='stdout', text='\x1b[2K\r\x1b[2K\r')
    (o,) = ex.clean_outputs(nbook(code('w', [clear, widget])))['cells'][0]['outputs']
    assert o['data']['text/plain'] == ex.WIDGET_NOTE and 'f00d' not in json.dumps(o)   # no random model id

def test_chapter_notebooks_and_flags():
    names = [p.name for p in ex.chapter_notebooks()]
    assert 'index.ipynb' in names and not any(n.startswith('_') for n in names)
    assert ex.directives(code('#| code-fold: true\n#| slow\nx = 1')) == {'code-fold': 'true', 'slow': ''}
    assert not ex.runs_under_test(code('#| eval: false\nx')) and ex.runs_under_test(code('# a comment\nx'))

def test_execute_one_notebook(tmp_path):
    "The worker runs a notebook as nbdev-test does: figures as PNG, slow cells skipped, paths neutral, no bars."
    nb = nbook(md('# T'), code('import matplotlib.pyplot as plt\nfrom tqdm import tqdm\nimport tempfile, os'),
               code('plt.plot([1, 2, 3]); plt.show()'),
               code("for _ in tqdm(range(3), desc='bar'): pass\nd = tempfile.mkdtemp()\nprint(d, os.getcwd(), os.environ['IN_TEST'])"),
               code('#| slow\nraise RuntimeError("slow cells are skipped")'),
               code("{'answer': 42}"))
    fn = tmp_path / 'nb.ipynb'
    fn.write_text(json.dumps(nb))
    env = {**os.environ, **ex.ENV, 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'execute_notebooks.py'), '--worker', str(fn)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout.strip().splitlines()[-1])['ok'], r.stdout + r.stderr
    cells = json.loads(fn.read_text())['cells']
    fig = cells[2]['outputs'][0]['data']
    w, h = ex._png_size(base64.b64decode(fig['image/png']))
    assert 'image/svg+xml' not in fig and 400 <= w <= 1000, (w, h)    # PNG at 90 dpi, not retina
    out = ''.join(cells[3]['outputs'][0]['text'])
    assert len(cells[3]['outputs']) == 1, cells[3]['outputs']           # the bar on stderr is gone
    tmp, cwd, in_test = out.split()
    assert tmp == '$TMPDIR' and cwd.startswith('$TMPDIR/') and in_test == '1' and not ex.MACHINE_PATH.search(out)
    assert cells[4]['outputs'] == [] and ''.join(cells[5]['outputs'][0]['data']['text/plain']) == "{'answer': 42}"
    assert ex.problems(json.loads(fn.read_text()), 'nb.ipynb', entry(nb)) == []

def test_failing_cell_is_named(tmp_path):
    fn = tmp_path / 'bad.ipynb'
    fn.write_text(json.dumps(nbook(md('# T'), code('x = 1'), code('1 / 0'))))
    before = fn.read_text()
    r = ex._run_in_process(fn, timeout=120)
    assert not r['ok'] and r['error'].startswith("cell 2 ('1 / 0'): ZeroDivisionError"), r
    assert fn.read_text() == before                                    # a failed notebook is left as it was
