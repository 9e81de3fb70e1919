# Helpers for scenarios, installed in the guest as /usr/local/lib/vmtest/lib.sh.
# Use: . /usr/local/lib/vmtest/lib.sh

fail() { echo "FAIL: $*"; exit 1; }

# The installed kernel release whose name starts with $1 (e.g. "6.12" or "6.1.0-47").
kernel_release() {
    local k
    for k in /boot/vmlinuz-"$1"*; do
        [[ -e $k ]] && { echo "${k#/boot/vmlinuz-}"; return 0; }
    done
    fail "no installed kernel matches '$1'"
}

# Loads kernel $1 (a release) with kexec_file_load, keeping the current command line,
# then lets systemd take the system down through kexec.target. Never returns.
kexec_into() {
    local kver=$1
    kexec -s -l "/boot/vmlinuz-$kver" --initrd="/boot/initrd.img-$kver" --reuse-cmdline \
        || fail "kexec could not load $kver"
    echo "kexec: loaded $kver, starting kexec.target"
    systemctl kexec
    # The agent is stopped by kexec.target; until then, wait without exiting.
    exec sleep infinity
}

# Waits up to $2 seconds (default 30) for path $1 to exist.
wait_for() {
    local i
    for ((i = 0; i < ${2:-30} * 10; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.1
    done
    fail "$1 did not appear within ${2:-30} s"
}

# Puts the upgraded area on the area disk, mounted at /var/lib/upgraded (formatted on
# the first boot), and writes a configuration that uses it.
area_on_disk() {
    local disk=/dev/disk/by-id/virtio-upgraded-area
    wait_for "$disk"
    # Not labelled upgraded-area: that label is how upgraded knows the file system of a
    # disk or pmem area it formatted, and a scenario may make one of those too (the
    # bench's pmem area), which LABEL= in fstab would then mount here instead.
    [[ ${VM_BOOT:-0} == 0 ]] && mkfs.ext4 -q -F -L vmtest-area "$disk"
    mkdir -p /var/lib/upgraded
    mountpoint -q /var/lib/upgraded || mount "$disk" /var/lib/upgraded
    chmod 0700 /var/lib/upgraded
    mkdir -p /etc/upgraded
    printf '[area]\nkind = "directory"\npath = "/var/lib/upgraded"\n' > /etc/upgraded/upgraded.toml
}

# Starts a counter session (its own session leader, no terminal) that writes its
# value to $1 every 0.2 s, atomically; prints its PID.
start_counter() {
    local file=$1
    setsid bash -c 'i=0; while :; do echo "$i" > "$0.new"; mv -f "$0.new" "$0"; i=$((i + 1)); sleep 0.2; done' \
        "$file" </dev/null >/dev/null 2>&1 &
    echo $!
}

# Reads a counter file written by start_counter; fails unless it holds a number.
counter_value() {
    local v
    v=$(cat "$1")
    [[ $v =~ ^[0-9]+$ ]] || fail "counter file $1 holds '$v'"
    echo "$v"
}

# The generation id printed by `upgradectl checkpoint --json` on stdin.
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Like area_on_disk, but the area is mounted from /etc/fstab, so that it is there at
# boot before upgraded starts (the daemon keeps its state in the area); then restarts
# upgraded so that it reads the new configuration and area. Extra configuration for
# /etc/upgraded/upgraded.toml comes on stdin.
area_for_daemon() {
    area_on_disk
    grep -q vmtest-area /etc/fstab ||
        echo 'LABEL=vmtest-area /var/lib/upgraded ext4 defaults,nofail 0 2' >> /etc/fstab
    cat >> /etc/upgraded/upgraded.toml
    systemctl daemon-reload
    systemctl restart upgraded.service
    systemctl is-active -q upgraded.service || fail "upgraded did not start: $(systemctl status upgraded.service 2>&1 | tail -n 20)"
}

# The value of a top-level key of `upgradectl status --json`.
status_field() { upgradectl status --json | json_field "['$1']"; }

# --- four workloads: issue 5's scenarios 1 and 2 -------------------------------------

# Starts counterd.service, a Type=simple service counting in /root/svc.counter.
start_counterd() {
    cat > /root/counterd.py <<'PY'
import os, time
i = 0
while True:
    with open("/root/svc.counter.new", "w") as f:
        f.write(f"{i}\n")
    os.rename("/root/svc.counter.new", "/root/svc.counter")
    i += 1
    time.sleep(0.2)
PY
    cat > /etc/systemd/system/counterd.service <<'UNIT'
[Service]
ExecStart=/usr/bin/python3 /root/counterd.py
Restart=always
UNIT
    systemctl daemon-reload
    systemctl start counterd.service
}

# Starts a shell counter (scope counter.scope, pre-dumped once), a TCP client and server with an
# established connection (tcp.scope), a tmux session (socket "demo") and a systemd
# service (counterd.service); records their PIDs in /root/pids and prints the
# [[workload]] configuration for area_for_daemon.
four_workloads_start() {
    systemd-run --quiet --scope --unit=counter.scope bash -c \
        'i=0; while :; do echo "$i" > /root/counter.new; mv -f /root/counter.new /root/counter; i=$((i + 1)); sleep 0.2; done' \
        </dev/null >/dev/null 2>&1 &
    systemd-run --quiet --scope --unit=tmux-demo.scope \
        tmux -L demo new-session -d -s main -x 100 -y 20 \
        'i=0; while :; do echo "count $i on $(uname -r)"; i=$((i + 1)); sleep 0.5; done'
    cat > /root/tcp.py <<'PY'
import os, socket, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7777))
srv.listen(1)
cli = socket.create_connection(("127.0.0.1", 7777))
conn, _ = srv.accept()
i = 0
while True:
    msg = f"{i}\n".encode()
    cli.sendall(msg)
    got = conn.recv(64)
    conn.sendall(got)          # the server echoes
    back = cli.recv(64)
    with open("/root/tcp.state.new", "w") as f:
        f.write(f"{i} {'ok' if back == msg else 'MISMATCH'}\n")
    os.rename("/root/tcp.state.new", "/root/tcp.state")
    i += 1
    time.sleep(0.2)
PY
    systemd-run --quiet --scope --unit=tcp.scope python3 /root/tcp.py </dev/null >/dev/null 2>&1 &
    start_counterd
    wait_for /root/counter >&2
    wait_for /root/svc.counter >&2
    wait_for /root/tcp.state 60 >&2
    local counter server svc
    counter=$(systemctl show -p ControlGroup --value counter.scope | xargs -I{} cat /sys/fs/cgroup{}/cgroup.procs | head -n 1)
    server=$(tmux -L demo display-message -p '#{pid}')
    svc=$(systemctl show -p MainPID --value counterd.service)
    echo "$counter $server $svc" > /root/pids
    echo "counter PID $counter, tmux server $server, counterd $svc" >&2
    cat <<'EOF2'

[[workload]]
name = "counter"
kind = "scope"
unit = "counter.scope"
pre_dump = 1

[[workload]]
name = "tcp"
kind = "scope"
unit = "tcp.scope"
tcp_established = true

[[workload]]
name = "shell"
kind = "tmux"
socket = "demo"

[[workload]]
name = "counterd"
kind = "service"
unit = "counterd.service"
EOF2
}

