"""The container files: docker-compose.yml against the Compose Specification's schema and what an
operator relies on (health-gated start, restarts, log rotation, distinct ports), each service's
env file as a valid configuration, and the Dockerfile's rules (slim, non-root, healthcheck,
SIGTERM, runtime dependencies only). No Docker engine runs here, so nothing is built."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fakes.server import free_port
from streamer.cli import check
from streamer.configuration import builtin_sections
from streamer.settings import load_settings, unknown_variables
from tests.conftest import RunningService, make_settings

ROOT = Path(__file__).parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose" / "compose-spec.json"
STREAMERS = {
    "streamer-binance": ".env.binance",
    "streamer-binance-linear": ".env.binance-linear",
    "streamer-dnse": ".env.dnse",
    "streamer-vnstock": ".env.vnstock",
}
SHARDS = {"streamer-binance-shard-0": "0/2", "streamer-binance-shard-1": "1/2"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    # The schema names draft 2019-09 with a "#" jsonschema does not recognise: say it outright.
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_there_is_one_streamer_per_exchange_next_to_redis(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", *STREAMERS, *SHARDS}
    for name in SHARDS:  # the sharded pair starts only when asked for
        assert compose["services"][name]["profiles"] == ["sharded"]


def test_redis_has_a_healthcheck_a_volume_and_stays_on_localhost(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["volumes"] == ["redis-data:/data"]
    assert "redis-data" in compose["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in redis["ports"])
    assert redis["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", [*STREAMERS, *SHARDS])
def test_each_streamer_waits_for_a_healthy_redis_restarts_and_rotates_its_logs(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert service["restart"] == "unless-stopped"
    assert service["stop_signal"] == "SIGTERM"
    assert service["logging"]["driver"] == "json-file"
    assert set(service["logging"]["options"]) == {"max-size", "max-file"}
    assert service["environment"]["STREAMER_REDIS_HOST"] == "redis"
    assert service["environment"]["STREAMER_WSS_AUTH_KEY"].startswith("${STREAMER_WSS_AUTH_KEY:?")
    inside = sorted(port.split(":")[-1] for port in service["ports"])
    assert inside == ["8100", "9500"]


def test_no_two_services_take_the_same_host_port(compose: dict[str, Any]) -> None:
    published = [
        port.rsplit(":", 1)[0] for service in compose["services"].values()
        for port in service.get("ports", [])
    ]  # fmt: skip
    assert len(published) == len(set(published))


def test_the_ports_table_in_the_compose_file_matches_the_services(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in (*STREAMERS, *SHARDS):
        host = {p.split(":")[-1]: p.split(":")[0] for p in compose["services"][name]["ports"]}
        assert re.search(rf"#\s+{name}\s+{host['9500']}\s+{host['8100']}\b", text), name


@pytest.mark.parametrize("name", [*STREAMERS, *SHARDS])
def test_each_service_env_file_is_a_valid_configuration(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the container sees (its env file plus the compose environment) passes --check."""
    service = compose["services"][name]
    assert service["env_file"] == STREAMERS.get(name, ".env.binance-all")
    env_file = ROOT / service["env_file"]
    for key, value in service["environment"].items():
        value = str(value)
        if value.startswith("${"):  # a secret the operator supplies
            value = "a-secret"
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file)
    check(settings)  # the exchange and every consumer validate
    assert {"redis", "websocket"} <= set(settings.enabled_consumers)
    if name in SHARDS:
        assert settings.shard == SHARDS[name]
        assert settings.exchange_load_all_symbols


# -- Kubernetes -------------------------------------------------------------------------------

KINDS = {"ConfigMap": "v1", "Service": "v1", "StatefulSet": "apps/v1",
         "PodDisruptionBudget": "policy/v1"}  # fmt: skip


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Kind -> the one document of that kind in deploy/kubernetes/."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in documents, f"{path.name}: a second {document['kind']}"
            documents[document["kind"]] = document
    return documents


