"The README's promises: two commands, README in sync with index.ipynb, CI runs what the README says."
import json, re
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]

def md_of_index():
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    return '\n\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')

def test_readme_matches_index():
    norm = lambda s: re.sub(r'\s+', ' ', s).strip()
    assert norm(md_of_index()) == norm((ROOT / 'README.md').read_text()), \
        "README.md is stale: regenerate it with `jupyter nbconvert --to markdown --stdout nbs/index.ipynb > README.md`"

def test_two_commands_are_what_ci_runs():
    readme = (ROOT / 'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)\n```', readme, re.S)
    assert blocks[:2] == ['bash setup.sh', 'bash test.sh']
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'bash setup.sh' in ci and 'bash test.sh' in ci
    test = (ROOT / 'test.sh').read_text()
    assert 'nbdev-test' in test and 'pytest tests/' in test

def test_every_notebook_exports_or_teaches():
    nbs = sorted((ROOT / 'nbs').glob('*.ipynb'))
    for nb in nbs:
        cells = json.loads(nb.read_text())['cells']
        assert cells and cells[0]['cell_type'] == 'markdown' and ''.join(cells[0]['source']).startswith('# '), f"{nb.name} needs an H1 title cell"

def test_benchmarks_start():
    "Each benchmark and experiment parses its arguments (so an import that broke is caught here, not after a 5-minute run)."
    import subprocess, sys
    for b in sorted((ROOT / 'benchmarks').glob('*.py')) + sorted((ROOT / 'experiments').glob('*.py')):
        r = subprocess.run([sys.executable, str(b), '--help'], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0 and 'usage' in r.stdout.lower(), (b.name, r.stderr[-500:])

def test_gpu_script_uses_flags_that_exist():
    "benchmarks/gpu.sh runs only on a GPU machine: check here that it parses and that every flag it passes still exists."
    import re, subprocess, sys
    sh = ROOT / 'benchmarks' / 'gpu.sh'
    assert subprocess.run(['bash', '-n', str(sh)]).returncode == 0
    calls = re.findall(r'^step \S+ \d+ \$PY (benchmarks/\S+\.py|-m pytest \S+)(.*)$', sh.read_text(), re.M)
    assert len(calls) >= 8, calls
    usages = {}
    for target, rest in calls:
        if target.startswith('-m pytest'): assert (ROOT / target.split()[-1]).exists(); continue
        if target not in usages:
            usages[target] = subprocess.run([sys.executable, target, '--help'], capture_output=True, text=True, timeout=120, cwd=ROOT).stdout
        usage = usages[target]
        for flag in re.findall(r'(--[a-z][a-z0-9-]*)', rest):
            assert flag in usage, f"gpu.sh passes {flag} to {target}, which does not take it"


def test_docs_processing_runs_no_lesson_code():
    "nbdev-docs executes every cell that imports anything (and export cells); a lesson line in such a cell breaks the site."
    import ast
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    bad = []
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        proc = NBProcessor(nb, procs=[])
        for cell in proc.nb.cells:
            if cell.cell_type != 'code' or not _do_eval(cell) or cell.directives_.keys() & {'export', 'exports', 'exporti'}: continue
            if not all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in cell.parsed_()):
                bad.append(f"{nb.name}: {cell.source[:80]!r}")
    assert not bad, "Move these imports into an imports-only cell (docs processing would run the lesson code):\n" + '\n'.join(bad)
