variable "name" {
  description = "Name of the deployment, used in resource names (e.g. geospatial-pipeline)."
  type        = string
  default     = "geospatial-pipeline"
}

variable "environment" {
  description = "dev or prod."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "bucket_name_prefix" {
  description = "Globally unique prefix of the S3 bucket names, e.g. acme-geospatial; buckets are <prefix>-<environment>-<purpose>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$", var.bucket_name_prefix))
    error_message = "bucket_name_prefix: 3-32 lowercase letters, digits or hyphens."
  }
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster (looked up, never created here)."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the Dagster releases."
  type        = string
}

variable "code_location_service_account" {
  description = "Service account of the user deployment (code server, run and step pods)."
  type        = string
}

variable "dagster_service_account" {
  description = "Service account of the Dagster webserver and daemon (reads compute logs)."
  type        = string
}

variable "external_secrets_service_account" {
  description = "Service account of the External Secrets Operator's SecretStore in the namespace (reads the secret entries)."
  type        = string
}

variable "postgres_password_secret_arn" {
  description = "Existing Secrets Manager entry holding Dagster's PostgreSQL password (JSON key \"password\"); the External Secrets role may read it."
  type        = string
}

variable "postgres_password_secret_kms_key_arn" {
  description = "Customer-managed KMS key encrypting that entry, if any (empty: the AWS-managed key, which needs no grant)."
  type        = string
  default     = ""
}

variable "data_prefix" {
  description = "Key prefix of the pipeline's objects in the data bucket (storage.url = s3://<data bucket>/<data_prefix>)."
  type        = string
  default     = "sentinel2"
}

variable "compute_logs_prefix" {
  description = "Key prefix of Dagster's compute logs in the logs bucket."
  type        = string
  default     = "compute-logs"
}

variable "lifecycle_days" {
  description = "Lifecycle rules, in days: when raw windows and processed products move to Standard-IA, when compute and access logs expire, when noncurrent versions expire."
  type = object({
    raw_to_ia                = number
    processed_to_ia          = number
    compute_logs_expire      = number
    access_logs_expire       = number
    noncurrent_expire        = number
    abort_incomplete_uploads = number
  })
  default = {
    raw_to_ia                = 30
    processed_to_ia          = 90
    compute_logs_expire      = 90
    access_logs_expire       = 365
    noncurrent_expire        = 30
    abort_incomplete_uploads = 7
  }
}

variable "ecr_keep_images" {
  description = "How many tagged images the ECR lifecycle policy keeps."
  type        = number
  default     = 50
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
