#!/usr/bin/env bash
# Tests tuning/irq-affinity.sh against a made-up /proc and /sys (PROC_ROOT, SYS_ROOT): a NIC with
# four queue IRQs and a control IRQ, found through msi_irqs, and one found by name only.
# Changes nothing on the host. Prints "N passed, M failed" last; exits 1 on any failure.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
TOOL=$HERE/irq-affinity.sh
T=$(mktemp -d /tmp/ringlb-irq-test.XXXXXX)
trap 'rm -rf -- "$T"' EXIT
OUT=$T/out
passed=0
failed=0

result() {
    if (($1 == 0)); then
        echo "ok - $2"
        passed=$((passed + 1))
    else
        echo "not ok - $2"
        sed 's/^/    out: /' "$OUT"
        failed=$((failed + 1))
    fi
}

run() {
    rc=0
    PROC_ROOT=$T/proc SYS_ROOT=$T/sys "$TOOL" "$@" >"$OUT" 2>&1 || rc=$?
}

mkdir -p "$T/proc" "$T/sys/devices/system/cpu" "$T/sys/class/net/ens1/device/msi_irqs" \
    "$T/sys/class/net/ens1/queues/rx-0" "$T/sys/class/net/eth9"
echo 0-7 >"$T/sys/devices/system/cpu/online"
{
    echo "           CPU0       CPU1"
    echo " 59:          5          0  IO-APIC   4-edge      ttyS0"
    echo " 60:          1          0  PCI-MSIX  0-edge      mlx5_async0@pci:0000:3b:00.0"
    for q in 0 1 2 3; do
        echo " 6$((q + 1)):        100        200  PCI-MSIX  $((q + 1))-edge      ens1-TxRx-$q"
    done
    echo " 70:          1          0  PCI-MSIX  0-edge      eth9-rx-0"
    echo " 71:          1          0  PCI-MSIX  1-edge      eth9-tx-0"
    echo " 72:          1          0  PCI-MSIX  2-edge      eth90-rx-0"
    echo "NMI:          0          0   Non-maskable interrupts"
} >"$T/proc/interrupts"
for irq in 59 60 61 62 63 64 70 71 72; do
    mkdir -p "$T/proc/irq/$irq"
    echo 0-7 >"$T/proc/irq/$irq/smp_affinity_list"
    echo 0 >"$T/proc/irq/$irq/effective_affinity_list"
    [[ $irq == 59 || $irq -ge 70 ]] || touch "$T/sys/class/net/ens1/device/msi_irqs/$irq"
done
affinity() { tr -d '\n' <"$T/proc/irq/$1/smp_affinity_list"; }

run ens1
if ((rc == 0)) && grep -q "^61 *0 *ens1-TxRx-0 *0-7 *0" "$OUT" && grep -q "^64 *3 " "$OUT" &&
    ! grep -q mlx5_async "$OUT" && ! grep -q ttyS0 "$OUT"; then
    result 0 "lists the queue IRQs, without the control IRQ"
else
    result 1 "lists the queue IRQs, without the control IRQ"
fi

run --dry-run ens1 2,3
if ((rc == 0)) && grep -q "would-set IRQ 62 (ens1-TxRx-1): CPUs 0-7 -> 3" "$OUT" &&
    [[ $(affinity 61) == 0-7 && $(affinity 62) == 0-7 ]]; then
    result 0 "dry run shows old -> new and writes nothing"
else
    result 1 "dry run shows old -> new and writes nothing"
fi

run ens1 2,3
if ((rc == 0)) && [[ $(affinity 61)$(affinity 62)$(affinity 63)$(affinity 64) == 2323 ]] &&
    [[ $(affinity 60) == 0-7 && $(affinity 59) == 0-7 ]]; then
    result 0 "pins queue N to the (N mod 2)th CPU"
else
    result 1 "pins queue N to the (N mod 2)th CPU"
fi

run ens1 2,3
if ((rc == 0)) && grep -q "0 changed, 0 failed" "$OUT"; then
    result 0 "a second run changes nothing"
else
    result 1 "a second run changes nothing"
fi

run eth9 1-2
if ((rc == 0)) && [[ $(affinity 70)$(affinity 71)$(affinity 72) == 110-7 ]]; then
    result 0 "finds IRQs by name when sysfs has no msi_irqs, pairing rx and tx of a queue"
else
    result 1 "finds IRQs by name when sysfs has no msi_irqs, pairing rx and tx of a queue"
fi

run --dry-run ens1 9
if ((rc == 1)) && grep -q "CPU 9 is not online" "$OUT"; then
    result 0 "rejects an offline CPU"
else
    result 1 "rejects an offline CPU"
fi

run --dry-run ens1 1-x
if ((rc == 1)) && grep -q "bad CPU list" "$OUT"; then
    result 0 "rejects a malformed CPU list"
else
    result 1 "rejects a malformed CPU list"
fi

run nosuch0
if ((rc == 1)) && grep -q "no network interface" "$OUT"; then
    result 0 "rejects an unknown interface"
else
    result 1 "rejects an unknown interface"
fi

if [[ $(id -u) -eq 0 ]]; then
    chmod 755 "$T"
    rc=0
    PROC_ROOT=$T/proc SYS_ROOT=$T/sys setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$TOOL" ens1 0 >"$OUT" 2>&1 || rc=$?
    if ((rc == 1)) && grep -q "must run as root" "$OUT" && [[ $(affinity 61) == 2 ]]; then
        result 0 "refuses to pin when not root"
    else
        result 1 "refuses to pin when not root"
    fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
