#!/bin/sh
# The kvm suite's campaign: tools/campaigns/uart.json (240 runs) must finish and produce its
# JSON results and an HTML report with the outcome plot.
set -eu
bulkhead="$1"
guests="$2"
root="$(cd "$(dirname "$0")/../.." && pwd)"
# BULKHEAD_TEST_ACCEL=emu (the emu suite) runs it on the software CPU, which needs no /dev/kvm.
accel="${BULKHEAD_TEST_ACCEL:-}"
if [ "$accel" != emu ] && { ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; }; then
  echo "SKIP: needs /dev/kvm"
  exit 77
fi
out="$(mktemp -d)"
"$root/tools/bulkhead-campaign" "$root/tools/campaigns/uart.json" --out "$out" --jobs 2 \
  --bulkhead "$bulkhead" --guests "$guests" ${accel:+--accel "$accel"} 2>/dev/null
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
results = json.load(open(out + "/results.json"))
runs = results["runs"]
assert len(runs) >= 200, "only %d runs" % len(runs)
assert all(r["outcome"] in ("coped", "deviated", "guest-failed", "vm-ended", "timeout") for r in runs)
# The plans do bite: some runs see faults, and no run kills the VM or times out.
assert sum(r["faults_fired"] for r in runs) > 0
assert not any(r["outcome"] in ("vm-ended", "timeout") for r in runs), [r["replay"] for r in runs if r["outcome"] in ("vm-ended", "timeout")]
# Crashes and hangs injected by the plan are hidden: the server restarted and every guest,
# interrupts and all, printed as without faults.
crashed = [r for r in runs if r["kind"] == "crash+hang"]
assert crashed and all(r["outcome"] == "coped" for r in crashed), [r["replay"] for r in crashed if r["outcome"] != "coped"]
report = open(out + "/report.html").read()
assert "<svg" in report and "Outcome per fault kind" in report
# Each run's replay command, kept whole option by option.
assert all('<span class="w">--fault-seed %d</span>' % r["seed"] in report for r in runs[:5])
print("campaign: %d runs, report at %s/report.html" % (len(runs), out))
PY
