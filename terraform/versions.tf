terraform {
  # 1.11: S3 backend locking with a lock object (use_lockfile), no DynamoDB table.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.35, < 3.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.17, < 3.0"
    }
  }

  # Remote state in S3, one state per workspace (env:/dev/..., env:/prod/...), locked with
  # an S3 lock object. The bucket is account-specific: given at init time with
  # -backend-config=environments/backend.hcl (see environments/backend.hcl.example).
  backend "s3" {
    key          = "geospatial-pipeline/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
