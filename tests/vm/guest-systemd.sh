#!/bin/sh
# What `tests/tests/kernels.rs` runs as init in a VM whose PID 1 is to be
# systemd, on the host's root read-only under a tmpfs overlay: a unit that
# runs `systemd-work.sh` (the systemd cgroup driver's test) once the system
# bus runs, then PID 1 handed to systemd with that unit as its goal. systemd mounts the
# cgroup hierarchy itself: v2, or v1 with `systemd.unified_cgroup_hierarchy=0`
# on the kernel's command line (CentOS 7's and RHEL 8's default).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# This machine's root marks a container (/.dockerenv); systemd would then
# take its settings from its own arguments rather than the kernel's
# command line. The VM is no container: the mark goes (from the overlay).
rm -f /.dockerenv
mkdir -p /etc/systemd/system
printf 'TESTBIN3=%s\n' "$TESTBIN3" > /etc/rudder-vm.env
cat > /etc/systemd/system/rudder-vm.service <<UNIT
[Unit]
Description=Rudder VM checks under systemd
DefaultDependencies=no
Wants=dbus.service
After=dbus.service

[Service]
Type=oneshot
EnvironmentFile=/etc/rudder-vm.env
ExecStart=/bin/sh $WORK
UNIT
exec /lib/systemd/systemd --unit=rudder-vm.service
