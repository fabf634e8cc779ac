#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine, for CI and for trying the SLURM profile.
#
# Needs: Debian/Ubuntu, root, apt (only the first time). No systemd needed: the daemons are
# started directly and their pid files live in $CMIL_SLURM_DIR. Safe to run again: daemons that
# are up stay up; a changed slurm.conf is applied with `scontrol reconfigure`.
#
# No accounting database (no MariaDB, no slurmdbd): the profile in profiles/slurm polls job
# states with `squeue`, which sees a finished job for MinJobAge seconds (300 here, more than
# 3 x the profile's first status-check delay, as the executor plugin requires). `sacct`
# without slurmdbd has nothing to read, and the plugin would wait on it forever.
#
#   CMIL_SLURM_DIR        state, spool, logs and pid files  (default: $TMPDIR/cmil-bench-slurm)
#   CMIL_SLURM_CLUSTER    ClusterName                       (default: cmil)
#   CMIL_SLURM_PARTITION  the one partition                  (default: debug)
#
# Exit status: 0 ready (node idle), 3 not root / no apt, 4 packages, 5 a daemon did not come up.
# Stop everything again with scripts/slurm/stop.sh.
set -euo pipefail

DIR=${CMIL_SLURM_DIR:-${TMPDIR:-/tmp}/cmil-bench-slurm}
CLUSTER=${CMIL_SLURM_CLUSTER:-cmil}
PARTITION=${CMIL_SLURM_PARTITION:-debug}
CONF=/etc/slurm/slurm.conf
T0=$SECONDS

say() { printf '[slurm/start %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { local code=$1; shift; printf 'scripts/slurm/start.sh: %s\n' "$*" >&2; exit "$code"; }

# until TIMEOUT_S CMD...: retry CMD every 0.2 s until it succeeds or TIMEOUT_S passes.
until_ok() {
  local deadline=$((SECONDS + $1)); shift
  while ! "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" -eq 0 ] || die 3 "must run as root (it installs packages and starts daemons)"

# ---------------------------------------------------------------------------------- packages
need=()
for pkg in munge slurmctld slurmd slurm-client; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
    need+=("$pkg")
  fi
done
if [ "${#need[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die 3 "no apt-get here to install: ${need[*]}"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting the daemons themselves (no init system
  # to talk to in a container); this script starts them below. An existing policy is kept.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1
  fi
  apt_opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -q)
  ok=1
  apt-get "${apt_opts[@]}" update >/dev/null || ok=0
  [ "$ok" = 1 ] && { apt-get "${apt_opts[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null || ok=0; }
  [ "$own_policy" = 1 ] && rm -f "$policy"
  [ "$ok" = 1 ] || die 4 "apt-get could not install ${need[*]}"
fi

mkdir -p "$DIR/log" "$DIR/state" "$DIR/spool"

# The controller address must resolve; this machine's short name may be missing from /etc/hosts.
NODE=$(hostname -s)
if ! getent hosts "$NODE" >/dev/null; then
  echo "127.0.0.1 $NODE" >>/etc/hosts
fi

# -------------------------------------------------------------------------------------- munge
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    mungekey --create --keyfile="$key" 2>/dev/null \
      || head -c 1024 /dev/urandom >"$key"
  fi
  chown munge:munge "$key"
  chmod 0400 "$key"
  install -d -m 0755 -o munge -g munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  until_ok 10 sh -c 'munge -n | unmunge' || die 5 "munged did not come up"
  cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
  say "munged is up"
fi

# --------------------------------------------------------------------------------- slurm.conf
# The node's CPUs, sockets, cores and threads exactly as slurmd sees them; memory: 80 % of RAM.
hw=$(slurmd -C | head -n 1)
node_hw=""
for field in $hw; do
  case "$field" in
    NodeName=* | RealMemory=* | UpTime=*) ;;
    *) node_hw+=" $field" ;;
  esac
done
mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)

new_conf=$(mktemp)
cat >"$new_conf" <<CONF
# Written by cmil-bench scripts/slurm/start.sh (one node, no accounting database).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroups in a container: track processes by parent id, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue this long (the profile's status polling relies on it).
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1$node_hw RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1000
CONF
mkdir -p /etc/slurm
conf_changed=1
if [ -f "$CONF" ] && cmp -s "$new_conf" "$CONF"; then conf_changed=0; fi
if [ "$conf_changed" = 1 ]; then
  cat "$new_conf" >"$CONF"
  chmod 0644 "$CONF"
fi
rm -f "$new_conf"

# -------------------------------------------------------------------------------- daemons
if alive "$DIR/slurmctld.pid"; then
  if [ "$conf_changed" = 1 ]; then
    scontrol reconfigure
    say "slurm.conf changed: reconfigured"
  fi
else
  slurmctld
  until_ok 20 scontrol ping || die 5 "slurmctld did not answer (see $DIR/log/slurmctld.log)"
  say "slurmctld is up (pid $(cat "$DIR/slurmctld.pid"))"
fi
if ! alive "$DIR/slurmd.pid"; then
  slurmd
  until_ok 10 test -s "$DIR/slurmd.pid" || die 5 "slurmd did not start (see $DIR/log/slurmd.log)"
  say "slurmd is up (pid $(cat "$DIR/slurmd.pid"))"
fi

node_idle() { [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]; }
if ! until_ok 30 node_idle; then
  # A node left down or drained by an earlier run comes back with an explicit resume.
  scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  until_ok 30 node_idle || {
    sinfo -N -l >&2 || true
    die 5 "node $NODE did not become idle (see $DIR/log/slurmd.log)"
  }
fi
sinfo -N -o '%N %P %T cpus=%c mem=%m'
say "SLURM is ready (state in $DIR)"
