#!/usr/bin/env bash
# The packages on a real systemd: boots a Debian root with systemd-nspawn, installs the .deb,
# puts a repository in place, runs the gateway group and the sync agent, reloads, upgrades
# and restarts under load, then purges. Prints every check; exits non-zero on the first
# failure. Needs root, systemd-container, debootstrap, h2load, curl, nginx (scripts/test.sh
# installs them) and target/packages from `packaging/build --upgrade-test`.
#
# The Debian root is built once and cached in $GATEHOUSE_CI_CACHE (default
# /var/cache/gatehouse-ci); every run boots a throw-away copy of it (nspawn -x).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

cache=${GATEHOUSE_CI_CACHE:-/var/cache/gatehouse-ci}
# What the root holds beyond minbase is in its name, so that a change builds a new one.
include=systemd,systemd-sysv,dbus,procps
base=$cache/bookworm-${include//,/-}
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -m1 '/debian$' ||
  echo http://deb.debian.org/debian)

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

deb=$(ls "$src"/target/packages/gatehouse_*_amd64.deb)
deb2=$(ls "$src"/target/packages/test/gatehouse_*_amd64.deb)

# --- the cached root ------------------------------------------------------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$base/usr/lib/systemd/systemd" ]; then
  step "debootstrap bookworm into $base (once; cached)"
  rm -rf "$base.tmp"
  debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" "$mirror" >"$cache/debootstrap.log"
  mv "$base.tmp" "$base"
fi
flock -u 9

# --- boot -----------------------------------------------------------------------------------
work=$(mktemp -d /tmp/gatehouse-nspawn.XXXXXX)
NSP=""
LEADER=""
BACKEND=""
LOAD=""
LOAD2=""
cleanup() {
  set +e
  for p in $LOAD $LOAD2; do
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  if [ -n "$BACKEND" ]; then
    kill "$BACKEND" 2>/dev/null
    wait "$BACKEND" 2>/dev/null
  fi
  if [ -n "$NSP" ] && kill -0 "$NSP" 2>/dev/null; then
    [ -n "$LEADER" ] && nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 300); do kill -0 "$NSP" 2>/dev/null || break; sleep 0.1; done
    kill "$NSP" 2>/dev/null
    wait "$NSP" 2>/dev/null
  fi
  leftover_cgroups
  rm -rf "$work"
}
# nspawn leaves these cgroups (and sometimes an init.scope inside) on a host whose PID 1 is
# not systemd, and a stale one can keep the next container from booting. rmdir only removes
# empty ones, so a container running beside this one is safe.
leftover_cgroups() {
  for d in /sys/fs/cgroup/*/payload /sys/fs/cgroup/*/supervisor; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  true
}
trap cleanup EXIT
leftover_cgroups

mkdir -p "$work/srv"
cp -r "$src/packaging/test/repo" "$work/srv/repo"
# The same repository in Git, for the sync agent.
cp -r "$src/packaging/test/repo" "$work/srv/config.git"
git -C "$work/srv/config.git" init -q -b main
git -C "$work/srv/config.git" add -A
git -C "$work/srv/config.git" -c user.name=ci -c user.email=ci@gatehouse.example commit -q -m "test repository"

step "boot the Debian root (systemd-nspawn -x, private network)"
systemd-nspawn -D "$base" -x -b --register=no --keep-unit --private-network --quiet \
  --bind-ro="$src/target/packages:/packages" --bind-ro="$work/srv:/srv/test" \
  </dev/null >"$work/boot.log" 2>&1 &
NSP=$!

# Polls "$@" until it succeeds or $1 seconds pass.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${secs}s waiting for: $what"
    sleep 0.1
  done
}
# The container's PID 1: the child of nspawn that runs systemd (nspawn has a short-lived
# helper child of its own first, which must not be taken for it).
leader() {
  local p
  for p in $(ps -o pid= --ppid "$NSP"); do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ]; then
      LEADER=$p
      return 0
    fi
  done
  return 1
}
wait_for 60 "the container's init" leader
ct() { nsenter -t "$LEADER" -a "$@"; }
# Host tools (curl, h2load, nginx) inside the container's network namespace only.
net() { nsenter -t "$LEADER" -n "$@"; }
booted() {
  local s
  s=$(ct systemctl is-system-running --wait 2>/dev/null) || [ "$s" = degraded ]
}
if ! (wait_for 120 "systemd in the container" booted); then
  tail -n 40 "$work/boot.log" >&2
  fail "the container did not boot"
