#!/bin/bash
# dracut module "upgraded": puts upgraded's initramfs hook into the initramfs. After an
# upgrade's kexec the hook moves the PID counter past the PIDs of the checkpointed
# processes (upgraded.pid_floor= on the kernel command line), before boot hands them
# out, and leaves /run/upgraded/boot-plan for the restore in the real root.
#
# Included on request only: the package asks for it in
# /usr/lib/dracut/dracut.conf.d/90-upgraded.conf (add_dracutmodules+=" upgraded ").

# called by dracut
check() {
    require_binaries /usr/libexec/upgraded/initramfs-hook || return 1
    # 255: only when asked for (by configuration or another module), never by default.
    return 255
}

# called by dracut
depends() {
    echo systemd
    return 0
}

# called by dracut
install() {
    inst_binary /usr/libexec/upgraded/initramfs-hook
    inst_simple "$moddir/upgraded-initramfs-hook.service" \
        "$systemdsystemunitdir/upgraded-initramfs-hook.service"
    # WantedBy=sysinit.target in its [Install] section.
    $SYSTEMCTL -q --root "$initdir" enable upgraded-initramfs-hook.service
}
