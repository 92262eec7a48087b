#!/usr/bin/env python3
"""Checks of the Helm chart (helm/uptime) with the Helm v4 SDK, no cluster and no helm binary.

    chart.py check                      lint and render every value set in helm/uptime/ci/,
                                        validate each object against the Kubernetes schemas,
                                        check that the schema refuses bad values, and that
                                        k8s/ is what the chart renders
    chart.py render VALUES [JSON]       print the rendered objects as one JSON list; JSON (a
                                        file) holds values merged over VALUES
    chart.py k8s [--check]              write k8s/ (a kustomize base and the overlays `dev` and
                                        `prod`) from the chart; with --check, only say whether
                                        the files in k8s/ are what the chart renders now

Run by the test suite through `UPTIME_TEST_PYTHON` (scripts/test.sh makes the virtualenv from
scripts/requirements-test.txt); `services/hub/tests/it/chart.rs` calls it.
"""

import json
import pathlib
import sys

import yaml
from helm_python import chart as helm_chart
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "uptime"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion): its schemas are checked.
KUBE_VERSION = "1.30.0"
# Kinds without a schema in kubernetes-validate (monitoring CRDs), checked by shape here (the
# PrometheusRule's rules themselves by promtool: services/hub/tests/it/alert_rules.rs).
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule",
}


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(values):
    c = helm_chart.Chart.load(CHART)
    manifests = c.render(values, name="uptime", namespace="uptime", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append({"template": path, "object": doc})
    return objects, manifests


def fail(msg):
    print(f"chart: {msg}", file=sys.stderr)
    sys.exit(1)


def check_shape_servicemonitor(o):
    eps = o["spec"]["endpoints"]
    assert eps and all(e["port"] == "http" and e["path"] == "/metrics" for e in eps), eps
    assert o["spec"]["selector"]["matchLabels"], o["spec"]


def check_shape_prometheusrule(o):
    groups = o["spec"]["groups"]
    assert groups and all(g["name"] and g["rules"] for g in groups), groups
    assert all(r["alert"] and r["expr"] for g in groups for r in g["rules"]), groups


def check():
    value_sets = sorted((CHART / "ci").glob("*-values.yaml"))
    if not value_sets:
        fail("no value sets in helm/uptime/ci")
    for vs in value_sets:
        values = yaml.safe_load(vs.read_text()) or {}
        report = helm_chart.lint(CHART, values, strict=True, kube_version="v" + KUBE_VERSION)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if problems or report.get("errors"):
            fail(f"{vs.name}: lint: {problems} {report.get('errors')}")
        objects, manifests = render(values)
        kinds = []
        for entry in objects:
            o = entry["object"]
            key = (o["apiVersion"], o["kind"])
            kinds.append(o["kind"])
            if key in CRDS:
                globals()["check_shape_" + CRDS[key]](o)
                continue
            try:
                kv.validate(o, KUBE_VERSION, strict=True)
            except Exception as e:  # the library's errors carry the path at fault
                fail(f"{vs.name}: {entry['template']}: {o['kind']} {o['metadata'].get('name')}: {e}")
        if "NOTES.txt" not in "".join(manifests):
            fail(f"{vs.name}: no NOTES.txt")
        print(f"chart: {vs.name}: lint clean, {len(objects)} objects valid for Kubernetes "
              f"{KUBE_VERSION}: {', '.join(sorted(set(kinds)))}")
    # The schema refuses unknown keys and wrong types.
    base = yaml.safe_load((CHART / "ci" / "default-values.yaml").read_text())
    c = helm_chart.Chart.load(CHART)
    for bad, why in [
        ({"hub": {"replicaCount": 3}}, "an unknown key"),
        ({"hub": {"replicas": "three"}}, "a string for a number"),
        ({"hub": {"service": {"type": "Ingress"}}}, "a value outside the enum"),
        ({"hub": {"env": {"DATABASE_URL": "x"}}}, "an env name without HUB_"),
        ({"bogus": True}, "an unknown top-level key"),
    ]:
        try:
            c.validate_schema(merge(c.values, merge(base, bad)))
        except Exception:
            continue
        fail(f"values.schema.json accepts {why}: {bad}")
    print("chart: values.schema.json refuses unknown keys, wrong types and bad enums")
    k8s(check_only=True)


# k8s/: the chart rendered with values that keep secrets out of git (an existing Secret named
# `uptime-secrets`); each overlay is the chart with its own values, written as what it adds,
# changes (the whole object, as a strategic-merge patch) and removes relative to the base. A
# strategic merge keeps what the overlay's object leaves out: the base's `replicas` stays
# beside the production HPA, which takes the count over.
K8S = ROOT / "k8s"
K8S_BASE_VALUES = {"secrets": {"existingSecret": "uptime-secrets"}}
K8S_OVERLAYS = {
    "dev": {"hub": {"replicas": 1, "pdb": {"enabled": False}},
            "api": {"replicas": 1, "pdb": {"enabled": False}}},
    "prod": None,  # helm/uptime/ci/production-values.yaml
}
HEADER = "# Generated from helm/uptime by `scripts/chart.py k8s`: do not edit; change the chart.\n"


def objects_for(values):
    objects, _ = render(values)
    out = {}
    for e in objects:
        o = e["object"]
        if not o["metadata"].get("annotations"):
            o["metadata"].pop("annotations", None)
        out[(o["kind"], o["metadata"]["name"])] = o
    return out


def file_name(kind, name):
    return f"{kind.lower()}-{name}.yaml"


def dump(o):
    return HEADER + yaml.safe_dump(o, sort_keys=True, default_flow_style=False)


def k8s_files():
    files = {}
    base = objects_for(K8S_BASE_VALUES)
    names = []
    for (kind, name), o in sorted(base.items()):
        f = file_name(kind, name)
        files[f"base/{f}"] = dump(o)
        names.append(f)
    files["base/kustomization.yaml"] = HEADER + yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "namespace": "uptime", "resources": names}, sort_keys=False)
    for overlay, values in K8S_OVERLAYS.items():
        if values is None:
            values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
        values = merge(values, {"secrets": {"existingSecret": "uptime-secrets"}})
        mine = objects_for(values)
        resources, patches = ["../../base"], []
        for key, o in sorted(mine.items()):
            f = file_name(*key)
            if key not in base:
                files[f"overlays/{overlay}/{f}"] = dump(o)
                resources.append(f)
            elif o != base[key]:
                files[f"overlays/{overlay}/patch-{f}"] = dump(o)
                patches.append({"path": f"patch-{f}"})
        for key in sorted(set(base) - set(mine)):
            kind, name = key
            f = f"delete-{file_name(kind, name)}"
            files[f"overlays/{overlay}/{f}"] = dump(
                {"apiVersion": base[key]["apiVersion"], "kind": kind,
                 "metadata": {"name": name}, "$patch": "delete"})
            patches.append({"path": f})
        k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
             "namespace": "uptime", "resources": resources}
        if patches:
            k["patches"] = patches
        files[f"overlays/{overlay}/kustomization.yaml"] = HEADER + yaml.safe_dump(k, sort_keys=False)
    return files


def k8s(check_only):
    want = k8s_files()
    have = {str(p.relative_to(K8S)): p.read_text() for p in K8S.rglob("*.yaml")} if K8S.exists() else {}
    if check_only:
        stale = sorted(f for f in set(want) | set(have) if want.get(f) != have.get(f))
        if stale:
            fail("k8s/ is not what the chart renders now (run `scripts/chart.py k8s`): "
                 + ", ".join(stale))
        print(f"chart: k8s/ is current ({len(want)} files)")
        return
    for f in set(have) - set(want):
        (K8S / f).unlink()
    for f, text in want.items():
        path = K8S / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"chart: wrote {len(want)} files under k8s/")


def main(argv):
    if len(argv) >= 2 and argv[1] == "check":
        check()
    elif len(argv) >= 2 and argv[1] == "k8s":
        k8s("--check" in argv[2:])
    elif len(argv) >= 3 and argv[1] == "render":
        values = yaml.safe_load(pathlib.Path(argv[2]).read_text()) or {}
        if len(argv) >= 4:
            values = merge(values, json.loads(pathlib.Path(argv[3]).read_text()))
        objects, _ = render(values)
        json.dump(objects, sys.stdout)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
