#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests under k8s/ (run by scripts/check-deploy).

Usage:
    check_k8s.py [--k8s-dir DIR] [--rendered LABEL=FILE ...]

1. Every *.yaml / *.yml under the k8s dir parses, and every document is a mapping with
   apiVersion, kind and (except Kustomizations) metadata.name.
2. Every kustomization.yaml lists only paths that exist, and every YAML file beside it is
   listed (as a resource or a patch): a manifest nobody applies is an error.
3. The base (the files its kustomization lists), and each rendered output given with
   --rendered (e.g. `kubectl kustomize k8s/overlays/dev`), pass the deployment contract:
   probes, preStop, grace periods vs the services' shutdown bounds, HPA, PDB, saver
   replicas, ServiceAccount IRSA annotation, Secret, ConfigMap, Services, security context.
4. An overlay whose name starts with `cluster` (k8s/overlays/cluster) must give both services
   REDIS_CLUSTER_NODES (host:port seeds) and no REDIS_URL. Without a rendered output for it
   (no kubectl), it is rendered here: its patches only touch ConfigMaps, which a plain merge
   of the patch's data into the base's reproduces.

Prints every check it makes; exits 1 if any failed. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - check-deploy installs it first
    sys.stderr.write("check_k8s.py: PyYAML is required (pip install PyYAML)\n")
    sys.exit(2)

# Defaults of the binaries, used when a variable is not set in the manifests.
DEFAULT_GATEWAY_GRACE_MS = 10000
DEFAULT_SAVER_GRACE_MS = 30000

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class Checker:
    def __init__(self) -> None:
        self.failures = 0
        self.passes = 0
        self.quiet = False  # when set, passing checks are counted but not printed

    def ok(self, cond: bool, what: str) -> bool:
        if cond:
            self.passes += 1
            if not self.quiet:
                print(f"  ok    {what}")
        else:
            self.failures += 1
            print(f"  FAIL  {what}")
        return bool(cond)

    def section(self, title: str) -> None:
        print(f"\n== {title}")


# ---------------------------------------------------------------------------------------
# Loading


def load_docs(path: Path, chk: Checker, rel: str) -> list[dict]:
    try:
        with path.open() as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        chk.ok(False, f"{rel}: parses as YAML ({e})")
        return []
    good = True
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            chk.ok(False, f"{rel}: document {i} is a mapping")
            good = False
            continue
        missing = [k for k in ("apiVersion", "kind") if k not in d]
        if d.get("kind") != "Kustomization" and not (d.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            chk.ok(False, f"{rel}: document {i} ({d.get('kind')}) has {', '.join(missing)}")
            good = False
    chk.ok(good, f"{rel}: parses, {len(docs)} document(s), each with apiVersion/kind/metadata.name")
    return docs if good else [d for d in docs if isinstance(d, dict)]


def find_kustomization(d: Path) -> Path | None:
    for n in KUSTOMIZATION_NAMES:
        if (d / n).is_file():
            return d / n
    return None


def patch_paths(k: dict) -> list[str]:
    out = []
    for p in k.get("patches") or []:
        if isinstance(p, dict) and p.get("path"):
            out.append(p["path"])
    for p in k.get("patchesStrategicMerge") or []:
        if isinstance(p, str):
            out.append(p)
    for p in k.get("patchesJson6902") or []:
        if isinstance(p, dict) and p.get("path"):
            out.append(p["path"])
    return out


def check_kustomization(kfile: Path, root: Path, chk: Checker) -> list[Path]:
    """Checks one kustomization; returns the resource files it lists (not directories)."""
    rel = kfile.relative_to(root.parent)
    kdir = kfile.parent
    with kfile.open() as f:
        k = yaml.safe_load(f) or {}
    chk.ok(k.get("kind") == "Kustomization", f"{rel}: kind Kustomization")
    resources = list(k.get("resources") or [])
    patches = patch_paths(k)
    chk.ok(len(resources) == len(set(resources)), f"{rel}: no resource listed twice")
    files: list[Path] = []
    for r in resources:
        if re.match(r"^[a-z]+://", r) or r.startswith("github.com/"):
            chk.ok(False, f"{rel}: resource {r} is local (remote bases are not allowed here)")
            continue
        p = (kdir / r).resolve()
        if p.is_dir():
            chk.ok(find_kustomization(p) is not None, f"{rel}: resource dir {r} has a kustomization")
        else:
            chk.ok(p.is_file(), f"{rel}: resource {r} exists")
            files.append(p)
    for r in patches:
        chk.ok((kdir / r).is_file(), f"{rel}: patch {r} exists")
    listed = {(kdir / r).resolve() for r in resources + patches}
    for y in sorted(list(kdir.glob("*.yaml")) + list(kdir.glob("*.yml"))):
        if y.name in KUSTOMIZATION_NAMES:
            continue
        chk.ok(y.resolve() in listed, f"{rel}: lists {y.name} (every YAML file beside it is used)")
    return files


# ---------------------------------------------------------------------------------------
# Contract checks on one set of manifests


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[dict], kind: str, name: str) -> dict | None:
    for d in by_kind(docs, kind):
        if (d.get("metadata") or {}).get("name") == name:
            return d
    return None


