environment        = "dev"
aws_region         = "eu-west-1"
cluster_name       = "data-platform-dev"
namespace          = "dagster"
bucket_name_prefix = "acme-geospatial"
image_tag          = "v0.1.0"

# The chart's own PostgreSQL in dev: host unused.
postgres = {
  host     = ""
  username = "dagster"
  database = "dagster"
}
postgres_password_secret_arn = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:geospatial-pipeline/dev/postgres-AbCdEf"

tags = {
  CostCenter = "geospatial"
}
