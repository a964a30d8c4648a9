#!/usr/bin/env bash
# Mutation testing of the pure-logic modules with the fast tests only (README "Mutation testing").
#
#   bash scripts/mutation.sh            # the committed code (HEAD), in a scratch copy
#   MUTATION_SOURCE=worktree bash scripts/mutation.sh   # the work tree as it is, uncommitted changes too
#   MUTATION_KEEP=/tmp/mut bash scripts/mutation.sh     # keep the scratch copy there (mutmut browse, show)
#
# Needs the `mutation` extra (pip install -e '.[mutation]'). mutmut runs in a scratch copy of the repository with
# its [mutmut] section added to that copy's setup.cfg, so the work tree gets no mutants/ folder and no config.
# Prints killed/total per module, the overall score, the survivors, and exits 1 below MIN_SCORE (default 90).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
min_score=${MIN_SCORE:-90}
modules=(
  supervisor/backoff.py
  supervisor/parent/handle.py
  supervisor/parent/leases.py
  supervisor/parent/lease_balance.py
  supervisor/parent/watchdog.py
  supervisor/children/scheduler.py
  supervisor/children/deltas.py
  supervisor/children/sample.py
  supervisor/children/connection_string.py
  supervisor/config.py
  supervisor/rules.py
)
# The fast tests: pure logic and fakes, no simulator, no subprocess (a subprocess would import the unmutated
# package from the editable install, so it could not kill a mutant anyway).
tests=(
  tests/unit
  tests/collector/test_pure_logic.py
  tests/test_config.py
  tests/test_config_values.py
)
deselect="not cli and not unusable_database_urls"

"$venv/bin/python" -c "import mutmut" 2>/dev/null || {
  echo "mutmut is not installed: $venv/bin/pip install -e '$repo[mutation]'" >&2
  exit 2
}

work=${MUTATION_KEEP:-$(mktemp -d /tmp/collector-mutation.XXXXXX)}
mkdir -p "$work"
if [[ -z ${MUTATION_KEEP:-} ]]; then
  trap 'rm -rf "$work"' EXIT
fi
rm -rf "$work/src"
mkdir -p "$work/src"
if [[ ${MUTATION_SOURCE:-head} == worktree ]]; then
  (cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/src" 2>/dev/null || true)
else
  git -C "$repo" archive HEAD | tar -x -C "$work/src"
fi
cd "$work/src"

{
  echo
  echo "[mutmut]"
  echo "source_paths = supervisor"
  echo "only_mutate ="
  printf '    %s\n' "${modules[@]}"
  echo "pytest_add_cli_args_test_selection ="
  printf '    %s\n' "${tests[@]}"
  echo "pytest_add_cli_args ="
  echo "    -p"
  echo "    no:cacheprovider"
  echo "    -q"
  echo "    -k"
  echo "    $deselect"
  echo "also_copy ="
  printf '    %s\n' collector.ini README.md deploy sqlserver_sim
  echo "use_git_change_detection = false"
} >> setup.cfg

export PATH="$venv/bin:$PATH"
echo "mutation testing ${#modules[@]} modules in $work/src with: ${tests[*]} (-k '$deselect')"
started=$(date +%s)
"$venv/bin/mutmut" run > "$work/mutmut-run.log" 2>&1 || { tail -40 "$work/mutmut-run.log"; exit 2; }
"$venv/bin/mutmut" results --all true > "$work/results.txt" 2>&1 || true

"$venv/bin/python" - "$work/results.txt" "$min_score" "$(( $(date +%s) - started ))" "${modules[@]}" <<'PY'
import collections
import sys

results, min_score, seconds, modules = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
#: A mutant the tests noticed: they failed ("killed") or never finished ("timeout": the mutant made a loop spin).
DETECTED = ("killed", "timeout")
module_of = {m[:-3].replace("/", "."): m for m in modules}
counts: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in modules}
survivors: list[str] = []
for line in open(results, encoding="utf-8"):
    if ":" not in line:
        continue
    name, status = (part.strip() for part in line.rsplit(":", 1))
    module = next((path for dotted, path in module_of.items() if name.startswith(dotted + ".")), None)
    if module is None:
        continue
    counts[module][status] += 1
    if status not in DETECTED:
        survivors.append(f"{name}: {status}")
total = killed = 0
print(f"{'module':45} {'killed':>7} {'total':>6} {'score':>7}  (killed counts timeouts)")
for module in modules:
    c = counts[module]
    n, k = sum(c.values()), sum(c[s] for s in DETECTED)
    total, killed = total + n, killed + k
    other = ", ".join(f"{s} {v}" for s, v in sorted(c.items()) if s != "killed")  # timeouts shown too
    print(f"{module:45} {k:7d} {n:6d} {100 * k / n if n else 100:6.1f}%  {other}")
score = 100 * killed / total if total else 100.0
print(f"{'all':45} {killed:7d} {total:6d} {score:6.1f}%   ({seconds} s)")
if survivors:
    print("not killed (mutmut show NAME in the scratch copy to see one):")
    for survivor in survivors:
        print("  " + survivor)
print(f"mutation score {score:.1f}% (minimum {min_score:g}%)")
sys.exit(0 if score >= min_score else 1)
PY
