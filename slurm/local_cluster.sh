#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests and for trying `walking-noise submit` without a cluster.
#
#   slurm/local_cluster.sh start    install Debian's Slurm + munge if missing, write the config, start the daemons,
#                                   wait (bounded) until the node is idle
#   slurm/local_cluster.sh stop     stop the daemons this script started (by their pid files)
#   slurm/local_cluster.sh status   say what runs, where the config and the logs are
#
# Everything (slurm.conf, controller state, slurmd spool, logs, pid files) lives under $WN_SLURM_DIR
# (default /tmp/wn-slurm). Clients (sbatch, squeue, sinfo) find the config through /etc/slurm/slurm.conf, which
# this script links to $WN_SLURM_DIR/slurm.conf when no other Slurm config is there; otherwise it says which
# `export SLURM_CONF=...` to use. Needs root (apt-get, munged as user munge, slurmd as root).
#
# Settings that matter (Slurm 22.05, Debian 12): munge is required for authentication; proctrack/linuxproc and
# task/none because there is no systemd/cgroup setup in containers; no accounting daemon, so jobcomp/filetxt keeps a
# permanent line per finished job (there is no sacct); the node has exactly the CPUs of this machine, so a job
# asking for more pends forever - bound every wait.
#
# Environment: WN_SLURM_DIR (folder), WN_SLURM_START_TIMEOUT (seconds to wait for an idle node, default 60),
# WN_SLURMCTLD_PORT / WN_SLURMD_PORT (default 6817 / 6818).
set -euo pipefail

DIR="${WN_SLURM_DIR:-/tmp/wn-slurm}"
CONF="$DIR/slurm.conf"
LOG="$DIR/log"
RUN="$DIR/run"
STATE="$DIR/state"
SPOOL="$DIR/spool"
TIMEOUT="${WN_SLURM_START_TIMEOUT:-60}"
CTLD_PORT="${WN_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${WN_SLURMD_PORT:-6818}"
MUNGE_PID=/run/munge/munged.pid
MUNGE_OURS="$RUN/munged.started-here"
SYSTEM_CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"

say() { echo "local_cluster: $*"; }
die() { echo "local_cluster: error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid in the file is a running process
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

need_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts munged and slurmd); try: sudo $0 $*"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurmctld is missing and there is no apt-get to install it; install Slurm and munge by hand"
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    local pkgs=(slurmctld slurmd slurm-client munge)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$LOG/apt.log" 2>&1; then
        say "install failed; running apt-get update and trying again (log: $LOG/apt.log)"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$LOG/apt.log" 2>&1 \
            || die "apt-get install ${pkgs[*]} failed; see $LOG/apt.log"
    fi
    say "installed $(slurmctld -V)"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged is running"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$MUNGE_OURS"
    local i
    for i in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && { say "started munged (pid $(cat "$MUNGE_PID" 2>/dev/null))"; return; }
        sleep 0.1
    done
    die "munged does not answer; see /var/log/munge/munged.log"
}

write_conf() {
    local cpus mem
    cpus="$(nproc)"
    # RealMemory as slurmd itself measures it, so the node is never drained for "low RealMemory".
    mem="$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
    mem="${mem:-1000}"
    cat >"$CONF.tmp" <<EOF
# Written by slurm/local_cluster.sh: a single-node cluster on $HOST for walking-noise tests.
ClusterName=wnlocal
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
MailProg=/bin/true
ReturnToService=2
MaxArraySize=10001
KillWait=5
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

link_system_conf() {
    # Clients read /etc/slurm/slurm.conf unless SLURM_CONF says otherwise.
    if [[ -L "$SYSTEM_CONF" || ! -e "$SYSTEM_CONF" ]]; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
        say "linked $SYSTEM_CONF -> $CONF (sbatch, squeue, sinfo use it)"
    elif ! cmp -s "$SYSTEM_CONF" "$CONF"; then
        say "$SYSTEM_CONF is another cluster's config; left alone. Point the clients here with:"
        say "  export SLURM_CONF=$CONF"
    fi
}

node_state() {
    SLURM_CONF="$CONF" timeout 10 sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n1 | tr -d '*~#!%$@^-'
}

cmd_start() {
    need_root start
    mkdir -p "$DIR" "$LOG" "$RUN" "$STATE" "$SPOOL"
    install_packages
    start_munge
    if alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid"; then
        say "slurmctld (pid $(cat "$RUN/slurmctld.pid")) and slurmd (pid $(cat "$RUN/slurmd.pid")) already running"
    else
        if ! alive "$RUN/slurmctld.pid" && ! alive "$RUN/slurmd.pid"; then
            write_conf
            say "wrote $CONF ($(nproc) CPUs)"
        fi
        link_system_conf
        if ! alive "$RUN/slurmctld.pid"; then
            slurmctld -f "$CONF" || die "slurmctld did not start; see $LOG/slurmctld.log"
            say "started slurmctld"
        fi
        if ! alive "$RUN/slurmd.pid"; then
            slurmd -f "$CONF" || die "slurmd did not start; see $LOG/slurmd.log"
            say "started slurmd"
        fi
    fi
    link_system_conf >/dev/null
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state="$(node_state || true)"
        case "$state" in
            idle|mix|alloc|comp)
                say "node $HOST is $state after ${SECONDS}s"
                print_where
                return 0 ;;
            down|drain|drng|fail)
                SLURM_CONF="$CONF" scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node $HOST is not idle after ${TIMEOUT}s (state: '${state:-no answer}'); see $LOG/slurmctld.log and $LOG/slurmd.log"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
    local name="$1" pidfile="$2" pid i
    if ! alive "$pidfile"; then
        say "$name is not running"
        rm -f "$pidfile"
        return
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { say "stopped $name (pid $pid)"; rm -f "$pidfile"; return; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    say "killed $name (pid $pid): it did not stop within 10 s"
}

cmd_stop() {
    need_root stop
    stop_daemon slurmd "$RUN/slurmd.pid"
    stop_daemon slurmctld "$RUN/slurmctld.pid"
    if [[ -e "$MUNGE_OURS" ]]; then
        stop_daemon munged "$MUNGE_PID"
        rm -f "$MUNGE_OURS"
    else
        say "munged was not started by this script; left running"
    fi
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
        say "removed the link $SYSTEM_CONF"
    fi
}

print_where() {
    say "config: $CONF"
    say "logs:   $LOG/slurmctld.log $LOG/slurmd.log; finished jobs: $LOG/jobcomp.txt"
    say "state:  $STATE (controller), $SPOOL (slurmd)"
}

cmd_status() {
    local rc=0 name
    for name in slurmctld slurmd; do
        if alive "$RUN/$name.pid"; then say "$name running (pid $(cat "$RUN/$name.pid"))"; else say "$name not running"; rc=1; fi
    done
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then say "munged running"; else say "munged not running"; rc=1; fi
    if ((rc == 0)); then
        say "node $HOST: $(node_state || echo 'no answer')"
        SLURM_CONF="$CONF" timeout 10 squeue -h -o '  job %i %j %T %M' 2>/dev/null || true
    fi
    print_where
    return "$rc"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status   (folder: \$WN_SLURM_DIR, now $DIR)" >&2; exit 2 ;;
esac
