#!/bin/sh
# What `tests/tests/kernels.rs` runs inside a VM booted on another kernel,
# as its init, with the host's root read-only under a tmpfs overlay (so
# nothing here reaches the host): the file systems an agent's node has,
# the kernel's modules where modprobe finds them, then `rudder agent
# preflight` and, when given, a test binary, whose lines the test reads
# from the serial console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mkdir -p /lib/modules
ln -sfn "$MODULES" "/lib/modules/$(uname -r)"
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup
echo "RUDDER-VM: kernel $(uname -r)"
NO_COLOR=1 "$RUDDER" agent preflight 2>&1
echo "RUDDER-VM: preflight exit $?"
if [ -n "$TESTBIN" ]; then
  # The exact-bytes tests of the Service programs, on this kernel.
  "$TESTBIN" --test-threads 1 --color never 2>&1
  echo "RUDDER-VM: tests exit $?"
fi
if [ -n "$TESTBIN2" ]; then
  # The netfilter modes' tests named by $FILTER2, on this kernel.
  "$TESTBIN2" --test-threads 1 --color never "$FILTER2" 2>&1
  echo "RUDDER-VM: netfilter tests exit $?"
fi
if [ -n "$TESTBIN3" ]; then
  # The pod cgroups of the cgroupfs driver, with runc, on this pure
  # cgroup v2 hierarchy.
  "$TESTBIN3" --test-threads 1 --color never cgroupfs 2>&1
  echo "RUDDER-VM: cgroup tests exit $?"
fi
if [ -n "$TESTBIN4" ]; then
  # The NodePort XDP path: exact bytes, and attached in a veth's driver.
  "$TESTBIN4" --test-threads 1 --color never at_xdp passes_untouched xdp_attaches 2>&1
  echo "RUDDER-VM: xdp tests exit $?"
fi
if [ -n "$TESTBIN5" ]; then
  # Direct server return's tests (those matching $FILTER5, if given).
  "$TESTBIN5" --test-threads 1 --color never $FILTER5 2>&1
  echo "RUDDER-VM: dsr tests exit $?"
fi
busybox poweroff -f
