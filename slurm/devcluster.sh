#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, for development and CI.
#   slurm/devcluster.sh up      install (Debian: slurmctld slurmd munge), configure and start; idempotent
#   slurm/devcluster.sh down    stop the daemons
#   slurm/devcluster.sh status  print the node's state
#   slurm/devcluster.sh idle    cancel every job, return a drained node to service, wait until it is idle
# No accounting daemon: submitit works without sacct (it warns). Needs root (apt, daemons).
set -euo pipefail

STATE=${SCALING_SLURM_STATE:-/var/tmp/scaling-slurm}
CONF_DIR=/etc/slurm
HOST=$(hostname -s)

log() { echo "devcluster: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  log "installing slurmctld slurmd munge slurm-client"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd munge slurm-client >/dev/null
}

write_config() {
  local cpus mem
  # nproc honours OMP_NUM_THREADS, which a caller may have set to 1 (the test suite does): the node would get one
  # CPU and a job of two tasks would pend forever.
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p "$STATE"/ctld "$STATE"/d "$CONF_DIR"
  cat > "$CONF_DIR/slurm.conf.new" <<EOF
# Written by scaling's slurm/devcluster.sh: one node, this machine.
ClusterName=scaling-dev
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
UnkillableStepTimeout=120
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=dev Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  if cmp -s "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"; then
    rm "$CONF_DIR/slurm.conf.new"
  else  # daemons running on another configuration would keep it: restart them on this one
    mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
    if slurm_running; then log "configuration changed: restarting"; stop_slurm; fi
  fi
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
}

up() {
  install_packages
  write_config
  start_munge
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|mixed|allocated) log "up: node $HOST is $state"; return 0 ;;
      down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  log "slurm did not become ready; see $STATE/slurmctld.log and $STATE/slurmd.log"
  return 1
}

slurm_running() { pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; }

stop_slurm() {
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do slurm_running || return 0; sleep 0.5; done
  pkill -9 -x slurmd 2>/dev/null || true
  pkill -9 -x slurmctld 2>/dev/null || true
  while slurm_running; do sleep 0.2; done
}

down() {
  stop_slurm
  pkill -x munged 2>/dev/null || true
  log "down"
}

# Between tests: a job one test leaves (a killed driver's trial, a requeued job) would hold the node's CPUs into
# the next, and a job that would not die in time drains the node; either leaves the next test's jobs pending.
idle() {
  scancel --partition dev >/dev/null 2>&1 || true
  for _ in $(seq 1 120); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
      down*|drain*|fail*)
        log "idle: node $HOST was $state ($(sinfo -h -N -o '%E' | head -n1)); resuming it"
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    if [ -z "$(squeue -h -p dev -o '%i')" ] && [ "$state" = idle ]; then return 0; fi
    sleep 1
  done
  log "idle: jobs still queued after 120 s: $(squeue -h -p dev -o '%i %T %r' | tr '\n' ';')"
  return 1
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) sinfo -N -l ;;
  idle) idle ;;
  *) echo "usage: $0 up|down|status|idle" >&2; exit 2 ;;
esac
