#!/usr/bin/env bash
# One command runs every test: each notebook under nbdev-test, then pytest over tests/.
# Fails if either fails; the last line reads "N passed, N failed".
set -uo pipefail
# One torch thread per process: nbdev-test runs two notebooks at once on two cores, and more threads
# than cores make OpenMP workers spin against each other (a tiny GPT-2 step ran ~100x slower).
# Set OMP_NUM_THREADS yourself to override.
cd "$(dirname "$0")"
export PATH="$PWD/.venv/bin:$PATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       MPLBACKEND=Agg PYTHONHASHSEED=0
nb_total=$(ls nbs/*.ipynb | wc -l)
nb_log=$(mktemp)
nbdev-test --timing --n-workers "${NB_WORKERS:-2}" 2>&1 | tee "$nb_log"
nb_rc=${PIPESTATUS[0]}
nb_failed=$(sed -n '/Tests Failed On The Following/,$p' "$nb_log" | grep -c '\.ipynb' || true)
[ "$nb_rc" -ne 0 ] && [ "$nb_failed" -eq 0 ] && nb_failed=$nb_total
py_log=$(mktemp)
python -m pytest tests/ -q -p no:cacheprovider 2>&1 | tee "$py_log"
py_rc=${PIPESTATUS[0]}
summary=$(grep -E '(passed|failed|error|no tests ran)' "$py_log" | tail -1)
py_passed=$(echo "$summary" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END{print s+0}')
py_failed=$(echo "$summary" | grep -Eo '[0-9]+ (failed|errors?)' | awk '{s+=$1} END{print s+0}')
[ "$py_rc" -ne 0 ] && [ "$py_failed" -eq 0 ] && py_failed=1
passed=$(( nb_total - nb_failed + py_passed )); failed=$(( nb_failed + py_failed ))
echo "notebooks: $((nb_total - nb_failed)) passed, $nb_failed failed; pytest: $py_passed passed, $py_failed failed"
echo "$passed passed, $failed failed"
[ "$nb_rc" -eq 0 ] && [ "$py_rc" -eq 0 ]