fi
ok "systemd $(ct systemctl --version | head -1 | cut -d' ' -f2) is $(ct systemctl is-system-running)"

journal() {
  ct journalctl --no-pager -n 60 -u "$1" || true
}

# Files before the package, to compare with after the purge.
snapshot() {
  ct find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
    -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
    -o -path /var/lib/systemd -o -path /srv/test -o -path /packages \) -prune -o -print | sort
}
snapshot >"$work/before.txt"

# --- install --------------------------------------------------------------------------------
step "dpkg -i $(basename "$deb")"
ct dpkg -i "/packages/$(basename "$deb")" | sed 's/^/  /'
ok "installed: $(ct dpkg-query -W -f='${Package} ${Version} ${Status}' gatehouse)"
ok "gatehouse --version: $(ct /usr/bin/gatehouse --version)"
ct /usr/bin/gatehouse validate /usr/share/gatehouse/examples/repo >"$work/validate.txt" ||
  fail "gatehouse validate on the packaged example: $(cat "$work/validate.txt")"
ok "gatehouse validate /usr/share/gatehouse/examples/repo: $(tail -1 "$work/validate.txt")"
ok "gatehouse-sync installed: $(ct ls -l /usr/bin/gatehouse-sync | awk '{print $1, $NF}')"
ct getent passwd gatehouse >"$work/user.txt" || fail "no user gatehouse"
ok "user: $(cat "$work/user.txt")"
expect_stat() {
  local got
  got=$(ct stat -c '%U:%G %a' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
  ok "$1 $got"
}
expect_stat /etc/gatehouse "root:root 755"
expect_stat /etc/gatehouse/credentials "root:gatehouse 750"
expect_stat /var/lib/gatehouse "gatehouse:gatehouse 750"
expect_stat /var/lib/gatehouse/releases "gatehouse:gatehouse 750"
for u in gatehouse@public-gw.service gatehouse-sync.service; do
  st=$(ct systemctl is-active "$u" || true)
  [ "$st" = inactive ] || fail "$u is $st right after install: the package must not start it"
done
ok "nothing started by the install"
ct systemd-analyze verify gatehouse@public-gw.service gatehouse-sync.service
ok "systemd-analyze verify (in the container)"

step "a group with no release fails to start, saying why"
if ct systemctl start gatehouse@public-gw 2>/dev/null; then
  fail "gatehouse@public-gw started without a release"
fi
why=$(ct journalctl --no-pager -u gatehouse@public-gw -g 'releases/current' | tail -1)
[ -n "$why" ] || fail "the journal does not name the missing release: $(journal gatehouse@public-gw)"
ok "${why#*]: }"
ct systemctl reset-failed gatehouse@public-gw

# --- configuration --------------------------------------------------------------------------
step "put a repository in place (a release for the group, a Git repository for the agent)"
# A release as gatehouse-sync publishes it: an immutable folder and the `current` link.
publish() {
  local id=$1
  ct sh -ec "
    cp -r /srv/test/repo /var/lib/gatehouse/releases/$id
    echo $id >/var/lib/gatehouse/releases/$id/.revision
    chown -R gatehouse:gatehouse /var/lib/gatehouse/releases/$id
    ln -sfn $id /var/lib/gatehouse/releases/current.new
    mv -T /var/lib/gatehouse/releases/current.new /var/lib/gatehouse/releases/current"
}
publish r1
ct sh -ec '
  cp -r /srv/test/config.git /srv/config.git
  chown -R gatehouse:gatehouse /srv/config.git'
ct sh -ec 'cat >/etc/gatehouse/sync.toml <<EOF
[source]
url = "file:///srv/config.git"
branch = "main"
[sync]
interval = "60s"
control_sockets = ["/run/gatehouse/public-gw.sock"]
EOF'
ok "release r1 at /var/lib/gatehouse/releases/current; /etc/gatehouse/sync.toml points at /srv/config.git"

# The upstream the route points at: nginx on 127.0.0.1:9000 in the container's network.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:9000; location / { return 200 "hello from the backend\n"; } }
}
EOF
# nsenter itself, not the function: $! must be the process that becomes nginx.
nsenter -t "$LEADER" -n nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' >"$work/nginx/out.log" 2>&1 &
BACKEND=$!
wait_for 10 "the backend" net curl -fsS http://127.0.0.1:9000/

# --- run ------------------------------------------------------------------------------------
step "systemctl enable --now gatehouse@public-gw gatehouse-sync"
if ! ct systemctl enable --now gatehouse@public-gw gatehouse-sync 2>&1 | sed 's/^/  /'; then
  journal gatehouse@public-gw
  journal gatehouse-sync
  fail "enable --now"
