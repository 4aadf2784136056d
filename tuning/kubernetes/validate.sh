#!/usr/bin/env bash
# Validates the manifests in this directory offline:
#  - every manifest against the Kubernetes OpenAPI schemas bundled in the PyPI package
#    kubernetes-validate (strict: unknown fields are errors), for each version in K8S_VERSIONS;
#  - kustomization.yaml lists exactly the manifests here;
#  - the ConfigMap's ringlb.toml with `ringlb check --no-resolve` (target/release/ringlb or $RINGLB), or as
#    TOML when the binary is not built;
#  - terminationGracePeriodSeconds covers the preStop sleep plus runtime.shutdown_grace;
#  - the image is what README.md and the Dockerfile build (`docker build -t NAME .`), pulled
#    IfNotPresent; the prometheus.io annotations, the admin container port and
#    prometheus/podmonitor.yaml use the admin port of the ConfigMap's admin.listen;
#  - seccomp/ringlb.json is JSON and allows the io_uring system calls.
# Installs kubernetes-validate into a virtualenv under ~/.cache/ringlb when it is not on PATH.
# Prints "N passed, M failed" last; exits 1 on any failure.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$HERE/../.." && pwd)
RINGLB=${RINGLB:-$ROOT/target/release/ringlb}
# 1.30: the oldest release with the preStop sleep action on by default.
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.37.0}
KV_VERSION=1.37.0
VENV=${RINGLB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringlb}/kubernetes-validate-$KV_VERSION

passed=0
failed=0
ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
not_ok() {
    echo "not ok - $1"
    [[ -z ${2:-} ]] || printf '    %s\n' "${2//$'\n'/$'\n'    }"
    failed=$((failed + 1))
}

if command -v kubernetes-validate >/dev/null; then
    KV=kubernetes-validate
    PY=python3
else
    if [[ ! -x $VENV/bin/kubernetes-validate ]]; then
        echo "validate.sh: installing kubernetes-validate==$KV_VERSION into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION"
    fi
    KV=$VENV/bin/kubernetes-validate
    PY=$VENV/bin/python
fi

MANIFESTS=()
for m in "$HERE"/*.yaml; do
    [[ ${m##*/} == kustomization.yaml ]] || MANIFESTS+=("${m##*/}")
done

for version in $K8S_VERSIONS; do
    for m in "${MANIFESTS[@]}"; do
        if out=$("$KV" --strict --kubernetes-version "$version" "$HERE/$m" 2>&1); then
            ok "$m is valid for Kubernetes $version"
        else
            not_ok "$m is valid for Kubernetes $version" "$out"
        fi
    done
done

# Everything else needs PyYAML, which kubernetes-validate brings.
if out=$("$PY" - "$HERE" "${MANIFESTS[@]}" <<'EOF' 2>&1
import sys, yaml
here, manifests = sys.argv[1], sys.argv[2:]
with open(f"{here}/kustomization.yaml") as f:
    listed = yaml.safe_load(f)["resources"]
missing = sorted(set(manifests) - set(listed))
extra = sorted(set(listed) - set(manifests))
if missing or extra:
    sys.exit(f"not listed: {missing}; listed but absent: {extra}")
EOF
); then
    ok "kustomization.yaml lists every manifest"
else
    not_ok "kustomization.yaml lists every manifest" "$out"
fi

TOML=$(mktemp /tmp/ringlb-k8s-config.XXXXXX.toml)
trap 'rm -f -- "$TOML"' EXIT
"$PY" - "$HERE/configmap.yaml" >"$TOML" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as f:
    sys.stdout.write(yaml.safe_load(f)["data"]["ringlb.toml"])
EOF
if [[ -x $RINGLB ]]; then
    # --no-resolve: the cluster's names do not resolve here, and the check stays offline.
    if out=$("$RINGLB" check --no-resolve -c "$TOML" 2>&1); then
        ok "the ConfigMap's ringlb.toml passes ringlb check"
    else
        not_ok "the ConfigMap's ringlb.toml passes ringlb check" "$out"
    fi
