#!/bin/bash
# Fault matrix, daemon side (issue 7): each step of an upgrade before the kexec fails
# by an injected error or a crash of upgraded (abort), one case after the other in one
# guest. After each: both workloads (a pre-dumped shell counter scope and a
# Type=simple service) run with their PIDs and count on from where they were, no
# half-written generation is left, nothing stays frozen, and `upgradectl status` says
# what happened (a new upgrade, failed or rolled back, with a reason; no false alarm).
# Prints the matrix: step x fault -> outcome, workloads lost. The suite runs the
# cases of CASES=ci; tests/vm/fault-matrix/run all runs every case.
# vmtest: timeout=1500
set -euo pipefail
. /usr/local/lib/vmtest/lib.sh
CASES=ci
case $CASES in
all) cases=(resolve:error resolve:abort pre-dump:error pre-dump:abort freeze:error freeze:abort
    dump:error dump:abort commit:error commit:abort kexec-load:error kexec-load:abort
    kexec:error kexec:abort) ;;
ci) cases=(dump:abort commit:error kexec-load:abort kexec:error) ;;
*) cases=(${CASES//,/ }) ;;
esac

area_for_daemon < <(matrix_workloads_start)
report() { upgradectl status --json | json_field "['report']$1" 2>/dev/null || true; }

rows=() total_lost=0 bad=0
for c in "${cases[@]}"; do
    step=${c%%:*} action=${c##*:}
    echo "==== case $step x $action"
    matrix_arm upgraded.service "$step" "$action"
    systemctl restart upgraded.service
    id0=$(report "['upgrade_id']")
    c0=$(counter_value /root/counter) s0=$(counter_value /root/svc.counter)
    t0=$SECONDS
    rc=0
    timeout 300 upgradectl upgrade --yes 6.1.0-47-amd64 > /root/case.out 2>&1 || rc=$?
    state=$(matrix_wait_settled)
    secs=$((SECONDS - t0))
    sed 's/^/  upgradectl: /' /root/case.out | tail -n 4
    matrix_outcome "$c0" "$s0"
    # The truth of the status: a step after the pre-flight leaves a new upgrade that
    # ended (failed or rolled back) with a reason; `resolve` fails before one is
    # recorded, and the client said so.
    if [[ $step == resolve ]]; then
        [[ $id1 == "$id0" ]] || problems+=$'\n'"a new upgrade $id1 was recorded"
        [[ $rc != 0 ]] || problems+=$'\n'"upgradectl upgrade exited 0"
    else
        [[ $id1 != "$id0" ]] || problems+=$'\n'"no new upgrade recorded"
        [[ $state == failed || $state == rolled-back ]] || problems+=$'\n'"state is '$state'"
        [[ -n $why && $why != None ]] || problems+=$'\n'"no reason recorded"
    fi
    [[ $rc != 0 ]] || problems+=$'\n'"upgradectl upgrade exited 0"
    if [[ ! -e /var/lib/upgraded-test-faults/${FAULT_POINT[$step]//::/-} ]] &&
        ! journalctl -b -o cat --since=-10min | grep -qF "FAULT ${FAULT_POINT[$step]}: $action"; then
        problems+=$'\n'"the fault did not fire"
    fi
    problems=$(sed '/^$/d' <<<"$problems")
    echo "  state $state, reason: ${why:0:160}"
    [[ -z $problems ]] || sed 's/^/  PROBLEM: /' <<<"$problems"
    total_lost=$((total_lost + lost))
    [[ -z $problems ]] || bad=$((bad + 1))
    rows+=("$(printf '%-11s %-6s %-12s %4s %5s  %s' "$step" "$action" "$state" "$lost" "${secs}s" \
        "$([[ -z $problems ]] && echo ok || echo "$(wc -l <<<"$problems") problem(s)")")")
done
matrix_disarm
systemctl restart upgraded.service

echo
echo "FAULT MATRIX (daemon side, $(uname -r)): step x fault -> outcome"
printf '%-11s %-6s %-12s %4s %5s  %s\n' step fault state lost time checks
printf '%s\n' "${rows[@]}"
echo "workloads lost: $total_lost; cases with problems: $bad of ${#cases[@]}"
((total_lost == 0)) || fail "$total_lost workloads lost"
((bad == 0)) || fail "$bad cases left a half-done area or an untrue status"
