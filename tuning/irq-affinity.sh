#!/usr/bin/env bash
# Lists a NIC's queue IRQs and pins them to the cores ringlb runs on, so that a packet's
# interrupt, softirq and the ringlb core that reads its socket share one CPU and its cache.
# Why and when: tuning/README.md, "NIC queues and IRQ affinity".
#
# Usage: tuning/irq-affinity.sh IFACE                    list queue IRQs and their CPUs
#        tuning/irq-affinity.sh [--dry-run] IFACE CPUS   pin queue N to the (N mod len)th CPU
#
# PROC_ROOT and SYS_ROOT (default /proc and /sys) point it at a copy of those trees for tests.
set -euo pipefail

PROG="irq-affinity.sh"
PROC_ROOT=${PROC_ROOT:-/proc}
SYS_ROOT=${SYS_ROOT:-/sys}

usage() {
    cat <<'EOF'
Usage: tuning/irq-affinity.sh IFACE
       tuning/irq-affinity.sh [--dry-run] IFACE CPUS

With IFACE only: list the IRQs of IFACE's queues, their queue number and the CPUs they may run
on (smp_affinity_list) and do run on (effective_affinity_list).

With CPUS (a list such as 0-3 or 0,2,4,6, normally ringlb's [runtime] cpus): pin the IRQ of
queue N to the (N mod count)th CPU of the list, so paired rx/tx IRQs of one queue share a CPU.
Prints each change as old -> new. Stop irqbalance first, or it moves them back.

  --dry-run   print what would change, write nothing (no root needed)
  -h, --help  this text

Queue count: match it to the number of ringlb workers first, e.g. `ethtool -L IFACE combined 4`.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

dry_run=0
args=()
while (($# > 0)); do
    case $1 in
        --dry-run) dry_run=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            exit 2
            ;;
        *) args+=("$1") ;;
    esac
    shift
done
((${#args[@]} >= 1 && ${#args[@]} <= 2)) || {
    usage >&2
    exit 2
}
iface=${args[0]}
cpus_arg=${args[1]:-}

[[ -e $SYS_ROOT/class/net/$iface ]] || die "no network interface '$iface' (see: ip link)"

# Expands a CPU list ("0-2,5") to one CPU per line.
expand_cpus() {
    local part lo hi
    local -a parts
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=${BASH_REMATCH[1]}
            hi=${BASH_REMATCH[2]}
            ((lo <= hi)) || die "bad CPU range '$part'"
            seq "$lo" "$hi"
        elif [[ $part =~ ^[0-9]+$ ]]; then
            echo "$part"
        else
            die "bad CPU list '$1' (expected e.g. 0-3 or 0,2,4)"
        fi
    done
}

# The IRQ numbers of the device behind $iface: its MSI vectors (on the device, or on its PCI
# parent for virtio), else the /proc/interrupts lines that name the interface.
device_irqs() {
    local dev
    dev=$SYS_ROOT/class/net/$iface/device
    if [[ -d $dev/msi_irqs ]]; then
        ls "$dev/msi_irqs"
    elif [[ -d $dev/../msi_irqs ]]; then
        ls "$dev/../msi_irqs"
    else
        awk -v ifc="$iface" '$NF ~ ("^" ifc "([-_.@]|$)") { sub(":", "", $1); print $1 }' \
            "$PROC_ROOT/interrupts"
    fi
}

# "IRQ QUEUE NAME" for each queue IRQ, in /proc/interrupts order. Control vectors (config,
# async events, mailboxes) are left out; the queue is the last number in the name.
queue_irqs() {
    local -A mine=()
    local irq
    while read -r irq; do
        mine[$irq]=1
    done < <(device_irqs)
    ((${#mine[@]} > 0)) || return 0
    local line name queue
    while read -r line; do
        irq=${line%%:*}
        irq=${irq// /}
        [[ -n ${mine[$irq]:-} ]] || continue
        name=${line##* }
        name=${name%%@*}
        case $name in
            *config* | *ctrl* | *async* | *event* | *misc* | *mbx* | *adminq* | *-lsc*) continue ;;
        esac
        queue=
        [[ $name =~ ([0-9]+)[^0-9]*$ ]] && queue=${BASH_REMATCH[1]}
        echo "$irq ${queue:--} $name"
    done < <(grep -E '^ *[0-9]+:' "$PROC_ROOT/interrupts")
}

read_list() {
    if [[ -r $1 ]]; then
        tr -d '\n' <"$1"
    else
        echo "?"
    fi
}

mapfile -t irqs < <(queue_irqs)
((${#irqs[@]} > 0)) || die "found no queue IRQs for $iface (a virtual device such as veth or lo has none)"

if [[ -z $cpus_arg ]]; then
    printf '%-6s %-6s %-32s %-12s %s\n' IRQ QUEUE NAME AFFINITY EFFECTIVE
    for entry in "${irqs[@]}"; do
        read -r irq queue name <<<"$entry"
        printf '%-6s %-6s %-32s %-12s %s\n' "$irq" "$queue" "$name" \
            "$(read_list "$PROC_ROOT/irq/$irq/smp_affinity_list")" \
            "$(read_list "$PROC_ROOT/irq/$irq/effective_affinity_list")"
    done
    rxq=$(find "$SYS_ROOT/class/net/$iface/queues" -maxdepth 1 -name 'rx-*' 2>/dev/null | wc -l)
    echo "$iface: ${#irqs[@]} queue IRQs, $rxq rx queues. Pin them: $0 $iface CPUS"
    exit 0
fi

[[ $cpus_arg =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] ||
    die "bad CPU list '$cpus_arg' (expected e.g. 0-3 or 0,2,4)"
mapfile -t cpus < <(expand_cpus "$cpus_arg")
((${#cpus[@]} > 0)) || die "bad CPU list '$cpus_arg': a range runs backwards"
online=$(read_list "$SYS_ROOT/devices/system/cpu/online")
if [[ $online != "?" ]]; then
    mapfile -t online_cpus < <(expand_cpus "$online")
    for cpu in "${cpus[@]}"; do
        [[ " ${online_cpus[*]} " == *" $cpu "* ]] || die "CPU $cpu is not online (online: $online)"
    done
fi

if ((dry_run == 0)); then
    [[ $(id -u) -eq 0 ]] || die "must run as root to change IRQ affinity (try: sudo $0 $iface $cpus_arg); --dry-run works without root"
    if pgrep -x irqbalance >/dev/null 2>&1; then
        echo "$PROG: warning: irqbalance is running and will move these IRQs again;" \
            "stop it or set IRQBALANCE_BANNED_CPULIST=$cpus_arg" >&2
    fi
fi

changed=0
failed=0
index=0
for entry in "${irqs[@]}"; do
    read -r irq queue name <<<"$entry"
    [[ $queue != - ]] || queue=$index
    cpu=${cpus[queue % ${#cpus[@]}]}
    index=$((index + 1))
    file=$PROC_ROOT/irq/$irq/smp_affinity_list
    old=$(read_list "$file")
    if [[ $old == "$cpu" ]]; then
        echo "  unchanged IRQ $irq ($name) on CPU $cpu"
        continue
    fi
    if ((dry_run == 1)); then
        echo "  would-set IRQ $irq ($name): CPUs $old -> $cpu"
        changed=$((changed + 1))
    elif err=$({ echo "$cpu" >"$file"; } 2>&1); then
        echo "  changed   IRQ $irq ($name): CPUs $old -> $cpu"
        changed=$((changed + 1))
    else
        # Managed IRQs (the kernel spreads them itself) refuse with EIO.
        echo "  FAILED    IRQ $irq ($name): ${err##*: }" >&2
        failed=$((failed + 1))
    fi
done
if ((dry_run == 1)); then
    echo "$PROG: dry run: $changed would change; nothing written"
else
    echo "$PROG: $changed changed, $failed failed"
fi
((failed == 0))
