terraform {
  required_version = ">= 1.11"

  required_providers {
    # AWS provider 5.x: the offline checks (terraform validate in `make test`) run against
    # 5.100.0; 6.x renamed and removed arguments this module relies on.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}