def test_the_manifests_parse_as_the_kubernetes_objects_they_name(
    manifests: dict[str, dict[str, Any]],
) -> None:
    assert {kind: doc["apiVersion"] for kind, doc in manifests.items()} == KINDS
    statefulset = manifests["StatefulSet"]["spec"]
    labels = statefulset["template"]["metadata"]["labels"]
    assert statefulset["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["Service"]["spec"]["clusterIP"] == "None"  # headless, as a StatefulSet needs
    assert statefulset["serviceName"] == manifests["Service"]["metadata"]["name"]


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_each_pod_takes_its_shard_from_its_ordinal(manifests: dict[str, dict[str, Any]]) -> None:
    env = {item["name"]: item for item in container(manifests)["env"]}
    assert env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    replicas = manifests["StatefulSet"]["spec"]["replicas"]
    assert env["SHARD_COUNT"]["value"] == str(replicas)
    assert env["STREAMER_SHARD"]["value"] == "$(SHARD_INDEX)/$(SHARD_COUNT)"
    for index in range(replicas):  # what each pod gets once Kubernetes expands it
        assert make_settings(shard=f"{index}/{replicas}").symbol_shard.index == index


def test_the_manifests_name_only_settings_that_exist_and_make_a_valid_configuration(
    manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = manifests["ConfigMap"]["data"]
    env = {item["name"] for item in container(manifests)["env"]}
    named = {name for name in [*data, *env] if name.startswith("STREAMER_")}
    assert unknown_variables(builtin_sections(), dict.fromkeys(named, ""), env_file=None) == []
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STREAMER_SHARD", "1/2")
    monkeypatch.setenv("STREAMER_WSS_AUTH_KEY", "a-secret")  # from the Secret
    settings = load_settings(None)
    check(settings)  # the exchange and every consumer validate
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert ports == {"http": settings.http_port, "websocket": int(data["STREAMER_WEBSOCKET_PORT"])}


async def test_the_probes_ask_endpoints_the_service_serves(
    manifests: dict[str, dict[str, Any]],
) -> None:
    """Readiness is /health (503 when not ready), liveness /health/live (the process answers)."""
    spec = container(manifests)
    ready, live = spec["readinessProbe"]["httpGet"], spec["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"], live["path"], live["port"]) == (
        "/health", "http", "/health/live", "http",
    )  # fmt: skip
    from fakes.binance import FakeBinance
    from tests.conftest import fake_settings

    port = free_port()
    async with FakeBinance() as fake, RunningService(fake_settings(fake, http_port=port)):
        for path in (ready["path"], live["path"]):
            status = await asyncio.to_thread(_status, f"http://127.0.0.1:{port}{path}")
            assert status == 200, path


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return int(reply.status)


# -- Prometheus and Grafana -------------------------------------------------------------------

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamer-dashboard.json"


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_alert_rules_pass_promtool() -> None:
    """promtool (Debian's prometheus package; .ci/run installs it) checks syntax and PromQL."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus"
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alerts_cover_what_an_operator_watches() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {"StreamerFeedStale", "StreamerFeedDown", "StreamerReconnectStorm",
            "StreamerConsumerDropping", "StreamerRepairFailing", "StreamerRedisDown",
            "StreamerWebSocketClientsCut"} <= names  # fmt: skip
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "warn"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_dashboard_reads_one_prometheus_chosen_by_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "instance"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all('instance=~"$instance"' in t["expr"] for t in panel["targets"]), panel["title"]


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported() -> None:
    """A running service with every consumer the metrics come from (Redis, NATS, WebSocket)."""
    from fakes.binance import FakeBinance
    from tests.conftest import fake_settings

    port = free_port()
    async with FakeBinance() as fake:
        settings = fake_settings(
            fake, http_port=port, enabled_consumers=["collect", "redis", "nats", "websocket"],
            redis_base=15, websocket_port=free_port(), wss_auth_disabled=True,
        )  # fmt: skip
        async with RunningService(settings):
            text = await asyncio.to_thread(_text, f"http://127.0.0.1:{port}/metrics")
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))

    def exported(name: str) -> bool:
        for suffix, kinds in (("_total", ("counter",)), ("_bucket", ("histogram",)),
                              ("_sum", ("histogram",)), ("_count", ("histogram",))):  # fmt: skip
            if name.endswith(suffix) and families.get(name.removesuffix(suffix)) in kinds:
                return True
        return name in families

    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    named = {name for expr in exprs for name in re.findall(r"\bstreamer_[a-z0-9_]+", expr)}
    assert named
    assert sorted(name for name in named if not exported(name)) == []


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


# -- Dockerfile -------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_the_image_runs_on_a_slim_python_as_a_non_root_user() -> None:
    stage = final_stage()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", stage[0][1])
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users
    assert users[-1] not in ("root", "0")


def test_the_image_stops_on_sigterm_and_exposes_the_documented_ports() -> None:
    stage = dict(final_stage())
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert stage["EXPOSE"].split() == ["9500", "8100"]
    assert json.loads(stage["ENTRYPOINT"]) == ["streamer"]


def test_the_image_installs_runtime_dependencies_only() -> None:
    (extras,) = [args for keyword, args in instructions() if keyword == "ARG"]
    assert extras == "EXTRAS=fast,nats,vn"
    installs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "dev" not in re.findall(r"\[([^\]]*)\]", installs)
    assert "pip install --no-cache-dir --no-index" in installs  # only the built wheels


def healthcheck_command() -> list[str]:
    (healthcheck,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


async def test_the_healthcheck_passes_on_a_healthy_service_and_fails_without_one() -> None:
    command = [sys.executable if part == "python" else part for part in healthcheck_command()]
    assert command[1] == "-c"
    port = free_port()

    def probe() -> subprocess.CompletedProcess[str]:
        env = {"STREAMER_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=20)

    failed = probe()  # nothing listens
    assert failed.returncode == 1
    assert failed.stderr.startswith("unhealthy:")

    from streamer.exchanges.base import ConnectionState, Connector, LinkState

    class Quiet(Connector):
        """A connected exchange that sends nothing yet: /health says ok."""

        @classmethod
        def channels(cls, settings: Any) -> list[str]:
            return ["spot"]

        async def run(self) -> None:
            import asyncio

            await asyncio.Event().wait()

        def connection_states(self) -> list[ConnectionState]:
            state = ConnectionState("quiet")
            state.state = LinkState.CONNECTED
            return [state]

    settings = make_settings(http_port=port, http_host="127.0.0.1", enabled_consumers=["collect"])
    async with RunningService(settings, connector_factory=Quiet):
        import asyncio

        passed = await asyncio.to_thread(probe)
    assert passed.returncode == 0, passed.stderr
