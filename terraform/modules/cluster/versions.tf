terraform {
  required_version = ">= 1.11"

  # Not checked by `terraform validate` offline: these providers are not mirrored on the
  # development machines (only the AWS provider is); `terraform fmt -check` and the
  # python-hcl2 test cover this module there, `terraform validate` runs in CI's terraform
  # job where the registry is reachable.
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.35, < 3.0"
    }
    # The 2.x block syntax (`kubernetes {}` in the provider, `set {}` blocks) is used.
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.17, < 3.0"
    }
  }
}
