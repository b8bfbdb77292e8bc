"""Offline checks of kvroute's deployment files; run by scripts/check-deploy.sh.

    check_deploy.py ROUTER_BINARY

1. The Helm chart's values.yaml against values.schema.json (and values with
   a misspelt key must be refused); the schema knows every key the router's
   configuration has.
2. deploy/k8s and the chart's renders (several values sets) against the
   Kubernetes JSON schemas (kubernetes-validate, strict, at the oldest and
   newest Kubernetes versions the chart claims), plus what schemas cannot
   see: probes and Services name ports the pods have, selectors match pods,
   the router's engines are pods of the StatefulSet.
3. The chart through Helm: `helm lint --strict` and `helm template` when
   helm is on PATH, else Helm's own Go SDK through the PyPI package
   helm-python-sdk (lint and render, no cluster).
4. Every router.toml (the ConfigMap's, the image's, the systemd one, the
   chart's renders) parsed and validated by the real router (--print-config).
5. The image's HEALTHCHECK script against a running router started with the
   image's default configuration (tokenizer paths mapped to datasets/):
   unhealthy without an engine, healthy with one; /metrics on the admin port
   only; SIGTERM stops it.
6. The Dockerfile, parsed by BuildKit's own parser (PyPI `dockerfile`), and
   what can be checked without a Docker engine: every file copied from the
   context exists and is not excluded by .dockerignore, the binaries built
   are the ones copied and run, exec-form ENTRYPOINT/CMD/HEALTHCHECK name
   files the image has, the files the image's configuration names are in
   the image, a numeric USER, the exposed ports are the configured ones.
"""

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/kvroute"
K8S = ROOT / "deploy/k8s"
IMAGE_DATASETS = "/usr/share/kvroute/datasets"
# The Kubernetes versions manifests are validated against: the chart's floor
# (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", None]

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", flush=True)


START = time.monotonic()


def ok(msg):
    print(f"ok   {msg}" + (f"  [{time.monotonic() - START:.1f} s]" if os.environ.get("KVROUTE_CHECK_TIMES") else ""), flush=True)


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Values sets the chart is rendered with (over values.yaml).
CASES = {
    "default": {},
    "engines-exact": {
        "engines": {"enabled": True, "replicas": 3, "extraArgs": ["--max-model-len=8192"],
                    "env": [{"name": "PYTHONHASHSEED", "value": "0"}]},
        "router": {
            "adminToken": {"existingSecret": "kvroute-admin"},
            "extProcPort": 9002,
            "config": {
                "policy": {"name": "cache_affinity"},
                "hashing": {"seed": "0"},
                "proxy": {"retries": 1, "forward_paths": ["/v1/models", "/tokenize"]},
                "admission": {"max_inflight": 512},
                "instances": [{"url": "http://10.0.0.9:8000"}],
            },
        },
    },
    "predicted-one-port": {
        "replicaCount": 3,
        "service": {"sessionAffinity": "ClientIP"},
        "metrics": {"podAnnotations": False},
        "router": {
            "adminPort": None,
            "config": {
                "policy": {"name": "weighted", "alpha": 2.0, "beta": 0.25},
                "directory": {"mode": "predicted", "kv_events_allow": ["10.0.0.0/8"]},
                "instances": [{"url": "http://engine-a:8000"}, {"url": "http://engine-b:8000/"}],
            },
        },
    },
}


# ---------------------------------------------------------------- 1. values

def check_values_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    v = jsonschema.Draft7Validator(schema)
    errs = [e.message for e in v.iter_errors(values)]
    if errs:
        fail(f"values.yaml against values.schema.json: {errs}")
    else:
        ok("values.yaml against values.schema.json")
    for name, over in CASES.items():
        errs = [f"{list(e.path)}: {e.message}" for e in v.iter_errors(deep_merge(values, over))]
        if errs:
            fail(f"values case {name} against the schema: {errs}")
    bad = [
        {"router": {"config": {"proxy": {"retires": 3}}}},
        {"router": {"config": {"directory": {"mode": "exakt"}}}},
        {"router": {"config": {"instances": [{"url": "https://x:1"}]}}},
        {"router": {"config": {"admin_token": "in-a-values-file"}}},
        {"router": {"config": {"access": {"api_keys": ["in-a-values-file"]}}}},
        {"replicas": 2},
    ]
    for over in bad:
        if v.is_valid(deep_merge(values, over)):
            fail(f"the schema accepts {over}")
    ok(f"the schema refuses {len(bad)} misspelt or misplaced values")
    return schema


