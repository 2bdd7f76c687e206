#!/bin/sh
# The unit `guest-systemd.sh` writes runs this under systemd as PID 1: the
# systemd cgroup driver's test (slices over D-Bus, runc's systemd cgroups),
# its lines on the serial console for `tests/tests/kernels.rs`, then off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec > /dev/ttyS0 2>&1
echo "RUDDER-VM: init $(cat /proc/1/comm), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)"
echo "RUDDER-VM: cmdline $(cat /proc/cmdline)"
# systemd on the system bus, as the driver reaches it.
i=0
until busctl --system --timeout=5 status org.freedesktop.systemd1 > /dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 60 ] || { echo "RUDDER-VM: systemd is not on the system bus"; break; }
  sleep 1
done
"$TESTBIN3" --test-threads 1 --color never --ignored systemd 2>&1
echo "RUDDER-VM: cgroup tests exit $?"
busybox poweroff -f
