"""Offline validation of deploy/ and docker-compose.yml with the real tools: the compose-spec
JSON schema and ``docker-compose config``, the Kubernetes JSON schemas (kubernetes-validate),
``nginx -t``, ``varnishd -C``, hadolint; plus the cross-checks no tool does: every TOFU_*
variable is a real setting with a valid value, ports, probe paths, names and timeouts agree
across the files, and the Dockerfile builds what pyproject.toml describes."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.support.proxies import (
    NGINX_CONF,
    VARNISHD,
    VCL,
    nginx_command,
    render_nginx_conf,
    render_vcl,
)
from tests.support.servers import ROOT
from tofu.config import CORES_PER_WORKER, SETTINGS, Config, parse_bytes
from tofu.metrics import Metrics

DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = DEPLOY / "k8s"
VENV_BIN = Path(sys.executable).parent
TOFU_ENV = {s.env: s for s in SETTINGS}
# Kubernetes releases the manifests must be valid for: an old supported one and the newest known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def run(command: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=60, **kwargs
    )


def tool(name: str) -> str:
    """A command from the virtualenv (test extra) or the system (``make system-deps``)."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is missing: pip install -e '.[test]' and make system-deps install it"
    return found


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def tofu_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def test_compose_file_matches_the_compose_specification() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Debian's docker-compose (v1) resolves and validates the file without a Docker engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOFU_", "MINIO_"))}
    result = run([tool("docker-compose"), "-f", COMPOSE, "config"], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"minio", "seed", "tofu-1", "tofu-2", "nginx", "varnish"}
    for name in ("tofu-1", "tofu-2"):
        service = resolved["services"][name]
        assert Path(service["build"]["context"]) == ROOT
        assert service["environment"]["TOFU_SECRET"]  # a default, so `up` works out of the box


