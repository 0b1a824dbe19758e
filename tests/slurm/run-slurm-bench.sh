#!/usr/bin/env bash
# run-slurm-bench.sh: the Slurm side of the cron benchmark (tests/src/bin/cron-bench.rs).
# How fast one Slurm node on this machine runs JOBS (10,000) `true` batch jobs,
# from the first submission until every one has finished.
#
#   sudo tests/slurm/run-slurm-bench.sh            # both modes, 10,000 jobs each
#   JOBS=2000 MODES=array tests/slurm/run-slurm-bench.sh
#
# Needs root and Debian's Slurm (`apt-get install -y slurm-wlm`, which brings munge).
# Everything it starts — its own munged on a private socket and key, slurmctld,
# slurmd — lives in a scratch directory, listens on 127.0.0.1 and is stopped again
# on exit; nothing in /etc is changed and no system service is touched.
#
# Modes (MODES, default "separate array"), each on freshly started daemons:
# - separate: JOBS separate `sbatch --wrap true` calls, SUBMITTERS (8) at a time.
# - array:    one `sbatch --array=1-JOBS --wrap true`: all JOBS submitted, and
#             eligible, at the same instant — Slurm's own form of "10,000 jobs due
#             at once", and its fastest way in.
# Each prints: submission time, first submission → all finished (wall clock, this
# script's clock), jobs/s, and per job submit → start and submit → end p50/p99/max
# from the job-completion log (Slurm records those to the second only).
#
# Completions are counted from slurmctld's job-completion log (jobcomp/filetxt: one
# line per finished job, written by slurmctld itself), polled every POLL (0.1) s:
# no squeue/sacct RPCs compete with the jobs for slurmctld's locks.
#
# Settings (environment): JOBS, MODES, SUBMITTERS, TIMEOUT (s, per mode),
# SCHEDULER_TYPE (sched/builtin), SCHED_PARAMS (below), OVERSUBSCRIBE (FORCE:64:
# the partition lets 64 jobs share each real core, as cron's simulated agents do not
# limit concurrency either; NO gives one job per core, which on 2 cores measures the
# core count — 2 jobs/s — not Slurm, see README.md), CTLD_PORT/SLURMD_PORT
# (16817/16818: not Slurm's defaults, so an
# installed Slurm is left alone), KEEP=1 keeps the scratch directory.
#
# SCHED_PARAMS default, each from slurm.conf(5) and SchedMD's high-throughput guide:
# - batch_sched_delay=0: batch jobs are not held back to batch up their launches.
# - default_queue_depth=1000: each event-driven pass considers up to 1000 pending
#   jobs instead of 100 — with one node only as many as there are free cores can
#   start, so this only matters after the node frees many cores at once.
# - max_rpc_cnt=150: the scheduler defers while more than 150 RPCs wait, so a burst
#   of submissions is accepted first instead of timing out.
# - sched_interval=1: the periodic full pass every 1 s instead of 60 s.
# `defer` (no scheduling attempt at submit time) made no measurable difference here
# (README.md), so submissions may start jobs at once.

set -euo pipefail

