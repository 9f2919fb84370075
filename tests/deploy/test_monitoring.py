"""deploy/monitoring/: the Prometheus config, the alert rules and their unit tests through
promtool (each also on a broken copy that must fail), the Grafana dashboard and provisioning,
every metric named exported by the project or Ray, and a real Prometheus scraping a real Ray
that runs the Serve application."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.db import make_engine, migrate
from pipelines.ledger import IngestLedger, RunLedger
from tests.deploy.manifests import DEPLOY, ROOT
from tests.deploy.monitoring import (
    DASHBOARD,
    DATASOURCES,
    GRAFANA,
    GRAFANA_INTERVALS,
    MONITORING,
    PROMETHEUS_YML,
    PROVIDERS,
    RAY_SD_FILE,
    RULE_TESTS,
    RULES,
    api,
    copy_monitoring,
    dashboard_expressions,
    metric_names,
    names_in,
    panels,
    project_metrics,
    prometheus,
    promtool,
    ray_serve_metrics,
    replace_once,
    rule_expressions,
    wait_for,
)
from tests.helpers.forecast_runs import global_axes, write_run
from tests.helpers.models import persistence_model
from tests.helpers.ray_head import LocalHead, end_processes, free_port

ALERTS = {
    "ClimateServeHighErrorRate",
    "ClimateServeHighLatency",
    "ClimateServeReplicasAtMax",
    "ClimateNightlyFailed",
    "ClimateNightlyLate",
    "ClimateIngestLag",
    "ClimateDatabaseErrors",
}


def _fails(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for needle in needles:
        assert needle in output, output


# -- Prometheus config --------------------------------------------------------------------------


def test_prometheus_config_passes_promtool() -> None:
    done = promtool("check", "config", PROMETHEUS_YML.name, cwd=MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_prometheus_config_with_a_misspelt_key_fails(tmp_path: Path) -> None:
    copy = copy_monitoring(tmp_path)
    replace_once(copy / "prometheus.yml", "scrape_configs:", "scrape_config:")
    _fails(promtool("check", "config", "prometheus.yml", cwd=copy), "scrape_config")


def test_prometheus_config_with_a_missing_rule_file_fails(tmp_path: Path) -> None:
    copy = copy_monitoring(tmp_path)
    (copy / "rules" / "climate.rules.yml").unlink()
    _fails(promtool("check", "config", "prometheus.yml", cwd=copy), "climate.rules.yml")


def test_prometheus_reads_rays_service_discovery_file_where_ray_writes_it() -> None:
    from ray._private import ray_constants

    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    ray_job = next(job for job in config["scrape_configs"] if job["job_name"] == "ray")
    files = [f for sd in ray_job["file_sd_configs"] for f in sd["files"]]
    assert ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE == RAY_SD_FILE
    assert files == [f"/tmp/ray/{RAY_SD_FILE}"]  # Ray's default temp dir


def test_compose_mounts_what_prometheus_yml_and_grafana_name() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    mounts = {
        volume.split(":")[1]: DEPLOY / volume.split(":")[0]
        for service in ("prometheus", "grafana")
        for volume in compose[service]["volumes"]
        if volume.startswith("./")
    }
    # Relative paths in prometheus.yml are relative to its directory, /etc/prometheus.
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_YML
    for rule_file in config["rule_files"]:
        assert (Path(mounts["/etc/prometheus/rules"]).parent / rule_file).resolve() == RULES
    static = next(job for job in config["scrape_configs"] if job["job_name"] == "ray-nodes")
    assert static["file_sd_configs"][0]["files"] == ["targets/*.json"]
    targets = json.loads(mounts["/etc/prometheus/targets/compose.json"].read_text())
    # compose's Ray nodes export on --metrics-export-port=8080
    assert sorted(targets[0]["targets"]) == ["ray-head:8080", "ray-worker:8080"]
    for service in ("ray-head", "ray-worker"):
        assert "--metrics-export-port=8080" in " ".join(compose[service]["command"])
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent


# -- alert rules --------------------------------------------------------------------------------


def test_rules_pass_promtool_and_hold_the_alerts() -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(rule_expressions()) == ALERTS


def test_a_rule_with_bad_promql_fails(tmp_path: Path) -> None:
    copy = copy_monitoring(tmp_path)
    rules = copy / "rules" / "climate.rules.yml"
    replace_once(rules, "sum by (route, le) (rate(", "sum by (route, le (rate(")
    _fails(promtool("check", "rules", rules), "ClimateServeHighLatency")


def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    copy = copy_monitoring(tmp_path) / "rules"
    replace_once(copy / "climate.rules.test.yml", "10% of requests", "20% of requests")
    _fails(promtool("test", "rules", "climate.rules.test.yml", cwd=copy), "FAILED")


@pytest.mark.parametrize(
    ("old", "new", "alert"),
    [
        ("  > 0.05\n", "  > 0.5\n", "ClimateServeHighErrorRate"),
        ("  > 2.5\n", "  > 10\n", "ClimateServeHighLatency"),
        (
            "max by (application, deployment) (ray_serve_autoscaling_target_replicas)\n"
            "              >= on",
            "max by (application, deployment) (ray_serve_autoscaling_target_replicas)\n"
            "              > on",
            "ClimateServeReplicasAtMax",
        ),
        ("(max(ray_climate_nightly_last_success_timestamp_seconds) or vector(0))",
         "max(ray_climate_nightly_last_success_timestamp_seconds)", "ClimateNightlyFailed"),
        ("> 26 * 3600", "> 28 * 3600", "ClimateNightlyLate"),
        ("> 2 * 86400", "> 3 * 86400", "ClimateIngestLag"),
        ("rate(ray_climate_database_errors_total[5m])) > 0",
         "rate(ray_climate_database_errors_total[5m])) > 1", "ClimateDatabaseErrors"),
    ],
)  # fmt: skip
def test_rule_unit_tests_catch_a_broken_rule(
    tmp_path: Path, old: str, new: str, alert: str
) -> None:
    copy = copy_monitoring(tmp_path) / "rules"
    replace_once(copy / "climate.rules.yml", old, new)
    _fails(promtool("test", "rules", "climate.rules.test.yml", cwd=copy), f"alertname: {alert}")


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert cases == {alert: {True, False} for alert in ALERTS}


# -- Grafana ------------------------------------------------------------------------------------


def test_dashboard_has_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in panels(dashboard)}
    assert titles >= {
        "Requests per second by route and status",
        "5xx error ratio",
        "Latency p50 / p95 / p99",
        "Predict batch size",
        "Replicas",
        "Forecast run age",
        "Since the last successful nightly",
        "Newest nightly outcome",
        "Ingest lag by store",
        "Database errors per second",
    }
    latency = next(p for p in panels(dashboard) if p["title"] == "Latency p50 / p95 / p99")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")
    ]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_dashboard_uses_the_provisioned_data_source() -> None:
    source = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    for panel in panels(json.loads(DASHBOARD.read_text())):
        for item in (panel, *panel["targets"]):
            assert item["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def _recording_rules(expressions: dict[str, str], path: Path) -> Path:
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": expr}
        for i, expr in enumerate(expressions.values())
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    for expr in expressions.values():
        assert "$" not in expr, f"a dashboard variable other than {GRAFANA_INTERVALS}: {expr}"
    done = promtool("check", "rules", _recording_rules(expressions, tmp_path / "dash.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_broken_dashboard_promql_fails(tmp_path: Path) -> None:
    broken = tmp_path / "climate.json"
    broken.write_text(DASHBOARD.read_text().replace("sum by (le) (rate(", "sum by (le) rate((", 1))
    expressions = dashboard_expressions(broken)
    done = promtool("check", "rules", _recording_rules(expressions, tmp_path / "dash.yml"))
    _fails(done, "dashboard:expr_")


# -- metric names -------------------------------------------------------------------------------


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{status=~"5.."}[5m]))) '
        "> on (x) group_left (y) max without (z) (b_total offset 1h) or vector(0) "
        '> bool 1e3 and {__name__="c"} unless time() - d:recorded > 2 * 86400'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:recorded"}


def test_every_metric_in_the_rules_and_the_dashboard_is_exported() -> None:
    used = names_in({**rule_expressions(), **dashboard_expressions()})
    known = project_metrics() | ray_serve_metrics()
    assert {name: where for name, where in used.items() if name not in known} == {}
    # the operations metrics are the project's own, the replica counts Ray Serve's
    assert "ray_climate_nightly_last_success_timestamp_seconds" in project_metrics()
    assert "ray_serve_autoscaling_target_replicas" in ray_serve_metrics()


def test_an_unknown_metric_name_is_caught(tmp_path: Path) -> None:
    copy = copy_monitoring(tmp_path) / "rules" / "climate.rules.yml"
    # the name as the code spells it, without Ray's prefix, is not what Prometheus sees
    replace_once(
        copy,
        "max(ray_climate_nightly_last_failure_timestamp_seconds)",
        "max(climate_nightly_last_failure_timestamp_seconds)",
    )
    used = names_in(rule_expressions(copy))
    unknown = set(used) - project_metrics() - ray_serve_metrics()
    assert unknown == {"climate_nightly_last_failure_timestamp_seconds"}
    assert used["climate_nightly_last_failure_timestamp_seconds"] == {"ClimateNightlyFailed"}


# -- live: Ray, the Serve application, Prometheus ----------------------------------------------


@pytest.fixture
def ray_head() -> Iterator[LocalHead]:
    with LocalHead(num_cpus=2) as head:
        yield head


def _seed_ledgers(database_url: str) -> tuple[datetime, datetime]:
    """A failed, then a succeeded nightly, and one ingested file; (success time, valid time)."""
    engine = make_engine(database_url)
    migrate(engine)
    runs = RunLedger(engine)
    runs.start("nightly", {"date": "2026-01-01"}, "nightly-2026-01-01")
    runs.finish("nightly-2026-01-01", "failed", error="no analyses")
    runs.start("nightly", {"date": "2026-01-02"}, "nightly-2026-01-02")
    runs.finish("nightly-2026-01-02", "succeeded")
    succeeded = runs.get("nightly-2026-01-02")
    assert succeeded is not None and succeeded.finished_at is not None
    valid = datetime(2026, 1, 2, 18, tzinfo=UTC)
    times = [int((valid - timedelta(hours=h)).timestamp()) for h in (12, 6, 0)]
    runs.start("ingest", {}, "ingest-1")
    IngestLedger(engine).mark_committed(
        "ingest-1", "output/analysis.zarr", "a.grib", 1, "f1", None, times
    )
    engine.dispose()
    return succeeded.finished_at, valid


def _serve_file(tmp_path: Path, model: Path, store: Path, port: int) -> Path:
    spec = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "climate",
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": {
                    "forecast_store": str(store),
                    "model": {"kind": "file", "path": str(model)},
                    "device": "cpu",
                    "refresh_seconds": 1,
                    "auth": {"required": True},  # no key is created: /v1 answers 401
                    "ingress": {"num_cpus": 0.1},
                    "predictor": {"num_cpus": 0.1, "max_ongoing_requests": 8},
                },
            }
        ],
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _derived_config(tmp_path: Path, head: LocalHead) -> Path:
    """The shipped prometheus.yml pointed at this test's Ray: its temp dir instead of
    /tmp/ray, the shipped rules by absolute path, 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [
                f.replace("/tmp/ray/", f"{head.temp_dir}/") if f.startswith("/tmp/ray/") else f
                for f in sd["files"]
            ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _status(url: str) -> int:
    """The HTTP status of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _values(url: str, expr: str) -> dict[str, float] | None:
    """Series of an instant query as {label set: value}, or None when there is none."""
    result = api(url, "/api/v1/query", query=expr)["result"]
    found = {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}
    return found or None


@pytest.mark.slow
def test_prometheus_scrapes_the_running_application(tmp_path: Path, ray_head: LocalHead) -> None:
    database_url = f"sqlite:///{tmp_path / 'climate.db'}"
    succeeded_at, valid_time = _seed_ledgers(database_url)
    lat, lon = global_axes(9, 12)
    card = persistence_model(tmp_path / "model" / "model.onnx", lat.tolist(), lon.tolist())
    store = tmp_path / "forecast.zarr"
    write_run(str(store), card, leads=6)
    port = free_port()
    serve_file = _serve_file(tmp_path, tmp_path / "model" / "model.onnx", store, port)
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_head.gcs_address,
        "RAY_AUTH_MODE": "disabled",
        "DATABASE_URL": database_url,
    }
    for variable in ("REDIS_URL", "MODEL_REGISTRY_URL"):
        env.pop(variable, None)
    climate = str(Path(sys.executable).parent / "climate")
    server = subprocess.Popen(
        [climate, "serve", "--config", str(serve_file)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool | None:
            assert server.poll() is None, f"climate serve exited with {server.returncode}"
            return True if _status(f"{base}/ready") == 200 else None

        wait_for(ready, 300, "the application ready")
        assert [_status(f"{base}/health"), _status(f"{base}/v1/models")] == [200, 401]

        # Ray's own discovery file (as named in the shipped config) lists this Ray's nodes.
        assert (Path(ray_head.temp_dir) / RAY_SD_FILE).is_file()
        config = _derived_config(tmp_path, ray_head)
        with prometheus(config, tmp_path / "tsdb", free_port()) as url:
            requests = wait_for(
                lambda: _values(url, 'ray_climate_serve_requests_total{route="/health"}'),
                180,
                "ray_climate_serve_requests_total in Prometheus",
            )
            assert min(requests.values()) >= 1
            wanted = {
                "ray_climate_serve_request_seconds_bucket",
                "ray_climate_serve_replicas_max",
                "ray_climate_serve_replicas_min",
                "ray_serve_autoscaling_target_replicas",
                "ray_serve_deployment_replica_healthy",
                "ray_climate_nightly_last_success_timestamp_seconds",
                "ray_climate_nightly_last_failure_timestamp_seconds",
                "ray_climate_ingest_latest_valid_time_seconds",
            }

            def all_seen() -> set[str] | None:
                names = set(api(url, "/api/v1/label/__name__/values"))
                return names if wanted <= names else None

            names = wait_for(all_seen, 120, f"all of {sorted(wanted)}")
            # Every name the rules and the dashboard use that a running app exports now is
            # there as written (the rest appear on errors and predictions).
            used = set(names_in({**rule_expressions(), **dashboard_expressions()}))
            assert used & names >= wanted

            success = _values(url, "max(ray_climate_nightly_last_success_timestamp_seconds)")
            assert success is not None
            assert list(success.values()) == [pytest.approx(succeeded_at.timestamp(), abs=1e-3)]
            latest = _values(url, "ray_climate_ingest_latest_valid_time_seconds")
            assert latest is not None
            assert set(latest.values()) == {valid_time.timestamp()}
            limits = _values(
                url, 'max by (deployment) (ray_climate_serve_replicas_max{application="climate"})'
            )
            assert limits is not None
            assert sorted(json.loads(k)["deployment"] for k in limits) == ["Ingress", "Predictor"]

            seen_at = datetime.now(UTC)  # every series is in; rules evaluated after see them

            def rules_evaluated() -> list[dict[str, Any]] | None:
                groups = api(url, "/api/v1/rules")["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                done = all(datetime.fromisoformat(r["lastEvaluation"]) > seen_at for r in rules)
                return rules if done else None

            rules = wait_for(rules_evaluated, 60, "the rules evaluated")
            assert {r["name"]: r["health"] for r in rules} == dict.fromkeys(ALERTS, "ok")
            # the seeded ledger: the newest nightly succeeded, the analyses are old
            firing = {r["name"] for r in rules if r["state"] != "inactive"}
            assert "ClimateNightlyFailed" not in firing
            assert "ClimateIngestLag" in firing
    finally:
        import psutil

        end_processes([psutil.Process(server.pid)], grace_s=30)
