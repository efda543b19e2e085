output "bucket_names" {
  description = "S3 bucket names: data (the pipeline's storage root) and logs (compute logs)."
  value       = { for key, bucket in aws_s3_bucket.this : key => bucket.id }
}

output "access_logs_bucket" {
  description = "Bucket receiving the S3 server access logs of the others."
  value       = aws_s3_bucket.access_logs.id
}

output "ecr_repository_url" {
  description = "Where CI pushes the code location image."
  value       = aws_ecr_repository.this.repository_url
}

output "code_location_role_arn" {
  description = "IRSA role of the user deployment's service account."
  value       = aws_iam_role.code_location.arn
}

output "dagster_role_arn" {
  description = "IRSA role of the webserver and daemon service account."
  value       = aws_iam_role.dagster.arn
}

output "snowflake_secret_arn" {
  description = "Secrets Manager entry of the Snowflake credentials (JSON keys: SNOWFLAKE_PASSWORD, or SNOWFLAKE_PRIVATE_KEY [+ SNOWFLAKE_PRIVATE_KEY_PASSWORD])."
  value       = aws_secretsmanager_secret.snowflake.arn
}

output "external_secrets_role_arn" {
  description = "IRSA role of the SecretStore's service account (External Secrets Operator)."
  value       = aws_iam_role.external_secrets.arn
}

output "vpc_cidr" {
  description = "Primary CIDR of the cluster's VPC (PostgreSQL egress of the pipeline's pods)."
  value       = data.aws_vpc.cluster.cidr_block
}

output "kms_key_arn" {
  description = "KMS key encrypting the buckets, ECR and the secret."
  value       = aws_kms_key.this.arn
}

output "region" {
  description = "Region of the resources."
  value       = data.aws_region.current.name
}
