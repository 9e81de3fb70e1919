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
