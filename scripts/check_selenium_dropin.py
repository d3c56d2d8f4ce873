"""The checks behind scripts/check-selenium-dropin.sh; ends with `N passed, M failed`."""

import argparse
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = "docker/selenium/compose.yaml"
K8S = "docker/selenium/gridraft-k8s.yaml"
VALUES = "docker/selenium/values-gridraft.yaml"
DOC = "docs/grid.md"
BUS_ENV = {
    "SE_EVENT_BUS_HOST": "selenium-event-bus",
    "SE_EVENT_BUS_PUBLISH_PORT": "4442",
    "SE_EVENT_BUS_SUBSCRIBE_PORT": "4443",
}

results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}")
        except Exception as e:  # a failed check, reported with its cause
            results.append((name, e))
            print(f"FAIL {name}: {e}")
        return fn

    return run


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def compose_tools():
    tools = []
    if shutil.which("docker-compose"):
        tools.append(["docker-compose"])
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        tools.append(["docker", "compose"])
    return tools


def env_dict(env):
    if isinstance(env, dict):
        return {k: str(v) for k, v in env.items()}
    return dict(item.split("=", 1) for item in env)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gridraft", required=True)
    args = parser.parse_args()
    compose = yaml.safe_load(read(COMPOSE))

    @check("the compose file is valid for every compose tool present")
    def _():
        tools = compose_tools()
        assert tools, "neither docker-compose nor docker compose is installed"
        for tool in tools:
            out = subprocess.run(
                tool + ["-f", os.path.join(ROOT, COMPOSE), "config", "-q"],
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, f"{' '.join(tool)} config: {out.stderr}"

    @check("only the session map's image is gridraft's, with the sessions image's environment")
    def _():
        services = compose["services"]
        for name, svc in services.items():
            image = svc["image"]
            if name == "selenium-sessions":
                assert image.startswith("${GRIDRAFT_IMAGE:-gridraft"), image
                assert env_dict(svc["environment"]) == BUS_ENV, svc["environment"]
                assert svc["ports"] == ["5556:5556"], svc["ports"]
            else:
                assert image.startswith("selenium/"), f"{name}: {image}"
        for name in ("selenium-router", "selenium-distributor"):
            env = env_dict(services[name]["environment"])
            assert env["SE_SESSIONS_MAP_HOST"] == "selenium-sessions", env
            assert env["SE_SESSIONS_MAP_PORT"] == "5556", env

    @check("gridraft reads the sessions service's environment as its event bus and port")
    def _():
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDRAFT_", "SE_"))}
        env.update(env_dict(compose["services"]["selenium-sessions"]["environment"]))
        out = subprocess.run(
            [args.gridraft, "print-config"], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        config = out.stdout
        for line in (
            'publish-events = "tcp://selenium-event-bus:4442"',
            'subscribe-events = "tcp://selenium-event-bus:4443"',
            'listen = "0.0.0.0:5556"',
        ):
            assert line in config, f"{line!r} not in:\n{config}"

    @check("the Kubernetes manifests: headless Service, client Service, StatefulSet, PDB")
    def _():
        docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(read(K8S))}
        peers = docs[("Service", "gridraft-peers")]["spec"]
        assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
        assert docs[("Service", "gridraft")]["spec"]["ports"][0]["port"] == 5556
        sts = docs[("StatefulSet", "gridraft")]["spec"]
        assert sts["replicas"] == 3 and sts["serviceName"] == "gridraft-peers"
        assert sts["podManagementPolicy"] == "Parallel"
        container = sts["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        env = {e["name"]: e.get("value") for e in container["env"]}
        members = env["GRIDRAFT_MEMBERS"].split(",")
        assert [m.split("=")[0] for m in members] == ["1", "2", "3"], members
        for i, m in enumerate(members):
            assert m.split("=")[1].startswith(f"gridraft-{i}.gridraft-peers."), m
        pdb = docs[("PodDisruptionBudget", "gridraft")]["spec"]
        assert pdb["maxUnavailable"] == 1
        assert pdb["selector"]["matchLabels"] == sts["selector"]["matchLabels"]

    @check("the Helm values point router and distributor at the gridraft Service")
    def _():
        values = yaml.safe_load(read(VALUES))
        assert values["isolateComponents"] is True
        env = {e["name"]: e["value"] for e in values["components"]["extraEnvironmentVariables"]}
        assert env == {"SE_SESSIONS_MAP_HOST": "gridraft.selenium", "SE_SESSIONS_MAP_PORT": "5556"}

    @check("docs/grid.md shows each file as it is")
    def _():
        doc = read(DOC)
        for path in (COMPOSE, K8S, VALUES):
            assert read(path) in doc, f"{path} differs from its copy in {DOC}"

    failed = sum(1 for _, e in results if e is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
