#!/usr/bin/env bash
# Prints the fault and attack matrix's summary line from a nextest run's output (FILE): every
# row of e2e/matrix.tsv is looked up by its binary and test name; fault tests that count
# objects left their counts in $CONVOY_MATRIX_DIR (e2e/tests/matrix.rs `account`).
# Usage: bash e2e/matrix.sh NEXTEST_OUTPUT [MATRIX_DIR]
set -euo pipefail
log=$1
counts=${2:-}
cd "$(dirname "$0")"
declare -A passed=([fault]=0 [attack]=0) failed=([fault]=0 [attack]=0) missing=([fault]=0 [attack]=0)
problems=()
while IFS=$'\t' read -r kind binary test _; do
  [[ -z $kind || $kind == \#* ]] && continue
  # nextest: "        PASS [   1.234s] (3/40) convoy-e2e::matrix attack_…"
  line=$(grep -E "^ *(PASS|FAIL|SIGSEGV|SIGABRT|SIGKILL|TIMEOUT|ABORT|LEAK-FAIL)[^a-z]* .*${binary} ${test}\$" "$log" | tail -1 || true)
  if [[ -z $line ]]; then
    missing[$kind]=$((missing[$kind] + 1)); problems+=("not run: $binary $test")
  elif [[ $line =~ ^\ *PASS ]]; then
    passed[$kind]=$((passed[$kind] + 1))
  else
    failed[$kind]=$((failed[$kind] + 1)); problems+=("failed: $binary $test")
  fi
done < matrix.tsv
lost=0 deleted=0
if [[ -n $counts && -d $counts ]]; then
  for f in "$counts"/*; do
    [[ -f $f ]] || continue
    read -r l d < "$f"
    lost=$((lost + l)); deleted=$((deleted + d))
  done
fi
summary="faults: ${passed[fault]} survived, $lost objects lost, $deleted unintended deletions; attacks: ${passed[attack]} refused"
(( failed[fault] + failed[attack] > 0 )) && summary+="; FAILED: $((failed[fault] + failed[attack]))"
(( missing[fault] + missing[attack] > 0 )) && summary+="; not run: $((missing[fault] + missing[attack]))"
echo "$summary"
for p in "${problems[@]+"${problems[@]}"}"; do echo "  $p"; done