fi
for u in gatehouse@public-gw gatehouse-sync; do
  st=$(ct systemctl is-active "$u" || true)
  if [ "$st" != active ]; then
    journal "$u"
    fail "$u is $st"
  fi
  ok "$u is active"
done
ok "$(ct systemctl show -p Type -p NotifyAccess -p WatchdogUSec -p FileDescriptorStoreMax gatehouse@public-gw | tr '\n' ' ')"
get() { net curl -sS -o /dev/null -w '%{http_code} %header{x-release}' -H 'host: web.example.com' http://127.0.0.1/; }
r=$(get)
[ "$r" = "200 one" ] || fail "GET through the gateway: $r"
ok "GET http://web.example.com/ through gatehouse@public-gw on port 80: $r"
# The agent fetches /srv/config.git and publishes its own release over r1.
published() { [ "$(ct readlink /var/lib/gatehouse/releases/current)" != r1 ]; }
if ! (wait_for 60 "a release published by gatehouse-sync" published); then
  journal gatehouse-sync
  fail "gatehouse-sync published nothing"
fi
release=$(ct readlink /var/lib/gatehouse/releases/current)
r=$(get)
[ "$r" = "200 one" ] || fail "GET after the agent's release: $r"
ok "gatehouse-sync published release $release from Git; the group serves it: $r"
caps=$(ct sh -c 'grep -E "^Cap(Eff|Bnd)" /proc/$(systemctl show -p MainPID --value gatehouse@public-gw)/status' | tr '\n' ' ')
ok "capabilities of the main process: $caps"
[[ $caps =~ CapEff:[[:space:]]+0000000000000400 ]] || fail "effective capabilities are not exactly CAP_NET_BIND_SERVICE"
owner=$(ct sh -c 'stat -c %U /proc/$(systemctl show -p MainPID --value gatehouse@public-gw)')
[ "$owner" = gatehouse ] || fail "runs as $owner"
ok "runs as user $owner"
stored=$(ct sh -c 'systemctl show -p NFileDescriptorStore --value gatehouse@public-gw')
[ "${stored:-0}" -gt 0 ] || fail "no listening socket in systemd's file-descriptor store"
ok "sockets in systemd's file-descriptor store: $stored"

step "per-group resources: unit defaults, then a drop-in (checked as settings: this host does not enforce cgroup limits)"
res() { ct systemctl show -p MemoryMax -p TasksMax -p LimitNOFILE gatehouse@public-gw | sort | tr '\n' ' '; }
r=$(res)
[ "$r" = "LimitNOFILE=65536 MemoryMax=2147483648 TasksMax=512 " ] || fail "defaults: $r"
ok "defaults: $r"
ct sh -ec 'mkdir -p /etc/systemd/system/gatehouse@public-gw.service.d
  printf "[Service]\nMemoryMax=1G\nTasksMax=256\nLimitNOFILE=16384\n" \
    >/etc/systemd/system/gatehouse@public-gw.service.d/resources.conf
  systemctl daemon-reload'
r=$(res)
[ "$r" = "LimitNOFILE=16384 MemoryMax=1073741824 TasksMax=256 " ] || fail "drop-in: $r"
ok "after a drop-in: $r (the restarts below run with it)"

# --- reload ---------------------------------------------------------------------------------
step "systemctl reload gatehouse@public-gw sees a changed release"
pid1=$(ct systemctl show -p MainPID --value gatehouse@public-gw)
# Edited in place (releases are otherwise immutable) so that only the reload, not the
# watcher of `current`, can notice it.
ct sh -c "sed -i 's/x-release: one/x-release: two/' /var/lib/gatehouse/releases/$release/tenants/web/web.yaml"
ct systemctl reload gatehouse@public-gw
changed() { [ "$(get)" = "200 two" ]; }
wait_for 10 "the reloaded route" changed
pid=$(ct systemctl show -p MainPID --value gatehouse@public-gw)
[ "$pid" = "$pid1" ] || fail "reload restarted the process ($pid1 -> $pid)"
ok "after reload: $(get), same process $pid"

# --- upgrade and restarts under load --------------------------------------------------------
step "under load: upgrade to $(basename "$deb2"), then restart gatehouse@public-gw twice"
secs=${LOAD_SECONDS:-16}
# Two loads at once: kept-alive connections (requests in flight across the drain) and a new
# connection per request (connections arriving while the group restarts). wrk counts connect,
# read and write errors and non-2xx answers; it prints those lines only when they are not 0.
# (h2load is not used here: it does not count a refused connection as a failed request.)
load() {
  nsenter -t "$LEADER" -n wrk -t1 -c8 -d"${secs}s" --latency -H 'Host: web.example.com' "$@" \
    http://127.0.0.1/
}
load >"$work/wrk-keepalive.txt" 2>&1 &
LOAD=$!
load -H 'Connection: close' >"$work/wrk-close.txt" 2>&1 &
LOAD2=$!
at() { while [ $SECONDS -lt "$1" ]; do sleep 0.1; done; }
t0=$SECONDS
at $((t0 + 2))
ct env DEBIAN_FRONTEND=noninteractive dpkg -i "/packages/test/$(basename "$deb2")" >"$work/upgrade.txt" 2>&1 ||
  fail "upgrade: $(cat "$work/upgrade.txt")"
pid=$(ct systemctl show -p MainPID --value gatehouse@public-gw)
[ "$pid" = "$pid1" ] || fail "the upgrade restarted the group without being asked"
ok "upgraded to $(ct dpkg-query -W -f='${Version}' gatehouse); the group still runs the old process $pid"
for n in 1 2; do
  at $((t0 + 2 + 4 * n))
  started=$(date +%s%N)
  ct systemctl restart gatehouse@public-gw
  took=$((($(date +%s%N) - started) / 1000000))
  new=$(ct systemctl show -p MainPID --value gatehouse@public-gw)
  [ "$new" != "$pid" ] || fail "restart $n did not replace the process"
  ok "restart $n: process $pid -> $new, systemctl restart took ${took} ms"
  pid=$new
done
wait "$LOAD" || fail "wrk: $(cat "$work/wrk-keepalive.txt")"
wait "$LOAD2" || fail "wrk: $(cat "$work/wrk-close.txt")"
LOAD=""
LOAD2=""
for kind in keepalive close; do
  f=$work/wrk-$kind.txt
  n=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$f")
  read -r _ avg _ max _ < <(grep -E '^ +Latency ' "$f")
  p50=$(awk '$1 == "50%" {print $2}' "$f")
  p99=$(awk '$1 == "99%" {print $2}' "$f")
  printf '  %-10s %s requests; latency avg %s, p50 %s, p99 %s, max %s\n' "$kind:" "$n" \
    "$avg" "$p50" "$p99" "$max"
  if grep -E 'Socket errors|Non-2xx' "$f"; then
    fail "requests failed across the restarts ($kind)"
  fi
  [ "${n:-0}" -gt 1000 ] || fail "too few requests ($kind): ${n:-0}"
done
nofile=$(ct sh -c "grep 'Max open files' /proc/$pid/limits" | awk '{print $4}')
[ "$nofile" = 16384 ] || fail "the restarted group has LimitNOFILE $nofile, not the drop-in's 16384"
ok "the restarted group runs with the drop-in's limits (open files: $nofile)"
adopted=$(ct journalctl --no-pager -u gatehouse@public-gw -g 'inherited from the previous process' | grep -c . || true)
[ "$adopted" -ge 2 ] || fail "the restarted processes did not adopt the stored sockets"
ok "no refused connection, no failed request over an upgrade and 2 restarts; both new processes adopted the stored sockets"

# --- purge ----------------------------------------------------------------------------------
step "dpkg --purge gatehouse"
ct dpkg --purge gatehouse | sed 's/^/  /'
for u in gatehouse@public-gw gatehouse-sync; do
  st=$(ct systemctl is-active "$u" || true)
  [ "$st" != active ] || fail "$u still active after purge"
done
procs=$(ct sh -c 'for p in /proc/[0-9]*; do u=$(stat -c %U "$p" 2>/dev/null); [ "$u" = gatehouse ] && cat "$p/comm"; done; true')
[ -z "$procs" ] || fail "processes of user gatehouse still running: $procs"
ok "no process left"
snapshot >"$work/after.txt"
# Kept by policy or made by the test: the user database's backups and lock, the test's Git
# repository.
stray=$(comm -13 "$work/before.txt" "$work/after.txt" |
  grep -v -E '^(/srv/config\.git(/.*)?|/etc/(passwd|group|shadow|gshadow)-|/etc/\.pwd\.lock)$' || true)
[ -z "$stray" ] || fail "files left after purge: $stray"
ok "no file left outside dpkg's and systemd's own state (the user gatehouse stays, as Debian does)"

step "ok"
