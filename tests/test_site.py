"The site and CI: workflows that run the README's commands and publish the docs, a sidebar in the README's order with an API reference, and the README's generated table."
import importlib.util, json, re
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('update_docs', ROOT / 'tools' / 'update_docs.py')
ud = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(ud)
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))
README = (ROOT / 'README.md').read_text()

def workflow(name): return yaml.safe_load((ROOT / '.github' / 'workflows' / name).read_text())
def steps(w): return [s for j in w['jobs'].values() for s in j['steps']]
def triggers(w): return w.get('on', w.get(True))   # YAML 1.1 reads a bare `on` key as True

def test_test_workflow_runs_the_readme_commands():
    w = workflow('test.yaml')
    assert {'push', 'pull_request'} <= set(triggers(w))
    setup, test = re.findall(r'```bash\n(.*?)\n```', README, re.S)[:2]
    runs = [s['run'].strip() for s in steps(w) if 'run' in s]
    assert setup in runs and test in runs and runs.index(setup) < runs.index(test), runs
    (job,) = w['jobs'].values()
    assert job['runs-on'] == 'ubuntu-latest'
    assert any(s.get('uses', '').startswith('actions/setup-python') and str(s['with']['python-version']) == '3.11' for s in steps(w))

def test_deploy_workflow_builds_and_publishes_the_site():
    w = workflow('deploy.yaml')
    assert triggers(w)['push']['branches'] == ['main'] and 'workflow_dispatch' in triggers(w)
    assert w['permissions']['contents'] == 'write'
    uses = {s['uses'].split('@')[0]: s for s in steps(w) if 'uses' in s}
    runs = '\n'.join(s.get('run', '') for s in steps(w))
    assert 'bash setup.sh' in runs and 'nbdev-docs' in runs and 'quarto-dev/quarto-actions/setup' in uses
    out_dir = yaml.safe_load((ROOT / 'nbs' / 'nbdev.yml').read_text())['project']['output-dir']
    assert uses['peaceiris/actions-gh-pages']['with']['publish_dir'] == f'./{out_dir}'

def test_site_url_is_linked():
    url = yaml.safe_load((ROOT / 'nbs' / 'nbdev.yml').read_text())['website']['site-url'].rstrip('/')
    assert f'{url}/' in README and f'{url}/' in (ROOT / 'pyproject.toml').read_text()

def sidebar(): return yaml.safe_load((ROOT / 'nbs' / 'sidebar.yml').read_text())['website']['sidebar']['contents']

def test_sidebar_lists_every_notebook_in_the_readme_order():
    chapters = [c for c in sidebar() if isinstance(c, str)]
    assert sorted(chapters) == [p.name for p in NBS], "every notebook belongs in nbs/sidebar.yml: run `python tools/update_docs.py`"
    assert {p.stem for p in NBS} - {'index'} <= set(ud.chapter_order()), "every chapter belongs in the README's table"
    assert chapters == ['index.ipynb'] + [f'{n}.ipynb' for n in ud.chapter_order() if (ROOT / 'nbs' / f'{n}.ipynb').exists()]

def test_api_reference_lists_every_module():
    (api,) = [c for c in sidebar() if isinstance(c, dict) and c.get('section') == 'API reference']
    entries = {e['text']: e['href'] for e in api['contents']}
    assert entries == {ud.module(p): p.name for p in NBS if ud.module(p)}
    assert set(entries) == {f'ft_course.{p.stem}' for p in (ROOT / 'ft_course').glob('[!_]*.py')}
    assert (ROOT / 'nbs' / 'sidebar.yml').read_text() == ud.sidebar_yaml(), "regenerate it: python tools/update_docs.py"
    assert re.search(r'^custom_sidebar\s*=\s*true', (ROOT / 'pyproject.toml').read_text(), re.M), \
        "without custom_sidebar, nbdev-docs overwrites nbs/sidebar.yml"

def test_readme_table_has_run_and_reading_times():
    rows = ud.table_rows()
    assert re.search(r'^\| notebook \| .* \| run time \| reading time \|$', README, re.M)
    manifest = json.loads(ud.MANIFEST.read_text()) if ud.MANIFEST.exists() else {}
    for r in rows:
        fn = ROOT / 'nbs' / f"{r[0].strip('`')}.ipynb"
        assert len(r) == len(ud.HEAD), f"{r[0]}: {len(r)} cells, the header has {len(ud.HEAD)}: run `python tools/update_docs.py`"
        mod, run, read = r[2], r[3], r[4]
        assert mod == (f'`{m}`' if (m := ud.module(fn)) else '—'), f"{fn.name}: module column {mod!r}"
        assert re.fullmatch(r'—|\d+ s|\d+\.\d min', run) and re.fullmatch(r'—|\d+ min', read), r
        if fn.name in manifest: assert run == ud.fmt_secs(manifest[fn.name]['seconds']), f"{fn.name}: run `python tools/update_docs.py`"
        if fn.exists(): assert abs(int(read.split()[0]) - ud.reading_minutes(fn)) <= 1, f"{fn.name}: run `python tools/update_docs.py`"
