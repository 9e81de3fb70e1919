#!/bin/bash
# The blackout benchmark (issue 6), run in a guest by tests/vm/bench, which puts
# BENCH_MIB=<size> in the line below. Prints a table and one line "BENCH-JSON {...}".
#   boot 0 (6.1.0-50): raw area bandwidth (dd, direct I/O, fsync); freeze with and
#     without pre-dumps (auto) of a memory-dirtying process (P3) and of 4 independent
#     workloads against one (P5), as leave-running checkpoints; dump + commit +
#     restore of one workload in the pmem RAM area and in the disk area (P4,
#     checkpoint and restore by upgradectl); daemon RSS; what our
#     dracut module adds to the initramfs; then the real upgrade to 6.12 with
#     BENCH_MIB of resident memory in three processes (one dirtying ~5 %/s).
#   boot 1 (6.12): the upgrade's report; then a bare kexec of 6.12 into itself.
#   boot 2 (6.12): the bare kexec-boot time; the ratios against their goals.
# vmtest: kernel=6.1.0-50-amd64 timeout=1500
BENCH_MIB=64
set -euo pipefail
. /usr/local/lib/vmtest/lib.sh
target=6.12.111+deb12-amd64
state=/var/lib/upgraded/bench
now() { date +%s.%N; }
# Starts a python process in scope $1 holding $2 MiB of written memory, rewriting
# $3 percent of it per second.
mem_scope() {
    # In a subshell: out of this shell's job table, so no "Killed" lines when the
    # scopes are stopped or the kexec ends them.
    (systemd-run --quiet --scope --unit="$1" python3 -c '
import os, sys, time
mib, pct = int(sys.argv[1]), float(sys.argv[2])
B = 1 << 20
buf = bytearray(os.urandom(B)) * mib
step = 0
while True:
    if pct:
        n = max(1, int(mib * pct / 100 / 10))       # blocks per 0.1 s
        for _ in range(n):
            k = (step % mib) * B
            buf[k:k + B] = os.urandom(B)
            step += 1
    time.sleep(0.1)
' "$2" "$3" </dev/null >/dev/null 2>&1 &)
}
rss_mib() { systemctl show -p MemoryCurrent --value "$1" | awk '{printf "%.0f", $1 / 1048576}'; }
ckpt_frozen() { upgradectl --json checkpoint --leave-running "$@" | json_field '["frozen_secs"]'; }
# Checkpoints p4.scope (stopping it) into the configured area and restores it; prints
# the seconds of dump + commit + restore, and removes the generation.
p4_cycle() {
    local c r
    c=$(upgradectl --json checkpoint scope:p4.scope)
    r=$(upgradectl --json restore --generation "$(json_field '["generation"]' <<<"$c")")
    upgradectl images rm "$(json_field '["generation"]' <<<"$c")" >/dev/null
    python3 -c 'import json, sys
c, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(round(c["workloads"][0]["dump_secs"] + c["commit_secs"] + r["workloads"][0]["restore_secs"], 3))' "$c" "$r"
}

case $VM_BOOT in
0)
    area_for_daemon <<'EOF2'

[health]
settle_secs = 1

[[workload]]
name = "big"
kind = "scope"
unit = "bench-big.scope"

[[workload]]
name = "mid"
kind = "scope"
unit = "bench-mid.scope"

