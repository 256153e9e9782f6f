#!/usr/bin/env python3
"""What a schema cannot see: that the objects in deploy/k8s agree with each other and with the
server (labels, port names, flags, probe paths, the drain inside the grace period, the metric that
the autoscaler asks for and the adapter rule that makes it out of the server's own families).

Also writes what the other checkers read into OUT_DIR: servicemonitors.json (for
servicemonitor.mjs) and adapter-rules.yaml, the adapter rule's queries as Prometheus recording
rules with the adapter's template markers filled in (for `promtool check rules`).

usage: agree.py DEPLOY_K8S_DIR REPO_ROOT OUT_DIR
"""

import json
import pathlib
import re
import sys

import yaml

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)
    return ok


def flags(args):
    """`--name value` pairs of a container's args (every flag here takes a value)."""
    it = iter(args)
    return {a: next(it, None) for a in it if a.startswith("--")}


def contains(labels, selector):
    return all(labels.get(k) == v for k, v in selector.items())


def main():
    k8s, root, out = (pathlib.Path(a) for a in sys.argv[1:4])
    objects = {}
    for path in sorted(k8s.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.setdefault(doc["kind"], []).append((path.name, doc))
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor", "ConfigMap"]:
        check(len(objects.get(kind, [])) == 1, f"expected one {kind}, found {len(objects.get(kind, []))}")
    if problems:
        return
    deployment = objects["Deployment"][0][1]
    service = objects["Service"][0][1]
    hpa = objects["HorizontalPodAutoscaler"][0][1]
    monitor = objects["ServiceMonitor"][0][1]
    adapter = objects["ConfigMap"][0][1]

    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    check(contains(pod_labels, deployment["spec"]["selector"]["matchLabels"]),
          "the Deployment's selector does not match its pods' labels")
    check(contains(pod_labels, service["spec"]["selector"]), "the Service selects no pod of the Deployment")
    check(contains(service["metadata"].get("labels", {}), monitor["spec"]["selector"]["matchLabels"]),
          "the ServiceMonitor does not select the Service")

    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for p in service["spec"]["ports"]:
        check(p["targetPort"] in ports, f"Service port {p['name']} targets {p['targetPort']}, not a container port")
    for e in monitor["spec"]["endpoints"]:
        check(e["port"] in service_ports, f"the ServiceMonitor scrapes port {e['port']}, which the Service lacks")
        check(e.get("path", "/metrics") == "/metrics", "the ServiceMonitor scrapes a path other than /metrics")

    args = flags(container["args"])
    main_rs = (root / "server/src/main.rs").read_text()
    for flag in args:
        check(f"    {flag[2:].replace('-', '_')}: " in main_rs, f"the server has no flag {flag}")
    check((root / args.get("--toml", "")).is_file(), f"--toml {args.get('--toml')} is not a file of the repo")
    check(args.get("--port") == str(ports.get("thrift")), "--port is not the container's thrift port")
    check(args.get("--metrics-port") == str(ports.get("metrics")), "--metrics-port is not the container's metrics port")
    for probe, path in [("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                        ("readinessProbe", "/health/ready")]:
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics", f"{probe} is not GET {path} on the metrics port")

    drain = float(args.get("--drain-seconds", 5))
    answer = float(args.get("--request-timeout", 10)) + 5
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(drain + answer <= grace,
          f"terminationGracePeriodSeconds {grace} is shorter than the drain ({drain} s) and the calls in flight ({answer} s)")
    ready = container["readinessProbe"]
    check(ready.get("periodSeconds", 10) * ready.get("failureThreshold", 3) < drain,
          "the drain ends before the readiness probe can fail")
    check(int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0)) >= 1, "no GPU in the limits")

    target = hpa["spec"]["scaleTargetRef"]
    check((target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]),
          "the HorizontalPodAutoscaler scales something else")
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    check(wanted == {rule["name"]["as"]}, f"the autoscaler asks for {wanted}, the adapter serves {rule['name']['as']}")
    metrics_rs = (root / "server/src/metrics.rs").read_text()
    for query in [rule["seriesQuery"], rule["metricsQuery"]]:
        for name in set(re.findall(r"torchpipe_\w+", query)):
            family = re.sub(r"_(sum|count|bucket|total)$", "", name)
            check(f'"{family}"' in metrics_rs, f"the adapter reads {name}, which the server does not export")

    out.mkdir(parents=True, exist_ok=True)
    (out / "servicemonitors.json").write_text(json.dumps(
        [{"file": f, "object": o} for f, o in objects["ServiceMonitor"]]))

    def filled(q):
        return q.replace("<<.LabelMatchers>>", 'namespace="default",pod="torchpipe-0"').replace("<<.GroupBy>>", "pod")
    rules = {"groups": [{"name": "prometheus-adapter", "rules": [
        {"record": "adapter_series", "expr": filled(rule["seriesQuery"])},
        {"record": rule["name"]["as"], "expr": filled(rule["metricsQuery"])},
    ]}]}
    (out / "adapter-rules.yaml").write_text(yaml.safe_dump(rules))


if __name__ == "__main__":
    main()
    for p in problems:
        print(f"ERROR deploy/k8s: {p}")
    if not problems:
        print("INFO deploy/k8s: the objects agree with each other and with the server")
    sys.exit(1 if problems else 0)