def check_schema_knows_router_keys(router, schema):
    """Every key of the router's configuration is in the chart's schema, and
    the schema has no key the router lacks."""
    out = subprocess.run([router, "--print-config"], capture_output=True, text=True, check=True).stdout
    printed = tomllib.loads(out)
    cfg = schema["properties"]["router"]["properties"]["config"]["properties"]
    optional = {"model", "admin_token", "admin_listen", "ext_proc_listen", "hashing.tokenizer", "hashing.chat_template",
                "discovery.dns_kv_events", "discovery.file", "proxy.ca_file",
                "directory.warm_start"}
    chart_owned = {"admin_token", "admin_listen", "ext_proc_listen", "access.api_keys"}
    router_keys = set(optional)
    for k, v in printed.items():
        if isinstance(v, dict):
            router_keys |= {f"{k}.{kk}" for kk in v}
            router_keys.add(k)
        else:
            router_keys.add(k)
    schema_keys = set()
    for k, v in cfg.items():
        schema_keys.add(k)
        if k != "policy" and v.get("type") == "object":
            schema_keys |= {f"{k}.{kk}" for kk in v.get("properties", {})}
    missing = {k for k in router_keys - schema_keys - chart_owned if not k.startswith("policy.")}
    extra = schema_keys - router_keys
    if missing:
        fail(f"router configuration keys missing from deploy/helm/kvroute/values.schema.json "
             f"(add them under router.config): {sorted(missing)}")
    if extra:
        fail(f"deploy/helm/kvroute/values.schema.json has keys the router does not: {sorted(extra)}")
    if not missing and not extra:
        ok(f"values.schema.json has the router's {len(router_keys - chart_owned)} configuration keys")
    # Policy names: the router lists the known ones when given an unknown one.
    r = subprocess.run([router, "--policy", "no-such-policy", "--print-config"], capture_output=True, text=True)
    m = re.search(r"known policies: ([a-z0-9_, ]+)", r.stderr)
    enum = set(cfg["policy"]["properties"]["name"]["enum"])
    if not m:
        print(f"note the router did not list its policies; the schema's names are unchecked ({r.stderr.strip()[:200]})")
    elif set(m.group(1).replace(" ", "").split(",")) != enum:
        fail(f"values.schema.json policy names {sorted(enum)} differ from the router's: {m.group(1)}")
    else:
        ok(f"values.schema.json has the router's {len(enum)} policy names")


# ----------------------------------------------------------------- 3. helm

