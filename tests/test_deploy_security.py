"""Security of the deployment: no secret value passes through Terraform (the External
Secrets Operator brings them into the cluster), and the pipeline's pods cannot reach the
instance metadata endpoint while reaching everything the pipeline needs.

Offline: Terraform is read with python-hcl2, the NetworkPolicies are the Helm values as
the user-deployment release renders them, and the pods they must select are the code
server's Deployment, a run pod built by the production run launcher's own ``launch_run``
and a step pod built by dagster-k8s (tools/deploy_checks/k8s.py).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from geospatial_pipeline.deployment import heavy_run_tags
from tests.test_deploy_checkov import heavy_step_job
from tools.deploy_checks import REPO
from tools.deploy_checks import terraform as tf
from tools.deploy_checks.helm import ENVIRONMENTS, SAMPLE_TEMPLATE_VARS, merged_values
from tools.deploy_checks.k8s import (
    NAMESPACE,
    POSTGRES_PASSWORD_KEY,
    code_server_manifests,
    run_job,
)
from tools.deploy_checks.netpol import (
    IMDS_ADDRESSES,
    Pod,
    egress_allowed,
    egress_policies,
    ip_blocks,
)

ALL_MODULES = {"root": tf.ROOT, **tf.MODULES}

# Data sources and resources whose state holds a secret's plaintext.
SECRET_READING_DATA = {
    "aws_secretsmanager_secret_version",
    "aws_secretsmanager_secret_versions",
    "aws_secretsmanager_random_password",
    "aws_kms_secrets",
    "aws_ssm_parameter",
    "aws_ssm_parameters_by_path",
}
SECRET_HOLDING_RESOURCES = {
    "aws_secretsmanager_secret_version",
    "aws_ssm_parameter",
    "kubernetes_secret",
    "kubernetes_secret_v1",
    "random_password",
}
ESO_API = "external-secrets.io/v1"


def typed_blocks(directory: Path, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every resource or data block of a module."""
    return [
        (tf.unquote(rtype), tf.unquote(name), body)
        for block in tf.blocks(directory, kind)
        for rtype, named in block.items()
        for name, body in named.items()
    ]


# ------------------------------------------------------------------ no secret in state


@pytest.mark.parametrize("module", sorted(ALL_MODULES))
def test_no_terraform_block_reads_or_holds_a_secret_value(module: str) -> None:
    directory = ALL_MODULES[module]
    data = typed_blocks(directory, "data")
    resources = typed_blocks(directory, "resource")
    assert [f"data.{t}.{n}" for t, n, _ in data if t in SECRET_READING_DATA] == []
    assert [f"{t}.{n}" for t, n, _ in resources if t in SECRET_HOLDING_RESOURCES] == []
    # A secret entry is created empty: its value is put by an operator, never by Terraform.
    for rtype, name, body in resources:
        text = json.dumps(tf.unquote_all(body))
        assert "secret_string" not in text and "secret_binary" not in text, f"{rtype}.{name}"
    # No variable carries a secret into the module either.
    for name, body in tf.declared_variables(directory).items():
        assert body.get("sensitive") is not True, f"variable {name} is sensitive"
        assert (
            "password" not in name or name.endswith("_secret_arn") or name.endswith("_kms_key_arn")
        ), f"variable {name} looks like it carries a password"


def test_no_secret_value_in_the_terraform_text() -> None:
    """Grep-level, on the raw files (comments dropped): no way of reading a secret's value,
    whatever block it would sit in."""
    patterns = [
        r"\baws_secretsmanager_secret_version\b",
        r"\bsecret_string\b",
        r"\bkubernetes_secret(_v1)?\b",
        r"\bjsondecode\([^)]*secret",
        r"\bsensitive\s*=\s*true\b",
    ]
    for path in sorted(tf.TERRAFORM_DIR.rglob("*.tf")):
        code = "\n".join(
            line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()
        )
        for pattern in patterns:
            assert not re.search(pattern, code), f"{path.relative_to(REPO)}: {pattern}"


# ------------------------------------------------------------------ External Secrets


def cluster_locals() -> dict[str, Any]:
    return tf.unquote_all(tf.locals_of(tf.MODULES["cluster"]))


def module_call(name: str) -> dict[str, Any]:
    (call,) = [c for c in tf.module_calls(tf.ROOT) if c.name == name]
    return tf.unquote_all(call.arguments)


def manifests_by_kind() -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, body in tf.unquote_all(
        tf.resources(tf.MODULES["cluster"], "kubernetes_manifest")
    ).items():
        manifest = body["manifest"]
        out.setdefault(manifest["kind"], {})[name] = body
    return out


