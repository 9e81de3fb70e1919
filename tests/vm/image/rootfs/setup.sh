#!/bin/sh
# Runs inside the new guest root (chroot) at the end of the base build.
set -eu
echo guest > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 guest\n::1 localhost\n' > /etc/hosts
# The root file system carries the label; the runner boots with root=LABEL=root.
echo 'LABEL=root / ext4 defaults 0 1' > /etc/fstab
passwd -d root >/dev/null
# An unprivileged user for access-control tests.
useradd -m -u 1000 -s /bin/bash tester
systemctl set-default multi-user.target
# Keep the previous boots' journal: scenarios read what happened before a kexec.
mkdir -p /var/log/journal
# Timers and jobs that only add noise and CPU time to a TCG guest.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer dpkg-db-backup.timer podman-auto-update.timer podman-restart.service \
         systemd-timesyncd.service getty@tty1.service; do
    systemctl mask "$u" >/dev/null 2>&1 || true
done
# The legacy-PMEM RAM area (memmap=...!...) needs these to appear as /dev/pmem0.
printf 'nd_e820\nnd_pmem\n' > /etc/modules-load.d/pmem.conf
