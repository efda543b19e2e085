# Cluster side of one environment: namespace, the code location's ConfigMaps, the External
# Secrets objects that bring the Snowflake and PostgreSQL secrets from Secrets Manager, and
# the two Helm releases (Dagster itself, then this code location as a user deployment).
#
# No secret value passes through Terraform (so none is in its plan or state): the External
# Secrets Operator, installed on the cluster beforehand (README, Deploy), reads Secrets
# Manager with its own IRSA role and writes the Kubernetes Secrets the charts mount by name.

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
  # The key the charts (and the dev PostgreSQL subchart's existingSecret) read.
  postgres_secret_key = "postgresql-password"
  secret_store        = "aws-secrets-manager"

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
    vpc_cidr               = var.vpc_cidr
    # An annotation of the code server's pod template (helm/user-deployments): Kubernetes
    # does not restart pods when a ConfigMap they mount changes, and the code server reads
    # the pipeline YAML once, at start. A new checksum changes the template: Helm rolls the
    # pods. Hashed from the ConfigMap's own data, so it is the content the pods mount.
    pipeline_config_sha256 = sha256(kubernetes_config_map_v1.pipeline_config.data["pipeline.yaml"])
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

# The service account the SecretStore authenticates as: ESO requests a token for it and
# assumes the role it is annotated with (IRSA). No pod runs under it.
resource "kubernetes_service_account_v1" "external_secrets" {
  metadata {
    name      = var.external_secrets_service_account
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
    annotations = {
      "eks.amazonaws.com/role-arn" = var.external_secrets_role_arn
    }
  }
  automount_service_account_token = false
}

resource "kubernetes_manifest" "secret_store" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "SecretStore"
    metadata = {
      name      = local.secret_store
      namespace = kubernetes_namespace_v1.this.metadata[0].name
      labels    = local.labels
    }
    spec = {
      provider = {
        aws = {
          service = "SecretsManager"
          region  = var.aws_region
          auth = {
            jwt = {
              serviceAccountRef = {
                name = kubernetes_service_account_v1.external_secrets.metadata[0].name
              }
            }
          }
        }
      }
    }
  }
}

# The Secret geospatial-pipeline-snowflake, re-read from Secrets Manager every hour: a
# rotated value reaches it within that interval, and every new pod (each run and each step
# is one) reads the current one.
resource "kubernetes_manifest" "snowflake_secret" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.snowflake_secret
      namespace = kubernetes_namespace_v1.this.metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "SecretStore"
        name = local.secret_store
      }
      target = {
        name           = local.snowflake_secret
        creationPolicy = "Owner"
      }
      # Every JSON key of the entry becomes one key of the Secret, i.e. one environment
      # variable of the pods (envSecrets): SNOWFLAKE_PASSWORD, or SNOWFLAKE_PRIVATE_KEY and
      # SNOWFLAKE_PRIVATE_KEY_PASSWORD for key-pair authentication.
      dataFrom = [{
        extract = { key = var.snowflake_secret_arn }
      }]
    }
  }

  # The releases below mount the Secret by name: they start once it exists.
  wait {
    condition {
      type   = "Ready"
      status = "True"
    }
  }

  depends_on = [kubernetes_manifest.secret_store]
}

# The Secret dagster-postgresql-secret, refreshed the same way.
resource "kubernetes_manifest" "postgres_secret" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.postgres_secret
      namespace = kubernetes_namespace_v1.this.metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = "1h"
      secretStoreRef = {
        kind = "SecretStore"
        name = local.secret_store
      }
      target = {
        name           = local.postgres_secret
        creationPolicy = "Owner"
      }
      # The "password" of the entry (the shape of RDS-managed secrets) under the key the
      # charts read.
      data = [{
        secretKey = local.postgres_secret_key
        remoteRef = {
          key      = var.postgres_password_secret_arn
          property = "password"
        }
      }]
    }
  }

  # The releases below mount the Secret by name: they start once it exists.
  wait {
    condition {
      type   = "Ready"
      status = "True"
    }
  }

  depends_on = [kubernetes_manifest.secret_store]
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

  depends_on = [kubernetes_manifest.postgres_secret]
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
    kubernetes_manifest.snowflake_secret,
  ]
}