def test_compose_wires_minio_tofu_nginx_and_varnish(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = tofu_services(compose)
    assert len(nodes) >= 2, "the balancer needs two tofu replicas or more"

    minio, seed = services["minio"], services["seed"]
    assert "healthcheck" in minio
    assert seed["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "./samples:/samples:ro" in seed["volumes"]
    script = " ".join(seed["command"])
    for name, node in nodes.items():
        env = node["environment"]
        bucket = env["TOFU_ORIGIN"].removeprefix("s3://").split("/")[0]
        assert env["TOFU_ORIGIN"].startswith("s3://"), name
        assert f"mc mb --ignore-existing local/{bucket}" in script
        assert f"mc mirror --overwrite /samples local/{bucket}" in script
        assert env["TOFU_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
        assert env["TOFU_SECRET"]
        assert node["depends_on"]["seed"]["condition"] == "service_completed_successfully"
        # The healthcheck is the image's (Dockerfile HEALTHCHECK, liveness); compose must
        # neither disable it nor make it readiness (a draining or origin-less node is alive).
        assert not node.get("healthcheck", {}).get("disable", False)
        assert "/readyz" not in json.dumps(node.get("healthcheck", {}))
        # Docker's SIGKILL must come after the drain and the shutdown timeout.
        grace = _seconds(node["stop_grace_period"])
        assert grace > float(env["TOFU_DRAIN_SECONDS"]) + float(env["TOFU_SHUTDOWN_TIMEOUT"])

    nginx = services["nginx"]
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(nodes)
    assert "healthcheck" in nginx
    upstreams = re.findall(r"^\s*server\s+([\w-]+):(\d+)", NGINX_CONF.read_text(), re.MULTILINE)
    assert {host for host, _ in upstreams} == set(nodes)
    assert {int(port) for _, port in upstreams} == {int(dockerfile_env()["TOFU_PORT"])}

    varnish = services["varnish"]
    assert "./deploy/varnish/default.vcl:/etc/varnish/default.vcl:ro" in varnish["volumes"]
    assert varnish["depends_on"]["nginx"]["condition"] == "service_healthy"
    assert "healthcheck" in varnish
    vcl = VCL.read_text()
    assert re.search(r'\.host = "nginx";', vcl)
    listen = re.search(r"^\s*listen (\d+);", NGINX_CONF.read_text(), re.MULTILINE)
    assert listen and f'.port = "{listen[1]}";' in vcl
    command = varnish["command"]
    assert command[:4] == ["varnishd", "-F", "-f", "/etc/varnish/default.vcl"]
    workdir = command[command.index("-n") + 1]  # a tmpfs, the same for varnishadm
    assert f"{workdir}:exec" in varnish["tmpfs"]
    assert varnish["healthcheck"]["test"] == ["CMD", "varnishadm", "-n", workdir, "ping"]
    published = {p.rsplit(":", 1)[-1] for p in varnish["ports"]}
    assert any(f"=:{port}," in " ".join(command) for port in published)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert match, f"unexpected duration {text!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


# --- TOFU_* variables everywhere ----------------------------------------------------------


KUSTOMIZATION = K8S / "kustomization.yaml"


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    """The Kubernetes objects (the kustomization is kustomize's, not the API server's)."""
    for path in sorted(set(K8S.glob("*.yaml")) - {KUSTOMIZATION}):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def deployment() -> dict[str, Any]:
    (found,) = [d for _, d in k8s_documents() if d["kind"] == "Deployment"]
    return found


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """Plain values; a variable from a Secret or elsewhere stands in as a placeholder."""
    return {
        e["name"]: e.get("value", "from-a-secret-of-at-least-32-bytes")
        for e in container.get("env", [])
    }


def env_sets() -> dict[str, dict[str, str]]:
    sets = {
        f"compose {name}": {k: str(v) for k, v in service["environment"].items()}
        for name, service in tofu_services(yaml.safe_load(COMPOSE.read_text())).items()
    }
    for container in deployment()["spec"]["template"]["spec"]["containers"]:
        sets[f"k8s {container['name']}"] = container_env(container)
    sets["Dockerfile"] = dockerfile_env()
    return sets


def test_every_tofu_variable_is_a_real_setting() -> None:
    everywhere = COMPOSE.read_text() + DOCKERFILE.read_text() + (DEPLOY / "README.md").read_text()
    everywhere += "".join(p.read_text() for p in K8S.glob("*.yaml"))
    named = set(re.findall(r"\bTOFU_[A-Z0-9_]+\b", everywhere))
    assert named, "no TOFU_ variables found at all"
    unknown = sorted(named - set(TOFU_ENV))
    assert not unknown, f"not settings of tofu.config.SETTINGS: {unknown}"


@pytest.mark.parametrize("where", ["compose tofu-1", "compose tofu-2", "k8s tofu"])
def test_deploy_environments_are_valid_configurations(where: str) -> None:
    """What tofu would make of each environment, loaded the way ``tofu serve`` loads it (with
    the image's ENV underneath)."""
    environ = {**dockerfile_env(), **env_sets()[where]}
    config = Config.load({}, environ)
    assert [s.scheme for route in config.origin_table for s in route.sources] == ["s3"]
    assert config.secret, "production shapes sign URLs"
    assert config.host == "0.0.0.0" and config.port == 8080
    assert config.log_format == "json"
    assert not config.dev


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kinds = []
    for path, document in k8s_documents():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} ({document.get('kind')}) for Kubernetes {version}: {exc}")
        kinds.append(document["kind"])
    assert sorted(kinds) == sorted(
        [
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )


def test_k8s_deployment_probes_resources_and_graceful_stop() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {**dockerfile_env(), **container_env(container)}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["TOFU_PORT"]), "ops": int(env["TOFU_OPS_LISTEN"][1:])}
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["ops"])

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The image's ENTRYPOINT (tofu serve) runs; configuration is the environment.
    assert "command" not in container and "args" not in container

    secret_ref = next(e for e in container["env"] if e["name"] == "TOFU_SECRET")
    assert set(secret_ref) == {"name", "valueFrom"}
    assert secret_ref["valueFrom"]["secretKeyRef"]["name"]

    # SIGTERM starts tofu's own drain: the kubelet must wait out drain + shutdown timeout.
    drain = float(env["TOFU_DRAIN_SECONDS"]) + float(env["TOFU_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > drain
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pre_stop_sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] > drain + pre_stop_sleep

    resources = container["resources"]
    cpu = resources["limits"]["cpu"]
    assert resources["requests"]["cpu"] == cpu
    # The defaults' rule, from the CPU limit (inside a container tofu sees the host's CPUs).
    assert int(env["TOFU_WORKERS"]) == max(1, int(cpu) // CORES_PER_WORKER)
    assert int(env["TOFU_MAX_RENDERS"]) == int(cpu) + 1
    memory = _mebibytes(resources["limits"]["memory"])
    assert _mebibytes(resources["requests"]["memory"]) <= memory
    caches = parse_bytes(env["TOFU_CACHE_SIZE"]) + parse_bytes(env["TOFU_ORIGINALS_CACHE_SIZE"])
    # Each worker has its own caches, plus a base and render working sets (deploy/README.md).
    assert int(env["TOFU_WORKERS"]) * (caches / 2**20 + 100) < memory

    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(dockerfile_user().split(":")[0])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # ...so the multi-worker metrics directory needs a writable /tmp.
    assert int(env["TOFU_WORKERS"]) == 1 or any(
        m["mountPath"] == "/tmp" for m in container["volumeMounts"]
    )


def test_k8s_probes_detach_a_draining_pod_and_never_restart_a_busy_one() -> None:
    """Readiness is about this pod only (never the origins, so an origin outage cannot empty
    the Service): it must notice a drain within the drain, yet one slow answer must not take a
    pod out. Liveness restarts only a pod silent for longer than the longest request."""
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    env = {**dockerfile_env(), **container_env(container)}
    request_timeout = float(env.get("TOFU_REQUEST_TIMEOUT", Config().request_timeout))
    # Kubernetes' defaults for what a probe leaves out.
    defaults = {"periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3}
    ready = {**defaults, **container["readinessProbe"]}
    live = {**defaults, **container["livenessProbe"]}
    startup = {**defaults, **container["startupProbe"]}

    assert ready["failureThreshold"] >= 2, "one slow /readyz would take a busy pod out"
    noticed = ready["failureThreshold"] * ready["periodSeconds"] + ready["timeoutSeconds"]
    assert noticed <= float(env["TOFU_DRAIN_SECONDS"])
    assert ready["timeoutSeconds"] <= ready["periodSeconds"]

    silent = (live["failureThreshold"] - 1) * live["periodSeconds"]
    assert silent >= request_timeout, "liveness would restart a pod busy with long requests"
    assert live["timeoutSeconds"] >= ready["timeoutSeconds"]
    assert silent > noticed
    # Liveness and readiness wait for the startup probe; it gives tofu time to start.
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 10


def _mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"use Mi or Gi for memory, got {quantity!r}"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_the_kustomization_applies_every_manifest_and_names_the_image() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    manifests = {path.name for path, _ in k8s_documents()}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    (image,) = kustomization["images"]
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [image["name"]]
    text = KUSTOMIZATION.read_text()
    # The secret the Deployment reads is created by a documented command, not left to guess.
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for c in containers
        for env in c["env"]
        if "valueFrom" in env and "secretKeyRef" in env["valueFrom"]
    ]
    for ref in refs:
        assert f"kubectl create secret generic {ref['name']} --from-literal={ref['key']}=" in text
    assert "docker push" in text and "kubectl apply -k deploy/k8s" in text


def test_k8s_objects_refer_to_each_other() -> None:
    by_kind = {d["kind"]: d for _, d in k8s_documents()}
    dep = by_kind["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pod = dep["spec"]["template"]["spec"]

    service = by_kind["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"] for c in pod["containers"] for p in c["ports"]}
    assert port["targetPort"] in container_ports

    hpa = by_kind["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2

    pdb = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["minReplicas"] > pdb["spec"].get("maxUnavailable", 0)

    assert pod["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]

    ingress = by_kind["Ingress"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$request_uri"
    retried = annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()
    assert {"error", "timeout", "http_502", "http_503"} <= set(retried)
    backends = [
        p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    assert backends == [{"name": service["metadata"]["name"], "port": {"name": port["name"]}}]


# --- nginx --------------------------------------------------------------------------------


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = render_nginx_conf(tmp_path / "nginx", 18080, [18081, 18082])
    result = run(nginx_command(conf, "-t"))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_hashes_the_uri_and_skips_failed_nodes() -> None:
    text = NGINX_CONF.read_text()
    upstream = re.search(r"upstream tofu \{(.*?)\}", text, re.DOTALL)
    assert upstream
    assert re.search(r"^\s*hash \$request_uri consistent;", upstream[1], re.MULTILINE)
    assert "proxy_pass http://tofu;" in text
    retried = re.search(r"^\s*proxy_next_upstream ([^;]+);", text, re.MULTILINE)
    assert retried and {"error", "timeout", "http_502", "http_503"} <= set(retried[1].split())
    assert "non_idempotent" not in retried[1], "only GET/HEAD may be retried"
    # nginx gives up on tofu later than tofu gives up on the origin (it answers 504 itself).
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", text)
    assert read_timeout and int(read_timeout[1]) > Config().request_timeout


# --- Varnish ------------------------------------------------------------------------------


def test_vcl_compiles_with_varnishd(tmp_path: Path) -> None:
    vcl = render_vcl(tmp_path, 18080)
    # -j none: no privilege separation, so it reads the file as the user running the tests.
    result = run([VARNISHD, "-j", "none", "-C", "-f", vcl, "-n", tmp_path / "varnish"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VRT_" in result.stdout + result.stderr  # the generated C source


def test_vcl_probes_readiness_and_never_caches_health() -> None:
    vcl = VCL.read_text()
    assert re.search(r'"GET /readyz HTTP/1.1"', vcl)
    assert re.search(r"\.probe = \w+;", vcl)
    assert re.search(r"healthz\|readyz\|metrics", vcl)
    assert "return (pass);" in vcl


# --- Dockerfile and .dockerignore ---------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", arguments))
    return env


def dockerfile_user() -> str:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    return users[-1]


def test_dockerfile_passes_hadolint() -> None:
    result = run([tool("hadolint"), "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_tofu_serve_as_non_root_with_a_healthcheck() -> None:
    final = final_stage()
    keywords = [keyword for keyword, _ in final]
    user = dockerfile_user()
    assert user.split(":")[0] not in ("0", "root")
    assert re.fullmatch(r"\d+(:\d+)?", user), "numeric, so runAsNonRoot can verify it"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")

    (entrypoint,) = [a for k, a in final if k == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tofu", "serve"]
    assert ("STOPSIGNAL", "SIGTERM") in final
    env = dockerfile_env()
    assert env["TOFU_HOST"] == "0.0.0.0"
    assert ("EXPOSE", env["TOFU_PORT"]) in final

    (healthcheck,) = [a for k, a in final if k == "HEALTHCHECK"]
    options_text, command_text = healthcheck.split(" CMD ", 1)
    command = json.loads(command_text)
    assert command[:2] == ["python", "-c"]
    # Liveness, never readiness: Swarm replaces unhealthy containers.
    assert "/healthz" in command[2] and "/readyz" not in command[2]
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", options_text))
    # Lenient: unhealthy only after silence longer than the longest request; the check's own
    # timeout fires before Docker's, so a slow answer is a failed check, not a killed one.
    silent = (int(options["retries"]) - 1) * _seconds(options["interval"])
    assert silent >= Config().request_timeout
    client_timeout = re.search(r"timeout=(\d+(?:\.\d+)?)\)", command[2])
    assert client_timeout and float(client_timeout[1]) < _seconds(options["timeout"])
    # The check itself works: run it against a stand-in server on a free port.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        port = str(server.server_address[1])
        ok = run([sys.executable, *command[1:]], env={**os.environ, "TOFU_PORT": port})
        server.shutdown()
    assert ok.returncode == 0, ok.stderr
    assert seen == ["/healthz"]
    refused = run([sys.executable, *command[1:]], env={**os.environ, "TOFU_PORT": "1"})
    assert refused.returncode != 0


def test_dockerfile_python_and_install_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    instructions = dockerfile_instructions()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in instructions if k == "ARG")))
    bases = [a.split()[0] for k, a in instructions if k == "FROM"]
    assert len(bases) == 2, "build stage + runtime stage"
    for base in bases:
        base = base.replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", ""))
        match = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", base)
        assert match, f"expected a python:X.Y-slim base, got {base!r}"
        assert match[1] in SpecifierSet(project["requires-python"]), (
            f"python {match[1]} does not satisfy requires-python {project['requires-python']}"
        )

    # The build copies what the package build needs and pip-installs that directory.
    copied = {
        source
        for keyword, arguments in instructions
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert {"pyproject.toml", project["readme"], "tofu"} <= copied
    installs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert re.search(r"pip install --no-cache-dir /src\b", installs[0])
    assert ("WORKDIR", "/src") in instructions
    # ENTRYPOINT's `tofu` is the console script pyproject declares.
    assert project["scripts"]["tofu"] == "tofu.cli:main"
    assert "ENV" in dict(final_stage()) and "/opt/tofu/bin" in dockerfile_env()["PATH"]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if piece.startswith("**"):
            parts.append("(?:.*/)?" if piece.endswith("/") else ".*")
        elif piece == "*":
            parts.append("[^/]*")
        elif piece == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def in_build_context(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    candidates = ["/".join(path.split("/")[: i + 1]) for i in range(len(path.split("/")))]
    included = True
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!"))
        if any(regex.fullmatch(c) for c in candidates):
            included = negated
    return included


def test_dockerignore_sends_the_package_and_nothing_else() -> None:
    package = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tofu").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "tofu/py.typed" in package and "tofu/cli.py" in package
    for path in ["pyproject.toml", "README.md", *package]:
        assert in_build_context(path), f"{path} is needed by the build but .dockerignore drops it"
    for path in [
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "samples/recipes/1/cups.jpg",
        "docker-compose.yml",
        "tofu/__pycache__/cli.cpython-311.pyc",
        ".env",
    ]:
        assert not in_build_context(path), f"{path} should stay out of the build context"
    assert fnmatch.fnmatch("tofu/cli.py", "tofu/*")  # the regex above mirrors this


# --- deploy/README.md ---------------------------------------------------------------------


def test_deploy_readme_names_real_metrics_and_a_read_only_iam_policy() -> None:
    readme = (DEPLOY / "README.md").read_text()
    families = list(Metrics().registry.collect())
    samples = {f.name for f in families} | {s.name for f in families for s in f.samples}
    named = set(re.findall(r"\b(?:tofu|process)_[a-z_]+\b", readme))
    assert named and not named - samples, f"unknown metrics: {sorted(named - samples)}"

    (policy_text,) = re.findall(r"```json\n(.*?)```", readme, re.DOTALL)
    policy = json.loads(policy_text)
    actions = {(s["Action"], s["Resource"]) for s in policy["Statement"] if s["Effect"] == "Allow"}
    assert actions == {
        ("s3:GetObject", "arn:aws:s3:::example-originals/*"),
        ("s3:ListBucket", "arn:aws:s3:::example-originals"),
    }
    assert "docker compose up" in readme
    assert "estimates until measured" in readme
