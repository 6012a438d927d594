"""deploy/k8s: the Kustomize overlays render, their resources are valid Kubernetes, and the
resources agree with each other and with streamrank itself.

No cluster is needed, nor the network: ``kustomize build`` (the binary deploy/setup.sh builds
into the cache) renders each target, ``kubernetes_validate`` checks every core resource
against the API schemas its wheel ships, for one fixed Kubernetes version, strictly (an
unknown or misspelt field fails). Custom resources (KEDA, the Prometheus operator, Strimzi)
have no schema there; what of them could break a deployment is asserted directly. The
consistency checks are the mistakes a schema cannot see and a cluster reports late or never:
a Service selecting no pod, a probe on the wrong port, a setting name pydantic-settings
silently ignores, a Secret key that is not there, an autoscaler watching another consumer
group or scaling past the partitions, example topics that differ from what
``streamrank topics create`` makes.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamrank.streams.config import Settings
from streamrank.streams.kafka.topics import MANAGED_KINDS, partitions_for, topic_configs
from tests.helpers import REPO

Resources = tuple[dict[str, Any], ...]
"""What one ``kustomize build`` renders: one dict per resource, in its order."""

K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes release the manifests are meant for (autoscaling/v2, policy/v1 and
# the fields used here are all older); kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("overlays/small", "overlays/large")
TARGETS = ("base", *OVERLAYS)
EXAMPLES = ("examples/kafka", "examples/redis-cluster")
CORE_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
)
CUSTOM_KINDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Kafka": "kafka.strimzi.io/v1",
    "KafkaNodePool": "kafka.strimzi.io/v1",
    "KafkaTopic": "kafka.strimzi.io/v1",
}
WORKER = "streamrank-worker"


def kustomize() -> Path:
    """The kustomize binary: $STREAMRANK_KUSTOMIZE, deploy/setup.sh's, or one on PATH."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidates = [os.environ.get("STREAMRANK_KUSTOMIZE"), cache / "streamrank/bin/kustomize"]
    for candidate in [*candidates, shutil.which("kustomize")]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("no kustomize binary: `bash deploy/setup.sh` builds it (needs Go)")