def pod_spec(dep: dict) -> dict:
    return ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(dep: dict) -> dict:
    return (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_for(dep: dict, role: str) -> dict | None:
    cs = pod_spec(dep).get("containers") or []
    for c in cs:
        if c.get("name") == role:
            return c
    return cs[0] if cs else None


def resolve_env(c: dict, docs: list[dict], var: str) -> str | None:
    """Value of var in container c: explicit env wins over envFrom ConfigMaps (as in k8s)."""
    for e in c.get("env") or []:
        if e.get("name") == var:
            if "value" in e:
                return str(e["value"])
            return "<from " + ",".join((e.get("valueFrom") or {}).keys()) + ">"
    value = None
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        cm = named(docs, "ConfigMap", ref) if ref else None
        if cm and var in (cm.get("data") or {}):
            value = str(cm["data"][var])  # later envFrom entries win
    return value


def port_number(c: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def prestop_seconds(c: dict) -> int | None:
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return int((pre["sleep"] or {}).get("seconds", 0))
    cmd = " ".join(str(x) for x in ((pre.get("exec") or {}).get("command") or []))
    m = re.search(r"\bsleep\s+(\d+)", cmd)
    return int(m.group(1)) if m else None


def note(chk: Checker, text: str) -> None:
    if not chk.quiet:
        print(f"  note  {text}")


def ms_var(c: dict, docs: list[dict], var: str, default: int, chk: Checker, label: str) -> int:
    raw = resolve_env(c, docs, var)
    if raw is None:
        note(chk, f"{label}: {var} not set, binary default {default} ms applies")
        return default
    ok = chk.ok(raw.isdigit(), f"{label}: {var}={raw} is a number of milliseconds")
    return int(raw) if ok else default


def check_probe(c: dict, kind: str, path: str, chk: Checker, label: str) -> None:
    probe = c.get(kind) or {}
    get = probe.get("httpGet") or {}
    chk.ok(get.get("path") == path, f"{label}: {kind} httpGet {path} (got {get.get('path')})")
    chk.ok(port_number(c, get.get("port")) is not None,
           f"{label}: {kind} port {get.get('port')} is a declared container port")


def check_security(dep: dict, c: dict, chk: Checker, label: str) -> None:
    psc = pod_spec(dep).get("securityContext") or {}
    csc = c.get("securityContext") or {}
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    chk.ok(non_root, f"{label}: securityContext runAsNonRoot: true")
    chk.ok(uid is None or (isinstance(uid, int) and uid > 0), f"{label}: runAsUser is not root ({uid})")
    chk.ok(csc.get("allowPrivilegeEscalation") is False, f"{label}: allowPrivilegeEscalation: false")


def check_resources(c: dict, chk: Checker, label: str) -> None:
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        have = set((res.get(part) or {}).keys())
        need = {"cpu", "memory"} if part == "requests" else {"memory"}
        chk.ok(need <= have, f"{label}: resources.{part} has {', '.join(sorted(need))} (got {sorted(have)})")


def check_sa(dep: dict, docs: list[dict], chk: Checker, label: str) -> None:
    san = pod_spec(dep).get("serviceAccountName")
    sa = named(docs, "ServiceAccount", san) if san else None
    chk.ok(sa is not None, f"{label}: serviceAccountName {san} refers to a ServiceAccount in the set")
    if sa:
        arn = ((sa.get("metadata") or {}).get("annotations") or {}).get("eks.amazonaws.com/role-arn", "")
        chk.ok(bool(re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+", arn)),
               f"{label}: ServiceAccount {san} annotated eks.amazonaws.com/role-arn ({arn or 'missing'})")


def check_envfrom(c: dict, docs: list[dict], chk: Checker, label: str) -> None:
    refs = [(ef.get("configMapRef") or {}).get("name") for ef in c.get("envFrom") or []]
    refs = [r for r in refs if r]
    chk.ok(bool(refs), f"{label}: takes env from a ConfigMap (envFrom)")
    for r in refs:
        chk.ok(named(docs, "ConfigMap", r) is not None, f"{label}: ConfigMap {r} exists")
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        sec = named(docs, "Secret", ref.get("name"))
        keys = set(((sec or {}).get("stringData") or {}).keys()) | set(((sec or {}).get("data") or {}).keys())
        if ref.get("optional"):
            chk.ok(True, f"{label}: {e['name']} from Secret {ref.get('name')}/{ref.get('key')} (optional)")
        else:
            chk.ok(sec is not None and ref.get("key") in keys,
                   f"{label}: {e['name']} from Secret {ref.get('name')} key {ref.get('key')} that exists")


def check_listen(c: dict, docs: list[dict], var: str, chk: Checker, label: str) -> int | None:
    addr = resolve_env(c, docs, var)
    m = re.match(r"^0\.0\.0\.0:(\d+)$|^\[::\]:(\d+)$", addr or "")
    chk.ok(bool(m), f"{label}: {var}={addr} listens on all interfaces")
    if not m:
        return None
    port = int(m.group(1) or m.group(2))
    declared = {p.get("containerPort") for p in c.get("ports") or []}
    chk.ok(port in declared, f"{label}: {var} port {port} is a declared containerPort {sorted(declared)}")
    return port


def check_service(docs: list[dict], name: str, dep: dict, c: dict, want_ports: list[int],
                  chk: Checker, label: str) -> None:
    svc = named(docs, "Service", name)
    if not chk.ok(svc is not None, f"{label}: Service {name} exists"):
        return
    spec = svc.get("spec") or {}
    chk.ok(selects(spec.get("selector") or {}, pod_labels(dep)), f"{label}: Service {name} selects the pods")
    targets = set()
    for p in spec.get("ports") or []:
        t = port_number(c, p.get("targetPort", p.get("port")))
        targets.add(t)
    for w in want_ports:
        chk.ok(w in targets, f"{label}: Service {name} forwards to container port {w}")


def check_pdb(docs: list[dict], dep: dict, chk: Checker, label: str, required: bool) -> None:
    pdbs = [p for p in by_kind(docs, "PodDisruptionBudget")
            if selects(((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}, pod_labels(dep))]
    if not required and not pdbs:
        note(chk, f"{label}: no PodDisruptionBudget (optional)")
        return
    if not chk.ok(len(pdbs) == 1, f"{label}: one PodDisruptionBudget selects the pods"):
        return
    p = pdbs[0]
    chk.ok(p.get("apiVersion") == "policy/v1", f"{label}: PDB apiVersion policy/v1")
    spec = p.get("spec") or {}
    chk.ok(("minAvailable" in spec) != ("maxUnavailable" in spec),
           f"{label}: PDB sets exactly one of minAvailable / maxUnavailable")


def is_seed_list(value) -> bool:
    parts = str(value or "").split(",")
    return bool(value) and all(re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", p.strip()) for p in parts)


def check_redis_env(c: dict, docs: list[dict], cluster: bool, chk: Checker, label: str) -> None:
    nodes = resolve_env(c, docs, "REDIS_CLUSTER_NODES")
    if cluster:
        chk.ok(is_seed_list(nodes), f"{label} gets REDIS_CLUSTER_NODES ({nodes})")
    else:
        chk.ok(resolve_env(c, docs, "REDIS_URL") is not None and nodes is None,
               f"{label} gets REDIS_URL and no REDIS_CLUSTER_NODES")


def check_bundle(docs: list[dict], label: str, chk: Checker, cluster: bool = False) -> None:
    chk.section(f"deployment contract: {label}" + (" (Redis Cluster)" if cluster else ""))

    # ConfigMap / Secret
    cm = named(docs, "ConfigMap", "canvas-config")
    if chk.ok(cm is not None, f"{label}: ConfigMap canvas-config exists"):
        data = cm.get("data") or {}
        for k in ("AWS_REGION", "CANVAS_TABLE", "SAVE_INTERVAL_MS", "SAVE_LEASE_MS"):
            chk.ok(k in data, f"{label}: ConfigMap has {k}")
        if cluster:
            chk.ok(is_seed_list(data.get("REDIS_CLUSTER_NODES")),
                   f"{label}: REDIS_CLUSTER_NODES is a comma-separated host:port list "
                   f"({data.get('REDIS_CLUSTER_NODES')})")
            chk.ok("REDIS_URL" not in data, f"{label}: no REDIS_URL beside REDIS_CLUSTER_NODES (it would be ignored)")
        else:
            chk.ok(str(data.get("REDIS_URL", "")).startswith(("redis://", "rediss://")),
                   f"{label}: REDIS_URL is a redis:// or rediss:// URL")
            chk.ok("REDIS_CLUSTER_NODES" not in data,
                   f"{label}: no REDIS_CLUSTER_NODES (it would override REDIS_URL)")
    sec = named(docs, "Secret", "canvas-secrets")
    if chk.ok(sec is not None, f"{label}: Secret canvas-secrets exists"):
        keys = set((sec.get("stringData") or {}).keys()) | set((sec.get("data") or {}).keys())
        chk.ok("CANVAS_JWT_SECRET" in keys, f"{label}: Secret holds CANVAS_JWT_SECRET")

    # Gateway
    gw = named(docs, "Deployment", "gateway")
    if chk.ok(gw is not None, f"{label}: Deployment gateway exists"):
        c = container_for(gw, "gateway")
        gl = f"{label}: gateway"
        chk.ok(c is not None and ["gateway"] in (c.get("args"), c.get("command")), f"{gl} runs the gateway binary")
        if c:
            check_probe(c, "readinessProbe", "/readyz", chk, gl)
            check_probe(c, "livenessProbe", "/healthz", chk, gl)
            pre = prestop_seconds(c)
            chk.ok(pre is not None and pre > 0, f"{gl} lifecycle.preStop sleeps ({pre} s) so the LB drains")
            grace_ms = ms_var(c, docs, "GATEWAY_SHUTDOWN_GRACE_MS", DEFAULT_GATEWAY_GRACE_MS, chk, gl)
            tgps = pod_spec(gw).get("terminationGracePeriodSeconds")
            need = (pre or 0) + grace_ms / 1000
            chk.ok(isinstance(tgps, int) and tgps > need,
                   f"{gl} terminationGracePeriodSeconds {tgps} > preStop {pre or 0} s + GATEWAY_SHUTDOWN_GRACE_MS {grace_ms / 1000:g} s")
            check_resources(c, chk, gl)
            check_security(gw, c, chk, gl)
            check_sa(gw, docs, chk, gl)
            check_envfrom(c, docs, chk, gl)
            check_redis_env(c, docs, cluster, chk, gl)
            jwt = [e for e in c.get("env") or [] if e.get("name") == "CANVAS_JWT_SECRET"]
            chk.ok(bool(jwt) and "secretKeyRef" in (jwt[0].get("valueFrom") or {}),
                   f"{gl} CANVAS_JWT_SECRET comes from a Secret")
            auth_off = resolve_env(c, docs, "CANVAS_AUTH_DISABLED")
            chk.ok(str(auth_off).lower() not in ("true", "1", "yes"), f"{gl} auth is not disabled")
            port = check_listen(c, docs, "GATEWAY_ADDR", chk, gl)
            check_service(docs, "gateway", gw, c, [port] if port else [], chk, gl)
        hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler")
                if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == "gateway"]
        if chk.ok(len(hpas) == 1, f"{label}: one HorizontalPodAutoscaler targets Deployment gateway"):
            h = hpas[0]
            spec = h.get("spec") or {}
            chk.ok(h.get("apiVersion") == "autoscaling/v2", f"{label}: HPA apiVersion autoscaling/v2")
            chk.ok((spec.get("scaleTargetRef") or {}).get("kind") == "Deployment", f"{label}: HPA targets a Deployment")
            cpu = [m for m in spec.get("metrics") or []
                   if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"]
            chk.ok(bool(cpu) and "target" in cpu[0]["resource"], f"{label}: HPA scales on CPU")
            mn, mx = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
            chk.ok(isinstance(mn, int) and mn >= 2, f"{label}: HPA minReplicas {mn} >= 2 (no single gateway)")
            chk.ok(isinstance(mx, int) and mx >= mn, f"{label}: HPA maxReplicas {mx} >= minReplicas")
            reps = (gw.get("spec") or {}).get("replicas")
            if reps is not None:
                note(chk, f"{label}: gateway sets spec.replicas={reps} although an HPA owns it")
        check_pdb(docs, gw, chk, f"{label}: gateway", required=True)

    # Saver
    sv = named(docs, "Deployment", "saver")
    if chk.ok(sv is not None, f"{label}: Deployment saver exists"):
        c = container_for(sv, "saver")
        sl = f"{label}: saver"
        reps = (sv.get("spec") or {}).get("replicas")
        chk.ok(isinstance(reps, int) and reps >= 2, f"{sl} replicas {reps} >= 2")
        chk.ok(c is not None and ["saver"] in (c.get("args"), c.get("command")), f"{sl} runs the saver binary")
        if c:
            check_probe(c, "readinessProbe", "/readyz", chk, sl)
            check_probe(c, "livenessProbe", "/healthz", chk, sl)
            flush_ms = ms_var(c, docs, "SAVER_SHUTDOWN_GRACE_MS", DEFAULT_SAVER_GRACE_MS, chk, sl)
            pre = prestop_seconds(c) or 0
            tgps = pod_spec(sv).get("terminationGracePeriodSeconds")
            chk.ok(isinstance(tgps, int) and tgps > pre + flush_ms / 1000,
                   f"{sl} terminationGracePeriodSeconds {tgps} > preStop {pre} s + SAVER_SHUTDOWN_GRACE_MS {flush_ms / 1000:g} s (final flush)")
            interval = resolve_env(c, docs, "SAVE_INTERVAL_MS")
            lease = resolve_env(c, docs, "SAVE_LEASE_MS")
            note(chk, f"{sl}: SAVE_INTERVAL_MS={interval}, SAVE_LEASE_MS={lease}")
            check_resources(c, chk, sl)
            check_security(sv, c, chk, sl)
            check_sa(sv, docs, chk, sl)
            check_envfrom(c, docs, chk, sl)
            check_redis_env(c, docs, cluster, chk, sl)
            http = check_listen(c, docs, "SAVER_HTTP_ADDR", chk, sl)
            grpc = check_listen(c, docs, "SAVER_GRPC_ADDR", chk, sl)
            chk.ok(http == 9090 and grpc == 50051, f"{sl} HTTP on 9090 and gRPC on 50051 (got {http}, {grpc})")
            check_service(docs, "saver", sv, c, [p for p in (http, grpc) if p], chk, sl)
        check_pdb(docs, sv, chk, f"{label}: saver", required=False)

    # Both roles run the same image.
    imgs = {cc.get("image") for d in (gw, sv) if d for cc in pod_spec(d).get("containers") or []}
    chk.ok(len(imgs) == 1, f"{label}: gateway and saver use one image ({', '.join(sorted(map(str, imgs)))})")


# ---------------------------------------------------------------------------------------
# Overlays without kubectl


def is_cluster_overlay(label: str) -> bool:
    return label.startswith("overlays/cluster")


def render_configmap_overlay(kfile: Path, root: Path, parsed: dict[Path, list[dict]], chk: Checker,
                             label: str) -> list[dict] | None:
    """The base's documents with the overlay's ConfigMap patches merged in (null removes a key), or None when
    the overlay does more than that (then only kubectl can render it)."""
    with kfile.open() as f:
        k = yaml.safe_load(f) or {}
    base = (root / "base").resolve()
    resources = [(kfile.parent / r).resolve() for r in k.get("resources") or []]
    patches = [(kfile.parent / p).resolve() for p in patch_paths(k)]
    if resources != [base] or any(key not in ("apiVersion", "kind", "resources", "patches") for key in k):
        chk.ok(False, f"{label}: renderable without kubectl (only ../../base and ConfigMap patches)")
        return None
    with (base / "kustomization.yaml").open() as f:
        base_k = yaml.safe_load(f) or {}
    docs = [yaml.safe_load(yaml.safe_dump(d)) for r in base_k.get("resources") or []
            for d in parsed.get((base / r).resolve(), [])]
    for p in patches:
        for patch in parsed.get(p, []):
            name = (patch.get("metadata") or {}).get("name")
            target = named(docs, "ConfigMap", name) if patch.get("kind") == "ConfigMap" else None
            if not chk.ok(target is not None, f"{label}: patch {p.name} patches a base ConfigMap ({name})"):
                return None
            data = target.setdefault("data", {})
            for key, value in (patch.get("data") or {}).items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
    return docs


# ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("--k8s-dir", default=str(here.parent / "k8s"))
    ap.add_argument("--rendered", action="append", default=[], metavar="LABEL=FILE",
                    help="also check a rendered kustomize output (repeatable)")
    args = ap.parse_args()

    root = Path(args.k8s_dir).resolve()
    chk = Checker()
    if not root.is_dir():
        print(f"check_k8s.py: {root} is not a directory")
        return 1

    chk.section(f"YAML files under {root.name}/")
    all_files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    chk.ok(bool(all_files), f"found {len(all_files)} YAML file(s)")
    parsed: dict[Path, list[dict]] = {}
    for p in all_files:
        parsed[p.resolve()] = load_docs(p, chk, str(p.relative_to(root.parent)))

    chk.section("kustomizations")
    kfiles = sorted(p for p in all_files if p.name in KUSTOMIZATION_NAMES)
    chk.ok((root / "base" / "kustomization.yaml").is_file(), "k8s/base/kustomization.yaml exists")
    base_files: list[Path] = []
    for kf in kfiles:
        files = check_kustomization(kf, root, chk)
        if kf.parent.resolve() == (root / "base").resolve():
            base_files = files

    base_docs = [d for f in base_files for d in parsed.get(f.resolve(), [])]
    # The base kustomization's `images:` sets the tag; compare names only.
    check_bundle(base_docs, "base", chk)

    rendered: dict[str, list[dict]] = {}  # label -> documents
    how: dict[str, str] = {}
    for spec in args.rendered:
        label, _, fname = spec.partition("=")
        try:
            with open(fname) as f:
                rendered[label] = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
        except (OSError, yaml.YAMLError) as e:
            chk.ok(False, f"{label}: rendered output {fname} readable ({e})")
    # Cluster overlays are checked whether or not kubectl rendered them.
    for kf in kfiles:
        label = str(kf.parent.relative_to(root))
        if is_cluster_overlay(label) and label not in rendered:
            docs = render_configmap_overlay(kf, root, parsed, chk, label)
            if docs is not None:
                rendered[label] = docs
                how[label] = "merged here, no kubectl"
    for label, docs in rendered.items():
        # Same assertions on the rendered output; print only failures and a count.
        cluster = is_cluster_overlay(label)
        before_p, before_f = chk.passes, chk.failures
        chk.quiet = True
        check_bundle(docs, f"{label} ({how.get(label, 'rendered')})", chk, cluster=cluster)
        chk.quiet = False
        print(f"  {chk.passes - before_p} passed, {chk.failures - before_f} failed "
              f"(same assertions as for the base files; passing ones not listed)")

    print(f"\ncheck_k8s.py: {chk.passes} passed, {chk.failures} failed")
    return 1 if chk.failures else 0


if __name__ == "__main__":
    sys.exit(main())
