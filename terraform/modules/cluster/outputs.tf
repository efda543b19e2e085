output "namespace" {
  description = "Namespace of the releases."
  value       = kubernetes_namespace_v1.this.metadata[0].name
}

output "dagster_release" {
  description = "Name and version of the Dagster release."
  value       = { name = helm_release.dagster.name, version = helm_release.dagster.version }
}

output "user_deployments_release" {
  description = "Name and version of the code location release."
  value       = { name = helm_release.user_deployments.name, version = helm_release.user_deployments.version }
}
