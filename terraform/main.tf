# One environment of the deployment, picked by the workspace and its tfvars:
#   terraform workspace select prod
#   terraform apply -var-file=environments/prod.tfvars

locals {
  # Service accounts the IRSA roles trust; the Helm values name the same ones.
  code_location_service_account = "geospatial-pipeline"
  dagster_service_account       = "dagster"
  # The External Secrets Operator's SecretStore authenticates as this one (no pod runs it).
  external_secrets_service_account = "geospatial-pipeline-secrets"
  # Everything the pipeline writes lives under s3://<data bucket>/<data_prefix>/.
  data_prefix = "sentinel2"

  # The pipeline YAML of this environment, with the storage this module created.
  pipeline_config = merge(
    yamldecode(file("${path.module}/../deploy/pipeline/${var.environment}.yaml")),
    {
      storage = {
        url    = "s3://${module.aws.bucket_names["data"]}/${local.data_prefix}"
        region = var.aws_region
      }
    },
  )
}

module "aws" {
  source = "./modules/aws"

  environment                   = var.environment
  bucket_name_prefix            = var.bucket_name_prefix
  cluster_name                  = var.cluster_name
  namespace                     = var.namespace
  code_location_service_account = local.code_location_service_account
  dagster_service_account       = local.dagster_service_account
  data_prefix                   = local.data_prefix
  tags                          = var.tags

  external_secrets_service_account     = local.external_secrets_service_account
  postgres_password_secret_arn         = var.postgres_password_secret_arn
  postgres_password_secret_kms_key_arn = var.postgres_password_secret_kms_key_arn
}

# Secrets never pass through Terraform: it creates the Snowflake entry (module.aws) and the
# External Secrets objects naming the two entries (module.cluster); the operator reads the
# values on the cluster. Nothing here reads a secret value, so none is in the plan or state.
module "cluster" {
  source = "./modules/cluster"

  environment            = var.environment
  namespace              = var.namespace
  helm_dir               = "${path.module}/../helm"
  dagster_chart_version  = var.dagster_chart_version
  image_repository       = module.aws.ecr_repository_url
  image_tag              = var.image_tag
  code_location_role_arn = module.aws.code_location_role_arn
  dagster_role_arn       = module.aws.dagster_role_arn
  compute_logs_bucket    = module.aws.bucket_names["logs"]
  aws_region             = var.aws_region
  pipeline_config_yaml   = yamlencode(local.pipeline_config)
  postgres               = var.postgres
  vpc_cidr               = module.aws.vpc_cidr

  external_secrets_service_account = local.external_secrets_service_account
  external_secrets_role_arn        = module.aws.external_secrets_role_arn
  snowflake_secret_arn             = module.aws.snowflake_secret_arn
  postgres_password_secret_arn     = var.postgres_password_secret_arn
}