elif out=$(python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$TOML" 2>&1); then
    ok "the ConfigMap's ringlb.toml is TOML (ringlb not built: no ringlb check)"
else
    not_ok "the ConfigMap's ringlb.toml is TOML" "$out"
fi

if out=$("$PY" - "$HERE/deployment.yaml" "$TOML" <<'EOF' 2>&1
import re, sys, tomllib, yaml
with open(sys.argv[1]) as f:
    pod = yaml.safe_load(f)["spec"]["template"]["spec"]
with open(sys.argv[2], "rb") as f:
    grace = tomllib.load(f).get("runtime", {}).get("shutdown_grace", "30s")
m = re.fullmatch(r"(\d+)(ms|s|m)", grace)
if not m:
    sys.exit(f"cannot read shutdown_grace {grace!r}")
grace_s = int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]
pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
period = pod.get("terminationGracePeriodSeconds", 30)
if period <= pre_stop + grace_s:
    sys.exit(f"terminationGracePeriodSeconds {period} <= preStop {pre_stop} s + shutdown_grace {grace}")
print(f"{period} s > {pre_stop} s + {grace}")
EOF
); then
    ok "terminationGracePeriodSeconds covers preStop and shutdown_grace ($out)"
else
    not_ok "terminationGracePeriodSeconds covers preStop and shutdown_grace" "$out"
fi

if out=$("$PY" - "$ROOT" "$HERE" "$TOML" <<'EOF' 2>&1
import re, sys, tomllib, yaml
root, here, toml_path = sys.argv[1:4]

def built_image(path):
    with open(path) as f:
        m = re.search(r"docker build -t (\S+) \.", f.read())
    if not m:
        sys.exit(f"{path}: no `docker build -t NAME .`")
    name = m[1]
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

with open(f"{here}/deployment.yaml") as f:
    template = yaml.safe_load(f)["spec"]["template"]
container = template["spec"]["containers"][0]
readme, dockerfile = built_image(f"{root}/README.md"), built_image(f"{root}/Dockerfile")
if not readme == dockerfile == container["image"]:
    sys.exit(f"image: deployment.yaml {container['image']!r}, README.md {readme!r}, "
             f"Dockerfile {dockerfile!r}")
if container.get("imagePullPolicy") != "IfNotPresent":
    sys.exit(f"imagePullPolicy {container.get('imagePullPolicy')!r}, not IfNotPresent")

with open(toml_path, "rb") as f:
    listen = tomllib.load(f)["admin"]["listen"]
admin_port = int(listen.rsplit(":", 1)[1])
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
if ports.get("admin") != admin_port:
    sys.exit(f"container port admin {ports.get('admin')} != admin.listen {listen}")
notes = template["metadata"].get("annotations", {})
want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(admin_port),
        "prometheus.io/path": "/metrics"}
for k, v in want.items():
    if notes.get(k) != v:
        sys.exit(f"annotation {k}: {notes.get(k)!r}, expected {v!r} (admin.listen {listen})")

with open(f"{here}/prometheus/podmonitor.yaml") as f:
    pm = yaml.safe_load(f)
if pm["kind"] != "PodMonitor":
    sys.exit(f"prometheus/podmonitor.yaml is a {pm['kind']}")
wanted = pm["spec"]["selector"]["matchLabels"]
labels = template["metadata"]["labels"]
if any(labels.get(k) != v for k, v in wanted.items()):
    sys.exit(f"PodMonitor selects {wanted}, the pods have {labels}")
for e in pm["spec"]["podMetricsEndpoints"]:
    if e["port"] not in ports or e.get("path") != "/metrics":
        sys.exit(f"PodMonitor endpoint {e['port']} {e.get('path')}: ports are {ports}")
print(f"{container['image']}, admin port {admin_port}")
EOF
); then
    ok "the image is the one README.md and the Dockerfile build; scrape annotations and PodMonitor use the admin port ($out)"
else
    not_ok "the image is the one README.md and the Dockerfile build; scrape annotations and PodMonitor use the admin port" "$out"
fi

if out=$(python3 - "$HERE/seccomp/ringlb.json" <<'EOF' 2>&1
import json, sys
with open(sys.argv[1]) as f:
    profile = json.load(f)
allowed = {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
need = {"io_uring_setup", "io_uring_enter", "io_uring_register", "sched_setaffinity", "execve"}
if not need <= allowed:
    sys.exit(f"missing: {sorted(need - allowed)}")
if profile["defaultAction"] == "SCMP_ACT_ALLOW":
    sys.exit("defaultAction allows everything")
EOF
); then
    ok "seccomp/ringlb.json allows io_uring and denies by default"
else
    not_ok "seccomp/ringlb.json allows io_uring and denies by default" "$out"
fi

echo "$passed passed, $failed failed"
((failed == 0))