JOBS=${JOBS:-10000}
MODES=${MODES:-separate array}
SUBMITTERS=${SUBMITTERS:-8}
TIMEOUT=${TIMEOUT:-1800}
POLL=${POLL:-0.1}
SCHEDULER_TYPE=${SCHEDULER_TYPE:-sched/builtin}
SCHED_PARAMS=${SCHED_PARAMS:-batch_sched_delay=0,default_queue_depth=1000,max_rpc_cnt=150,sched_interval=1}
OVERSUBSCRIBE=${OVERSUBSCRIBE:-FORCE:64}
CTLD_PORT=${CTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "run-slurm-bench: must run as root (slurmd launches jobs as their users)" >&2
    exit 2
fi
for tool in munged mungekey slurmctld slurmd sbatch scontrol sinfo python3; do
    command -v "$tool" >/dev/null || {
        echo "run-slurm-bench: $tool not found: apt-get install -y slurm-wlm" >&2
        exit 2
    }
done

DIR=$(mktemp -d /tmp/slurm-bench.XXXXXX)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
NODE=$(hostname -s)
PIDS=()
MUNGE_PID=""

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

stop_all() {
    # Our own Slurm daemons only, newest first, by the pids we recorded.
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        for _ in $(seq 1 100); do
            kill -0 "${PIDS[i]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${PIDS[i]}" 2>/dev/null || true
        wait "${PIDS[i]}" 2>/dev/null || true
    done
    PIDS=()
}

cleanup() {
    stop_all
    if [ -n "$MUNGE_PID" ]; then
        kill -TERM "$MUNGE_PID" 2>/dev/null || true
        wait "$MUNGE_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "run-slurm-bench: kept $DIR"
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The node as slurmd sees it (real CPUs, sockets, cores, memory).
NODE_HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')

write_conf() {
    sed -e "s|@DIR@|$DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@HOSTNAME@|$(hostname)|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@MAX_JOB_COUNT@|$((JOBS * 2 > 20000 ? JOBS * 2 : 20000))|g" \
        -e "s|@MAX_ARRAY_SIZE@|$((JOBS + 1))|g" \
        -e "s|@SCHEDULER_TYPE@|$SCHEDULER_TYPE|g" -e "s|@SCHED_PARAMS@|$SCHED_PARAMS|g" \
        -e "s|@NODE_HW@|$NODE_HW|g" -e "s|@OVERSUBSCRIBE@|$OVERSUBSCRIBE|g" \
        "$HERE/slurm.conf.in" >"$CONF"
}

start_munge() {
    mkdir -p "$DIR/munge"
    chmod 700 "$DIR/munge"
    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
    # --force: munged refuses to run as root, or with a key outside /etc/munge, without it.
    munged --foreground --force --socket="$DIR/munge/munge.socket" \
        --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        --num-threads=4 >"$DIR/munge/munged.out" 2>&1 &
    MUNGE_PID=$!
    for _ in $(seq 1 100); do
        [ -S "$DIR/munge/munge.socket" ] && return 0
        sleep 0.1
    done
    echo "run-slurm-bench: munged did not start (see $DIR/munge/munged.log)" >&2
    return 1
}

start_slurm() {
    rm -rf "$DIR/ctld" "$DIR/slurmd" "$DIR/jobcomp.txt"
    mkdir -p "$DIR/ctld" "$DIR/slurmd" "$DIR/work"
    : >"$DIR/jobcomp.txt"
    # -D: in the foreground, so the pid is ours to stop; -c: no state from a previous run.
    slurmctld -D -c -f "$CONF" >>"$DIR/slurmctld.out" 2>&1 &
    PIDS+=($!)
    slurmd -D -f "$CONF" -N "$NODE" >>"$DIR/slurmd.out" 2>&1 &
    PIDS+=($!)
    local state=""
    for _ in $(seq 1 300); do
        state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        [ "$state" = idle ] && return 0
        sleep 0.1
    done
    echo "run-slurm-bench: node not idle after 30 s (state '$state'); logs in $DIR" >&2
    KEEP=1
    return 1
}

# Lines in the completion log: finished jobs (any outcome).
finished() { wc -l <"$DIR/jobcomp.txt"; }

wait_all_finished() {
    local start=$1 count
    while :; do
        count=$(finished)
        [ "$count" -ge "$JOBS" ] && return 0
        if [ "$(elapsed "$start" "$(now)" | cut -d. -f1)" -ge "$TIMEOUT" ]; then
            echo "run-slurm-bench: only $count of $JOBS finished after ${TIMEOUT}s" >&2
            return 1
        fi
        sleep "$POLL"
    done
}

# Per-job figures from the completion log: submit → start and submit → end
# (whole seconds: that is the log's resolution), and how many did not complete.
job_stats() {
    python3 - "$DIR/jobcomp.txt" <<'PY'
import re, sys
from datetime import datetime
def t(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S")
starts, ends, bad = [], [], 0
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=(\S*)", line))
    if f.get("JobState") != "COMPLETED":
        bad += 1
    try:
        sub = t(f["SubmitTime"])
        starts.append((t(f["StartTime"]) - sub).total_seconds())
        ends.append((t(f["EndTime"]) - sub).total_seconds())
    except (KeyError, ValueError):
        bad += 1
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * p))] if v else float("nan")
print(f"  per job (1 s resolution): submit→start p50 {pct(starts, .5):.0f} s, "
      f"p99 {pct(starts, .99):.0f} s, max {pct(starts, 1):.0f} s; "
      f"submit→end p50 {pct(ends, .5):.0f} s, p99 {pct(ends, .99):.0f} s, max {pct(ends, 1):.0f} s; "
      f"not COMPLETED: {bad}")
PY
}

run_mode() {
    local mode=$1 start submitted done_at ok
    write_conf
    start_slurm
    cd "$DIR/work"
    echo "mode $mode: $JOBS jobs"
    start=$(now)
    case $mode in
    separate)
        # sbatch retries by itself while slurmctld is busy; a failed call is counted.
        ok=$(seq 1 "$JOBS" | xargs -P "$SUBMITTERS" -I{} \
            sbatch --parsable --output=/dev/null --job-name=j{} --wrap true |
            grep -c . || true)
        ;;
    array)
        ok=$(sbatch --parsable --output=/dev/null --job-name=arr \
            --array="1-$JOBS" --wrap true | grep -c . || true)
        [ "$ok" = 1 ] && ok=$JOBS
        ;;
    *)
        echo "run-slurm-bench: unknown mode $mode" >&2
        return 2
        ;;
    esac
    submitted=$(now)
    if [ "$ok" -ne "$JOBS" ]; then
        echo "run-slurm-bench: only $ok of $JOBS submissions accepted" >&2
        return 1
    fi
    wait_all_finished "$start"
    done_at=$(now)
    local total
    total=$(elapsed "$start" "$done_at")
    echo "  submitted in $(elapsed "$start" "$submitted") s; first submission → all $JOBS finished: $total s;" \
        "$(awk -v n="$JOBS" -v t="$total" 'BEGIN { printf "%.0f", n / t }') jobs/s"
    job_stats
    cd "$DIR"
    stop_all
}

write_conf
echo "run-slurm-bench: Slurm $(slurmctld -V | awk '{print $2}'), node $NODE: $NODE_HW"
echo "  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
echo "  SchedulerType=$SCHEDULER_TYPE SchedulerParameters=$SCHED_PARAMS OverSubscribe=$OVERSUBSCRIBE"
start_munge
for mode in $MODES; do
    run_mode "$mode"
done
