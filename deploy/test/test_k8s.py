"""Offline checks of the deployment files (make test-k8s).

deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields fail), then what a schema cannot know: probes and
resources on every container, the names that discovery depends on agreeing
across files, and the configs the manifests and compose carry passing
`cdn-proxy --check`.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
KUBERNETES_VERSION = "1.31.0"
PROXY = os.environ.get("CDN_PROXY_BIN", os.path.join(ROOT, "target", "debug", "cdn-proxy"))


def manifests():
    """Every Kubernetes resource file (the kustomization is not one)."""
    return sorted(f for f in glob.glob(os.path.join(K8S, "*.yaml")) if not f.endswith("kustomization.yaml"))


def resources():
    docs = []
    for f in manifests():
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    return docs


def find(kind, name):
    matches = [d for d in resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def validate(paths):
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *paths],
        capture_output=True,
        text=True,
    )


def proxy_check(cdn_yaml, pingora_yaml=None, env=None):
    """Runs `cdn-proxy --check` on config text (with `env` added to the
    environment); returns the completed process."""
    with tempfile.TemporaryDirectory() as d:
        args = [PROXY, "--check", "--cdn-conf", os.path.join(d, "cdn.yaml")]
        with open(os.path.join(d, "cdn.yaml"), "w") as fh:
            fh.write(cdn_yaml)
        if pingora_yaml is not None:
            with open(os.path.join(d, "pingora.yaml"), "w") as fh:
                fh.write(pingora_yaml)
            args += ["-c", os.path.join(d, "pingora.yaml")]
        return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})


class Schemas(unittest.TestCase):
    def test_every_manifest_passes_strict_schema_validation(self):
        self.assertTrue(manifests())
        r = validate(manifests())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_the_validator_rejects_a_misspelled_field(self):
        # A negative control: the check above can fail.
        with open(os.path.join(K8S, "origin.yaml")) as fh:
            text = fh.read()
        self.assertIn("readinessProbe:", text)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as bad:
            bad.write(text.replace("readinessProbe:", "readinesProbe:"))
            bad.flush()
            r = validate([bad.name])
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)


class Workloads(unittest.TestCase):
    def test_every_container_has_probes_limits_and_runs_unprivileged(self):
        deployments = [d for d in resources() if d["kind"] == "Deployment"]
        self.assertEqual(sorted(d["metadata"]["name"] for d in deployments), ["origin", "prometheus", "proxy"])
        for d in deployments:
            pod = d["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"], d["metadata"]["name"])
            for c in pod["containers"]:
                where = f'{d["metadata"]["name"]}/{c["name"]}'
                self.assertIn("readinessProbe", c, where)
                self.assertIn("livenessProbe", c, where)
                for bound in ("requests", "limits"):
                    self.assertEqual(set(c["resources"][bound]), {"cpu", "memory"}, f"{where} {bound}")
                self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"], where)

    def test_every_pod_meets_pod_security_restricted(self):
        # The "restricted" profile of the Pod Security Standards, as its admission checks it.
        allowed_volumes = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected", "downwardAPI"}
        for d in [d for d in resources() if d["kind"] == "Deployment"]:
            name = d["metadata"]["name"]
            pod = d["spec"]["template"]["spec"]
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                self.assertFalse(pod.get(key, False), f"{name} {key}")
            pod_sc = pod.get("securityContext", {})
            for v in pod.get("volumes", []):
                kinds = set(v) - {"name"}
                self.assertTrue(kinds <= allowed_volumes, f"{name} volume {v}")
            for c in pod["containers"]:
                where = f"{name}/{c['name']}"
                sc = c.get("securityContext", {})
                self.assertTrue(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")), where)
                seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
                self.assertIn(seccomp.get("type"), ("RuntimeDefault", "Localhost"), where)
                self.assertIs(sc.get("allowPrivilegeEscalation"), False, where)
                self.assertFalse(sc.get("privileged", False), where)
                caps = sc.get("capabilities", {})
                self.assertIn("ALL", caps.get("drop", []), where)
                self.assertTrue(set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, where)

    def test_disruption_budgets_spread_and_autoscaling(self):
        for name, app in (("proxy", "cdn-proxy"), ("origin", "cdn-origin")):
            pdb = find("PodDisruptionBudget", name)
            self.assertEqual(pdb["spec"]["selector"]["matchLabels"], {"app.kubernetes.io/name": app})
            pod = find("Deployment", name)["spec"]["template"]["spec"]
            spread = pod["topologySpreadConstraints"][0]
            self.assertEqual(spread["labelSelector"]["matchLabels"], {"app.kubernetes.io/name": app})
        hpa = find("HorizontalPodAutoscaler", "proxy")["spec"]
        self.assertEqual(hpa["scaleTargetRef"]["name"], "proxy")
        self.assertGreaterEqual(hpa["minReplicas"], 2, "one pod can drain while another serves")
        with open(os.path.join(K8S, "kustomization.yaml")) as fh:
            listed = yaml.safe_load(fh)["resources"]
        self.assertEqual(sorted(listed), sorted(os.path.basename(f) for f in manifests()))

    def test_origins_are_found_through_a_headless_service_by_the_proxy(self):
        svc = find("Service", "origin")
        self.assertEqual(svc["spec"]["clusterIP"], "None", "headless: one A record per pod")
        self.assertEqual(svc["spec"]["selector"], find("Deployment", "origin")["spec"]["selector"]["matchLabels"])
        port = svc["spec"]["ports"][0]["port"]
        cdn = yaml.safe_load(find("ConfigMap", "cdn-proxy-config")["data"]["cdn.yaml"])
        self.assertEqual(cdn["origins"], [{"dns": f"origin:{port}"}])

    def test_the_prometheus_configmap_is_the_repositorys_k8s_config_and_rules(self):
        data = find("ConfigMap", "prometheus-config")["data"]
        with open(os.path.join(K8S, "prometheus.k8s.yml")) as fh:
            self.assertEqual(data["prometheus.yml"], fh.read())
        with open(os.path.join(ROOT, "deploy", "prometheus", "rules.yml")) as fh:
            self.assertEqual(data["rules.yml"], fh.read())
        prom = yaml.safe_load(data["prometheus.yml"])
        self.assertEqual(prom["rule_files"], ["rules.yml"])
        with open(os.path.join(ROOT, "prometheus.yml")) as fh:
            self.assertEqual(prom["global"], yaml.safe_load(fh)["global"], "scraped as often as under compose")

    def test_prometheus_scrapes_every_proxy_and_origin_pod_on_its_own(self):
        prom = yaml.safe_load(find("ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
        for job, app in [("cdn-proxy", "proxy"), ("cdn-origin", "origin")]:
            scrape = next(j for j in prom["scrape_configs"] if j["job_name"] == job)
            self.assertEqual([c["role"] for c in scrape["kubernetes_sd_configs"]], ["pod"], job)
            keep = {tuple(r["source_labels"]): r["regex"] for r in scrape["relabel_configs"] if r.get("action") == "keep"}
            pod = find("Deployment", app)["spec"]["template"]
            label = pod["metadata"]["labels"]["app.kubernetes.io/name"]
            self.assertEqual(keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)], label, job)
            ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
            self.assertIn(keep[("__meta_kubernetes_pod_container_port_name",)], ports, job)
        # Prometheus may list the pods of its namespace, and nothing else.
        spec = find("Deployment", "prometheus")["spec"]["template"]["spec"]
        self.assertEqual(spec["serviceAccountName"], "prometheus")
        role = find("Role", "prometheus-pods")
        self.assertEqual(role["rules"], [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
        binding = find("RoleBinding", "prometheus-pods")
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "prometheus"}])

    def test_prometheus_operator_users_get_pod_monitors_and_the_same_rules(self):
        with open(os.path.join(K8S, "operator", "monitoring.yaml")) as fh:
            docs = list(yaml.safe_load_all(fh))
        monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
        self.assertEqual(monitors["cdn-proxy"]["podMetricsEndpoints"][0]["path"], "/prometheus")
        self.assertEqual(monitors["cdn-origin"]["podMetricsEndpoints"][0]["path"], "/metrics")
        for name, app in [("cdn-proxy", "proxy"), ("cdn-origin", "origin")]:
            labels = find("Deployment", app)["spec"]["template"]["metadata"]["labels"]
            for k, v in monitors[name]["selector"]["matchLabels"].items():
                self.assertEqual(labels[k], v)
        rule = next(d for d in docs if d["kind"] == "PrometheusRule")
        with open(os.path.join(ROOT, "deploy", "prometheus", "rules.yml")) as fh:
            self.assertEqual(rule["spec"]["groups"], yaml.safe_load(fh)["groups"])


class Configs(unittest.TestCase):
    def test_the_configmap_configs_pass_cdn_proxy_check(self):
        data = find("ConfigMap", "cdn-proxy-config")["data"]
        r = proxy_check(data["cdn.yaml"], data["pingora.yaml"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_the_compose_config_passes_cdn_proxy_check(self):
        with open(os.path.join(ROOT, "deploy", "conf", "cdn.yaml")) as fh:
            text = fh.read()
        r = proxy_check(text, env={"CDN_ADMIN_TOKEN": "0123456789abcdef0123"})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The admin API, reachable from the compose network, needs its token.
        r = proxy_check(text, env={"CDN_ADMIN_TOKEN": ""})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("admin_auth.token_env", r.stderr)
        with open(os.path.join(ROOT, "deploy", "compose.yaml")) as fh:
            env = yaml.safe_load(fh)["services"]["proxy"]["environment"]
        self.assertTrue(env["CDN_ADMIN_TOKEN"].startswith("${CDN_ADMIN_TOKEN:?"), "compose refuses to start without one")

    def test_the_termination_grace_covers_the_drain_and_pingoras_grace(self):
        data = find("ConfigMap", "cdn-proxy-config")["data"]
        cdn, pingora = yaml.safe_load(data["cdn.yaml"]), yaml.safe_load(data["pingora.yaml"])
        drain = int(str(cdn["drain_period"]).rstrip("s"))
        needed = drain + pingora["grace_period_seconds"] + pingora["graceful_shutdown_timeout_seconds"]
        pod = find("Deployment", "proxy")["spec"]["template"]["spec"]
        self.assertGreater(pod["terminationGracePeriodSeconds"], needed)

    def test_check_refuses_a_broken_configmap_config(self):
        # A negative control for the two checks above.
        data = find("ConfigMap", "cdn-proxy-config")["data"]
        r = proxy_check(data["cdn.yaml"].replace("discovery:", "discovery_typo:"))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("discovery_typo", r.stderr)


if __name__ == "__main__":
    unittest.main()


class Rules(unittest.TestCase):
    """deploy/prometheus/rules.yml: valid, unit-tested, and every alert actionable."""

    DIR = os.path.join(ROOT, "deploy", "prometheus")

    def promtool(self, *args):
        tool = shutil.which("promtool")
        self.assertIsNotNone(tool, "promtool is needed (Debian: apt-get install prometheus)")
        out = subprocess.run([tool, *args], cwd=self.DIR, capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_promtool_checks_the_rules(self):
        self.promtool("check", "rules", "rules.yml")

    def test_promtool_unit_tests_pass(self):
        self.promtool("test", "rules", "rules.test.yml")

    def test_every_alert_has_a_severity_a_summary_and_a_runbook(self):
        with open(os.path.join(self.DIR, "rules.yml")) as fh:
            groups = yaml.safe_load(fh)["groups"]
        alerts = [r for g in groups for r in g["rules"] if "alert" in r]
        self.assertGreaterEqual(len(alerts), 8)
        for a in alerts:
            self.assertIn(a["labels"].get("severity"), {"critical", "warning", "info"}, a["alert"])
            self.assertTrue(a["annotations"].get("summary"), a["alert"])
            self.assertTrue(a["annotations"].get("runbook"), a["alert"])

    def test_promtool_checks_the_compose_and_local_configs(self):
        with tempfile.TemporaryDirectory() as d:
            # As compose mounts them: side by side.
            shutil.copy(os.path.join(ROOT, "prometheus.yml"), d)
            shutil.copy(os.path.join(self.DIR, "rules.yml"), d)
            self.promtool("check", "config", os.path.join(d, "prometheus.yml"))
        self.promtool("check", "config", os.path.join(ROOT, "conf", "prometheus.local.yml"))

    def test_compose_and_the_local_config_load_the_same_rules(self):
        with open(os.path.join(ROOT, "deploy", "compose.yaml")) as fh:
            compose = yaml.safe_load(fh)
        self.assertIn("./prometheus/rules.yml:/etc/prometheus/rules.yml:ro", compose["services"]["prometheus"]["volumes"])
        with open(os.path.join(ROOT, "conf", "prometheus.local.yml")) as fh:
            local = yaml.safe_load(fh)
        self.assertEqual(local["rule_files"], ["../deploy/prometheus/rules.yml"])


class Grafana(unittest.TestCase):
    """deploy/grafana/: the dashboard is importable by hand and provisioned in compose."""

    DIR = os.path.join(ROOT, "deploy", "grafana")

    def dashboard(self):
        with open(os.path.join(self.DIR, "dashboards", "cdn.json")) as fh:
            return json.load(fh)

    def test_every_panel_queries_the_chosen_data_source_and_fits_the_grid(self):
        d = self.dashboard()
        self.assertEqual(d["uid"], "cdn-edge")
        # The data source is a variable: provisioned, it is the compose one;
        # imported by hand, Grafana asks for one.
        var = d["templating"]["list"][0]
        self.assertEqual((var["name"], var["type"], var["query"]), ("datasource", "datasource", "prometheus"))
        panels = [p for p in d["panels"] if p["type"] != "row"]
        self.assertGreaterEqual(len(panels), 15)
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        kinds = {p["type"] for p in panels}
        self.assertIn("heatmap", kinds, "latency as a heatmap from the histogram")
        for p in panels:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
                self.assertTrue(t["expr"].strip(), p["title"])

    def test_the_dashboard_shows_what_the_issue_asks(self):
        exprs = " ".join(t["expr"] for p in self.dashboard()["panels"] for t in p.get("targets", []))
        for needed in ["cdn_ttfb_seconds_bucket", "cdn:origin_5xx:ratio_rate5m", "cdn:retry_budget_exhausted:rate5m",
                       "cdn:cache_hit:ratio_rate5m", "cdn:origin_offload:ratio_rate5m", "cdn_origin_score"]:
            self.assertIn(needed, exprs)

    def test_compose_provisions_the_data_source_and_the_dashboard(self):
        with open(os.path.join(ROOT, "deploy", "compose.yaml")) as fh:
            g = yaml.safe_load(fh)["services"]["grafana"]
        self.assertIn("./grafana/provisioning:/etc/grafana/provisioning:ro", g["volumes"])
        self.assertIn("./grafana/dashboards:/var/lib/grafana/dashboards:ro", g["volumes"])
        self.assertTrue(g["image"].split(":")[-1][0].isdigit(), "a pinned Grafana version")
        self.assertEqual(g["profiles"], ["grafana"], "the registry-less Docker e2e leaves it out")
        self.assertTrue(any(p.startswith("127.0.0.1:") for p in g["ports"]), "published on loopback only")
        with open(os.path.join(self.DIR, "provisioning", "datasources", "prometheus.yml")) as fh:
            ds = yaml.safe_load(fh)["datasources"][0]
        self.assertEqual((ds["type"], ds["url"]), ("prometheus", "http://prometheus:9090"))
        with open(os.path.join(self.DIR, "provisioning", "dashboards", "cdn.yml")) as fh:
            provider = yaml.safe_load(fh)["providers"][0]
        self.assertEqual(provider["options"]["path"], "/var/lib/grafana/dashboards")


def strategic_merge(base, patch):
    """Kustomize's strategic merge, as far as the overlays use it: maps merge
    key by key, lists of named maps (containers, volumes) merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else v
        return out
    named = lambda xs: all(isinstance(x, dict) and "name" in x for x in xs)
    if isinstance(base, list) and isinstance(patch, list) and named(base) and named(patch):
        out = list(base)
        for p in patch:
            i = next((j for j, x in enumerate(out) if x["name"] == p["name"]), None)
            if i is None:
                out.append(p)
            else:
                out[i] = strategic_merge(out[i], p)
        return out
    return patch