def local_ref(expression: str) -> str:
    """The value of a ``${local.name}`` of the cluster module."""
    match = re.fullmatch(r"\$\{local\.(\w+)\}", expression)
    assert match, f"expected a local of the cluster module, got {expression}"
    return str(cluster_locals()[match.group(1)])


def test_external_secrets_write_the_secrets_the_charts_and_the_code_read() -> None:
    from geospatial_pipeline.config import (
        SNOWFLAKE_PASSWORD_ENV_VAR,
        SNOWFLAKE_PRIVATE_KEY_ENV_VAR,
        SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR,
    )

    kinds = manifests_by_kind()
    ((store_name, store),) = kinds["SecretStore"].items()
    external = kinds["ExternalSecret"]
    names = cluster_locals()

    # The Secrets ESO writes are the ones the Helm values mount, by name.
    targets = {}
    for name, body in external.items():
        manifest = body["manifest"]
        assert manifest["apiVersion"] == ESO_API
        spec = manifest["spec"]
        assert spec["secretStoreRef"] == {
            "kind": "SecretStore",
            "name": store["manifest"]["metadata"]["name"],
        }
        assert local_ref(spec["target"]["name"]) == local_ref(manifest["metadata"]["name"])
        targets[local_ref(spec["target"]["name"])] = (name, body)
        # The releases wait for the Secret to exist (the ExternalSecret is Ready).
        assert body["wait"][0]["condition"] == [{"type": "Ready", "status": "True"}]
    snowflake_secret = names["snowflake_secret"]
    postgres_secret = names["postgres_secret"]
    assert set(targets) == {snowflake_secret, postgres_secret}

    for environment in ENVIRONMENTS:
        user = merged_values("user-deployments", environment)
        (deployment,) = user["deployments"]
        assert deployment["envSecrets"] == [{"name": snowflake_secret}]
        assert user["global"]["postgresqlSecretName"] == postgres_secret
        dagster = merged_values("dagster", environment)
        assert dagster["global"]["postgresqlSecretName"] == postgres_secret
        assert dagster["generatePostgresqlPasswordSecret"] is False
        if environment == "dev":
            assert dagster["postgresql"]["existingSecret"] == postgres_secret
    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert instance["run_launcher"]["config"]["postgres_password_secret"] == postgres_secret

    # Snowflake: every JSON key of the entry Terraform created becomes an env variable.
    _, snowflake = targets[snowflake_secret]
    spec = snowflake["manifest"]["spec"]
    assert "data" not in spec
    assert spec["dataFrom"] == [{"extract": {"key": "${var.snowflake_secret_arn}"}}]
    cluster_args = module_call("cluster")
    assert cluster_args["snowflake_secret_arn"] == "${module.aws.snowflake_secret_arn}"
    aws_outputs = tf.unquote_all(
        {k: v for b in tf.blocks(tf.MODULES["aws"], "output") for k, v in b.items()}
    )
    assert (
        aws_outputs["snowflake_secret_arn"]["value"] == "${aws_secretsmanager_secret.snowflake.arn}"
    )
    description = tf.unquote_all(tf.resources(tf.MODULES["aws"], "aws_secretsmanager_secret"))[
        "snowflake"
    ]["description"]
    for variable in (
        SNOWFLAKE_PASSWORD_ENV_VAR,
        SNOWFLAKE_PRIVATE_KEY_ENV_VAR,
        SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR,
    ):
        assert variable in description
    for environment in ENVIRONMENTS:
        doc = yaml.safe_load((REPO / "deploy" / "pipeline" / f"{environment}.yaml").read_text())
        assert doc["warehouse"].get("password_env_var", SNOWFLAKE_PASSWORD_ENV_VAR) == (
            SNOWFLAKE_PASSWORD_ENV_VAR
        )

    # PostgreSQL: the entry's "password" under the key the charts read.
    _, postgres = targets[postgres_secret]
    ((entry,),) = [postgres["manifest"]["spec"]["data"]]
    assert local_ref(entry["secretKey"]) == POSTGRES_PASSWORD_KEY
    assert entry["remoteRef"] == {
        "key": "${var.postgres_password_secret_arn}",
        "property": "password",
    }
    assert cluster_args["postgres_password_secret_arn"] == "${var.postgres_password_secret_arn}"

    # The store authenticates with IRSA through a service account annotated with the role
    # that module.aws made for exactly that account.
    aws_provider = store["manifest"]["spec"]["provider"]["aws"]
    assert aws_provider["service"] == "SecretsManager"
    assert aws_provider["auth"] == {
        "jwt": {
            "serviceAccountRef": {
                "name": "${kubernetes_service_account_v1.external_secrets.metadata[0].name}"
            }
        }
    }
    account = tf.unquote_all(tf.resources(tf.MODULES["cluster"], "kubernetes_service_account_v1"))[
        "external_secrets"
    ]
    (metadata,) = account["metadata"]
    assert metadata["name"] == "${var.external_secrets_service_account}"
    assert metadata["annotations"] == {
        "eks.amazonaws.com/role-arn": "${var.external_secrets_role_arn}"
    }
    assert account["automount_service_account_token"] is False
    assert cluster_args["external_secrets_role_arn"] == "${module.aws.external_secrets_role_arn}"
    aws_args = module_call("aws")
    sa_local = "${local.external_secrets_service_account}"
    assert cluster_args["external_secrets_service_account"] == sa_local
    assert aws_args["external_secrets_service_account"] == sa_local
    assert store_name == "secret_store"


