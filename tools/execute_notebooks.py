"""Re-execute the chapter notebooks in place with the test environment and keep their outputs.

    python tools/execute_notebooks.py                       # every notebook in nbs/, two at a time
    python tools/execute_notebooks.py nbs/03_instruction_data.ipynb -n 1

Each notebook runs in a fresh process with test.sh's environment (offline, one thread, PYTHONHASHSEED=0,
IN_TEST=1), cell by cell through execnb's CaptureShell as nbdev-test does, skipping the cells nbdev-test
skips (the `tst_flags` of pyproject.toml: notest, gpu, slow). Figures are PNG at 90 dpi. The outputs are
then cleaned for publishing (machine paths become neutral text, progress bars are dropped), `nbdev-clean`
runs, and nbs/_executed.json records each notebook's code hash and seconds, which tests/test_published.py
compares with the code now in the notebook. Exits nonzero, naming the notebook and cell, if a cell fails;
a failed notebook is left as it was.
"""
import argparse, ast, hashlib, json, os, re, subprocess, sys, sysconfig, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
MANIFEST = NBS / '_executed.json'
# test.sh's environment, plus the inline matplotlib backend (Agg would draw no images).
ENV = dict(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1',
           PYTHONHASHSEED='0', IN_TEST='1', MPLBACKEND='module://matplotlib_inline.backend_inline')
DPI = 90
SETUP = f"import matplotlib as _mpl\n_mpl.rcParams['figure.dpi'] = {DPI}\ndel _mpl"

def chapter_notebooks(nbs:Path=NBS) -> list:
    "Every notebook of the course: the numbered chapters and index, not `_`-prefixed files."
    return sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))

def _src(cell) -> str: return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def code_hash(nb:dict) -> str:
    "sha256 of the notebook's code cells, each with trailing spaces and blank edges stripped; markdown is ignored."
    srcs = ['\n'.join(l.rstrip() for l in _src(c).strip().splitlines()) for c in nb['cells'] if c['cell_type'] == 'code']
    return hashlib.sha256('\n\x1e\n'.join(s for s in srcs if s).encode()).hexdigest()

def _path_subs() -> list:
    "(machine path, neutral text) pairs, longest first."
    subs = {sysconfig.get_paths()['purelib']: '.venv/lib/site-packages', sys.prefix: '.venv', sys.base_prefix: 'python',
            str(ROOT): 'ft-course', str(Path.home()): '~'}
    return sorted(((k, v) for k, v in subs.items() if len(k) > 1), key=lambda kv: -len(kv[0]))

_TMP_RE = re.compile(rf"(?<![\w.$-])(?:{re.escape(tempfile.gettempdir())}|/(?:private/)?(?:var/)?tmp)(?![\w.-])(?:/[\w.-]+)?")
_BAR_RE = re.compile(r'\d+%\|.*\|| \d+/\d+ \[\d|it/s\]|s/it\]')   # a tqdm bar's body, counter or rate

def neutral(text:str, subs=None) -> str:
    "`text` with machine paths (venv, repo, home, temp directories) replaced by neutral text."
    for k, v in subs or _path_subs(): text = text.replace(k, v)
    text = re.sub(r'<ipython-input-\d+-[0-9a-f]+>', '<cell>', text)   # warnings name the cell by a counter and hash
    return _TMP_RE.sub('$TMPDIR', text)

def drop_bars(text:str) -> str:
    "`text` without tqdm progress bars (every carriage-return frame of them)."
    lines = re.split(r'(?<=\n)', text)
    keep = [l for l in lines if not any(_BAR_RE.search(f) for f in l.split('\r'))]
    return ''.join(keep)

WIDGET = 'application/vnd.jupyter.widget-view+json'
WIDGET_NOTE = 'Interactive widget: run the notebook to use it.'
_ANSI_RE = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')

def clean_outputs(nb:dict, subs=None) -> dict:
    "Publishable outputs: no machine paths, no progress bars, no empty streams, a note where a live widget was."
    subs = subs or _path_subs()
    def fix(s):
        if isinstance(s, list): s = ''.join(s)
        return neutral(s, subs)
    for c in nb['cells']:
        outs = []
        for o in c.get('outputs', []):
            if o['output_type'] == 'stream':
                o['text'] = fix(o['text'])
                if o['name'] == 'stderr': o['text'] = drop_bars(o['text'])
                if not _ANSI_RE.sub('', o['text']).strip(): continue   # e.g. a widget's clear_output
            if WIDGET in o.get('data', {}):   # a page has no kernel: say so (the chapter shows a static view beside it)
                o['data'] = {'text/markdown': f'*{WIDGET_NOTE}*', 'text/plain': WIDGET_NOTE}
            for k, v in o.get('data', {}).items():
                if k.startswith('text/') or k == 'application/json' and isinstance(v, str): o['data'][k] = fix(v)
            outs.append(o)
        if 'outputs' in c: c['outputs'] = outs
    return nb

