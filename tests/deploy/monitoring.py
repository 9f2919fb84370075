"""What the monitoring tests share: the files of deploy/monitoring/, promtool, the metric names
that PromQL expressions use and those the project and Ray export, and a real Prometheus."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import ray
import yaml

from tests.deploy.manifests import DEPLOY, ROOT

MONITORING = DEPLOY / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "climate.rules.yml"
RULE_TESTS = MONITORING / "rules" / "climate.rules.test.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "climate.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "climate.yml"
# Where Ray writes its Prometheus service-discovery file (ray/_private/ray_constants.py:
# PROMETHEUS_SERVICE_DISCOVERY_FILE in the temp dir, /tmp/ray unless --temp-dir says otherwise).
RAY_SD_FILE = "prom_metrics_service_discovery.json"
# Grafana's built-in interval variables, replaced by a duration before PromQL is checked.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")
METRIC_CLASSES = ("Counter", "Gauge", "Histogram")
# ray.util.metrics and Ray Serve's subclasses of its classes (replica tags added)
_RAY_METRIC_MODULES = ("ray.util.metrics", "ray.util", "ray.serve.metrics", "ray.serve")

T = TypeVar("T")


# -- promtool -----------------------------------------------------------------------------------


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS``, output captured as text (stdout and stderr together)."""
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (.ci/run does it)"
    command = [binary, *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def copy_monitoring(tmp_path: Path) -> Path:
    """A copy of deploy/monitoring/ to break; its path."""
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy)
    return copy


def replace_once(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in the file (fails if it is not there once)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


# -- the expressions ----------------------------------------------------------------------------


def rule_expressions(path: Path = RULES) -> dict[str, str]:
    """Each rule's name (alert or record) and its PromQL expression."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {
        rule.get("alert") or rule["record"]: str(rule["expr"])
        for group in groups
        for rule in group["rules"]
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(path: Path = DASHBOARD) -> dict[str, str]:
    """``panel title / refId`` and its PromQL, Grafana's interval variables made 5m."""
    found = {}
    for panel in panels(json.loads(path.read_text())):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable in GRAFANA_INTERVALS:
                expr = expr.replace(variable, "5m")
            found[f"{panel['title']} / {target['refId']}"] = expr
    return found


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")
_IDENTIFIER = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out).

    A small lexer, not a parser: label matchers, ranges, grouping clauses, strings and numbers
    are removed, then every identifier not followed by ``(`` is a metric name.
    """
    names = set(_NAME_MATCHER.findall(expr))
    text = _MATCHERS.sub(" ", expr)
    text = _STRING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for name, call in _IDENTIFIER.findall(text):
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def names_in(expressions: dict[str, str]) -> dict[str, set[str]]:
    """Metric name -> the rules or panels that use it."""
    used: dict[str, set[str]] = {}
    for where, expr in expressions.items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


# -- what is exported ---------------------------------------------------------------------------


def exposed_names(name: str, kind: str, prefix: str) -> set[str]:
    """The series names Prometheus sees for one metric: Ray's prefix, ``_total`` on counters
    (Ray and prometheus_client add it where missing), ``_bucket``/``_sum``/``_count`` of a
    histogram."""
    full = f"{prefix}{name}"
    if kind == "Counter":
        return {full if full.endswith("_total") else f"{full}_total"}
    if kind == "Histogram":
        return {f"{full}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    return {full}


def _metric_prefixes(tree: ast.Module) -> dict[str, str]:
    """Metric class (or module alias) name -> prefix, from the file's imports."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in _RAY_METRIC_MODULES:
            for alias in node.names:
                if alias.name in (*METRIC_CLASSES, "metrics"):
                    found[alias.asname or alias.name] = "ray_"
        elif isinstance(node, ast.ImportFrom) and node.module == "prometheus_client":
            for alias in node.names:
                if alias.name in METRIC_CLASSES:
                    found[alias.asname or alias.name] = ""
    return found


def _constructed(tree: ast.Module, prefixes: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(name, class, prefix) of each metric constructor call with a literal name."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in prefixes and func.id in METRIC_CLASSES:
            kind, prefix = func.id, prefixes[func.id]
        elif (
            isinstance(func, ast.Attribute)
            and func.attr in METRIC_CLASSES
            and isinstance(func.value, ast.Name)
            and func.value.id in prefixes
        ):
            kind, prefix = func.attr, prefixes[func.value.id]
        else:
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "name")]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, kind, prefix


def exported_by(files: Iterable[Path]) -> set[str]:
    """The series names that ``ray.util.metrics`` and ``prometheus_client`` metrics constructed
    in these files are exported as."""
    names: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for name, kind, prefix in _constructed(tree, _metric_prefixes(tree)):
            names |= exposed_names(name, kind, prefix)
    return names


def project_metrics() -> set[str]:
    """What the project's packages export."""
    return exported_by(p for package in ("pipelines", "serve", "jobs") for p in _py(ROOT / package))


def ray_serve_metrics() -> set[str]:
    """What the installed Ray Serve exports (``ray_serve_*``), from its source."""
    return exported_by(_py(Path(ray.__file__).parent / "serve"))


def _py(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


# -- a real Prometheus --------------------------------------------------------------------------


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Call ``check`` until it returns something other than None; AssertionError naming
    ``what`` (and the last error) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: object = "no answer yet"
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError as exc:
            last = exc
        else:
            if result is not None:
                return result
            last = "not yet"
        time.sleep(0.5)
    raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s ({last})")


def api(base: str, path: str, **params: str) -> Any:
    """The ``data`` of one Prometheus HTTP API answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]


@contextlib.contextmanager
def prometheus(config: Path, data: Path, port: int) -> Iterator[str]:
    """``prometheus`` on ``config`` listening on 127.0.0.1:``port`` until the block ends
    (then SIGTERM, SIGKILL after 10 s); yields its URL once it is ready."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: apt-get install prometheus (.ci/run does it)"
    log = data.parent / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool | None:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited: {log.read_text()[-3000:]}")
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as reply:
                return True if reply.status == 200 else None

        wait_for(ready, 60, "prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
