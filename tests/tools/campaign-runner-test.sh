#!/bin/sh
# The campaign runner itself, with a stand-in for bulkhead (no guest, no /dev/kvm): Ctrl-C ends
# every run it started and the runner; nothing is left in the temporary folder; --out naming a
# file is refused and the file kept; the report shows what a deviating run printed, can be
# filtered and sorted, and keeps each replay option whole; the defaults name this checkout.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
campaign="$root/tools/bulkhead-campaign"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TMPDIR="$work/tmp"
mkdir "$TMPDIR"
fail() { echo "FAIL: $*"; exit 1; }

# The stand-in: without --faults it prints the baseline; with seed 2 it prints something else;
# with seed 3 it sleeps until killed (marked so the test can find it).
cat > "$work/bulkhead" <<'SH'
#!/bin/sh
case " $* " in
  *" --fault-seed 3 "*) exec sleep 606.25 ;;
  *" --fault-seed 2 "*) echo "line one"; echo "line 2 changed"; exit 1 ;;
  *) echo "line one"; echo "line two"; exit 1 ;;
esac
SH
chmod +x "$work/bulkhead"
echo 'rule f device=serial on=read every=1 action=flip:0x1' > "$work/flip.plan"
cat > "$work/c.json" <<JSON
{"timeout": 700, "workloads": [{"name": "w", "status": 1, "args": ["run", "--kernel", "{guests}/k.elf"]}],
 "plans": ["flip.plan"], "seeds": {"from": 1, "to": 2}}
JSON

# --out naming an existing file: one line, status 2, the file intact.
echo keep > "$work/file"
status=0
"$campaign" "$work/c.json" --out "$work/file" --bulkhead "$work/bulkhead" 2>"$work/err" || status=$?
[ "$status" = 2 ] || fail "--out on a file exited $status"
[ "$(wc -l < "$work/err")" = 1 ] || fail "--out on a file said: $(cat "$work/err")"
[ "$(cat "$work/file")" = keep ] || fail "--out on a file changed the file"

# A finished campaign leaves nothing in the temporary folder, and a report to read.
"$campaign" "$work/c.json" --out "$work/out" --bulkhead "$work/bulkhead" --jobs 2 2>/dev/null \
  >/dev/null || fail "the campaign failed"
[ -z "$(ls -A "$TMPDIR")" ] || fail "left in the temporary folder: $(ls "$TMPDIR")"
python3 - "$work/out" <<'PY'
import json, sys
out = sys.argv[1]
runs = json.load(open(out + "/results.json"))["runs"]
assert [r["outcome"] for r in runs] == ["coped", "deviated"], runs
report = open(out + "/report.html").read()
# What the deviating run printed, and its difference from the baseline.
assert "+line 2 changed" in report and "-line two" in report, "no diff in the report"
# Filter and sort controls; each option kept with its value.
assert 'id="outcome"' in report and "sortBy(" in report
assert '<span class="w">--fault-seed 2</span>' in report, "replay options not kept whole"
PY

# Ctrl-C while runs are going: the runner ends with 130, and so does every run it started.
cat > "$work/c.json" <<JSON
{"timeout": 700, "workloads": [{"name": "w", "status": 1, "args": ["run"]}],
 "plans": ["flip.plan"], "seeds": {"from": 3, "to": 6}}
JSON
"$campaign" "$work/c.json" --out "$work/out2" --bulkhead "$work/bulkhead" --jobs 2 \
  2>"$work/err" >/dev/null &
runner=$!
for _ in $(seq 50); do pgrep -f 'sleep 606.25' >/dev/null && break; sleep 0.1; done
pgrep -f 'sleep 606.25' >/dev/null || fail "the runs did not start"
kill -INT "$runner"
status=0
wait "$runner" || status=$?
[ "$status" = 130 ] || fail "Ctrl-C: the runner exited $status: $(cat "$work/err")"
sleep 0.2
! pgrep -f 'sleep 606.25' >/dev/null || { pkill -f 'sleep 606.25'; fail "runs outlived Ctrl-C"; }
grep -q "interrupted" "$work/err" || fail "Ctrl-C: nothing said"
! grep -q Traceback "$work/err" || fail "Ctrl-C printed a traceback: $(cat "$work/err")"
[ -z "$(ls -A "$TMPDIR")" ] || fail "Ctrl-C left in the temporary folder: $(ls "$TMPDIR")"

# The defaults are this checkout's build, wherever the runner is started.
# (A wide COLUMNS: argparse would otherwise wrap a path at a hyphen.)
(cd / && COLUMNS=10000 "$campaign" --help) | grep -qF "(default: $root/build/kernel/bulkhead)" \
  || fail "the default bulkhead is not this checkout's"
echo "campaign runner: ok"