# --- What a published notebook must satisfy (tests/test_published.py runs these) ---
MAX_NB_BYTES = 2_000_000    # an executed chapter with two figures weighs ~130 KB; ten figures ~0.5 MB
MAX_IMG_BYTES = 250_000     # one PNG at 90 dpi is ~35 KB
MAX_IMG_PX = 2000           # widest or tallest side of a figure
MACHINE_PATH = re.compile(r'(?<![\w.~$-])/(?:work|root|home|Users|tmp|private|var/folders)/|[A-Za-z]:\\Users\\')
RERUN = 'python tools/execute_notebooks.py nbs/{}'
SKIP_FLAGS = ('notest', 'gpu', 'slow')   # pyproject's tst_flags

def directives(cell) -> dict:
    "The `#| name: value` directives on a code cell's leading comment lines."
    out = {}
    for l in _src(cell).splitlines():
        if not l.strip(): continue
        if not l.startswith('#|'): break
        name, _, val = l[2:].strip().partition(' ')
        out[name.rstrip(':')] = val.strip()
    return out

def runs_under_test(cell, flags=SKIP_FLAGS) -> bool:
    "Does nbdev-test (and so execute_notebooks) run this cell?"
    d = directives(cell)
    return cell['cell_type'] == 'code' and bool(_src(cell).strip()) and not (d.keys() & set(flags)) \
        and d.get('eval', '').lower() != 'false'

def should_display(cell) -> bool:
    "A run cell that ends in a bare expression other than a call (a name, a subscript, a literal) displays it."
    src = _src(cell).strip()
    if src.endswith(';'): return False
    try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith('%')))
    except SyntaxError: return False
    last = tree.body[-1] if tree.body else None
    return isinstance(last, ast.Expr) and not isinstance(last.value, (ast.Call, ast.Await, ast.Yield, ast.Constant))

def _texts(o) -> list:
    if o['output_type'] == 'stream': return [_src({'source': o['text']})]
    if o['output_type'] == 'error': return [o.get('evalue', ''), '\n'.join(o.get('traceback', []))]
    return [_src({'source': v}) for k, v in o.get('data', {}).items() if k.startswith('text/')]

def _png_size(b:bytes) -> tuple: return (int.from_bytes(b[16:20], 'big'), int.from_bytes(b[20:24], 'big'))

def problems(nb:dict, name:str, entry:dict|None, flags=SKIP_FLAGS, size:int|None=None) -> list:
    "What stops notebook `name` (dict `nb`, manifest `entry`, `size` bytes on disk) from being published."
    import base64
    out, rerun = [], f"re-execute it: {RERUN.format(name)}"
    if entry is None: out.append(f"{name}: not in nbs/_executed.json; {rerun}")
    elif entry.get('code_sha256') != code_hash(nb): out.append(f"{name}: its code changed after its outputs were made; {rerun}")
    if size is not None and size > MAX_NB_BYTES: out.append(f"{name}: {size:,} bytes > {MAX_NB_BYTES:,}; make its figures or tables smaller")
    run = [(i, c) for i, c in enumerate(nb['cells']) if runs_under_test(c, flags)]
    if run and not any(c.get('outputs') for _, c in run): out.append(f"{name}: no outputs at all; {rerun}")
    for i, c in enumerate(nb['cells']):
        for o in c.get('outputs', []):
            txt = '\n'.join(_texts(o))
            if o['output_type'] == 'error' or 'Traceback (most recent call last)' in txt:
                out.append(f"{name} cell {i}: an error output ({o.get('ename', 'Traceback')}); fix it and {rerun}")
            if m := MACHINE_PATH.search(txt):
                out.append(f"{name} cell {i}: a machine path in its output ({txt[max(0, m.start() - 30):m.end() + 30]!r})")
            if png := o.get('data', {}).get('image/png'):
                b = base64.b64decode(_src({'source': png}))
                if len(b) > MAX_IMG_BYTES: out.append(f"{name} cell {i}: a {len(b):,}-byte PNG > {MAX_IMG_BYTES:,}")
                if max(_png_size(b)) > MAX_IMG_PX: out.append(f"{name} cell {i}: a {_png_size(b)} px figure > {MAX_IMG_PX} px")
    static = lambda c: any(k in o.get('data', {}) for o in c.get('outputs', []) for k in ('image/png', 'text/html'))
    for j, (i, c) in enumerate(run):
        if any(WIDGET_NOTE in '\n'.join(_texts(o)) for o in c.get('outputs', [])) and not any(static(d) for _, d in run[j:j + 4]):
            out.append(f"{name} cell {i}: a widget with no static view (a figure or table) in it or the next 3 cells")
    for i, c in run:
        if should_display(c) and not c.get('outputs'):
            out.append(f"{name} cell {i}: ends in an expression but shows no output; {rerun}")
    return out

