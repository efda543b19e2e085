variable "environment" {
  description = "dev or prod; must be the selected workspace (terraform workspace select <environment>)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment) && var.environment == terraform.workspace
    error_message = "environment must be dev or prod and equal the selected workspace: run `terraform workspace select dev` with environments/dev.tfvars, `prod` with environments/prod.tfvars."
  }
}

variable "aws_region" {
  description = "Region of the EKS cluster and of the buckets."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the Dagster releases."
  type        = string
  default     = "dagster"
}

variable "bucket_name_prefix" {
  description = "Globally unique prefix of the bucket names (<prefix>-<environment>-raw, ...)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the code location image in ECR (pushed by CI on a release tag)."
  type        = string
}

variable "dagster_chart_version" {
  description = "Dagster Helm chart version; equal to the dagster version pinned in pyproject.toml."
  type        = string
  default     = "1.13.27"
}

variable "postgres" {
  description = "Dagster's PostgreSQL (prod: the external server; dev: only username and database are used, the chart runs its own)."
  type = object({
    host     = string
    username = string
    database = string
  })
}

variable "postgres_password_secret_arn" {
  description = "Existing Secrets Manager entry whose JSON has the PostgreSQL password under \"password\" (RDS-managed secrets have this shape); read by the External Secrets Operator, never by Terraform."
  type        = string
}

variable "postgres_password_secret_kms_key_arn" {
  description = "Customer-managed KMS key of that entry, if any; empty for the AWS-managed key (RDS's default)."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