# After the upgrade to $1: all four run with their PIDs and make progress.
four_workloads_check() {
    local kver=$1 counter server svc a b n1 s1 n2 s2
    read -r counter server svc < /root/pids
    [[ $(ps -o comm= -p "$counter") == bash ]] || fail "the counter is not PID $counter"
    [[ $(tmux -L demo display-message -p '#{pid}') == "$server" ]] || fail "tmux server is not PID $server"
    [[ $(systemctl show -p MainPID --value counterd.service) == "$svc" ]] || fail "counterd's main PID is not $svc"
    systemctl is-active -q counterd.service || fail "counterd.service is not active"
    a=$(counter_value /root/counter) b=$(counter_value /root/svc.counter)
    sleep 2
    (( $(counter_value /root/counter) > a )) || fail "the counter does not count"
    (( $(counter_value /root/svc.counter) > b )) || fail "counterd does not count"
    read -r n1 s1 < /root/tcp.state
    sleep 1
    read -r n2 s2 < /root/tcp.state
    [[ $s2 == ok ]] || fail "TCP data mismatch after the upgrade"
    ((n2 > n1)) || fail "no data crossed the restored TCP connection ($n1 -> $n2)"
    echo "the TCP connection carries data on $(uname -r): exchange $n2 $s2"
    tmux -L demo capture-pane -p -t main | grep count | tail -n 2
    tmux -L demo capture-pane -p -t main | grep -q "on $kver" || fail "the tmux pane does not run on $kver"
    echo "all four workloads continue on $(uname -r) with their PIDs ($counter, $server, $svc)"
}

