"""Regenerate the docs' generated parts from the notebooks: the README's chapter table (run and reading times)
and the site's sidebar (chapters in the README's order, then the API reference by module).

    python tools/update_docs.py      # after tools/execute_notebooks.py; rewrites nbs/index.ipynb, README.md, nbs/sidebar.yml

Run time: the seconds each chapter took in its last execution (nbs/_executed.json, written by
tools/execute_notebooks.py: one CPU thread, the cells nbdev-test runs). Reading time: the words of its
markdown at 200 words a minute.
"""
import json, math, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
INDEX, SIDEBAR, MANIFEST = NBS / 'index.ipynb', NBS / 'sidebar.yml', NBS / '_executed.json'
WPM = 200
HEAD = ['notebook', 'what it teaches', 'package module', 'run time', 'reading time']

def _cells(fn:Path) -> list: return json.loads(fn.read_text())['cells']
def _src(c) -> str: return ''.join(c['source']) if isinstance(c['source'], list) else c['source']

def reading_minutes(fn:Path) -> int:
    "Minutes to read the notebook's markdown at `WPM` words a minute (at least 1)."
    words = sum(len(re.findall(r"[A-Za-z0-9][\w'’-]*", _src(c))) for c in _cells(fn) if c['cell_type'] == 'markdown')
    return max(1, math.ceil(words / WPM))

def module(fn:Path) -> str|None:
    "The package module a notebook exports to (its `#| default_exp`), or None."
    for c in _cells(fn):
        if m := re.search(r'^#\|\s*default_exp\s+(\S+)', _src(c), re.M): return f'ft_course.{m.group(1)}'

def fmt_secs(s:float) -> str: return f'{s:.0f} s' if s < 90 else f'{s / 60:.1f} min'

def _table_cell(nb:dict) -> tuple:
    "(index of the markdown cell holding the chapter table, its lines, the table's first and last line)"
    for i, c in enumerate(nb['cells']):
        lines = _src(c).split('\n')
        start = next((j for j, l in enumerate(lines) if l.startswith('| notebook |')), None)
        if start is None: continue
        end = start
        while end + 1 < len(lines) and lines[end + 1].startswith('|'): end += 1
        return i, lines, start, end
    raise ValueError(f"{INDEX} has no chapter table (a line starting with '| notebook |')")

def table_rows(nb:dict=None) -> list:
    "The README table's rows, each a list of its cells' text."
    _, lines, s, e = _table_cell(nb or json.loads(INDEX.read_text()))
    return [[x.strip() for x in l.strip().strip('|').split('|')] for l in lines[s + 2:e + 1]]

def chapter_order(nb:dict=None) -> list:
    "Notebook stems in the README table's order."
    return [r[0].strip('`') for r in table_rows(nb)]

def update_table():
    "Rewrite the chapter table in nbs/index.ipynb with measured run times and reading times."
    nb = json.loads(INDEX.read_text())
    i, lines, s, e = _table_cell(nb)
    times = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    rows = []
    for r in table_rows(nb):
        fn = NBS / f"{r[0].strip('`')}.ipynb"
        run = fmt_secs(times[fn.name]['seconds']) if fn.name in times else '—'
        read = f'{reading_minutes(fn)} min' if fn.exists() else '—'
        mod = f'`{m}`' if fn.exists() and (m := module(fn)) else '—'
        rows.append('| ' + ' | '.join(r[:2] + [mod, run, read]) + ' |')
    head = ['| ' + ' | '.join(HEAD) + ' |', '| ' + ' | '.join(['---'] * len(HEAD)) + ' |']
    text = '\n'.join(lines[:s] + head + rows + lines[e + 1:])
    nb['cells'][i]['source'] = text.splitlines(keepends=True)
    INDEX.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def sidebar_yaml() -> str:
    "sidebar.yml: index, the chapters in the README's order, then an API reference section, one entry per module."
    nbs = ['index'] + [n for n in chapter_order() if (NBS / f'{n}.ipynb').exists()]
    out = ['website:', '  sidebar:', '    contents:'] + [f'      - {n}.ipynb' for n in nbs]
    api = [(m, n) for n in nbs if (m := module(NBS / f'{n}.ipynb'))]
    out += ['      - section: API reference', '        contents:']
    out += [f'          - text: "{m}"\n            href: {n}.ipynb' for m, n in api]
    return '\n'.join(out) + '\n'

def main():
    update_table()
    SIDEBAR.write_text(sidebar_yaml())
    tool = lambda name: str(p) if (p := Path(sys.executable).with_name(name)).exists() else name
    subprocess.run([tool('nbdev-clean'), '--fname', str(INDEX)], check=True)
    md = subprocess.run([tool('jupyter'), 'nbconvert', '--to', 'markdown', '--stdout', str(INDEX)],
                        check=True, capture_output=True, text=True).stdout
    (ROOT / 'README.md').write_text(md)
    print(f"updated {INDEX.relative_to(ROOT)}, README.md and {SIDEBAR.relative_to(ROOT)}")

if __name__ == '__main__': main()