def build(folder: Path) -> Resources:
    """What ``kustomize build folder`` renders, one dict per resource."""
    done = subprocess.run(
        [str(kustomize()), "build", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@functools.cache
def render(target: str) -> Resources:
    return build(K8S / target)


def of_kind(resources: Resources, kind: str) -> list[dict[str, Any]]:
    return [resource for resource in resources if resource["kind"] == kind]


def one(resources: Resources, kind: str) -> dict[str, Any]:
    (resource,) = of_kind(resources, kind)
    return resource


def settings_map(resources: Resources) -> dict[str, str]:
    return one(resources, "ConfigMap")["data"]


def worker_pod(resources: Resources) -> dict[str, Any]:
    return one(resources, "Deployment")["spec"]["template"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def worker_container(resources: Resources) -> dict[str, Any]:
    (container,) = (c for c in worker_pod(resources)["spec"]["containers"] if c["name"] == "worker")
    return container


def settings_of(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a worker of these resources reads: the ConfigMap and the Secrets' env."""
    for name in [name for name in os.environ if name.startswith("STREAMRANK_")]:
        monkeypatch.delenv(name)
    for name, value in settings_map(resources).items():
        monkeypatch.setenv(name, value)
    for name, value in secret_env(resources).items():
        monkeypatch.setenv(name, value)
    return Settings()


def secret_env(resources: Resources) -> dict[str, str]:
    """The worker container's variables that come from Secrets, with the Secrets' values."""
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in of_kind(resources, "Secret")}
    values = {}
    for variable in worker_container(resources).get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            values[variable["name"]] = secrets[ref["name"]][ref["key"]]
    return values


def setting_names() -> set[str]:
    return {f"STREAMRANK_{field.upper()}" for field in Settings.model_fields}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# -- validity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS + EXAMPLES)
def test_every_resource_is_of_a_kind_that_is_checked(target: str) -> None:
    kinds = {resource["kind"] for resource in render(target)}
    assert kinds, "nothing rendered"
    assert kinds <= CORE_KINDS | set(CUSTOM_KINDS), kinds - CORE_KINDS - set(CUSTOM_KINDS)


@pytest.mark.parametrize("target", TARGETS + EXAMPLES)
def test_core_resources_are_valid_for_the_kubernetes_api(target: str) -> None:
    for resource in render(target):
        if resource["kind"] in CORE_KINDS:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_validation_rejects_a_misspelt_field() -> None:
    deployment = dict(one(render("base"), "Deployment"))
    deployment["spec"] = deployment["spec"] | {"terminationGracePeriod": 60}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS + EXAMPLES)
def test_custom_resources_have_the_api_versions_of_their_operators(target: str) -> None:
    for resource in render(target):
        if resource["kind"] in CUSTOM_KINDS:
            assert resource["apiVersion"] == CUSTOM_KINDS[resource["kind"]], resource["kind"]
            assert resource["metadata"]["name"] and resource["spec"]


def test_secrets_in_git_hold_only_empty_placeholders() -> None:
    for target in TARGETS:
        for secret in of_kind(render(target), "Secret"):
            assert "data" not in secret, secret["metadata"]["name"]
            assert secret["stringData"], secret["metadata"]["name"]
            assert set(secret["stringData"].values()) == {""}, secret["metadata"]["name"]


# -- the worker and what points at it ---------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_selectors_find_the_worker_pods(target: str) -> None:
    resources = render(target)
    deployment = one(resources, "Deployment")
    pod_labels = worker_pod(resources)["metadata"]["labels"]
    assert labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = one(resources, "Service")
    assert labels_match(service["spec"]["selector"], pod_labels)
    budget = one(resources, "PodDisruptionBudget")
    assert labels_match(budget["spec"]["selector"]["matchLabels"], pod_labels)
    for monitor in of_kind(resources, "ServiceMonitor"):
        assert labels_match(
            monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
        )
        service_ports = {port["name"] for port in service["spec"]["ports"]}
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= service_ports


@pytest.mark.parametrize("target", TARGETS)
def test_the_web_port_is_the_one_the_worker_listens_on(target: str) -> None:
    resources = render(target)
    config = settings_map(resources)
    assert config["STREAMRANK_WEB_ENABLED"] == "true"
    # On 127.0.0.1 (streamrank's default) the kubelet's probes could not reach the pages.
    assert config["STREAMRANK_WEB_HOST"] == "0.0.0.0"
    container = worker_container(resources)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["web"] == int(config["STREAMRANK_WEB_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health", probe
        assert ports.get(check["port"], check["port"]) == ports["web"], probe
    for port in one(resources, "Service")["spec"]["ports"]:
        assert ports.get(port["targetPort"], port["targetPort"]) == ports["web"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_configmap_sets_real_settings_with_valid_values(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-settings ignores an unknown STREAMRANK_ variable (extra="ignore"): a misspelt
    name would silently leave the default in force."""
    resources = render(target)
    names = set(settings_map(resources))
    for container in containers(worker_pod(resources)):
        names |= {
            v["name"] for v in container.get("env", []) if v["name"].startswith("STREAMRANK_")
        }
    assert names <= setting_names(), names - setting_names()
    settings = settings_of(resources, monkeypatch)  # raises on a value that does not validate
    assert str(settings.model_dir) == "/models"
    assert settings.partitions == int(settings_map(resources)["STREAMRANK_PARTITIONS"])


def test_the_setting_check_can_fail() -> None:
    assert "STREAMRANK_KAFKA_BOOTSTRAP" in setting_names()
    assert "STREAMRANK_PARTITION" not in setting_names()


@pytest.mark.parametrize("target", TARGETS)
def test_every_secret_and_configmap_reference_resolves(target: str) -> None:
    resources = render(target)
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in of_kind(resources, "Secret")}
    config_maps = {c["metadata"]["name"] for c in of_kind(resources, "ConfigMap")}
    references = []
    for container in containers(worker_pod(resources)):
        for variable in container.get("env", []):
            if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                references.append((ref["name"], ref["key"]))
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
    for auth in of_kind(resources, "TriggerAuthentication"):
        references += [(ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]]
    for monitor in of_kind(resources, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            credentials = endpoint["authorization"]["credentials"]
            references.append((credentials["name"], credentials["key"]))
    assert references
    for name, key in references:
        assert key in secrets.get(name, set()), f"{name}/{key}"


@pytest.mark.parametrize("target", TARGETS)
def test_the_worker_runs_unprivileged_with_the_models_it_fetched(target: str) -> None:
    resources = render(target)
    pod = worker_pod(resources)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    model_dir = settings_map(resources)["STREAMRANK_MODEL_DIR"]
    by_name = {container["name"]: container for container in containers(pod)}
    assert by_name["worker"]["command"] + by_name["worker"]["args"][:1] == ["streamrank", "worker"]
    assert by_name["fetch-models"]["command"] == ["streamrank", "models", "fetch"]
    assert by_name["create-topics"]["command"] == ["streamrank", "topics", "create"]
    for name in ("fetch-models", "worker"):
        mounts = {m["mountPath"]: m["name"] for m in by_name[name]["volumeMounts"]}
        assert mounts[model_dir] == "models", name
    assert len({container["image"] for container in containers(pod)}) == 1
    for container in containers(pod):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_grace_period_outlasts_the_slowest_step_of_a_clean_stop(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping worker may be inside a slow Redis call for a message it is handling."""
    resources = render(target)
    grace = worker_pod(resources)["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings_of(resources, monkeypatch).redis_slow_timeout_s + 10


# -- autoscaling --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_exactly_one_autoscaler_owns_the_workers(target: str) -> None:
    resources = render(target)
    autoscalers = of_kind(resources, "ScaledObject") + of_kind(resources, "HorizontalPodAutoscaler")
    assert len(autoscalers) == 1, [a["kind"] for a in autoscalers]
    assert "replicas" not in one(resources, "Deployment")["spec"]


def test_the_overlays_pick_each_autoscaler() -> None:
    assert of_kind(render("overlays/small"), "HorizontalPodAutoscaler")
    assert not of_kind(render("overlays/small"), "TriggerAuthentication")
    assert of_kind(render("overlays/large"), "ScaledObject")


@pytest.mark.parametrize("target", TARGETS)
def test_the_autoscaler_watches_the_workers_group_and_stops_at_the_partitions(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = render(target)
    settings = settings_of(resources, monkeypatch)
    for scaled in of_kind(resources, "ScaledObject"):
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == WORKER
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == settings.app_id
        assert trigger["metadata"]["topic"] == settings.topic("candidates")
        assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.partitions
        auth = {a["metadata"]["name"] for a in of_kind(resources, "TriggerAuthentication")}
        assert trigger["authenticationRef"]["name"] in auth
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert (spec["scaleTargetRef"]["kind"], spec["scaleTargetRef"]["name"]) == (
            "Deployment",
            WORKER,
        )
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= settings.partitions


def test_the_components_drop_what_a_bare_cluster_refuses(tmp_path: Path) -> None:
    """Without KEDA and the Prometheus operator: only core kinds, and still valid."""
    relative = Path(os.path.relpath(K8S, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(relative / "base")],
                "components": [
                    str(relative / "components/cpu-hpa"),
                    str(relative / "components/without-servicemonitor"),
                ],
            }
        )
    )
    resources = build(tmp_path)
    assert {resource["kind"] for resource in resources} <= CORE_KINDS
    assert of_kind(resources, "HorizontalPodAutoscaler")
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


# -- the examples and the large overlay that uses them ------------------------------------------


def test_example_topics_are_what_streamrank_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(render("overlays/large"), monkeypatch)
    kafka = render("examples/kafka")
    topics = {topic["spec"]["topicName"]: topic for topic in of_kind(kafka, "KafkaTopic")}
    assert set(topics) == {settings.topic(kind) for kind in MANAGED_KINDS}
    cluster = one(kafka, "Kafka")["metadata"]["name"]
    for kind in MANAGED_KINDS:
        topic = topics[settings.topic(kind)]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["partitions"] == partitions_for(kind, settings), kind
        assert topic["spec"]["replicas"] == settings.replication_factor, kind
        config = {key: str(value) for key, value in topic["spec"]["config"].items()}
        assert config == topic_configs(kind, settings), kind


def test_example_kafka_is_the_one_the_large_overlay_reaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_of(render("overlays/large"), monkeypatch)
    kafka = render("examples/kafka")
    cluster = one(kafka, "Kafka")
    config = cluster["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    pool = one(kafka, "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    (listener,) = cluster["spec"]["kafka"]["listeners"]
    host = f"{cluster['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    assert settings.kafka_bootstrap == host
    assert settings.kafka_security_protocol == "PLAINTEXT" and listener["tls"] is False


def test_example_redis_cluster_is_the_one_the_large_overlay_reaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_of(render("overlays/large"), monkeypatch)
    redis_cluster = render("examples/redis-cluster")
    statefulset = one(redis_cluster, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 6
    service = one(redis_cluster, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert labels_match(
        service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]
    )
    conf = one(redis_cluster, "ConfigMap")["data"]["redis.conf"].splitlines()
    for line in ("cluster-enabled yes", "appendonly yes", "maxmemory-policy noeviction"):
        assert line in conf
    script = one(redis_cluster, "Job")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "redis-cli --cluster create" in script and "--cluster-replicas 1" in script
    assert settings.redis_cluster is True
    assert settings.redis_url == f"redis://{service['metadata']['name']}:6379/0"
    # Its password is the workers' (base/secrets.yaml).
    base_secrets = {
        s["metadata"]["name"]: s["stringData"] for s in of_kind(render("base"), "Secret")
    }
    for container in statefulset["spec"]["template"]["spec"]["containers"]:
        for variable in container.get("env", []):
            if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                assert ref["key"] in base_secrets[ref["name"]]