def iam_documents() -> dict[str, dict[str, Any]]:
    return {
        name: body
        for block in tf.blocks(tf.MODULES["aws"], "data")
        for kind, named in block.items()
        if tf.unquote(kind) == "aws_iam_policy_document"
        for name, body in tf.unquote_all(named).items()
    }


def test_external_secrets_role_reads_only_the_two_entries() -> None:
    docs = iam_documents()
    role = tf.unquote_all(tf.resources(tf.MODULES["aws"], "aws_iam_role"))["external_secrets"]
    assert role["assume_role_policy"] == (
        '${data.aws_iam_policy_document.irsa_trust["external_secrets"].json}'
    )
    trust = docs["irsa_trust"]
    assert "${var.external_secrets_service_account}" in json.dumps(trust["for_each"])
    statements = {s["sid"]: s for s in docs["external_secrets"]["statement"]}
    assert set(statements) == {"ReadDeploymentSecrets", "DecryptDeploymentSecrets"}
    read = statements["ReadDeploymentSecrets"]
    assert sorted(read["actions"]) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
    ]
    assert sorted(read["resources"]) == sorted(
        ["${aws_secretsmanager_secret.snowflake.arn}", "${var.postgres_password_secret_arn}"]
    )
    decrypt = statements["DecryptDeploymentSecrets"]
    assert decrypt["actions"] == ["kms:Decrypt"]
    assert "aws_kms_key.this.arn" in json.dumps(decrypt["resources"])
    (condition,) = decrypt["condition"]
    assert condition["variable"] == "kms:ViaService"
    assert condition["values"] == ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    policy = tf.unquote_all(tf.resources(tf.MODULES["aws"], "aws_iam_role_policy"))[
        "external_secrets"
    ]
    assert policy["role"] == "${aws_iam_role.external_secrets.id}"
    assert policy["policy"] == "${data.aws_iam_policy_document.external_secrets.json}"


def test_releases_start_after_their_secrets() -> None:
    releases = tf.unquote_all(tf.resources(tf.MODULES["cluster"], "helm_release"))
    assert "${kubernetes_manifest.postgres_secret}" in releases["dagster"]["depends_on"]
    assert "${kubernetes_manifest.snowflake_secret}" in releases["user_deployments"]["depends_on"]


# ------------------------------------------------------------------ egress NetworkPolicy


def pipeline_pods(environment: str, workdir: Path) -> dict[str, dict[str, str]]:
    """Labels of the code server's pods, a run pod and a heavy step pod."""
    (deployment,) = [m for m in code_server_manifests(environment) if m["kind"] == "Deployment"]
    step = heavy_step_job(environment, workdir)
    run = run_job(environment, heavy_run_tags(), workdir)
    pods = {
        "code server": deployment["spec"]["template"]["metadata"]["labels"],
        "run": run["spec"]["template"]["metadata"]["labels"],
        "step": step["spec"]["template"]["metadata"]["labels"],
    }
    # What each pod actually is, so that the labels above are the right pods' labels.
    assert pods["run"]["app.kubernetes.io/component"] == "run_worker"
    assert pods["step"]["app.kubernetes.io/component"] == "step_worker"
    assert run["metadata"]["namespace"] == step["metadata"]["namespace"] == NAMESPACE
    return pods


def policies(environment: str) -> list[dict[str, Any]]:
    return [m for m in code_server_manifests(environment) if m["kind"] == "NetworkPolicy"]


KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
DEV_POSTGRES = Pod(NAMESPACE, {"app": "postgresql", "release": "dagster", "role": "master"})
CODE_SERVER = Pod(NAMESPACE, {"deployment": "geospatial-pipeline", "component": "user-deployments"})
WEBSERVER = Pod(
    NAMESPACE, {"component": "dagster-webserver", "app.kubernetes.io/instance": "dagster"}
)
PUBLIC_HTTPS = "52.218.128.10"  # an S3 address
RDS = "10.20.31.7"  # inside SAMPLE_TEMPLATE_VARS["vpc_cidr"]
SOMEWHERE_PUBLIC = "203.0.113.9"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pipeline_pods_cannot_reach_instance_metadata(environment: str, tmp_path: Path) -> None:
    docs = policies(environment)
    for pod, labels in pipeline_pods(environment, tmp_path).items():
        assert egress_policies(docs, NAMESPACE, labels), f"{pod}: no egress policy selects it"
        for address in IMDS_ADDRESSES:
            for port in (80, 443, 53, 5432, 3030, 8080):
                for protocol in ("TCP", "UDP"):
                    assert not egress_allowed(docs, NAMESPACE, labels, address, port, protocol), (
                        f"{pod} reaches {address}:{port}/{protocol}"
                    )
    # Structurally too: every ipBlock that contains the endpoint carves it out.
    for policy in docs:
        for block in ip_blocks(policy):
            network = ipaddress.ip_network(block["cidr"])
            for address in IMDS_ADDRESSES:
                ip = ipaddress.ip_address(address)
                if ip.version == network.version and ip in network:
                    excluded = [ipaddress.ip_network(e) for e in block.get("except", [])]
                    assert any(ip in e for e in excluded), (policy["metadata"]["name"], block)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pipeline_pods_reach_what_the_pipeline_needs(environment: str, tmp_path: Path) -> None:
    docs = policies(environment)
    for pod, labels in pipeline_pods(environment, tmp_path).items():

        def allowed(
            dest: str | Pod, port: int, protocol: str = "TCP", _labels: Any = labels
        ) -> bool:
            return egress_allowed(docs, NAMESPACE, _labels, dest, port, protocol)

        # DNS through CoreDNS; STAC, COGs, S3, STS (IRSA), Snowflake, the Kubernetes API.
        assert allowed(KUBE_DNS, 53, "UDP") and allowed(KUBE_DNS, 53, "TCP"), pod
        assert allowed(PUBLIC_HTTPS, 443), pod
        assert allowed("2600:1f14::10", 443), pod  # IPv6 clusters
        # Dagster's PostgreSQL: the chart's own pod (dev), RDS in the VPC (prod).
        assert allowed(DEV_POSTGRES, 5432) and allowed(RDS, 5432), pod
        assert allowed(CODE_SERVER, 3030) and allowed(WEBSERVER, 80), pod
        # And not more than that.
        assert not allowed(SOMEWHERE_PUBLIC, 22), pod
        assert not allowed(SOMEWHERE_PUBLIC, 5432), pod
        assert not allowed(SOMEWHERE_PUBLIC, 53, "UDP"), pod
        assert not allowed(Pod("other", {"app": "x"}), 3030), pod
    (ip_rule,) = [
        b for p in docs for b in ip_blocks(p) if b["cidr"] == SAMPLE_TEMPLATE_VARS["vpc_cidr"]
    ]
    assert "except" not in ip_rule  # the VPC range does not contain the link-local endpoint


def test_the_policy_check_is_not_vacuous(tmp_path: Path) -> None:
    """Without the exception, or without the policy, the same checks see the endpoint."""
    docs = policies("prod")
    labels = pipeline_pods("prod", tmp_path)["step"]
    assert not egress_allowed(docs, NAMESPACE, labels, IMDS_ADDRESSES[0], 80)

    open_docs = copy.deepcopy(docs)
    for policy in open_docs:
        for block in ip_blocks(policy):
            block.pop("except", None)
    assert egress_allowed(open_docs, NAMESPACE, labels, IMDS_ADDRESSES[0], 80)
    assert egress_allowed(open_docs, NAMESPACE, labels, IMDS_ADDRESSES[1], 443)

    no_egress = [p for p in docs if "Egress" not in p["spec"]["policyTypes"]]
    assert egress_allowed(no_egress, NAMESPACE, labels, IMDS_ADDRESSES[0], 80)

    other_pods = copy.deepcopy(docs)
    for policy in other_pods:
        policy["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/part-of": "else"}}
    assert not egress_policies(other_pods, NAMESPACE, labels)
