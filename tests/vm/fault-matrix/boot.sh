#!/bin/bash
# Fault matrix, across the kexec (issue 7): the steps from the kexec on (the initramfs
# hook, mid-restore, health checks, bless; and a reset where the daemon loads or
# starts the kexec) fail by an injected error, a crash (abort; the boot side is
# restarted by systemd), or a hard reset of the guest (sysrq b, as a power cut: qemu
# cold-boots 6.1.0-50 with its own command line). One upgrade per case, each to the
# kernel that is not running (6.1.0-50 <-> 6.1.0-47), cases one after the other in
# one guest across all its boots. After each: both workloads run with their PIDs and
# count on, no half-written generation, nothing frozen, the state ended (blessed,
# rolled back or failed) with the truth in `upgradectl status`. Prints the matrix.
# The suite runs CASES=ci; tests/vm/fault-matrix/run all runs every case.
# vmtest: kernel=6.1.0-50-amd64 timeout=900
set -euo pipefail
. /usr/local/lib/vmtest/lib.sh
CASES=ci
case $CASES in
all) cases=(hook:error hook:abort hook:reset restore:error restore:abort restore:reset
    health:error health:abort health:reset bless:abort bless:reset kexec-load:reset
    kexec:reset) ;;
ci) cases=(restore:abort) ;;
*) cases=(${CASES//,/ }) ;;
esac
report() { upgradectl status --json | json_field "['report']$1" 2>/dev/null || true; }

# Arms case $1 and starts its upgrade; the guest goes down on the way.
start_case() {
    local i=$1 step action target
    step=${cases[$i]%%:*} action=${cases[$i]##*:}
    echo "==== case $step x $action (upgrade from $(uname -r))"
    rm -f /etc/upgraded/config.d/fault.toml
    case $step in
    hook)
        matrix_disarm
        mkdir -p /etc/upgraded/config.d
        printf '[kernel]\nextra_cmdline = ["systemd.setenv=FAILPOINTS=hook=return(%s)"]\n' "$action" \
            > /etc/upgraded/config.d/fault.toml ;;
    kexec-load | kexec) matrix_arm upgraded.service "$step" "$action" ;;
    *) matrix_arm upgraded-restore.service "$step" "$action" ;;
    esac
    systemctl restart upgraded.service
    systemctl is-active -q upgraded.service || fail "upgraded did not start"
    echo "$i $(report "['upgrade_id']") $(counter_value /root/counter) $(counter_value /root/svc.counter) $VM_BOOT" > /root/case
    if [[ $(uname -r) == 6.1.0-47-amd64 ]]; then target=6.1.0-50-amd64; else target=6.1.0-47-amd64; fi
    upgradectl upgrade --yes "$target" || echo "upgradectl upgrade exited $?"
    # The kexec or the reset ends this run.
    sleep 300
    fail "case ${cases[$i]}: the guest did not go down within 300 s: $(upgradectl status 2>&1)"
}

if [[ $VM_BOOT == 0 ]]; then
    area_for_daemon < <(matrix_workloads_start; printf '\n[health]\nsettle_secs = 1\ntimeout_secs = 120\n')
    : > /root/rows
    start_case 0
fi

read -r i id0 c0 s0 boot0 < /root/case
step=${cases[$i]%%:*} action=${cases[$i]##*:}
echo "==== case $step x $action: boot $VM_BOOT on $(uname -r)"
state=$(matrix_wait_settled)
journalctl -b -o cat -u upgraded-restore.service | tail -n 6 | sed 's/^/  restore: /'
matrix_outcome "$c0" "$s0"
[[ $id1 != "$id0" ]] || problems+=$'\n'"no new upgrade recorded"
[[ $state == blessed || $state == rolled-back || $state == failed ]] || problems+=$'\n'"state is '$state'"
[[ $state == blessed || ( -n $why && $why != None ) ]] || problems+=$'\n'"no reason recorded"
[[ $state != failed || $lost != 0 ]] || problems+=$'\n'"failed although every workload runs"
[[ ! -e /var/lib/upgraded/boot-note ]] || problems+=$'\n'"the boot note is still there"
fired=$( (journalctl -o cat --since=-20min | grep -F "FAULT ${FAULT_POINT[$step]}: $action"; true) | head -n 1)
# A reset in the initramfs leaves no journal and no marker: the cold boot of the
# default kernel is the trace it leaves.
[[ $step == hook && $action == reset && $why == *"went down"* ]] && fired=yes
[[ -n $fired || -e /var/lib/upgraded-test-faults/${FAULT_POINT[$step]//::/-} ]] ||
    problems+=$'\n'"the fault did not fire"
problems=$(sed '/^$/d' <<<"$problems")
echo "  state $state on $(uname -r), reason: ${why:0:200}"
[[ -z $problems ]] || sed 's/^/  PROBLEM: /' <<<"$problems"
printf '%-11s %-6s %-12s %-15s %4s %5s  %s\n' "$step" "$action" "$state" "$(uname -r)" "$lost" \
    "$((VM_BOOT - boot0))" "$([[ -z $problems ]] && echo ok || echo "$(wc -l <<<"$problems") problem(s)")" >> /root/rows
echo "$lost $([[ -z $problems ]] && echo 0 || echo 1)" >> /root/tally
matrix_disarm
rm -f /etc/upgraded/config.d/fault.toml
if ((i + 1 < ${#cases[@]})); then
    start_case $((i + 1))
fi
systemctl restart upgraded.service
echo
echo "FAULT MATRIX (across the kexec): step x fault -> outcome"
printf '%-11s %-6s %-12s %-15s %4s %5s  %s\n' step fault state "ended on" lost boots checks
cat /root/rows
total_lost=$(awk '{s += $1} END {print s + 0}' /root/tally)
bad=$(awk '{s += $2} END {print s + 0}' /root/tally)
echo "workloads lost: $total_lost; cases with problems: $bad of ${#cases[@]}"
((total_lost == 0)) || fail "$total_lost workloads lost"
((bad == 0)) || fail "$bad cases left a half-done area or an untrue status"
