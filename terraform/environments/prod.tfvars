environment        = "prod"
aws_region         = "eu-west-1"
cluster_name       = "data-platform-prod"
namespace          = "dagster"
bucket_name_prefix = "acme-geospatial"
image_tag          = "v0.1.0"

# External PostgreSQL (RDS); its managed master-user secret holds the password.
postgres = {
  host     = "dagster-prod.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com"
  username = "dagster"
  database = "dagster"
}
postgres_password_secret_arn = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:rds!cluster-0a1b2c3d-AbCdEf"

tags = {
  CostCenter = "geospatial"
}
