"The claims ledger (nbs/claims.csv, rendered by nbs/12_claims.ipynb): every row points at a notebook, a section and the assertion that backs it."
import csv, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = {'holds', 'refuted', 'depends', 'open'}

def ledger()->list[dict]:
    with open(ROOT / 'nbs' / 'claims.csv', newline='') as f: return list(csv.DictReader(f))

def sections(nb_path:Path)->dict[str, str]:
    "Heading text -> the code of the cells under it (until the next heading of any level)."
    out, cur = {}, None
    for c in json.loads(nb_path.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            for h in re.findall(r'^#{1,4} (.+?)\s*$', src, re.M): cur = h; out.setdefault(cur, '')
        elif cur is not None: out[cur] += '\n' + src
    return out

def test_ledger_is_well_formed():
    rows = ledger()
    assert len(rows) >= 20
    ids = [r['id'] for r in rows]
    assert len(ids) == len(set(ids)), "claim ids must be unique"
    for r in rows:
        assert r['claim'].strip() and r['scale'].strip(), r
        assert r['verdict'] in VERDICTS, f"{r['id']}: verdict {r['verdict']!r} is not one of {sorted(VERDICTS)}"

@pytest.mark.parametrize('row', ledger(), ids=lambda r: r['id'])
def test_row_points_at_a_measuring_assertion(row):
    nb = ROOT / 'nbs' / f"{row['notebook']}.ipynb"
    assert nb.exists(), f"{row['id']}: no notebook {nb.name}"
    secs = sections(nb)
    assert row['section'] in secs, f"{row['id']}: {nb.name} has no section {row['section']!r}; it has {list(secs)}"
    if row['verdict'] == 'open': return                                   # unmeasured: listed, not backed
    check = row['check'].strip()
    assert check.startswith('assert '), f"{row['id']}: the check must be an assert statement, not {check!r}"
    assert check in secs[row['section']], f"{row['id']}: no code under {nb.name} § {row['section']!r} contains {check!r}"

def test_ledger_notebook_renders_the_csv():
    src = json.loads((ROOT / 'nbs' / '12_claims.ipynb').read_text())
    code = '\n'.join(''.join(c['source']) for c in src['cells'] if c['cell_type'] == 'code')
    assert 'claims.csv' in code