# --- PID pressure: issue 5's scenario 5 -----------------------------------------------

# Installs pid-pressure.service: early in every boot (no default dependencies, pulled
# in by sysinit.target, ordered after nothing of ours) it forks a thousand short-lived
# processes, twenty at a time, and logs the first and last PID it saw.
install_pid_pressure() {
    cat > /etc/systemd/system/pid-pressure.service <<'UNIT'
[Unit]
Description=PID pressure: a thousand short-lived processes early in boot
DefaultDependencies=no
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash -c 'first=; for ((i = 1; i <= 1000; i++)); do /bin/true & p=$$!; first=$${first:-$$p}; ((i %% 20)) || wait; done; wait; echo "pid-pressure: 1000 processes, PIDs $$first..$$p"'
[Install]
WantedBy=sysinit.target
UNIT
    systemctl daemon-reload
    systemctl enable -q pid-pressure.service
}

# Waits for this boot's pid-pressure.service to finish (it runs beside the restore and
# may outlast multi-user.target), prints its line; fails unless it ran. Sets
# PRESSURE_FIRST.
pid_pressure_report() {
    local line i
    for ((i = 0; i < 300; i++)); do
        [[ $(systemctl show -p ActiveState --value pid-pressure.service) == activating ]] || break
        sleep 1
    done
    line=$(journalctl -b -o cat -u pid-pressure.service | grep -m1 '^pid-pressure:') ||
        fail "pid-pressure.service did not run in this boot: $(systemctl status pid-pressure.service 2>&1 | tail -n 5)"
    echo "$line"
    PRESSURE_FIRST=$(sed -E 's/.*PIDs ([0-9]+)\.\..*/\1/' <<< "$line")
}

# Systemd is PID 1 and `criu check` is happy on the running kernel (each scenario that
# lands on a test kernel calls it once, so every kernel is checked).
criu_check() {
    local out
    [[ $(cat /proc/1/comm) == systemd ]] || fail "PID 1 is $(cat /proc/1/comm), not systemd"
    out=$(criu check 2>&1) || fail "criu check failed on $(uname -r): $out"
    grep -q 'Looks good' <<<"$out" || fail "criu check on $(uname -r): $out"
    echo "criu check on $(uname -r): $(tail -n 1 <<<"$out")"
}

# --- fault matrix: issue 7 ------------------------------------------------------------

# The fault points of the test build (dumper::faults) by the matrix's step names.
declare -A FAULT_POINT=(
    [resolve]=upgrade::resolve [pre-dump]=checkpoint::pre-dump [freeze]=checkpoint::freeze
    [dump]=checkpoint::dump [commit]=checkpoint::commit [kexec-load]=upgrade::kexec-load
    [kexec]=upgrade::kexec [hook]=hook [restore]=restore::mid [health]=boot::health
    [bless]=boot::bless
)

# Starts the matrix's two workloads, a shell counter in counter.scope (pre-dumped once)
# and a Type=simple service counterd.service, records their PIDs in /root/pids, and
# prints their [[workload]] configuration.
matrix_workloads_start() {
    systemd-run --quiet --scope --unit=counter.scope bash -c \
        'i=0; while :; do echo "$i" > /root/counter.new; mv -f /root/counter.new /root/counter; i=$((i + 1)); sleep 0.2; done' \
        </dev/null >/dev/null 2>&1 &
    start_counterd
    wait_for /root/counter >&2
    wait_for /root/svc.counter >&2
    local counter svc
    counter=$(systemctl show -p ControlGroup --value counter.scope | xargs -I{} cat /sys/fs/cgroup{}/cgroup.procs | head -n 1)
    svc=$(systemctl show -p MainPID --value counterd.service)
    echo "$counter $svc" > /root/pids
    echo "counter PID $counter, counterd $svc" >&2
    cat <<'EOF2'

[[workload]]
name = "counter"
kind = "scope"
unit = "counter.scope"
pre_dump = 1

[[workload]]
name = "counterd"
kind = "service"
unit = "counterd.service"
EOF2
}

