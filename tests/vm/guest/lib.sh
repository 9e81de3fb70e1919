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
    [[ ${VM_BOOT:-0} == 0 ]] && mkfs.ext4 -q -F -L upgraded-area "$disk"
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
    grep -q upgraded-area /etc/fstab ||
        echo 'LABEL=upgraded-area /var/lib/upgraded ext4 defaults,nofail 0 2' >> /etc/fstab
    cat >> /etc/upgraded/upgraded.toml
    systemctl daemon-reload
    systemctl restart upgraded.service
    systemctl is-active -q upgraded.service || fail "upgraded did not start: $(systemctl status upgraded.service 2>&1 | tail -n 20)"
}

# The value of a top-level key of `upgradectl status --json`.
status_field() { upgradectl status --json | json_field "['$1']"; }
