# Cluster side of one environment: namespace, the code location's ConfigMaps and Secrets,
# and the two Helm releases (Dagster itself, then this code location as a user deployment).

locals {
  labels = {
    "app.kubernetes.io/part-of"    = "geospatial-pipeline"
    "app.kubernetes.io/managed-by" = "terraform"
  }

  # Object names the Helm values refer to (helm/*/values*.yaml); a test keeps them in step.
  pipeline_config_map = "geospatial-pipeline-config"
  pipeline_env_map    = "geospatial-pipeline-env"
  snowflake_secret    = "geospatial-pipeline-snowflake"
  # The name both charts read DAGSTER_PG_PASSWORD from (global.postgresqlSecretName).
  postgres_secret = "dagster-postgresql-secret"

  # Every values file is rendered with templatefile() and these variables, then merged by
  # Helm in order (chart defaults, shared base, environment). A test checks that every
  # ${...} in the values files is one of these keys.
  helm_template_vars = {
    environment            = var.environment
    image_repository       = var.image_repository
    image_tag              = var.image_tag
    code_location_role_arn = var.code_location_role_arn
    dagster_role_arn       = var.dagster_role_arn
    compute_logs_bucket    = var.compute_logs_bucket
    aws_region             = var.aws_region
    postgres_host          = var.postgres.host
    postgres_username      = var.postgres.username
    postgres_database      = var.postgres.database
  }
  dagster_values_files = [
    "${var.helm_dir}/dagster/values.yaml",
    "${var.helm_dir}/dagster/values-${var.environment}.yaml",
  ]
  user_deployments_values_files = [
    "${var.helm_dir}/user-deployments/values.yaml",
    "${var.helm_dir}/user-deployments/values-${var.environment}.yaml",
  ]
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
    labels = merge(local.labels, {
      # The official Dagster images (webserver, daemon, dev PostgreSQL) run as root, which
      # "restricted" forbids; the code location's pods meet "restricted" (warned, not enforced).
      "pod-security.kubernetes.io/enforce" = "baseline"
      "pod-security.kubernetes.io/warn"    = "restricted"
    })
  }
}

resource "kubernetes_config_map_v1" "pipeline_config" {
  metadata {
    name      = local.pipeline_config_map
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  data = {
    "pipeline.yaml" = var.pipeline_config_yaml
  }
}

resource "kubernetes_config_map_v1" "pipeline_env" {
  metadata {
    name      = local.pipeline_env_map
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  data = {
    AWS_REGION         = var.aws_region
    AWS_DEFAULT_REGION = var.aws_region
  }
}

resource "kubernetes_secret_v1" "snowflake" {
  metadata {
    name      = local.snowflake_secret
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    SNOWFLAKE_PASSWORD = var.snowflake_password
  }
}

resource "kubernetes_secret_v1" "postgres" {
  metadata {
    name      = local.postgres_secret
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  type = "Opaque"
  data = {
    "postgresql-password" = var.postgres_password
  }
}

resource "helm_release" "dagster" {
  name       = "dagster"
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = var.chart_repository
  chart      = "dagster"
  version    = var.dagster_chart_version
  values     = [for f in local.dagster_values_files : templatefile(f, local.helm_template_vars)]

  # Roll back a failed upgrade instead of leaving a half-applied release.
  atomic          = true
  wait            = true
  timeout         = 900
  cleanup_on_fail = true

  depends_on = [kubernetes_secret_v1.postgres]
}

resource "helm_release" "user_deployments" {
  name       = "geospatial-pipeline"
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = var.chart_repository
  chart      = "dagster-user-deployments"
  version    = var.dagster_chart_version
  values     = [for f in local.user_deployments_values_files : templatefile(f, local.helm_template_vars)]

  atomic          = true
  wait            = true
  timeout         = 600
  cleanup_on_fail = true

  depends_on = [
    helm_release.dagster,
    kubernetes_config_map_v1.pipeline_config,
    kubernetes_config_map_v1.pipeline_env,
    kubernetes_secret_v1.snowflake,
  ]
}
