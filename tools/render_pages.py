"""Render the docs pages without Quarto and look at them in a real browser.

    python tools/render_pages.py [NAME ...]    # NAME: a notebook stem, e.g. 10_dpo; default: every chapter

Runs nbdev's docs processing (what `nbdev-proc-nbs` does, into _proc/), renders the processed notebooks to
HTML with nbconvert into _pages/ (ignored by git), and, where Chromium is installed (Debian: `apt-get
install chromium`), screenshots each page (its first HEIGHT pixels) to _pages/shots/NAME.png.
tests/test_published.py then checks each page's figures and that it shows no error.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / '_pages'
HEIGHT = int(os.environ.get('SHOT_HEIGHT', 12000))   # px of each page to screenshot

def main(names=()):
    os.chdir(ROOT)
    from nbdev.serve import proc_nbs      # nbdev-proc-nbs without its Quarto install and sidebar rewrite
    proc = proc_nbs(n_workers=int(os.environ.get('NB_WORKERS', 2)))
    nbs = sorted(p for p in proc.glob('*.ipynb') if not names or p.stem in names)
    import nbformat
    from nbconvert import HTMLExporter
    OUT.mkdir(exist_ok=True)
    for nb in nbs:
        d = json.loads(nb.read_text())
        for c in d['cells']: c['metadata'].pop('execution', None)   # execnb's timings break nbformat's schema
        html, _ = HTMLExporter().from_notebook_node(nbformat.reads(json.dumps(d), as_version=4))
        (OUT / f'{nb.stem}.html').write_text(html)
    chrome = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if not chrome: return print(f"{len(nbs)} pages in {OUT.name}/; no Chromium for screenshots")
    (OUT / 'shots').mkdir(exist_ok=True)
    for nb in nbs:
        shot = OUT / 'shots' / f'{nb.stem}.png'
        subprocess.run([chrome, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                        f'--window-size=1280,{HEIGHT}', f'--screenshot={shot}', (OUT / f'{nb.stem}.html').as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"{len(nbs)} pages in {OUT.name}/, screenshots in {OUT.name}/shots/")

if __name__ == '__main__': main(sys.argv[1:])