# Arms fault point $2 (a FAULT_POINT key) with action $3 (error, abort, reset) for
# unit $1 (upgraded.service or upgraded-restore.service) through a drop-in, after
# clearing every earlier arming and fired marker.
matrix_arm() {
    local unit=$1 step=$2 action=$3
    matrix_disarm
    mkdir -p "/etc/systemd/system/$unit.d"
    printf '[Service]\nEnvironment="FAILPOINTS=%s=return(%s)"\n' "${FAULT_POINT[$step]}" "$action" \
        > "/etc/systemd/system/$unit.d/fault.conf"
    systemctl daemon-reload
}

matrix_disarm() {
    rm -f /etc/systemd/system/upgraded.service.d/fault.conf \
        /etc/systemd/system/upgraded-restore.service.d/fault.conf
    rm -rf /var/lib/upgraded-test-faults
    systemctl daemon-reload
}

# Waits until upgraded runs and the state is terminal (or idle); prints the state.
matrix_wait_settled() {
    local state="" i
    for ((i = 0; i < 240; i++)); do
        if systemctl is-active -q upgraded.service; then
            state=$(status_field state 2>/dev/null || true)
            case $state in failed | rolled-back | blessed | idle) break ;; esac
        fi
        sleep 0.5
    done
    echo "$state"
}

# Counts the workloads that are not running as before (same PID, counting on from
# where they were, not restarted, not frozen) and prints "lost=N" with the reasons
# to stderr. $1, $2: the counters' values before the case.
matrix_lost() {
    local c0=$1 s0=$2 counter svc lost=0 a b
    read -r counter svc < /root/pids
    local cg=/sys/fs/cgroup/system.slice
    if [[ $(ps -o comm= -p "$counter" 2>/dev/null) != bash ]]; then
        echo "  counter: PID $counter is gone" >&2; lost=$((lost + 1))
    else
        [[ ! -e $cg/counter.scope/cgroup.freeze || $(cat $cg/counter.scope/cgroup.freeze) == 0 ]] ||
            echo "  counter: counter.scope is frozen" >&2
        a=$(counter_value /root/counter); sleep 1.5
        b=$(counter_value /root/counter)
        if ((b <= a || a < c0)); then
            echo "  counter: $c0 before, then $a, $b: not counting on" >&2; lost=$((lost + 1))
        fi
    fi
    if [[ $(systemctl show -p MainPID --value counterd.service) != "$svc" ]] ||
        ! systemctl is-active -q counterd.service; then
        echo "  counterd: not active with main PID $svc ($(systemctl show -p MainPID --value counterd.service))" >&2
        lost=$((lost + 1))
    else
        a=$(counter_value /root/svc.counter); sleep 1.5
        b=$(counter_value /root/svc.counter)
        if ((b <= a || a < s0)); then
            echo "  counterd: $s0 before, then $a, $b: not counting on" >&2; lost=$((lost + 1))
        fi
    fi
    echo "lost=$lost"
}

# Problems with the area and the status after a case, one line each to stdout: a
# half-written generation, a frozen cgroup, a status that claims lost workloads or an
# upgrade still under way.
matrix_truth() {
    local left
    left=$(find /var/lib/upgraded/generations -maxdepth 1 -name '.tmp-*' 2>/dev/null)
    [[ -z $left ]] || echo "half-written generation left: $left"
    for u in counter.scope counterd.service; do
        f=/sys/fs/cgroup/system.slice/$u/cgroup.freeze
        [[ ! -e $f || $(cat "$f") == 0 ]] || echo "$u is still frozen"
    done
    if upgradectl status | grep -q ATTENTION; then
        echo "status says workloads are not running"
    fi
}

# After a case: sets lost (the workloads not running on as before), problems (one per
# line), id1 and why (the status's upgrade id and last error). $1, $2: the counters'
# values before the case.
matrix_outcome() {
    lost=$(matrix_lost "$1" "$2" 2> /root/case.lost)
    lost=${lost#lost=}
    cat /root/case.lost
    problems=$(matrix_truth)
    id1=$(upgradectl status --json | json_field "['report']['upgrade_id']" 2>/dev/null || true)
    why=$(upgradectl status --json | json_field "['report']['last_error']" 2>/dev/null || true)
}
