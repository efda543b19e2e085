variable "environment" {
  description = "dev or prod: picks helm/<chart>/values-<environment>.yaml."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "namespace" {
  description = "Namespace of both Helm releases (created here)."
  type        = string
}

variable "helm_dir" {
  description = "Directory holding the Helm values (the repository's helm/)."
  type        = string
}

variable "dagster_chart_version" {
  description = "Version of the dagster/dagster and dagster/dagster-user-deployments charts; keep it equal to the dagster version pinned in pyproject.toml."
  type        = string
}

variable "chart_repository" {
  description = "Helm repository of the official Dagster charts."
  type        = string
  default     = "https://dagster-io.github.io/helm"
}

variable "image_repository" {
  description = "ECR repository of the code location image."
  type        = string
}

variable "image_tag" {
  description = "Tag of the code location image to run (a release tag pushed by CI)."
  type        = string
}

variable "code_location_role_arn" {
  description = "IRSA role annotated on the user deployment's service account."
  type        = string
}

variable "dagster_role_arn" {
  description = "IRSA role annotated on the webserver/daemon service account."
  type        = string
}

variable "compute_logs_bucket" {
  description = "Bucket of Dagster's compute logs."
  type        = string
}

variable "aws_region" {
  description = "Region of the buckets."
  type        = string
}

variable "pipeline_config_yaml" {
  description = "The pipeline configuration (YAML) mounted into the code location pods."
  type        = string
}

variable "postgres" {
  description = "Dagster's PostgreSQL server, used by the prod values (external, e.g. RDS). The dev values deploy the chart's own PostgreSQL and use only username and database."
  type = object({
    host     = string
    username = string
    database = string
  })
}

variable "external_secrets_service_account" {
  description = "Service account of the SecretStore (created here, annotated with external_secrets_role_arn)."
  type        = string
}

variable "external_secrets_role_arn" {
  description = "IRSA role the External Secrets Operator assumes to read the two secret entries."
  type        = string
}

variable "snowflake_secret_arn" {
  description = "Secrets Manager entry of the Snowflake credentials; ESO copies its JSON keys into the geospatial-pipeline-snowflake Secret."
  type        = string
}

variable "postgres_password_secret_arn" {
  description = "Secrets Manager entry whose JSON \"password\" ESO copies into the dagster-postgresql-secret Secret."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR the pipeline's pods may reach PostgreSQL in (the cluster's VPC): the egress NetworkPolicy in the user deployment's values."
  type        = string
}