def kustomize_build(folder):
    """The resources `kubectl apply -k folder` would apply (resources,
    strategic-merge patches, `$patch: delete`, images), without kubectl."""
    with open(os.path.join(folder, "kustomization.yaml")) as fh:
        k = yaml.safe_load(fh)
    docs = []
    for r in k["resources"]:
        path = os.path.normpath(os.path.join(folder, r))
        if os.path.isdir(path):
            docs += kustomize_build(path)
        else:
            with open(path) as fh:
                docs += [d for d in yaml.safe_load_all(fh) if d]
    for p in k.get("patches", []):
        if "patch" in p:
            text = p["patch"]
        else:
            with open(os.path.join(folder, p["path"])) as fh:
                text = fh.read()
        for patch in yaml.safe_load_all(text):
            key = (patch["kind"], patch["metadata"]["name"])
            i = next(j for j, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key)
            if patch.pop("$patch", None) == "delete":
                del docs[i]
            else:
                docs[i] = strategic_merge(docs[i], patch)
    for image in k.get("images", []):
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return docs


class Overlays(unittest.TestCase):
    """deploy/k8s/overlays: dev and prod, built as kustomize would."""

    def built(self, name):
        return kustomize_build(os.path.join(K8S, "overlays", name))

    def one(self, docs, kind, name):
        found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found[0] if found else None

    def test_each_overlay_passes_strict_schema_validation(self):
        for name in ["dev", "prod"]:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, f"{name}.yaml")
                with open(path, "w") as fh:
                    yaml.safe_dump_all(self.built(name), fh)
                r = validate([path])
                self.assertEqual(r.returncode, 0, name + r.stdout + r.stderr)

    def test_dev_is_one_of_each_without_an_autoscaler(self):
        docs = self.built("dev")
        self.assertEqual(self.one(docs, "Deployment", "proxy")["spec"]["replicas"], 1)
        self.assertEqual(self.one(docs, "Deployment", "origin")["spec"]["replicas"], 1)
        self.assertIsNone(self.one(docs, "HorizontalPodAutoscaler", "proxy"))

    def test_prod_pins_images_and_sizes_its_cache(self):
        docs = self.built("prod")
        proxy = self.one(docs, "Deployment", "proxy")["spec"]
        self.assertEqual(proxy["replicas"], 3)
        images = [c["image"] for d in docs if d["kind"] == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]]
        self.assertIn("registry.example.com/cdn/cdn-proxy:0.1.0", images)
        self.assertIn("registry.example.com/cdn/cdn-origin:0.1.0", images)
        self.assertEqual(self.one(docs, "HorizontalPodAutoscaler", "proxy")["spec"]["minReplicas"], 3)
        # The merged pod keeps the base's container settings (probes, security).
        container = proxy["template"]["spec"]["containers"][0]
        self.assertIn("readinessProbe", container)
        self.assertEqual(container["resources"]["limits"]["memory"], "2Gi")
        volume = next(v for v in proxy["template"]["spec"]["volumes"] if v["name"] == "cache")
        self.assertEqual(volume["emptyDir"]["sizeLimit"], "50Gi")
        data = self.one(docs, "ConfigMap", "cdn-proxy-config")["data"]
        r = proxy_check(data["cdn.yaml"], data["pingora.yaml"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        prod = yaml.safe_load(data["cdn.yaml"])
        self.assertLess(prod["cache"]["max_size"], 50 * 2**30, "within the volume's sizeLimit")
        base = yaml.safe_load(find("ConfigMap", "cdn-proxy-config")["data"]["cdn.yaml"])
        self.assertEqual({k: v for k, v in prod.items() if k != "cache"},
                         {k: v for k, v in base.items() if k != "cache"}, "only the cache differs")

