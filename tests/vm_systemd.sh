#!/bin/bash
# The Debian package under a real systemd, in the test VM: systemd runs as PID 1 of
# a new PID and mount namespace (container mode; the VM's own PID 1 is the test
# runner). `dpkg -i`, then the unit's whole cycle: start (Type=notify: it returns
# once ember said READY) -> the API answers and exports a volume through LIO ->
# restart (a new process; the volume, its export and its loop device never went
# away: KillMode=process) -> stop (clean, exports still served). Prints one
# `[systemd] ...` line per step with its time.
#   tests/vm_systemd.sh PATH.deb DATA_DIR   (DATA_DIR on a real filesystem, not tmpfs)
set -euo pipefail
deb=$1
data=$2
port=18776
api=http://127.0.0.1:$port/v3
ns=
t0=$(date +%s)
lap() { local now; now=$(date +%s); echo "[systemd] $* ($((now - t0)) s)"; t0=$now; }
sc() { nsenter -t "$pid" -m -p systemctl "$@"; }
fail() {
  echo "[systemd] FAILED: $*" >&2
  [ -n "${pid:-}" ] && nsenter -t "$pid" -m -p journalctl -u ember --no-pager -o cat 2>&1 | tail -30 >&2 || true
  exit 1
}
trap '[ -n "$ns" ] && kill -KILL "$ns" 2>/dev/null || true' EXIT

# systemd needs the unified cgroup hierarchy; units a VM under emulation cannot
# afford (coldplugging every device, walking the 9p root for tmpfiles, timers)
# and a second udevd (the VM tests run their own) are masked.
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /etc/systemd/system
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
         systemd-udev-trigger.service systemd-udev-settle.service systemd-tmpfiles-setup.service \
         systemd-tmpfiles-setup-dev.service lvm2-monitor.service blk-availability.service \
         systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-journal-flush.service \
         systemd-random-seed.service systemd-update-utmp.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer logrotate.timer man-db.timer \
         systemd-tmpfiles-clean.timer dpkg-db-backup.timer tgt.service iscsid.service iscsid.socket; do
  ln -sf /dev/null "/etc/systemd/system/$u"
done
printf '[Unit]\nDescription=only what the test starts\nDefaultDependencies=no\n' >/etc/systemd/system/minimal.target

dpkg -i "$deb" >/dev/null || fail "dpkg -i"
[ -x /usr/bin/ember ] && [ -f /lib/systemd/system/ember.service ] && [ -f /etc/ember/ember.toml ] || fail "installed files"
cat >/etc/ember/ember.toml <<CONF
listen = "127.0.0.1:$port"
data_dir = "$data"
[target]
iscsi = "lio"
nvme = "none"
portal_ips = ["127.0.0.1"]
iqn_prefix = "iqn.2010-10.org.ember-systemd:"   # its own: the VM's other tests export too
CONF
lap "dpkg -i"

unshare --pid --fork --mount --mount-proc --propagation private bash -c \
  'mkdir -p /run/lock && exec /lib/systemd/systemd --system --unit=minimal.target' \
  </dev/null >/tmp/systemd.log 2>&1 &
ns=$!
for _ in $(seq 1 120); do
  pid=$(pgrep -x -P "$ns" systemd || true)
  if [ -n "$pid" ]; then
    state=$(sc is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
  fi
  sleep 1
done
case ${state:-} in running | degraded) ;; *) fail "systemd did not come up: ${state:-no systemd}" ;; esac
lap "systemd up ($state)"

json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
call() {
  local out
  out=$(curl -sS --fail-with-body -H 'X-Auth-Token: admin:admin' -H 'Content-Type: application/json' "$@") ||
    fail "curl $*: $out"
  echo "$out"
}
sc start ember || fail "systemctl start"
[ "$(sc is-active ember)" = active ] || fail "not active after start"
first=$(sc show -p MainPID --value ember)
lap "systemctl start -> READY (pid $first)"

vid=$(call -X POST -d '{"volume": {"size": 1}}' "$api/volumes" | json 'd["volume"]["id"]')
for _ in $(seq 1 60); do
  [ "$(call "$api/volumes/$vid" | json 'd["volume"]["status"]')" = available ] && break
  sleep 1
done
connector='{"os-initialize_connection": {"connector": {"initiator": "iqn.1994-05.com.example:sd", "host": "sd"}}}'
iqn=$(call -X POST -d "$connector" "$api/volumes/$vid/action" | json 'd["connection_info"]["data"]["target_iqn"]')
[ -d "/sys/kernel/config/target/iscsi/$iqn" ] || fail "no LIO target $iqn"
loopdev=$(losetup -j "$data/volumes/volume-$vid" -O NAME -n)
[ -n "$loopdev" ] || fail "no loop device for the volume"
lap "volume $vid exported as $iqn on $loopdev"

sc restart ember || fail "systemctl restart"
second=$(sc show -p MainPID --value ember)
[ "$second" != "$first" ] || fail "restart kept pid $first"
[ "$(call "$api/volumes/$vid" | json 'd["volume"]["status"]')" = available ] || fail "volume after restart"
[ -d "/sys/kernel/config/target/iscsi/$iqn" ] || fail "the export went away across the restart"
[ "$(losetup -j "$data/volumes/volume-$vid" -O NAME -n)" = "$loopdev" ] || fail "the loop device changed"
[ "$(sc show -p NRestarts --value ember)" = 0 ] || fail "systemd restarted ember on its own"
[ "$(sc show -p WatchdogUSec --value ember)" = 1min ] || fail "no watchdog"
nsenter -t "$pid" -m -p journalctl -u ember --no-pager -o cat | grep -q '"message":"ember serving the Cinder v3 API"' ||
  fail "no JSON line in the journal"
nsenter -t "$pid" -m -p journalctl -u ember --no-pager -o cat | grep -q '"message":"export reconciled"' &&
  fail "the restarted ember found its own export to repair"
[ "$(stat -c %a /var/lib/ember)" = 700 ] && [ "$(stat -c %a "$data")" = 700 ] || fail "state dirs are not 0700"
lap "systemctl restart: pid $first -> $second, volume, export and loop device intact"

sc stop ember || fail "systemctl stop"
[ "$(sc is-active ember || true)" = inactive ] || fail "not inactive after stop"
[ "$(sc show -p Result --value ember)" = success ] || fail "stop was not clean: $(sc show -p Result --value ember)"
[ -d "/sys/kernel/config/target/iscsi/$iqn" ] || fail "stopping ember took the export away"
lap "systemctl stop: clean, the export still served"

# Leave nothing behind for the VM's other tests: the volume goes through the API.
sc start ember || fail "systemctl start (again)"
call -X POST -d "${connector/initialize/terminate}" "$api/volumes/$vid/action" >/dev/null
call -X DELETE "$api/volumes/$vid" >/dev/null
for _ in $(seq 1 60); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Auth-Token: admin:admin' "$api/volumes/$vid")
  [ "$code" = 404 ] && break
  sleep 1
done
[ "$code" = 404 ] || fail "the volume was not deleted"
[ ! -d "/sys/kernel/config/target/iscsi/$iqn" ] || fail "the export outlived its volume"
[ -z "$(losetup -j "$data/volumes/volume-$vid" -O NAME -n 2>/dev/null)" ] || fail "a loop device outlived its volume"
sc stop ember
lap "volume deleted, export and loop device gone"
echo "[systemd] ok"