[[workload]]
name = "dirty"
kind = "scope"
unit = "bench-dirty.scope"
EOF2
    mkdir -p "$state"
    # Raw bandwidth of the area, caches out of the way.
    sync; echo 3 > /proc/sys/vm/drop_caches
    w=$(dd if=/dev/zero of=/var/lib/upgraded/dd.tmp bs=1M count=256 oflag=direct conv=fsync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
    sync; echo 3 > /proc/sys/vm/drop_caches
    r=$(dd if=/var/lib/upgraded/dd.tmp of=/dev/null bs=1M iflag=direct 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
    rm -f /var/lib/upgraded/dd.tmp
    to_mbs() { awk -v v="$1" -v u="$2" 'BEGIN { m = (u ~ /^G/) ? 1024 : (u ~ /^k/) ? 1/1024 : 1; printf "%.1f", v * m }'; }
    echo "write_mbs=$(to_mbs $w)" > "$state/env"
    echo "read_mbs=$(to_mbs $r)" >> "$state/env"

    # P3: freeze of a dirtying process with and without two pre-dumps.
    mem_scope p3.scope 48 5
    sleep 5
    f_plain=$(ckpt_frozen scope:p3.scope)
    f_pre=$(ckpt_frozen --pre-dump auto scope:p3.scope)
    systemctl stop p3.scope
    # P5: four independent workloads frozen together against one.
    for i in 1 2 3 4; do mem_scope "p5-$i.scope" 16 0; done
    sleep 5
    f_one=$(ckpt_frozen scope:p5-1.scope)
    f_four=$(ckpt_frozen scope:p5-1.scope scope:p5-2.scope scope:p5-3.scope scope:p5-4.scope)
    for i in 1 2 3 4; do systemctl stop "p5-$i.scope"; done
    # P4: the same workload through the pmem RAM area (a drop-in switches the CLI's
    # area; the daemon keeps its own) and through the disk area.
    mem_scope p4.scope 48 0
    sleep 5
    mkdir -p /etc/upgraded/config.d
    printf '[area]\nkind = "pmem"\ndevice = "/dev/pmem0"\nmemmap = "512M!1G"\n' > /etc/upgraded/config.d/p4.toml
    upgradectl area init
    p4_pmem=$(p4_cycle)
    rm /etc/upgraded/config.d/p4.toml
    p4_disk=$(p4_cycle)
    systemctl stop p4.scope
    # The snapshots are not the upgrade's business: out of the area.
    for g in $(upgradectl --json images list | python3 -c 'import json, sys; [print(g["generation"]) for g in json.load(sys.stdin)]'); do
        upgradectl images rm "$g" >/dev/null
    done
    daemon_rss=$(ps -o rss= -C upgraded | awk '{s += $1} END {printf "%.1f", s / 1024}')
    initrd_kib=$(lsinitrd "/boot/initrd.img-$target" 2>/dev/null | awk '/upgraded/ && $5 ~ /^[0-9]+$/ {s += $5} END {printf "%.0f", s / 1024}')
    {
        echo "freeze_plain=$f_plain"; echo "freeze_pre=$f_pre"
        echo "freeze_one=$f_one"; echo "freeze_four=$f_four"
        echo "p4_pmem_secs=$p4_pmem"; echo "p4_disk_secs=$p4_disk"
        echo "daemon_rss_mib=$daemon_rss"; echo "initrd_kib=$initrd_kib"
    } >> "$state/env"

    # The upgrade: BENCH_MIB resident in three processes, one dirtying ~5 %/s.
    mem_scope bench-big.scope $((BENCH_MIB / 2)) 0
    mem_scope bench-mid.scope $((BENCH_MIB / 4)) 0
    mem_scope bench-dirty.scope $((BENCH_MIB / 4)) 5
    sleep 5
    echo "resident_mib=$(( $(rss_mib bench-big.scope) + $(rss_mib bench-mid.scope) + $(rss_mib bench-dirty.scope) ))" >> "$state/env"
    cat "$state/env"
    upgradectl upgrade --yes "$target"
    exec sleep infinity
    ;;
1)
    [[ $(uname -r) == "$target" ]] || fail "came back on $(uname -r)"
    if [[ $(status_field state) != blessed ]]; then
        journalctl -b -1 -o cat -u upgraded.service | tail -n 40
        journalctl -b -o cat -u upgraded-restore.service -u upgraded.service | tail -n 40
        upgradectl status
        fail "the upgrade was not blessed: $(status_field state)"
    fi
    upgradectl status --json > "$state/report.json"
    # Where the restore stage goes, step by step (monotonic seconds since boot).
    echo "restore timeline:"
    journalctl -b -o short-monotonic -u upgraded-restore.service | grep -v '^-- ' | cut -c1-160
    gen=$(status_field current_generation)
    echo "image_bytes=$(du -sb --apparent-size "/var/lib/upgraded/generations/$gen" | cut -f1)" >> "$state/env"
    # The bare kexec boot of the same kernel: no workloads, the same path to the
    # point where upgraded-restore.service starts.
    now > "$state/bare.t0"
    sync
    kexec_into "$target"
    ;;
2)
    t0=$(cat "$state/bare.t0")
    t1=$(systemctl show -p ExecMainStartTimestampMonotonic --value upgraded-restore.service)
    # Wall clock at the restore unit's start = now - (uptime now - its monotonic start).
    bare=$(python3 -c "
import time
up = float(open('/proc/uptime').read().split()[0])
print(round(time.time() - (up - $t1 / 1e6) - $t0, 3))")
    echo "bare_boot_secs=$bare" >> "$state/env"
    python3 - "$state/env" "$state/report.json" "$BENCH_MIB" <<'PY'
import json, sys
env = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
rep = json.load(open(sys.argv[2]))["report"]
st, f = rep["stages"], lambda k: float(env[k])
mb = f("image_bytes") / 1048576
wbw, rbw, bare = f("write_mbs"), f("read_mbs"), f("bare_boot_secs")
floor = bare + mb / wbw + mb / rbw
ratios = [
    ("P1", "blackout / (bare kexec boot + bytes/write bw + bytes/read bw)", rep["blackout_secs"] / floor, "<=", 1.1),
    ("P2", "dump throughput / raw write bandwidth", (mb / st["dump"]) / wbw if st["dump"] else None, ">=", 0.8),
    ("P3", "freeze with pre-dump / freeze without (dirtying process)", f("freeze_pre") / f("freeze_plain"), "<=", 0.2),
    ("P4", "pmem area (dump+restore) / disk area (dump+restore)", f("p4_pmem_secs") / f("p4_disk_secs"), "<=", 0.5),
    ("P5", "freeze of 4 independent workloads / freeze of one", f("freeze_four") / f("freeze_one"), "<=", 1.5),
]
print(f"== blackout benchmark, {sys.argv[3]} MiB configured, {env['resident_mib']} MiB resident, images {mb:.1f} MiB")
for k in ["freeze", "dump", "commit", "kexec_load", "kernel_boot", "restore", "health"]:
    print(f"  {k:<12} {st[k]:>9.3f} s" if st[k] is not None else f"  {k:<12} {'-':>9}")
print(f"  {'blackout':<12} {rep['blackout_secs']:>9.3f} s")
print(f"  area write {wbw:.1f} MiB/s, read {rbw:.1f} MiB/s; bare kexec boot {bare:.2f} s; floor {floor:.2f} s")
print(f"  freeze: plain {env['freeze_plain']} s, after auto pre-dumps {env['freeze_pre']} s; one workload {env['freeze_one']} s, four {env['freeze_four']} s")
print(f"  48 MiB dump + commit + restore: pmem area {env['p4_pmem_secs']} s, disk area {env['p4_disk_secs']} s")
out = {"mib": int(sys.argv[3]), "env": env, "stages": st, "blackout_secs": rep["blackout_secs"], "ratios": {}}
for name, what, value, op, goal in ratios:
    if value is None:
        verdict, shown = "n/a", "-"
    else:
        ok = value <= goal if op == "<=" else value >= goal
        verdict, shown = ("PASS" if ok else "MISS"), f"{value:.2f}"
    print(f"  {name} {what}: {shown} (goal {op} {goal}) {verdict}")
    out["ratios"][name] = {"value": value, "goal": f"{op} {goal}", "verdict": verdict}
rss, initrd = f("daemon_rss_mib"), f("initrd_kib") / 1024
print(f"  daemon RSS idle {rss:.1f} MiB (goal <= 15) {'PASS' if rss <= 15 else 'MISS'}")
print(f"  initramfs: our module adds {initrd:.2f} MiB (goal <= 5) {'PASS' if initrd <= 5 else 'MISS'}")
out["daemon_rss_mib"], out["initrd_mib"] = rss, initrd
print("BENCH-JSON " + json.dumps(out))
PY
    ;;
esac
