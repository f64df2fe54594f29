"""The deployment files, checked here without Docker or a cluster: docker-compose.yml by Debian's
docker-compose, the Kubernetes manifests rendered by `kubectl kustomize` and validated against the
Kubernetes API models of Debian's python3-kubernetes, every YAML file by yamllint, the Bicep template
against its ARM JSON equivalent, the image's Dockerfile against the packages and the libraries the
binaries link, and, for every variable each built binary lists in --help: .env.example, the
ConfigMap or Secret, and the README's tables.

The variable checks read the binaries' own --help, so a variable that a service adds is caught here
until it is documented and deployed everywhere.
"""
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BUILD, ROOT, SERVICES, binary

DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
OVERLAYS = ["dev", "prod"]
SECRET_LIKE = re.compile(r"CONNECTION_STRING|PASSWORD|SECRET|TOKEN|ACCOUNT_KEY|ACCESS_KEY|_SAS$|^REDIS_URL$|WEBHOOK_URL")

# Variables announced for services still being written (their issues are open): listed in
# .env.example and the ConfigMap ahead of time. They are not required of any binary; once a binary
# lists one in --help it is checked like every other.
PENDING = {
    "EVENTHUBS_CONNECTION_STRING", "REDIS_URL", "USGS_FEED_URL", "POLL_INTERVAL", "SOURCES",
    "DEDUPE_TTL", "WEATHER_AREA", "WEATHER_URL", "CLICKSTREAM_RATE", "EARTHQUAKE_HUB",
    "WEATHER_HUB", "CLICKSTREAM_HUB", "CONSUMER_GROUP", "LEASE_TTL", "ALERT_WEBHOOK_URL",
    "API_PORT", "STATIC_DIR", "GOLD_DIR", "CRON",
}
# Read by the deployment itself, not by a service (README, "Containers and Kubernetes").
DEPLOY_ONLY = {
    "REDIS_TLS_UPSTREAM", "REDIS_TLS_LOCAL_PORT", "CAPTURE_SOURCE",  # AKS sidecar, CronJob args
    "QS_IMAGE", "QS_DASHBOARD_PORT", "QS_AMQP_PORT", "ACCEPT_EULA",  # docker-compose substitution
}


# ---------------------------------------------------------------------------------------------
# The variables each binary reads, from its --help
# ---------------------------------------------------------------------------------------------
HELP_LINE = re.compile(r"^  ([A-Z][A-Z0-9_]*)  (\S+)  default: (.*?)  ")