def helm_render_all(workdir):
    """{case: {template path: text}} and the lint verdict, from helm or its SDK."""
    renders = {}
    helm = shutil.which("helm")
    if helm:
        r = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True)
        (ok if r.returncode == 0 else fail)(f"helm lint --strict: {r.stdout.strip().splitlines()[-1:]}{r.stderr.strip()}")
        for name, over in CASES.items():
            vf = workdir / f"values-{name}.json"
            vf.write_text(json.dumps(over))
            r = subprocess.run([helm, "template", "demo", str(CHART), "-n", "llm", "-f", str(vf)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"helm template ({name}): {r.stderr.strip()}")
                continue
            renders[name] = {"helm-template.yaml": r.stdout}
        return renders, f"helm {subprocess.run([helm, 'version', '--short'], capture_output=True, text=True).stdout.strip()}"
    import helm_python

    report = helm_python.lint(str(CHART), strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    if problems:
        fail(f"helm lint --strict (Helm SDK): {problems}")
    else:
        infos = [m["error"] for m in report.get("messages", [])]
        ok(f"helm lint --strict (Helm SDK {helm_python.helm_sdk_version()}): no warnings{f' (info: {infos})' if infos else ''}")
    with helm_python.Chart.load(str(CHART)) as chart:
        for name, over in CASES.items():
            try:
                chart.validate_schema(over)
                renders[name] = chart.render(over, name="demo", namespace="llm", is_install=True)
            except helm_python.HelmError as e:
                fail(f"helm template ({name}): {e}")
    return renders, f"Helm SDK {helm_python.helm_sdk_version()} (helm-python-sdk)"


# ----------------------------------------------------- 2. kubernetes schemas

def kubernetes_validate(docs, what):
    """Each resource against the Kubernetes JSON schemas of kubernetes-validate
    (strict: unknown fields are errors), in process with the schemas cached."""
    import kubernetes_validate.utils as kv

    if not hasattr(kv.schema_contents, "cache_info"):
        kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    for ver in KUBE_VERSIONS:
        ver = ver or kv.latest_version()
        bad = 0
        for d in docs:
            try:
                kv.validate(d, ver, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError
                bad += 1
                fail(f"{what}: {d.get('kind')} {d.get('metadata', {}).get('name')} against Kubernetes {ver}: {e}")
        if not bad:
            ok(f"{what}: {len(docs)} resources valid against Kubernetes {ver} (strict)")


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def cross_check(docs, what):
    """What schemas cannot see: names and selectors that must agree."""
    pods = []  # (kind/name, template labels, container port names, containers, object)
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet"):
            t = d["spec"]["template"]
            ports = {p["name"]: p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
            if not matches(d["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]):
                fail(f"{what}: {d['kind']} {d['metadata']['name']}: selector does not match its pods")
            for c in t["spec"]["containers"]:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        fail(f"{what}: {d['metadata']['name']} {probe} port {port!r} is not a container port")
            cms = {x["metadata"]["name"] for x in docs if x.get("kind") == "ConfigMap"}
            for vol in t["spec"].get("volumes", []):
                if "configMap" in vol and vol["configMap"]["name"] not in cms:
                    fail(f"{what}: {d['metadata']['name']} mounts ConfigMap {vol['configMap']['name']} that is not there")
            pods.append((d, t["metadata"]["labels"], ports))
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        if kind == "Service":
            sel = d["spec"].get("selector")
            found = [p for p in pods if matches(sel, p[1])]
            if not found:
                fail(f"{what}: Service {name} selects no pod")
            for port in d["spec"]["ports"]:
                tp = port.get("targetPort")
                if isinstance(tp, str) and not all(tp in p[2] for p in found):
                    fail(f"{what}: Service {name} targetPort {tp!r} is not a port of its pods")
        elif kind == "PodDisruptionBudget":
            if not any(matches(d["spec"]["selector"]["matchLabels"], p[1]) for p in pods):
                fail(f"{what}: PodDisruptionBudget {name} selects no pod")
        elif kind == "NetworkPolicy":
            if not any(matches(d["spec"]["podSelector"]["matchLabels"], p[1]) for p in pods):
                fail(f"{what}: NetworkPolicy {name} selects no pod")
            for rule in d["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    ps = peer.get("podSelector", {}).get("matchLabels")
                    if ps and not any(matches(ps, p[1]) for p in pods):
                        fail(f"{what}: NetworkPolicy {name} admits pods that do not exist: {ps}")
    # The router's engines: pod DNS names of a StatefulSet here, ports it serves.
    for d in docs:
        if d.get("kind") != "ConfigMap" or "router.toml" not in d.get("data", {}):
            continue
        cfg = tomllib.loads(d["data"]["router.toml"])
        sets = {x["metadata"]["name"]: x for x in docs if x.get("kind") == "StatefulSet"}
        for inst in cfg.get("instances", []):
            for ep in [inst["url"], inst.get("kv_events", ""), inst.get("replay", "")]:
                m = re.search(r"//([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)", ep)
                if not m or m.group(1) not in sets:
                    continue
                sts = sets[m.group(1)]
                ports = {p["containerPort"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                if sts["spec"]["serviceName"] != m.group(3) or int(m.group(2)) >= sts["spec"]["replicas"] or int(m.group(4)) not in ports:
                    fail(f"{what}: router instance endpoint {ep} is not a pod/port of StatefulSet {m.group(1)}")
    ok(f"{what}: ports, selectors and engine names agree")


def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------- 4. router.toml

def router_accepts(router, toml_text, what, workdir):
    f = workdir / (re.sub(r"[^a-z0-9]+", "-", what.lower()) + ".toml")
    f.write_text(toml_text)
    r = subprocess.run([router, "--config", str(f), "--print-config"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"the router refuses {what}: {r.stderr.strip()}")
        return None
    ok(f"the router accepts {what}")
    return tomllib.loads(r.stdout)


# ------------------------------------------------------ 5. image healthcheck

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":"ok"}' if self.path == "/health" else b"{}"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get(url):
    """The status of GET url; None when nothing answers."""
    try:
        with urlopen(url, timeout=3) as r:
            return r.status
    except HTTPError as e:
        return e.code
    except OSError:
        return None


def check_image_healthcheck(router, workdir):
    """One router with the image's configuration and one engine that is down,
    then up: the health check must say unhealthy, then healthy."""
    text = (ROOT / "deploy/docker/router.toml").read_text()
    admin, port, engine_port = free_port(), free_port(), free_port()
    text = text.replace(IMAGE_DATASETS, str(ROOT / "datasets"))
    text, n = re.subn(r'(?m)^admin_listen = "[^"]*"', f'admin_listen = "127.0.0.1:{admin}"', text)
    if n != 1:
        fail("deploy/docker/router.toml: no admin_listen line to point at a free port")
        return
    cfg = workdir / "image-router.toml"
    cfg.write_text(text)
    hc = ["bash", str(ROOT / "deploy/docker/healthcheck.sh")]
    args = [router, "--config", str(cfg), "--health-interval", "0.2", "--metrics-interval", "0",
            "--instance", f"http://127.0.0.1:{engine_port}"]
    # As in the image: a wildcard listen address, probed on loopback.
    env = dict(os.environ, KVROUTE_LISTEN=f"0.0.0.0:{port}", RUST_LOG="warn")
    env.pop("KVROUTE_ADMIN_TOKEN", None)
    env.pop("KVROUTE_HEALTH_ADDR", None)

    def wait_for(want_exit, want_health):
        deadline, code, health = time.monotonic() + 30, None, None
        while time.monotonic() < deadline and proc.poll() is None:
            code = subprocess.run(hc, env=env, capture_output=True).returncode
            health = get(f"http://127.0.0.1:{port}/health")
            if code == want_exit and health == want_health:
                break
            time.sleep(0.2)
        return code, health

    engine = None
    log = open(workdir / "router.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
    try:
        code, health = wait_for(1, 503)
        if (code, health) != (1, 503):
            fail(f"image HEALTHCHECK with the engine down: exit {code}, /health {health}; wanted 1, 503 (log {log.name})")
            return
        ok("image HEALTHCHECK with the engine down: exit 1 (/health 503)")
        engine = ThreadingHTTPServer(("127.0.0.1", engine_port), Engine)
        threading.Thread(target=engine.serve_forever, daemon=True).start()
        code, health = wait_for(0, 200)
        if (code, health) != (0, 200):
            fail(f"image HEALTHCHECK with the engine up: exit {code}, /health {health}; wanted 0, 200 (log {log.name})")
            return
        ok("image HEALTHCHECK with the engine up: exit 0 (/health 200)")
        pub, adm = get(f"http://127.0.0.1:{port}/metrics"), get(f"http://127.0.0.1:{admin}/metrics")
        if (pub, adm) != (404, 200):
            fail(f"/metrics: public port {pub}, admin port {adm}; wanted 404, 200")
        else:
            ok("liveness target: /metrics 200 on the admin port, 404 on the public one")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
            if rc != 0:
                fail(f"router exited {rc} on SIGTERM (log {log.name})")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fail("router still running 15 s after SIGTERM")
        log.close()
        if engine:
            engine.shutdown()
            engine.server_close()


# ------------------------------------------------------------ 6. Dockerfile

def dockerignored(path, patterns):
    """Whether .dockerignore excludes `path` (or a folder above it)."""
    parts = Path(path).parts
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        rx = re.compile("^" + re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$")
        if any(rx.match("/".join(parts[: i + 1])) for i in range(len(parts))):
            excluded = not neg
    return excluded


def check_dockerfile():
    import dockerfile

    before = len(failures)

    try:
        cmds = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    except dockerfile.GoParseError as e:
        fail(f"Dockerfile does not parse: {e}")
        return
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for must in ["target", ".git"]:
        if not dockerignored(must, ignore):
            fail(f".dockerignore does not exclude {must}")
    args = {c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in cmds if c.cmd == "ARG" and "=" in c.value[0]}
    stages = [c for c in cmds if c.cmd == "FROM"]
    if len(stages) < 2:
        fail("Dockerfile: not multi-stage")
    rust = re.match(r"rust:(\d+\.\d+)", stages[0].value[0].replace("${RUST_VERSION}", args.get("RUST_VERSION", "")))
    msrv = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    if not rust or tuple(map(int, rust.group(1).split("."))) < tuple(map(int, msrv.split(".")[:2])):
        fail(f"Dockerfile: builder {stages[0].value[0]} older than rust-version {msrv}")
    if not all("${DEBIAN_RELEASE}" in st.value[0] for st in stages):
        fail("Dockerfile: builder and runtime on different Debian releases (glibc)")
    final = cmds[cmds.index(stages[-1]):]
    # What the build stage builds and copies out.
    build = " ".join(c.value[0] for c in cmds[: cmds.index(stages[-1])] if c.cmd == "RUN")
    built = set(re.findall(r"--bin (\S+)", build))
    copied = set(re.findall(r"target/release/(\S+)", build))
    if "--locked" not in build or not built or built != copied:
        fail(f"Dockerfile: cargo build --locked of {sorted(built)} but copies {sorted(copied)}")
    for b in built:
        if not any(f'name = "{b}"' in p.read_text() for p in ROOT.glob("bins/*/Cargo.toml")):
            fail(f"Dockerfile: no binary {b} in bins/")
    # The image's files: context copies (checked) and the binaries.
    image = {f"/usr/local/bin/{b}": None for b in built}
    for c in final:
        if c.cmd != "COPY" or any(f.startswith("--from") for f in c.flags):
            continue
        *srcs, dest = c.value
        for src in srcs:
            if not (ROOT / src).exists():
                fail(f"Dockerfile line {c.start_line}: {src} is not in the repository")
            elif dockerignored(src, ignore):
                fail(f"Dockerfile line {c.start_line}: {src} is excluded by .dockerignore")
            elif (ROOT / src).is_dir():
                for f in (ROOT / src).rglob("*"):
                    if f.is_file():
                        image[dest.rstrip("/") + "/" + str(f.relative_to(ROOT / src))] = f
            else:
                image[dest if not dest.endswith("/") else dest + Path(src).name] = ROOT / src
    for c in final:
        if c.cmd in ("ENTRYPOINT", "CMD", "HEALTHCHECK") and not c.json:
            fail(f"Dockerfile line {c.start_line}: {c.cmd} not in exec (JSON) form")
    entry = next(c for c in final if c.cmd == "ENTRYPOINT").value
    cmd = next(c for c in final if c.cmd == "CMD").value
    health = next(c for c in final if c.cmd == "HEALTHCHECK").value
    for what, path in [("ENTRYPOINT", entry[0]), ("HEALTHCHECK", health[1])]:
        if path not in image:
            fail(f"Dockerfile: {what} {path} is not in the image")
    if entry[0] != "/usr/local/bin/router":
        fail(f"Dockerfile: ENTRYPOINT {entry} is not the router")
    conf_path = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
    if conf_path not in image:
        fail(f"Dockerfile: CMD's config {conf_path} is not in the image")
        return
    conf = tomllib.loads(image[conf_path].read_text())
    for key in ("tokenizer", "chat_template"):
        path = conf.get("hashing", {}).get(key)
        if path and path not in image:
            fail(f"Dockerfile: the image's {conf_path} names {path}, which is not in the image")
    user = next((c.value[0] for c in reversed(final) if c.cmd == "USER"), "root")
    if not re.fullmatch(r"[1-9]\d*(:\d+)?", user):
        fail(f"Dockerfile: USER {user} is not a numeric non-root user (runAsNonRoot needs one)")
    env = {}
    for c in final:
        if c.cmd == "ENV":
            env.update(dict(zip(c.value[::2], c.value[1::2])))
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    want = {env.get("KVROUTE_LISTEN", "").rsplit(":", 1)[-1], conf.get("admin_listen", ":").rsplit(":", 1)[-1]} - {""}
    if want - exposed:
        fail(f"Dockerfile: EXPOSE {sorted(exposed)} misses the configured ports {sorted(want - exposed)}")
    if len(failures) == before:
        ok(f"Dockerfile: {len(cmds)} instructions parse; {len(image)} image files, binaries, config, tokenizer, user and ports agree")


# ------------------------------------------------------------------- main

def main():
    router = sys.argv[1]
    workdir = Path(tempfile.mkdtemp(prefix="kvroute-deploy-check."))
    try:
        schema = check_values_schema()
        check_schema_knows_router_keys(router, schema)

        k8s_files = sorted(K8S.glob("*.yaml"))
        k8s_docs = [d for f in k8s_files for d in load_docs(f.read_text())]
        kubernetes_validate(k8s_docs, "deploy/k8s")
        cross_check(k8s_docs, "deploy/k8s")
        for d in k8s_docs:
            if d["kind"] == "ConfigMap" and "router.toml" in d["data"]:
                router_accepts(router, d["data"]["router.toml"], f"deploy/k8s ConfigMap {d['metadata']['name']}", workdir)
        for f in ["deploy/docker/router.toml", "deploy/systemd/router.toml", "bins/router/router.example.toml"]:
            router_accepts(router, (ROOT / f).read_text(), f, workdir)

        renders, engine = helm_render_all(workdir)
        for case, files in renders.items():
            docs = [d for path, text in sorted(files.items()) if not path.endswith("NOTES.txt") for d in load_docs(text)]
            kubernetes_validate(docs, f"chart render {case}")
            cross_check(docs, f"chart render {case}")
            over = deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), CASES[case])
            for d in docs:
                if d["kind"] == "ConfigMap" and "router.toml" in d["data"]:
                    cfg = router_accepts(router, d["data"]["router.toml"], f"the chart's router.toml ({case})", workdir)
                    want = (over["engines"]["replicas"] if over["engines"]["enabled"] else 0) + len(over["router"]["config"]["instances"])
                    if cfg is not None and len(cfg.get("instances", [])) != want:
                        fail(f"chart render {case}: {len(cfg.get('instances', []))} instances, wanted {want}")
                    if cfg is not None and over["router"]["adminPort"] and cfg.get("admin_listen") != f"0.0.0.0:{over['router']['adminPort']}":
                        fail(f"chart render {case}: admin_listen {cfg.get('admin_listen')}")
                    epp = over["router"].get("extProcPort")
                    if cfg is not None and cfg.get("ext_proc_listen") != (f"0.0.0.0:{epp}" if epp else None):
                        fail(f"chart render {case}: ext_proc_listen {cfg.get('ext_proc_listen')}, extProcPort {epp}")
                    svc_ports = {p["name"]: p for x in docs if x["kind"] == "Service" and x["metadata"]["name"].endswith("kvroute") for p in x["spec"]["ports"]}
                    if bool(epp) != ("grpc-ext-proc" in svc_ports):
                        fail(f"chart render {case}: extProcPort {epp} but Service ports {sorted(svc_ports)}")
        if renders:
            ok(f"chart rendered with {engine}: {', '.join(renders)}")

        check_dockerfile()
        check_image_healthcheck(router, workdir)
    finally:
        if not failures:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} deployment check(s) failed (files in {workdir})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
