#!/usr/bin/env bash
# Applies a ringlb sysctl profile from tuning/sysctl/, first saving the values it replaces, so
# that `apply.sh --revert` puts the host back exactly as it was.
#
# Usage: tuning/apply.sh [--dry-run] [--only-net] PROFILE
#        tuning/apply.sh [--dry-run] [--only-net] --revert
# See usage() below, and tuning/README.md.
set -euo pipefail

PROG=apply.sh
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${RINGLB_STATE_DIR:-/var/lib/ringlb}
BACKUP=$STATE_DIR/sysctl-backup.conf

usage() {
    cat <<EOF
Usage: tuning/apply.sh [--dry-run] [--only-net] PROFILE
       tuning/apply.sh [--dry-run] [--only-net] --revert

PROFILE is a name in $SCRIPT_DIR/sysctl/ (throughput, latency) or a path to a .conf file.

Applying saves the current value of every key it changes to \$RINGLB_STATE_DIR/sysctl-backup.conf
(default /var/lib/ringlb). A second apply keeps the values saved first, so --revert always
restores the values from before the first apply, then renames the backup to *.reverted.

  --dry-run   show what would change (old -> new) and change nothing; works without root
  --only-net  touch only net.* keys (per network namespace), skip fs.* and other global keys
  --revert    restore the saved values
  -h, --help  this text

Keys marked "floor:" in the profile are raised to the value but never lowered.
Changes last until reboot; tuning/README.md says how to make them permanent.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

args="$*"
dry_run=0
only_net=0
revert=0
profile=
while (($# > 0)); do
    case $1 in
        --dry-run) dry_run=1 ;;
        --only-net) only_net=1 ;;
        --revert) revert=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            exit 2
            ;;
        *)
            [[ -z $profile ]] || {
                usage >&2
                exit 2
            }
            profile=$1
            ;;
    esac
    shift
done
if ((revert == 1)) && [[ -n $profile ]]; then
    echo "$PROG: --revert takes no profile" >&2
    exit 2
fi
if ((revert == 0)) && [[ -z $profile ]]; then
    usage >&2
    exit 2
fi

if ((dry_run == 0)) && [[ $(id -u) -ne 0 ]]; then
    die "must run as root to change kernel settings (try: sudo $0 $args); --dry-run works without root"
fi

# A value with its whitespace collapsed to single spaces: /proc/sys separates fields with tabs.
normalize() {
    local -a fields
    read -r -a fields <<<"$1" || true
    printf '%s' "${fields[*]}"
}

key_path() {
    printf '/proc/sys/%s' "${1//.//}"
}

read_key() {
    local value
    value=$(<"$(key_path "$1")")
    normalize "$value"
}

