#!/usr/bin/env bash
# A one-node SLURM cluster with accounting on this machine, for trying `hydra/launcher=slurm` and
# for the SLURM tests (tests/test_slurm.py). Debian/Ubuntu, as root.
#
#   scripts/slurm_local.sh up DIR     # prints the line to run: export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm_local.sh down DIR   # stops exactly the daemons `up DIR` started, and waits
#
# `up` installs the Debian packages when they are missing (apt-get), then starts munged, a
# MariaDB server, slurmdbd (accounting: without it `sacct` fails and submitit cannot see a job
# that the scheduler killed), slurmctld and slurmd. Config, state, logs, the database and pid
# files all live under DIR; nothing is installed as a service. The daemons listen on 127.0.0.1
# only, on the ports SLURM_LOCAL_PORT .. SLURM_LOCAL_PORT+3 (default 6817: slurmctld, slurmd,
# slurmdbd, MariaDB). A one-node cluster needs no cgroups: processes are tracked through /proc.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
PORT=${SLURM_LOCAL_PORT:-6817}
CLUSTER=mlplab
# Order of `up`; `down` stops them in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() {
    echo "slurm_local.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: $0 up|down DIR"
}

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "the packages ${missing[*]} are missing and installing them needs root"
    command -v apt-get >/dev/null || die "the packages ${missing[*]} are missing and there is no apt-get"
    echo "slurm_local.sh: installing ${missing[*]} (log: $DIR/log/apt.log)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update once, then install.
    if ! apt-get install -y -q "${PACKAGES[@]}" >"$DIR/log/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/log/apt.log" 2>&1 &&
            apt-get install -y -q "${PACKAGES[@]}" >>"$DIR/log/apt.log" 2>&1 ||
            die "apt-get install ${PACKAGES[*]} failed; see $DIR/log/apt.log"
    fi
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds.
wait_for() {
    local limit=$1 what=$2
    local deadline=$((SECONDS + limit))
    shift 2
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within $limit s; logs in $DIR/log"
}

# alive NAME: the pid in DIR/pid/NAME.pid runs a process called NAME (not a recycled pid, not
# a zombie waiting to be reaped).
alive() {
    local pid stat
    pid=$(cat "$DIR/pid/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

write_configs() {
    local host node
    host=$(hostname -s)
    # This machine as slurmd sees it (CPUs, sockets, cores, memory), reached on 127.0.0.1.
    node=$(slurmd -C | head -n 1)
    node=${node%%UpTime=*}
    cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
MpiDefault=none
# No cgroups on a one-node test cluster: processes are tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# A job asking for more than the partition has is refused at submission instead of pending forever.
EnforcePartLimits=ALL
ReturnToService=2
MailProg=/bin/true
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or out of time.
KillWait=5
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/pid/slurmctld.pid
SlurmdPidFile=$DIR/pid/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# The munge socket for talking to slurmdbd (SLURM's name for it).
AccountingStoragePass=$DIR/munge/munge.socket.2
JobCompType=jobcomp/none
${node% } NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
# Written by scripts/slurm_local.sh: accounting for the one-node cluster, in MariaDB under DIR.
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/pid/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf" # slurmdbd refuses a config others can read
}

start_munged() {
    mkdir -p "$DIR/munge"
    chmod 711 "$DIR/munge" # clients reach the socket; only root reads the key
    [ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
    munged --force --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/pid/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    wait_for 10 munged alive munged
}

start_mariadbd() {
    local socket="$DIR/mysql/mysqld.sock"
    if [ ! -d "$DIR/mysql/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root \
            --auth-root-authentication-method=normal --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
    fi
    # mariadbd stays in the foreground: run it in the background, detached from this shell.
    setsid mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --socket="$socket" \
        --bind-address=127.0.0.1 --port=$((PORT + 3)) --pid-file="$DIR/pid/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
    wait_for 120 "MariaDB" timeout 10 mariadb-admin --no-defaults --socket="$socket" -uroot ping
    wait_for 5 "MariaDB's pid file" alive mariadbd
}

start_slurmdbd() {
    slurmdbd
    wait_for 60 slurmdbd timeout 10 sacctmgr --immediate show cluster
    sacctmgr --immediate --quiet add cluster "$CLUSTER" >/dev/null 2>&1 || true # already there
}

start_slurmctld() {
    slurmctld
    wait_for 60 slurmctld timeout 10 scontrol ping
}

start_slurmd() {
    slurmd
    wait_for 60 "the node" node_idle
}

node_idle() {
    [ "$(timeout 10 sinfo --noheader --format=%T | head -n 1)" = idle ]
}

up() {
    mkdir -p "$DIR/log" "$DIR/pid" "$DIR/state" "$DIR/spool"
    DIR=$(cd "$DIR" && pwd)
    install_packages
    local daemon
    for daemon in "${DAEMONS[@]}"; do
        alive "$daemon" && die "$daemon of $DIR is already running; run: $0 down $DIR"
    done
    write_configs
    export SLURM_CONF="$DIR/slurm.conf"
    for daemon in "${DAEMONS[@]}"; do
        "start_$daemon"
    done
    echo "export SLURM_CONF=$SLURM_CONF"
}

# stop NAME: SIGTERM to the daemon in DIR/pid/NAME.pid, then wait until it is gone (SIGKILL
# after 30 s).
stop() {
    alive "$1" || return 0
    local pid tries
    pid=$(cat "$DIR/pid/$1.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((tries = 0; tries < 150; tries++)); do
        alive "$1" || return 0
        sleep 0.2
    done
    echo "slurm_local.sh: $1 (pid $pid) ignored SIGTERM for 30 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$1"; do sleep 0.2; done
}

down() {
    [ -d "$DIR" ] || die "no cluster folder $DIR"
    DIR=$(cd "$DIR" && pwd)
    export SLURM_CONF="$DIR/slurm.conf"
    # Jobs first: their processes (slurmstepd and the job's own) outlive slurmd otherwise.
    if alive slurmctld; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        local tries
        for ((tries = 0; tries < 100; tries++)); do
            [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop "${DAEMONS[i]}"
    done
}

[ $# -eq 2 ] || usage
DIR=$2
case $1 in
up) up ;;
down) down ;;
*) usage ;;
esac
