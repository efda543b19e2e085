"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), evaluated offline: which
policies select a pod, and whether its egress to an address or to another pod is allowed.

Follows the API's rules: a pod is isolated for egress once any policy with ``Egress`` in its
``policyTypes`` selects it, and then a connection is allowed when some rule of some such
policy allows it (rules only add). A rule without ``to`` allows every destination, without
``ports`` every port. ``ipBlock`` peers match addresses (with ``except`` carved out);
``podSelector``/``namespaceSelector`` peers match pods only, never an address outside the
cluster such as the instance metadata endpoint. A named port cannot be resolved here, so it
is taken to match any port: the checks err towards "allowed".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The EC2 instance metadata endpoint (IMDS), IPv4 and IPv6 (Nitro instances).
IMDS_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")


@dataclass(frozen=True)
class Pod:
    """A destination pod: its labels and its namespace's labels."""

    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every namespace carries this label (set by the API server since 1.22).
        labels = {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}
        object.__setattr__(self, "namespace_labels", labels)


Destination = str | Pod  # an IP address, or a pod


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions); the empty selector matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"matchExpressions: unknown operator {operator!r}")
    return True


def egress_policies(
    policies: Iterable[Mapping[str, Any]], namespace: str, pod_labels: Mapping[str, str]
) -> list[Mapping[str, Any]]:
    """The NetworkPolicies that isolate this pod for egress."""
    out = []
    for policy in policies:
        if policy.get("kind") != "NetworkPolicy":
            continue
        if policy["metadata"].get("namespace", namespace) != namespace:
            continue
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else [])
        if "Egress" in types and selector_matches(spec.get("podSelector"), pod_labels):
            out.append(policy)
    return out


def _ip_block_matches(block: Mapping[str, Any], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if ip.version != network.version or ip not in network:
        return False
    return not any(
        ip in ipaddress.ip_network(excluded, strict=False)
        for excluded in block.get("except") or []
        if ipaddress.ip_network(excluded, strict=False).version == ip.version
    )


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, dest: Destination) -> bool:
    if "ipBlock" in peer:
        return isinstance(dest, str) and _ip_block_matches(peer["ipBlock"], dest)
    if not isinstance(dest, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], dest.namespace_labels):
            return False
    elif dest.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), dest.labels)


def _port_matches(entry: Mapping[str, Any], port: int, protocol: str) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None or isinstance(wanted, str):
        return True
    return wanted <= port <= entry.get("endPort", wanted)


def egress_allowed(
    policies: Iterable[Mapping[str, Any]],
    namespace: str,
    pod_labels: Mapping[str, str],
    dest: Destination,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the pod may open ``dest:port/protocol`` under these policies."""
    selecting = egress_policies(policies, namespace, pod_labels)
    if not selecting:
        return True  # not isolated for egress
    for policy in selecting:
        policy_namespace = policy["metadata"].get("namespace", namespace)
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if peers and not any(_peer_matches(p, policy_namespace, dest) for p in peers):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, port, protocol) for p in ports):
                continue
            return True
    return False


def ip_blocks(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every ipBlock of the policy's egress rules."""
    return [
        peer["ipBlock"]
        for rule in policy["spec"].get("egress") or []
        for peer in rule.get("to") or []
        if "ipBlock" in peer
    ]