# True when $1 and $2 are unsigned integers and $1 >= $2 (no arithmetic: values may exceed int64).
num_ge() {
    [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] || return 1
    local a b
    a=${1#"${1%%[!0]*}"}
    b=${2#"${2%%[!0]*}"}
    if ((${#a} != ${#b})); then
        ((${#a} > ${#b}))
    else
        [[ $a > $b || $a == "$b" ]]
    fi
}

# Parses a sysctl.conf-style file into the arrays KEYS, VALUES and FLOORS. With a second
# argument "backup", an empty value is allowed: a key saved while the kernel held an empty list
# (net.ipv4.ip_local_reserved_ports by default) is restored to empty.
KEYS=()
VALUES=()
FLOORS=()
parse_conf() {
    local file=$1 empty_ok=${2:-} line key value floor=0 n=0
    KEYS=()
    VALUES=()
    FLOORS=()
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=$(normalize "$line")
        case $line in
            '') floor=0 ;;
            '# floor:'*) floor=1 ;;
            '#'* | ';'*) floor=0 ;;
            *=*)
                key=$(normalize "${line%%=*}")
                value=$(normalize "${line#*=}")
                [[ $key =~ ^[a-z0-9_][a-z0-9_.-]*$ ]] || die "$file:$n: bad key '$key'"
                [[ -n $value || $empty_ok == backup ]] || die "$file:$n: no value for $key"
                KEYS+=("$key")
                VALUES+=("$value")
                FLOORS+=("$floor")
                floor=0
                ;;
            *) die "$file:$n: expected 'key = value', got '$line'" ;;
        esac
    done <"$file"
}

# Why key $1 is not touched here, or nothing when it can be.
skip_reason() {
    if ((only_net == 1)) && [[ $1 != net.* ]]; then
        echo "--only-net: not a per-network-namespace key"
    elif [[ ! -e $(key_path "$1") ]]; then
        echo "not present on this kernel or in this network namespace"
    elif [[ $(stat -L -c %A -- "$(key_path "$1")") != ??w* ]]; then
        # By mode, not by `-w`, so that a dry run as another user judges it the same way.
        echo "read-only here: a global key seen from a network namespace"
    fi
}

# Writes value $2 to key $1; on failure prints the reason and returns 1.
write_key() {
    local err
    if ! err=$({ printf '%s\n' "$2" >"$(key_path "$1")"; } 2>&1); then
        echo "  FAILED    $1: could not write '$2': ${err##*: }" >&2
        return 1
    fi
    local now
    now=$(read_key "$1")
    if [[ $now != "$2" ]]; then
        echo "  FAILED    $1: wrote '$2' but the kernel reads back '$now'" >&2
        return 1
    fi
}

changed=0
unchanged=0
skipped=0
failed=0
verb=changed
((dry_run == 0)) || verb=would-set

if ((revert == 1)); then
    [[ -f $BACKUP ]] || die "no backup at $BACKUP: nothing to revert (set RINGLB_STATE_DIR if it was saved elsewhere)"
    parse_conf "$BACKUP" backup
    kept=()
    echo "$PROG: reverting to the values saved in $BACKUP"
    for i in "${!KEYS[@]}"; do
        key=${KEYS[i]}
        saved=${VALUES[i]}
        reason=$(skip_reason "$key")
        if [[ -n $reason ]]; then
            echo "  skipped   $key ($reason)"
            skipped=$((skipped + 1))
            kept+=("$key = $saved")
            continue
        fi
        current=$(read_key "$key")
        if [[ $current == "$saved" ]]; then
            echo "  unchanged $key = $saved"
            unchanged=$((unchanged + 1))
            continue
        fi
        echo "  $(printf '%-9s' "$verb") $key: $current -> $saved"
        if ((dry_run == 0)) && ! write_key "$key" "$saved"; then
            failed=$((failed + 1))
            kept+=("$key = $saved")
            continue
        fi
        changed=$((changed + 1))
    done
    if ((dry_run == 0)); then
        if ((${#kept[@]} == 0)); then
            mv -f -- "$BACKUP" "$BACKUP.reverted"
            echo "$PROG: backup moved to $BACKUP.reverted"
        else
            {
                echo "# ringlb sysctl backup: values not restored by the revert of $(date -u +%FT%TZ)"
                printf '%s\n' "${kept[@]}"
            } >"$BACKUP.tmp"
            mv -f -- "$BACKUP.tmp" "$BACKUP"
            echo "$PROG: ${#kept[@]} key(s) not restored remain in $BACKUP"
        fi
    fi
else
    if [[ $profile == */* || $profile == *.conf ]]; then
        file=$profile
    else
        file=$SCRIPT_DIR/sysctl/$profile.conf
    fi
    [[ -f $file ]] || die "no profile '$profile' (looked for $file; have: $(cd "$SCRIPT_DIR/sysctl" && echo *.conf))"
    parse_conf "$file"

    # Decide everything before touching anything, so the backup is complete before the first write.
    plan_keys=()
    plan_old=()
    plan_new=()
    lines=()
    for i in "${!KEYS[@]}"; do
        key=${KEYS[i]}
        want=${VALUES[i]}
        reason=$(skip_reason "$key")
        if [[ -n $reason ]]; then
            lines+=("  skipped   $key ($reason)")
            skipped=$((skipped + 1))
            continue
        fi
        current=$(read_key "$key")
        if [[ ${FLOORS[i]} == 1 ]] && num_ge "$current" "$want"; then
            lines+=("  unchanged $key = $current (at least $want)")
            unchanged=$((unchanged + 1))
        elif [[ $current == "$want" ]]; then
            lines+=("  unchanged $key = $current")
            unchanged=$((unchanged + 1))
        else
            lines+=("  $(printf '%-9s' "$verb") $key: $current -> $want")
            plan_keys+=("$key")
            plan_old+=("$current")
            plan_new+=("$want")
        fi
    done

    echo "$PROG: profile $file"
    if ((dry_run == 0 && ${#plan_keys[@]} > 0)); then
        # Merge into an existing backup: a key saved by an earlier apply keeps its first value.
        mkdir -p -- "$STATE_DIR"
        saved_keys=()
        if [[ -f $BACKUP ]]; then
            parse_conf "$BACKUP" backup
            saved_keys=("${KEYS[@]}")
        fi
        {
            if [[ -f $BACKUP ]]; then
                cat -- "$BACKUP"
            else
                echo "# ringlb sysctl backup: values before tuning/apply.sh; restore with apply.sh --revert"
            fi
            echo "# before applying $file at $(date -u +%FT%TZ)"
            for i in "${!plan_keys[@]}"; do
                for k in "${saved_keys[@]}"; do
                    [[ $k == "${plan_keys[i]}" ]] && continue 2
                done
                echo "${plan_keys[i]} = ${plan_old[i]}"
            done
        } >"$BACKUP.tmp"
        mv -f -- "$BACKUP.tmp" "$BACKUP"
    fi

    printf '%s\n' "${lines[@]}"
    if ((dry_run == 0)); then
        for i in "${!plan_keys[@]}"; do
            if write_key "${plan_keys[i]}" "${plan_new[i]}"; then
                changed=$((changed + 1))
            else
                failed=$((failed + 1))
            fi
        done
    else
        changed=${#plan_keys[@]}
    fi
    if ((dry_run == 0 && ${#plan_keys[@]} > 0)); then
        echo "$PROG: previous values saved in $BACKUP; undo with: $0 --revert"
    fi
fi

if ((dry_run == 1)); then
    echo "$PROG: dry run: $changed would change, $unchanged unchanged, $skipped skipped; nothing written"
else
    echo "$PROG: $changed changed, $unchanged unchanged, $skipped skipped, $failed failed"
fi
((failed == 0))
