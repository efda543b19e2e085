output "ecr_repository_url" {
  description = "docker push target of CI (…/geospatial-pipeline:<tag>)."
  value       = module.aws.ecr_repository_url
}

output "bucket_names" {
  description = "data and logs buckets of this environment."
  value       = module.aws.bucket_names
}

output "snowflake_secret_arn" {
  description = "Put the Snowflake credentials here: {\"SNOWFLAKE_PASSWORD\": \"...\"} or {\"SNOWFLAKE_PRIVATE_KEY\": \"<PEM>\", \"SNOWFLAKE_PRIVATE_KEY_PASSWORD\": \"...\"}."
  value       = module.aws.snowflake_secret_arn
}

output "external_secrets_role_arn" {
  description = "IRSA role the External Secrets Operator reads the two secret entries with."
  value       = module.aws.external_secrets_role_arn
}

output "code_location_role_arn" {
  description = "IRSA role of the code location's pods."
  value       = module.aws.code_location_role_arn
}

output "namespace" {
  description = "Namespace of the Dagster releases."
  value       = module.cluster.namespace
}
