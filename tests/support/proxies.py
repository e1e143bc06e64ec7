"""The deploy configs of the load balancer and the CDN stand-in (deploy/nginx, deploy/varnish)
made runnable on the loopback, for tests that start the real nginx and varnishd."""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Sequence
from pathlib import Path

from tests.support.servers import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
VCL = ROOT / "deploy" / "varnish" / "default.vcl"
NGINX = "/usr/sbin/nginx"
VARNISHD = "/usr/sbin/varnishd"


def _replace(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    """``re.sub`` that insists the pattern matched exactly ``count`` times, so that drift in the
    deploy config fails here instead of silently testing something else."""
    new, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert found == count, f"{pattern!r} matched {found} times, want {count}"
    return new


def render_nginx_conf(prefix: Path, listen_port: int, upstream_ports: Sequence[int]) -> Path:
    """deploy/nginx/nginx.conf made runnable here: tofu-N:8080 -> 127.0.0.1:PORT (in order),
    listening on 127.0.0.1:``listen_port``, logs, pid and temp files under ``prefix``.
    Everything else (hashing, retries, timeouts) is the deploy config as written."""
    text = NGINX_CONF.read_text()
    hosts = re.findall(r"^\s*server\s+(tofu-\d+):8080\b", text, flags=re.MULTILINE)
    assert len(hosts) == len(upstream_ports), f"upstream servers in {NGINX_CONF}: {hosts}"
    for host, port in zip(hosts, upstream_ports, strict=True):
        text = _replace(text, rf"\bserver\s+{host}:8080\b", f"server 127.0.0.1:{port}")
    text = _replace(text, r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{listen_port};")
    text = _replace(text, r"^worker_processes .*;", "worker_processes 1;")
    text = _replace(text, r"^error_log .*;", f"error_log {prefix}/error.log info;")
    text = _replace(text, r"^pid .*;", f"pid {prefix}/nginx.pid;")
    text = _replace(
        text, r"^(\s*)access_log /dev/stdout (\w+);", rf"\1access_log {prefix}/access.log \2;"
    )
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace(text, r"^http \{\n", "http {\n" + temp_paths)
    if os.geteuid() == 0:  # workers would otherwise run as nobody, outside our temp directory
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        text = f"user {user} {group};\n" + text
    conf = prefix / "nginx.conf"
    prefix.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    return conf


def nginx_command(conf: Path, *extra: str) -> list[str]:
    prefix = conf.parent
    return [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), *extra]


def render_vcl(directory: Path, balancer_port: int) -> Path:
    """deploy/varnish/default.vcl with its backend (the compose service ``nginx``) at
    127.0.0.1:``balancer_port``: varnishd resolves backend hosts when it compiles."""
    text = VCL.read_text()
    text = _replace(text, r'^(\s*)\.host = "nginx";', r'\1.host = "127.0.0.1";')
    text = _replace(text, r'^(\s*)\.port = "8080";', rf'\1.port = "{balancer_port}";')
    directory.mkdir(parents=True, exist_ok=True)
    vcl = directory / "default.vcl"
    vcl.write_text(text)
    return vcl
