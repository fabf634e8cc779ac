#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm/start.sh brought up.
#
# Only the daemons whose pid files start.sh left in $CMIL_SLURM_DIR are stopped (munged only if
# start.sh started it). Jobs still on the cluster are cancelled first. Safe to run again.
set -uo pipefail

DIR=${CMIL_SLURM_DIR:-${TMPDIR:-/tmp}/cmil-bench-slurm}

# stop_pid PIDFILE NAME: SIGTERM, up to 10 s grace, then SIGKILL.
stop_pid() {
  local file=$1 name=$2 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      echo "[slurm/stop] killed $name (pid $pid)"
    else
      echo "[slurm/stop] stopped $name (pid $pid)"
    fi
  fi
  rm -f "$file"
}

if [ -s "$DIR/slurmctld.pid" ] && command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
  # shellcheck disable=SC2046  # one argument per job id
  ids=$(squeue -h -o %i 2>/dev/null)
  [ -n "$ids" ] && scancel --quiet $ids 2>/dev/null
  sleep 0.5
fi
stop_pid "$DIR/slurmd.pid" slurmd
stop_pid "$DIR/slurmctld.pid" slurmctld
stop_pid "$DIR/munged.pid" munged
exit 0