def execute(fn:Path) -> dict:
    "Run notebook `fn` as nbdev-test does and write it back with its outputs; {'ok', 'seconds', 'error'}."
    from execnb.shell import CaptureShell
    from fastcore.nbio import write_nb
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    cfg = get_config(fn.parent)
    if not cfg.config_file.exists(): cfg = dict(tst_flags=SKIP_FLAGS, cell_timeout=600)   # outside a project (tests)
    flags, timeout = cfg['tst_flags'], cfg['cell_timeout']
    flags = flags.split() if isinstance(flags, str) else list(flags)
    nb = NBProcessor(fn, rm_directives=False, process=True).nb
    skip = _skip_cell(nb, flags)
    k = CaptureShell(fn, mpl_format='png')
    k.run(SETUP)
    os.chdir(fn.parent)   # as nbdev-test does (this is a process of its own)
    t0 = time.time()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != 'code': continue
        if skip(cell): cell.outputs, cell.execution_count = [], None; continue
        k.cell(cell, timeout=timeout or None)
        if k.exc is not None:
            first = next((l for l in cell.source.splitlines() if l.strip()), '')
            return dict(ok=False, seconds=time.time() - t0,
                        error=f"cell {i} ({first[:70]!r}): {type(k.exc).__name__}: {str(k.exc)[:300]}")
    secs = time.time() - t0
    write_nb(clean_outputs(nb), fn)
    return dict(ok=True, seconds=secs, error=None)

def _clean(fn:Path) -> bool:
    "nbdev-clean `fn`; True when a second clean leaves it unchanged."
    exe = Path(sys.executable).with_name('nbdev-clean')
    cmd = [str(exe) if exe.exists() else 'nbdev-clean', '--fname', str(fn)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    before = fn.read_bytes()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return fn.read_bytes() == before

def _run_in_process(fn:Path, timeout:int) -> dict:
    env = {**os.environ, **ENV, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    try:
        r = subprocess.run([sys.executable, __file__, '--worker', str(fn)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return dict(ok=False, seconds=timeout, error=f'timed out after {timeout} s')
    last = (r.stdout.strip().splitlines() or [''])[-1]
    try: return json.loads(last)
    except ValueError: return dict(ok=False, seconds=0, error=f'worker crashed (rc {r.returncode}): {r.stderr[-1500:]}')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to execute (default: every notebook in nbs/)')
    p.add_argument('-n', '--n-workers', type=int, default=2, help='notebooks run at once')
    p.add_argument('--timeout', type=int, default=1800, help='seconds a notebook may take')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:   # child process: execute one notebook, report as one JSON line
        print(json.dumps(execute(Path(a.worker).resolve()))); return 0
    fns = [Path(f).resolve() for f in a.notebooks] or chapter_notebooks()
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    fns.sort(key=lambda f: -manifest.get(f.name, {}).get('seconds', 1e9))   # slowest (or new) first
    failed, t0, lock = [], time.time(), threading.Lock()
    def save():
        with lock: MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + '\n')
    def one(fn):
        r = _run_in_process(fn, a.timeout)
        if r['ok']:
            if not _clean(fn): r.update(ok=False, error='a second nbdev-clean changed it')
            else:
                manifest[fn.name] = dict(code_sha256=code_hash(json.loads(fn.read_text())), seconds=round(r['seconds'], 1))
                save()   # after each notebook, so an interrupted run keeps what it finished
        print(f"{fn.name}: {r['seconds']:.1f} s" + ('' if r['ok'] else f"  FAILED at {r['error']}"), flush=True)
        if not r['ok']: failed.append((fn.name, r['error']))
    with ThreadPoolExecutor(a.n_workers) as ex: list(ex.map(one, fns))
    print(f"{len(fns) - len(failed)} executed, {len(failed)} failed in {time.time() - t0:.0f} s; manifest: {MANIFEST.relative_to(ROOT)}")
    for name, err in failed: print(f"FAILED {name}: {err}", file=sys.stderr)
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