def help_variables(name):
    r = subprocess.run([binary(name), "--help"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    names = [m.group(1) for m in map(HELP_LINE.match, r.stdout.splitlines()) if m]
    assert names, f"{name} --help lists no variables:\n{r.stdout}"
    return names


@pytest.fixture(scope="module")
def variables():
    """{service: [variable, ...]} from every service binary's --help."""
    return {name: help_variables(name) for name in SERVICES}


def help_types(name):
    """{variable: type text} from a binary's --help, e.g. "port", "integer[1..100000]", "a|b|c"."""
    r = subprocess.run([binary(name), "--help"], capture_output=True, text=True, timeout=20)
    return {m.group(1): m.group(2) for m in map(HELP_LINE.match, r.stdout.splitlines()) if m}


def value_error(type_text, value):
    """Why `value` is not valid for a --help type (the rules of common/config.c), or None."""
    import ipaddress
    if value == "":
        return "empty (means unset, not the default)"
    m = re.fullmatch(r"(integer|number)\[(.+)\.\.(.+)\]", type_text)
    if m:
        try:
            x = int(value) if m.group(1) == "integer" else float(value)
        except ValueError:
            return f"not an {m.group(1)}"
        return None if float(m.group(2)) <= x <= float(m.group(3)) else f"outside {m.group(2)}..{m.group(3)}"
    if type_text == "port":
        return None if value.isdigit() and int(value) <= 65535 else "not a port"
    if type_text == "ip":
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            return "not an IP address literal"
    if type_text == "duration":
        return None if re.fullmatch(r"[0-9]+(ms|s|m|h|d)?", value) else "not a duration"
    if type_text == "bool":
        return None if value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off") else "not a bool"
    if "|" in type_text:
        return None if value in type_text.split("|") else f"not one of {type_text}"
    return None  # string


def test_every_value_given_to_a_service_is_valid_for_its_type(variables, rendered):
    env_values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", open(os.path.join(ROOT, ".env.example")).read(), re.M))
    sources = {".env.example": env_values}
    for target, docs in rendered.items():
        sources[f"ConfigMap of {target}"] = {k: str(v) for k, v in
                                             by_kind(docs, "ConfigMap")["quakestream-config"]["data"].items()}
    errors = []
    for name in SERVICES:
        types = help_types(name)
        for where, values in sources.items():
            for var, type_text in types.items():
                if var in values:
                    why = value_error(type_text, values[var])
                    if why:
                        errors.append(f"{where}: {var}={values[var]!r} for {name}: {why}")
    assert not errors, "\n".join(errors)


def test_the_value_check_follows_the_config_rules():
    assert value_error("port", "70000") and value_error("integer[1..10]", "11") and value_error("ip", "localhost")
    assert value_error("duration", "5 ms") and value_error("a|b", "c") and value_error("string", "")
    assert not any(value_error(t, v) for t, v in [("port", "8090"), ("integer[1..100000]", "1000"),
                                                  ("ip", "0.0.0.0"), ("duration", "5ms"), ("a|b", "b")])


def env_file_names(path):
    """Names of NAME=value lines, set or commented out ("# NAME=value" documents a default)."""
    active, commented = set(), set()
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=", line)
        if m:
            (commented if m.group(1) else active).add(m.group(2))
    return active, commented


def configmap_names():
    """Keys of the base ConfigMap, set or commented out ("# NAME: value")."""
    path = os.path.join(K8S, "base", "configmap.yaml")
    data = yaml.safe_load(open(path, encoding="utf-8"))["data"]
    commented = set(re.findall(r"^  #\s*([A-Z][A-Z0-9_]*):", open(path, encoding="utf-8").read(), re.M))
    return set(data), commented


def readme_sections():
    """{heading: set of `NAME`s in the first column of its tables} for the README's ### sections."""
    sections, current = {}, None
    for line in open(os.path.join(ROOT, "README.md"), encoding="utf-8"):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            # "### ingestor", "### `ingestor`" and "### ingestor (the feeds)" all name ingestor
            current = heading if heading == "Every service" or not heading else heading.split()[0].strip("`")
            if heading.startswith("Deployment variables"):
                current = "Deployment variables"
            sections.setdefault(current, set())
        elif current and line.startswith("|"):
            first = line.split("|")[1]
            sections[current].update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    return sections


def test_every_binary_lists_its_variables_in_help(variables):
    for name, names in variables.items():
        assert {"LOG_LEVEL", "ADMIN_HOST", "ADMIN_PORT"} <= set(names), name
        assert len(names) == len(set(names)), f"{name} lists a variable twice"


def test_every_service_variable_is_in_env_example(variables):
    active, commented = env_file_names(os.path.join(ROOT, ".env.example"))
    for name, names in variables.items():
        missing = [v for v in names if v not in active | commented]
        assert not missing, f".env.example lacks {name}'s {missing}"


def test_env_example_lists_no_variable_that_nothing_reads(variables):
    active, commented = env_file_names(os.path.join(ROOT, ".env.example"))
    known = set().union(*variables.values()) | PENDING | DEPLOY_ONLY
    assert not (active | commented) - known


def test_every_service_variable_is_in_the_configmap_or_the_secret(variables):
    data, commented = configmap_names()
    secret_active, secret_commented = env_file_names(os.path.join(K8S, "secret.env.example"))
    for name, names in variables.items():
        missing = [v for v in names if v not in data | commented | secret_active | secret_commented]
        assert not missing, f"ConfigMap and Secret lack {name}'s {missing}"
    known = set().union(*variables.values()) | PENDING | DEPLOY_ONLY
    assert not (data | commented | secret_active | secret_commented) - known


def test_secrets_are_in_the_secret_not_the_configmap(variables):
    data, _ = configmap_names()
    secret_active, secret_commented = env_file_names(os.path.join(K8S, "secret.env.example"))
    everything = set().union(*variables.values()) | PENDING
    for v in sorted(everything):
        if SECRET_LIKE.search(v):
            assert v not in data, f"{v} is a secret: it belongs in deploy/k8s/secret.env.example"
            assert v in secret_active | secret_commented, f"{v} missing from secret.env.example"


def test_every_service_variable_is_in_the_readme_table(variables):
    sections = readme_sections()
    common = sections.get("Every service", set())
    for name, names in variables.items():
        own = sections.get(name, set())
        missing = [v for v in names if v not in own | common]
        assert not missing, f"README's '### {name}' table lacks {missing}"
    deploy_vars = sections.get("Deployment variables", set())
    assert DEPLOY_ONLY <= deploy_vars, DEPLOY_ONLY - deploy_vars


# ---------------------------------------------------------------------------------------------
# docker-compose
# ---------------------------------------------------------------------------------------------
def compose_config(*args, env_extra=None):
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.fail("docker-compose missing: ./quakestream deps installs Debian's docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env["QS_ENV_FILE"] = ".env.example"
    env.update(env_extra or {})
    r = subprocess.run([exe, "--project-directory", ROOT, "-f", os.path.join(ROOT, "docker-compose.yml"),
                        "--env-file", os.path.join(ROOT, ".env.example"), *args, "config"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


OUR_SERVICES = SERVICES  # every binary runs as a container of the one image


def volumes(service):
    """{target: (source, read_only)} of a service in `config` output (short or long syntax)."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = (v.get("source"), bool(v.get("read_only")))
        else:
            parts = v.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out[parts[1]] = (parts[0], mode == "ro")
    return out


def ports(service):
    """[(published, target)] as strings, from short or long syntax."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("published")), str(p["target"])))
        else:
            parts = p.split("/")[0].split(":")
            out.append((parts[-2], parts[-1]))
    return out


def test_docker_compose_config_passes_and_runs_every_service_from_our_image():
    cfg = compose_config()
    services = cfg["services"]
    assert {"redis", *OUR_SERVICES} <= set(services)
    for name in OUR_SERVICES:
        s = services[name]
        assert s["command"] == [name]
        assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert s["healthcheck"]["test"] == ["CMD", "quakestream-healthcheck"], name
        assert s.get("read_only") is True, name
        assert "profiles" not in s, name


def test_docker_compose_services_get_every_variable_they_read(variables):
    services = compose_config()["services"]
    for name, names in variables.items():
        env = services[name].get("environment", {})
        active, _ = env_file_names(os.path.join(ROOT, ".env.example"))
        # a variable left commented in .env.example runs on its built-in default
        missing = [v for v in names if v in active and v not in env]
        assert not missing, f"{name} does not get {missing}"
        assert env["ADMIN_HOST"] == "0.0.0.0" and env["ADMIN_PORT"] == "8090"


def test_docker_compose_waits_for_healthy_dependencies_and_keeps_redis_aof():
    services = compose_config()["services"]
    for name in ["ingestor", "speed-aggregator", "batch-worker"]:
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["hub"]["condition"] == "service_healthy", name
    assert services["serving-api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert "healthcheck" in redis
    assert "/data" in volumes(redis)


def test_docker_compose_shares_capture_between_hub_and_batch_worker_and_publishes_the_dashboard():
    services = compose_config()["services"]
    capture = dict(re.findall(r"^(CAPTURE_DIR)=(.*)$", open(os.path.join(ROOT, ".env.example")).read(), re.M))
    target = capture["CAPTURE_DIR"]

    assert volumes(services["hub"])[target] == ("capture", False)
    assert volumes(services["batch-worker"])[target] == ("capture", True)
    assert ("8080", "8080") in ports(services["serving-api"])
    moved = compose_config(env_extra={"QS_DASHBOARD_PORT": "9999"})["services"]["serving-api"]
    assert ("9999", "8080") in ports(moved)


def test_docker_compose_azure_emulator_profile_uses_microsofts_images_with_the_eula_flag():
    services = compose_config()["services"]
    emu, azurite = services["eventhubs-emulator"], services["azurite"]
    assert emu["image"].startswith("mcr.microsoft.com/azure-messaging/eventhubs-emulator")
    assert azurite["image"].startswith("mcr.microsoft.com/azure-storage/azurite")
    assert emu["profiles"] == ["azure-emulator"] and azurite["profiles"] == ["azure-emulator"]
    assert emu["environment"]["ACCEPT_EULA"] == "N"  # until the user accepts it in .env
    assert compose_config(env_extra={"ACCEPT_EULA": "Y"})["services"]["eventhubs-emulator"][
        "environment"]["ACCEPT_EULA"] == "Y"
    assert emu["environment"]["BLOB_SERVER"] == emu["environment"]["METADATA_SERVER"] == "azurite"
    mounts = volumes(emu)
    assert mounts["/Eventhubs_Emulator/ConfigFiles/Config.json"][0].endswith(
        "deploy/compose/eventhubs-emulator-config.json")


def test_emulator_config_has_the_hubs_of_our_hub_config_in_the_emulators_schema():
    ours = json.load(open(os.path.join(ROOT, "proto", "hub-config.json")))
    emu = json.load(open(os.path.join(DEPLOY, "compose", "eventhubs-emulator-config.json")))
    ns = emu["UserConfig"]["NamespaceConfig"]
    assert len(ns) == 1 and ns[0]["Type"] == "EventHub" and ns[0]["Name"] == "emulatorNs1"
    assert emu["UserConfig"]["LoggingConfig"]["Type"] in ("File", "Console", "File,Console", "Console,File")
    want = {e["Name"]: (e["PartitionCount"], sorted(c["Name"] for c in e["ConsumerGroups"]
                                                    if c["Name"].lower() != "$default"))
            for e in ours["UserConfig"]["NamespaceConfig"][0]["Entities"]}
    got = {}
    for e in ns[0]["Entities"]:
        assert isinstance(e["PartitionCount"], str)  # the emulator's schema wants a string
        assert all(c["Name"].lower() != "$default" for c in e["ConsumerGroups"])
        got[e["Name"]] = (int(e["PartitionCount"]), sorted(c["Name"] for c in e["ConsumerGroups"]))
    assert got == want


# ---------------------------------------------------------------------------------------------
# Kubernetes: render with kustomize, validate against the API models, check what the issue asks
# ---------------------------------------------------------------------------------------------
def kubectl():
    """Debian's kubectl (package kubernetes-client, kustomize v2.0) when installed, else the kubectl
    on PATH (./quakestream deps keeps another vendor's rather than clash with it). The manifests use
    only what both kustomize v2.0 and v5 render identically."""
    owner = subprocess.run(["dpkg-query", "-S", "/usr/bin/kubectl"], capture_output=True, text=True)
    if owner.returncode == 0 and owner.stdout.startswith("kubernetes-client:"):
        return "/usr/bin/kubectl"
    path = shutil.which("kubectl")
    if not path:
        pytest.fail("kubectl missing: ./quakestream deps installs Debian's kubernetes-client")
    return path


def render(target):
    r = subprocess.run([kubectl(), "kustomize", os.path.join(K8S, target)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered():
    return {t: render(t) for t in ["base"] + [f"overlays/{o}" for o in OVERLAYS]}


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_meta(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    return obj["spec"]["template"]["metadata"]


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "CronJob")]


# Fields newer than the API models of Debian 12's python3-kubernetes (Kubernetes 1.22), and what
# they are: {(model, json field): reason}.
NEWER_FIELDS = {
    ("V1Container", "restartPolicy"): "native sidecar containers, Kubernetes 1.28+ (AKS 1.29+)",
}


def model_for(api_version, kind):
    import kubernetes.client as k
    group_version = api_version.split("/")[-1]
    names = ["V1" + kind] if group_version == "v1" else []
    if group_version == "v2":  # autoscaling/v2 is v2beta2 promoted unchanged (Kubernetes 1.23)
        names = ["V2" + kind, "V2beta2" + kind]
    for n in names:
        if hasattr(k, n):
            return getattr(k, n)
    raise AssertionError(f"no API model for {api_version} {kind}")


_required_cache = {}


def required_fields(cls):
    """The model's required attributes: its constructor rejects None for exactly those."""
    if cls in _required_cache:
        return _required_cache[cls]
    import kubernetes.client as k
    conf = k.Configuration()
    conf.client_side_validation = True
    kwargs, req = {}, set()
    for _ in range(len(cls.openapi_types) + 1):
        try:
            cls(local_vars_configuration=conf, **kwargs)
            break
        except ValueError as e:
            m = re.match(r"Invalid value for `(\w+)`, must not be `None`", str(e))
            if not m:
                break
            req.add(m.group(1))
            kwargs[m.group(1)] = [] if cls.openapi_types[m.group(1)].startswith("list") else "x"
    _required_cache[cls] = req
    return req


def validate(value, type_name, path, errors):
    import kubernetes.client as k
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            validate(item, type_name[5:-1], f"{path}[{i}]", errors)
    elif type_name.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map")
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            validate(item, inner, f"{path}.{key}", errors)
    elif type_name == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {value!r}")
    elif type_name == "object":  # IntOrString, quantities, free-form
        if isinstance(value, (list, dict)) and not path.endswith("Fields"):
            errors.append(f"{path}: expected an int or a string")
    elif type_name in ("datetime", "float", "date"):
        pass
    else:
        cls = getattr(k, type_name)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object ({type_name})")
            return
        by_json = {j: a for a, j in cls.attribute_map.items()}
        for key, item in value.items():
            if (cls.__name__, key) in NEWER_FIELDS:
                continue
            if key not in by_json:
                errors.append(f"{path}.{key}: unknown field of {cls.__name__}")
                continue
            validate(item, cls.openapi_types[by_json[key]], f"{path}.{key}", errors)
        for attr in required_fields(cls):
            if cls.attribute_map[attr] not in value:
                errors.append(f"{path}: required field {cls.attribute_map[attr]} missing")


@pytest.mark.parametrize("target", ["base"] + [f"overlays/{o}" for o in OVERLAYS])
def test_kustomize_renders_and_every_object_validates_against_the_api_models(rendered, target):
    docs = rendered[target]
    assert docs
    errors = []
    for d in docs:
        cls = model_for(d["apiVersion"], d["kind"])
        validate(d, cls.__name__, f"{d['kind']}/{d['metadata']['name']}", errors)
    assert not errors, "\n".join(errors)


def test_the_api_model_check_rejects_typos_wrong_types_and_missing_fields():
    errors = []
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "2", "template": {"spec": {"containers": [{"name": "c", "imagee": "i"}]}}}}
    validate(bad, "V1Deployment", "Deployment/x", errors)
    text = "\n".join(errors)
    assert "spec.replicas: expected an integer" in text
    assert "imagee: unknown field of V1Container" in text
    assert "spec: required field selector missing" in text


def test_overlays_set_namespace_image_and_sizes(rendered):
    for o, ns, speed in [("dev", "quakestream-dev", 1), ("prod", "quakestream", 4)]:
        docs = rendered[f"overlays/{o}"]
        assert by_kind(docs, "Namespace")[ns]
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == ns, (o, d["kind"], d["metadata"]["name"])
        for w in workloads(docs):
            spec = pod_spec(w)
            for c in spec["containers"] + spec.get("initContainers", []):
                assert c["image"].startswith("quakestreamacr.azurecr.io/quakestream:"), c["image"]
        assert by_kind(docs, "Deployment")["speed-aggregator"]["spec"]["replicas"] == speed
    assert by_kind(rendered["overlays/dev"], "ConfigMap")["quakestream-config"]["data"]["LOG_LEVEL"] == "debug"


def test_workloads_have_the_required_shape(rendered):
    docs = rendered["base"]
    deps = by_kind(docs, "Deployment")
    assert set(deps) == {"ingestor", "speed-aggregator", "serving-api"}
    ing = deps["ingestor"]["spec"]
    assert ing["replicas"] == 1 and ing["strategy"]["type"] == "Recreate"  # the single poller
    assert deps["speed-aggregator"]["spec"]["replicas"] >= 2
    assert "replicas" not in deps["serving-api"]["spec"]  # owned by the HPA
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["serving-api"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "serving-api"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    cron = by_kind(docs, "CronJob")["batch-worker"]["spec"]
    assert cron["schedule"] == "0 */6 * * *" and cron["concurrencyPolicy"] == "Forbid"
    args = pod_spec(by_kind(docs, "CronJob")["batch-worker"])["containers"][0]["args"]
    assert args[:2] == ["batch-worker", "run-once"]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(deps)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"]["matchLabels"] == deps[name]["spec"]["selector"]["matchLabels"]
    services = by_kind(docs, "Service")
    assert {p["name"]: p["targetPort"] for p in services["serving-api"]["spec"]["ports"]}["http"] == "http"


def test_every_container_is_probed_sized_locked_down_and_scraped(rendered):
    cm = by_kind(rendered["base"], "ConfigMap")["quakestream-config"]["data"]
    admin_port = int(cm["ADMIN_PORT"])
    for w in workloads(rendered["base"]):
        name = w["metadata"]["name"]
        spec, meta = pod_spec(w), pod_meta(w)
        assert meta["labels"]["app.kubernetes.io/name"] == name
        ann = meta["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == admin_port
        assert ann["prometheus.io/path"] == "/metrics"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        (main,) = spec["containers"]
        assert main["args"][0] == name
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports["admin"] == admin_port
        if w["kind"] == "Deployment":
            assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
            assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        else:  # the batch Job is bounded by its deadline instead
            assert w["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] <= 6 * 3600
        refs = [list(e.values())[0]["name"] for e in main["envFrom"]]
        assert refs == ["quakestream-config", "quakestream-secrets"]
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"], c["name"]
        sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
        assert [c["args"] for c in sidecars] == [["redis-tls-proxy"]], name
        # it listens on loopback only: a tcpSocket/httpGet probe (dialled at the pod IP) never passes
        assert set(sidecars[0]["startupProbe"]) & {"tcpSocket", "httpGet"} == set(), name
        assert "127.0.0.1/6379" in " ".join(sidecars[0]["startupProbe"]["exec"]["command"])


# ---------------------------------------------------------------------------------------------
# yamllint
# ---------------------------------------------------------------------------------------------
def test_deployment_yaml_passes_yamllint():
    exe = shutil.which("yamllint")
    if not exe:
        pytest.fail("yamllint missing: ./quakestream deps installs it")
    files = subprocess.run(["git", "ls-files", "deploy/*.yaml", "deploy/*.yml", "docker-compose.yml", ".yamllint"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if os.path.exists(os.path.join(ROOT, f))]
    assert "docker-compose.yml" in files and len(files) > 5, files
    r = subprocess.run([exe, "--strict", "-c", os.path.join(ROOT, ".yamllint"), *files], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# Bicep and its ARM JSON equivalent
# ---------------------------------------------------------------------------------------------
BICEP = os.path.join(DEPLOY, "bicep", "streaming.bicep")
ARM = os.path.join(DEPLOY, "bicep", "streaming.json")


@pytest.fixture(scope="module")
def arm():
    return json.load(open(ARM))


def arm_resources(arm, rtype):
    return [r for r in arm["resources"] if r["type"] == rtype]


def arm_name(r):
    """The last segment of a resource's name expression, e.g. 'bronze' or 'earthquake-events'."""
    m = re.findall(r"'([a-z][a-z0-9-]*)'\)\]$", r["name"])
    return m[0] if m else r["name"]


def test_bicep_and_arm_declare_the_same_resources_parameters_and_outputs(arm):
    bicep = open(BICEP).read()
    b_res = sorted(re.findall(r"^resource \w+ '([^'@]+)@([^']+)'", bicep, re.M))
    a_res = sorted((r["type"], r["apiVersion"]) for r in arm["resources"])
    assert b_res == a_res
    assert set(re.findall(r"^param (\w+) ", bicep, re.M)) == set(arm["parameters"])
    assert set(re.findall(r"^output (\w+) ", bicep, re.M)) == set(arm["outputs"])
    params = json.load(open(os.path.join(DEPLOY, "bicep", "streaming.parameters.json")))["parameters"]
    assert set(params) <= set(arm["parameters"])
    # the settings the pipeline relies on appear in both
    for text in ["partitionCount: 4", "messageRetentionInDays: 7", "intervalInSeconds: 300",
                 "sizeLimitInBytes: 10485760", "isHnsEnabled: true", "'bronze'", "'gold'"]:
        assert text in bicep, text


def test_arm_has_event_hubs_with_capture_to_bronze(arm):
    (ns,) = arm_resources(arm, "Microsoft.EventHub/namespaces")
    assert ns["sku"]["name"] == "Standard"
    hubs = {arm_name(r): r["properties"] for r in arm_resources(arm, "Microsoft.EventHub/namespaces/eventhubs")}
    ours = {e["Name"]: e for e in json.load(open(os.path.join(ROOT, "proto", "hub-config.json")))
            ["UserConfig"]["NamespaceConfig"][0]["Entities"]}
    assert set(hubs) == set(ours) == {"earthquake-events", "weather-events", "clickstream-events"}
    for name, props in hubs.items():
        assert props["partitionCount"] == ours[name]["PartitionCount"], name
        assert props["messageRetentionInDays"] == ours[name]["MessageRetentionInDays"], name
    cap = hubs["earthquake-events"]["captureDescription"]
    assert cap["enabled"] is True and cap["encoding"] == "Avro"
    assert cap["intervalInSeconds"] == 300 and cap["sizeLimitInBytes"] == 10 * 1024 * 1024
    dest = cap["destination"]
    assert dest["name"] == "EventHubArchive.AzureBlockBlob" and dest["properties"]["blobContainer"] == "bronze"
    fmt = arm["variables"]["archiveNameFormat"]
    assert fmt == "{Namespace}/{EventHub}/p={PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}"
    assert fmt == ours["earthquake-events"]["Capture"]["ArchiveNameFormat"]
    groups = [r["name"] for r in arm_resources(arm, "Microsoft.EventHub/namespaces/eventhubs/consumergroups")]
    assert len(groups) == 3 and all("variables('consumerGroup')" in g for g in groups)
    assert arm["variables"]["consumerGroup"] == "speed"
    rules = {arm_name(r): sorted(r["properties"]["rights"])
             for r in arm_resources(arm, "Microsoft.EventHub/namespaces/authorizationRules")}
    assert rules == {"send": ["Send"], "listen": ["Listen"], "send-listen": ["Listen", "Send"]}


def test_arm_has_storage_redis_aks_identities_and_the_tutorials_outputs(arm):
    (st,) = arm_resources(arm, "Microsoft.Storage/storageAccounts")
    assert st["properties"]["isHnsEnabled"] is True and st["properties"]["allowBlobPublicAccess"] is False
    containers = {arm_name(r) for r in arm_resources(arm, "Microsoft.Storage/storageAccounts/blobServices/containers")}
    assert containers == {"bronze", "gold"}
    (redis,) = arm_resources(arm, "Microsoft.Cache/redis")
    assert redis["properties"]["enableNonSslPort"] is False
    (aks,) = arm_resources(arm, "Microsoft.ContainerService/managedClusters")
    assert aks["properties"]["oidcIssuerProfile"]["enabled"] is True
    assert arm_resources(arm, "Microsoft.ManagedIdentity/userAssignedIdentities")
    roles = [r["properties"]["roleDefinitionId"] for r in arm_resources(arm, "Microsoft.Authorization/roleAssignments")]
    for role in ["roleAcrPull", "roleEventHubsDataSender", "roleEventHubsDataReceiver"]:
        assert any(role in r for r in roles), role
    assert {"eventHubsNamespace", "eventHubName", "redisHost", "aksName"} <= set(arm["outputs"])


def test_bicep_and_arm_reference_only_what_they_declare(arm):
    bicep = open(BICEP).read()
    code = re.sub(r"//.*", "", re.sub(r"'(?:[^'\\]|\\.)*'", "''", bicep))  # no strings, no comments
    declared = set(re.findall(r"^(?:param|var|resource|output) (\w+)", bicep, re.M))
    used = set(re.findall(r"\b([a-zA-Z_]\w*)\.(?:id|name|properties)\b", code))
    used |= set(re.findall(r"^\s*(?:parent|scope): (\w+)$", code, re.M))
    assert used <= declared, used - declared
    assert code.count("{") == code.count("}") and code.count("[") == code.count("]")
    text = json.dumps(arm)
    assert set(re.findall(r"parameters\('(\w+)'\)", text)) <= set(arm["parameters"])
    assert set(re.findall(r"variables\('(\w+)'\)", text)) <= set(arm["variables"])
    bicep_vars = set(re.findall(r"^var (\w+) ", bicep, re.M))
    assert bicep_vars == set(arm["variables"])


def test_bicep_is_linted_when_a_bicep_compiler_is_installed(tmp_path):
    exe = shutil.which("bicep")
    if not exe:
        pytest.skip("no Bicep compiler installs from Debian or npm offline; the ARM JSON checks above stand in")
    r = subprocess.run([exe, "build", BICEP, "--outfile", str(tmp_path / "out.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# The image
# ---------------------------------------------------------------------------------------------
DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile")


def dockerfile_stages():
    """[(FROM line, [packages of its apt-get install])] of the Dockerfile."""
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append((line, []))
        m = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", line)
        if m and stages:
            stages[-1][1].extend(m.group(1).split())
    return stages, text


def launcher_packages():
    text = open(os.path.join(ROOT, "quakestream")).read()
    block = re.search(r"^DEB_PACKAGES=\((.*?)^\)", text, re.M | re.S).group(1)
    return set(re.sub(r"#.*", "", block).split())


def test_dockerfile_is_multi_stage_on_bookworm_slim_non_root_with_a_healthcheck():
    stages, text = dockerfile_stages()
    assert len(stages) == 2
    assert all(s[0].split()[1] == "debian:bookworm-slim" for s in stages)
    build, runtime = stages[0][1], stages[1][1]
    wanted = {p for p in launcher_packages() if p.endswith("-dev") and p != "libcmocka-dev"}
    wanted |= {"gcc", "pkg-config", "meson", "ninja-build"}
    assert wanted <= set(build), wanted - set(build)
    # node and npm: the launcher installs Debian's only when no npm is present (it may be
    # NodeSource's), so they are not in DEB_PACKAGES; the build stage runs npm ci for web/
    assert set(build) - {"libc6-dev", "python3", "nodejs", "npm"} <= launcher_packages()
    assert not any(p.endswith("-dev") or p in ("gcc", "meson") for p in runtime)
    m = re.search(r"^USER (\d+)", text, re.M)
    assert m and int(m.group(1)) != 0
    assert re.search(r"^HEALTHCHECK .*quakestream-healthcheck", text, re.M)
    assert "-Dtests=false" in text  # tests/ stays out of the build context (.dockerignore)
    ignore = open(os.path.join(ROOT, ".dockerignore")).read().split()
    for entry in [".git", "build", "build-*", "var", "**/node_modules", "tests"]:
        assert entry in ignore, entry
    for d in ["common", "services", "proto", "tools", "bench"]:  # the meson tree needs them
        assert d not in ignore


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    import fnmatch
    _, text = dockerfile_stages()
    ignore = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore"))
              if line.strip() and not line.startswith("#")]

    def matches(pattern, path):
        """.dockerignore semantics: a pattern that matches a directory excludes what it holds;
        a leading **/ matches at any depth."""
        parts = path.split("/")
        spans = [(i, j) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
        if pattern.startswith("**/"):
            return any(fnmatch.fnmatchcase("/".join(parts[i:j]), pattern[3:]) for i, j in spans)
        return any(fnmatch.fnmatchcase("/".join(parts[:j]), pattern) for j in range(1, len(parts) + 1))

    def ignored(path):
        hit = False
        for pattern in ignore:  # the last matching line wins; "!" re-includes
            if matches(pattern.lstrip("!").rstrip("/"), path):
                hit = not pattern.startswith("!")
        return hit

    sources = []
    for line in text.splitlines():
        m = re.match(r"^COPY (?!--from)(.+) (\S+)$", line)
        if m:
            sources += m.group(1).split()
    assert "." in sources and "deploy/docker/entrypoint.sh" in sources
    for src in sources:
        if src == ".":
            continue
        assert os.path.exists(os.path.join(ROOT, src)), src
        assert not ignored(src.rstrip("/")), f"{src} is excluded by .dockerignore"
    for needed in ["meson.build", "common/config.c", "services/hub/main.c", "tools/embed.py", "bench/meson.build"]:
        assert not ignored(needed), needed
    for excluded in ["build/build.ninja", "build-asan/x", ".git/HEAD", "tests/conftest.py", "var/redis/x",
                     "web/node_modules/a", ".env", "deploy/k8s/base/configmap.yaml"]:
        assert ignored(excluded), excluded
    assert not ignored(".env.example")


def test_every_meson_dependency_comes_from_a_package_the_launcher_installs():
    """A library the build finds only because the machine happens to have it fails on a fresh
    Debian 12 and in the image's build stage: every pkg-config dependency of the build must belong
    to a package that DEB_PACKAGES (and so the Dockerfile) installs, directly or through Depends."""
    deps = json.load(open(os.path.join(BUILD, "meson-info", "intro-dependencies.json")))
    provided = dpkg_closure(launcher_packages())
    missing = {}
    for d in deps:
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", d["name"]], capture_output=True, text=True)
        if pcdir.returncode != 0:
            continue  # not a pkg-config dependency (threads)
        pc = os.path.realpath(os.path.join(pcdir.stdout.strip(), d["name"] + ".pc"))
        owner = subprocess.run(["dpkg-query", "-S", pc], capture_output=True, text=True)
        assert owner.returncode == 0, f"{pc} belongs to no Debian package"
        package = owner.stdout.split(":")[0]
        if package not in provided:
            missing[d["name"]] = package
    assert not missing, f"add to DEB_PACKAGES in ./quakestream and the Dockerfile: {missing}"


def dpkg_closure(packages):
    """The installed packages that `packages` pull in through Depends/Pre-Depends (host's dpkg)."""
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}\n", p],
                           capture_output=True, text=True)
        if r.returncode != 0:
            continue
        for alt in r.stdout.replace("|", ",").split(","):
            name = alt.strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return seen


def test_runtime_stage_installs_every_shared_library_the_binaries_link():
    if not shutil.which("ldd") or not shutil.which("dpkg-query"):
        pytest.skip("needs ldd and dpkg (Debian)")
    stages, _ = dockerfile_stages()
    runtime = stages[1][1]
    provided = dpkg_closure(runtime) | dpkg_closure(["libc6", "libgcc-s1", "zlib1g"])  # the base image
    # every executable `meson install` puts into the image (the services, and tools such as qs-eh)
    installed = json.loads(subprocess.run(["meson", "introspect", "--installed", BUILD], capture_output=True,
                                          text=True, check=True).stdout)
    executables = {os.path.basename(dst): src for src, dst in installed.items() if "/bin/" in dst}
    assert set(SERVICES) <= set(executables), executables
    needed = {}
    for name, path in sorted(executables.items()):
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"=> (/\S+)", out):
            real = os.path.realpath(lib)
            for path in (real, re.sub(r"^/usr", "", real), "/usr" + real):
                r = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
                if r.returncode == 0:
                    needed[r.stdout.split(":")[0]] = name
                    break
            else:
                raise AssertionError(f"{name}: {lib} belongs to no Debian package")
    needed = {p: n for p, n in needed.items() if not re.match(r"lib(asan|ubsan|lsan)\d", p)}  # sanitizer build
    missing = {p: n for p, n in needed.items() if p not in provided}
    assert not missing, f"the runtime stage lacks {missing}"


def test_entrypoint_knows_every_service_and_refuses_others():
    script = os.path.join(DEPLOY, "docker", "entrypoint.sh")
    text = open(script).read()
    for name in SERVICES:
        assert name in re.search(r'^SERVICES="([^"]*)"', text, re.M).group(1).split()
    r = subprocess.run(["sh", script, "no-such-service"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown service" in r.stderr
    r = subprocess.run(["sh", script], capture_output=True, text=True)
    assert r.returncode == 0 and all(n in r.stdout for n in SERVICES)


def test_healthcheck_script_passes_on_a_live_admin_port_and_fails_on_a_closed_one(start_service, tmp_path):
    script = os.path.join(DEPLOY, "docker", "healthcheck.sh")
    svc = start_service("hub", env={"AMQP_PORT": "0", "DATA_DIR": str(tmp_path / "hub")})
    ok = subprocess.run(["bash", script], env={"ADMIN_PORT": str(svc.admin_port), "PATH": os.environ["PATH"]},
                        capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    svc.kill()
    closed = subprocess.run(["bash", script], env={"ADMIN_PORT": str(svc.admin_port), "PATH": os.environ["PATH"]},
                            capture_output=True, timeout=10)
    assert closed.returncode == 1


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=10.0):
    """Until 127.0.0.1:port accepts a connection (or the process that should listen exits)."""
    import socket
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def test_redis_tls_sidecar_tunnels_to_a_tls_redis_and_verifies_its_certificate(tmp_path):
    for tool in ["stunnel", "openssl", "redis-server", "redis-cli"]:
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: ./quakestream deps installs it")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    tls_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(tls_port), "--bind", "127.0.0.1",
                              "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                              "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                              "--requirepass", "s3cret", "--save", "", "--dir", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    procs = [redis]
    try:
        for raw in redis.stdout:
            if b"Ready to accept connections" in raw:
                break
        script = os.path.join(DEPLOY, "docker", "redis-tls-proxy.sh")

        def proxy(ca):
            port = free_port()
            env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), "REDIS_TLS_UPSTREAM": f"localhost:{tls_port}",
                   "REDIS_TLS_LOCAL_PORT": str(port)}
            if ca:
                env["REDIS_TLS_CA"] = str(ca)
            p = subprocess.Popen(["sh", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_for_port(port, p)
            return port

        def ping(port):
            return subprocess.run(["redis-cli", "-p", str(port), "-a", "s3cret", "--no-auth-warning", "ping"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()

        assert ping(proxy(cert)) == "PONG"      # trusted CA: the plain port reaches the TLS Redis
        assert ping(proxy(None)) != "PONG"      # system CAs do not trust a self-signed server: refused
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
