# AWS side of one environment: a KMS key, the S3 buckets, ECR, the IRSA roles and the
# Snowflake secret's entry (never its value). The EKS cluster and its OIDC provider already
# exist: looked up here.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

# The cluster's VPC: the pods' egress policy lets PostgreSQL traffic reach it (RDS in prod).
data "aws_vpc" "cluster" {
  id = data.aws_eks_cluster.this.vpc_config[0].vpc_id
}

locals {
  prefix     = "${var.name}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  tags       = merge(var.tags, { Application = var.name, Environment = var.environment })

  # Two buckets: the pipeline's data (one storage root, as the pipeline lays it out:
  # <data_prefix>/raw/, processed/, late_data/, stac/, manifests/, aois/ (the AOI registry),
  # requests/) and Dagster's compute logs. Both KMS-encrypted, versioned, TLS-only,
  # private, access-logged. Lifecycle rules per prefix, in days (null = never):
  # `transition_ia` moves objects to Standard-IA, `expire` deletes them (never the
  # registry, the requests or the late-data records). `_tmp/` held half-written uploads
  # of releases that published by copy (now one checksummed PutObject); the rule clears
  # what a crash left there.
  buckets = {
    data = {
      raw       = { prefix = "${var.data_prefix}/raw/", transition_ia = var.lifecycle_days.raw_to_ia, expire = null }
      processed = { prefix = "${var.data_prefix}/processed/", transition_ia = var.lifecycle_days.processed_to_ia, expire = null }
      tmp       = { prefix = "${var.data_prefix}/_tmp/", transition_ia = null, expire = 1 }
    }
    logs = {
      compute-logs = { prefix = "${var.compute_logs_prefix}/", transition_ia = null, expire = var.lifecycle_days.compute_logs_expire }
    }
  }
  bucket_names = { for key, _ in local.buckets : key => "${var.bucket_name_prefix}-${var.environment}-${key}" }

  irsa_issuer = replace(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

# --------------------------------------------------------------------------------- KMS

data "aws_iam_policy_document" "kms" {
  # The account administers the key and IAM policies grant its use (the roles below);
  # without this statement the key would be unmanageable.
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; access is delegated to IAM policies of this account.
  #checkov:skip=CKV_AWS_111:Same: a key policy cannot name its own ARN; write access is limited to principals of this account.
  #checkov:skip=CKV_AWS_356:Same: "*" in a key policy is the key itself.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${local.prefix}: S3 objects, ECR images and the Snowflake secret"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.this.key_id
}

# ---------------------------------------------------------------------- S3: access logs

# Server access logs of the buckets below. S3 log delivery only writes to SSE-S3
# encrypted targets, hence AES256 here and KMS everywhere else.
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_145:S3 server access log delivery does not support SSE-KMS target buckets; SSE-S3 (AES256) is enforced.
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are audit aids kept in-region; cross-region replication is not required for them.
  #checkov:skip=CKV2_AWS_62:No consumer listens to access-log object events.
  bucket = "${var.bucket_name_prefix}-${var.environment}-access-logs"
  tags   = local.tags
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.lifecycle_days.access_logs_expire
    }
    noncurrent_version_expiration {
      noncurrent_days = var.lifecycle_days.noncurrent_expire
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.lifecycle_days.abort_incomplete_uploads
    }
  }
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  statement {
    sid       = "S3ServerAccessLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json
  # The policy is refused while the public access block is being created.
  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# ----------------------------------------------------------------- S3: data and logs

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Data objects are re-derivable from the public STAC source by re-running their partition and compute logs are diagnostics; versioning + KMS cover accidental loss, so a second-region copy is not worth its cost.
  #checkov:skip=CKV2_AWS_62:Nothing consumes S3 event notifications: Dagster records every write as materialization metadata.
  for_each = local.buckets
  bucket   = local.bucket_names[each.key]
  tags     = merge(local.tags, { Purpose = each.key })
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    # One KMS call per bucket and time window instead of one per object.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = local.buckets
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  # Every object: re-materializing a partition overwrites objects, old versions are kept
  # this long; failed multipart uploads are cleaned.
  rule {
    id     = "all-objects"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.lifecycle_days.noncurrent_expire
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.lifecycle_days.abort_incomplete_uploads
    }
  }

  dynamic "rule" {
    for_each = each.value
    content {
      id     = rule.key
      status = "Enabled"
      filter {
        prefix = rule.value.prefix
      }
      dynamic "transition" {
        for_each = rule.value.transition_ia == null ? [] : [rule.value.transition_ia]
        content {
          days          = transition.value
          storage_class = "STANDARD_IA"
        }
      }
      dynamic "expiration" {
        for_each = rule.value.expire == null ? [] : [rule.value.expire]
        content {
          days = expiration.value
        }
      }
    }
  }

  # Lifecycle rules are validated against the versioning state.
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = aws_s3_bucket.this[each.key].id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

# -------------------------------------------------------------------------------- ECR

resource "aws_ecr_repository" "this" {
  name = var.name
  # Tags are release versions (v1.2.3) and commit SHAs: never re-pointed, so a pod restart
  # can never pull different code than the one that was deployed.
  image_tag_mutability = "IMMUTABLE"
  # Deleting the repository with images in it must be deliberate.
  force_delete = false

  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this.arn
  }
  tags = local.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Untagged layers of superseded builds"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest tagged images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}

# ------------------------------------------------------------------ IAM roles for IRSA

# Who may assume a role: exactly one service account of one namespace, through the
# cluster's OIDC provider.
data "aws_iam_policy_document" "irsa_trust" {
  for_each = {
    code_location    = var.code_location_service_account
    dagster          = var.dagster_service_account
    external_secrets = var.external_secrets_service_account
  }
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [data.aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.irsa_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.irsa_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# The code server, run pods and step pods (one service account, see the user deployment's
# Helm values): read and write the pipeline's prefix of the data bucket, write compute
# logs. Nothing else.
resource "aws_iam_role" "code_location" {
  name                 = "${local.prefix}-code-location"
  description          = "IRSA role of ${var.namespace}/${var.code_location_service_account}"
  assume_role_policy   = data.aws_iam_policy_document.irsa_trust["code_location"].json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "code_location" {
  statement {
    sid       = "ListData"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.this["data"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.data_prefix}/*"]
    }
  }
  statement {
    sid = "ReadWriteDataObjects"
    # Put + copy publish an object, Delete removes stale and temporary ones.
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.this["data"].arn}/${var.data_prefix}/*"]
  }
  statement {
    sid       = "WriteComputeLogs"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.this["logs"].arn}/${var.compute_logs_prefix}/*"]
  }
  statement {
    sid       = "ListComputeLogs"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this["logs"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.compute_logs_prefix}/*"]
    }
  }
  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "code_location" {
  name   = "s3-data-and-compute-logs"
  role   = aws_iam_role.code_location.id
  policy = data.aws_iam_policy_document.code_location.json
}

# The webserver shows compute logs: read-only on their prefix.
resource "aws_iam_role" "dagster" {
  name                 = "${local.prefix}-dagster"
  description          = "IRSA role of ${var.namespace}/${var.dagster_service_account}"
  assume_role_policy   = data.aws_iam_policy_document.irsa_trust["dagster"].json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "dagster" {
  statement {
    sid       = "ReadComputeLogs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this["logs"].arn}/${var.compute_logs_prefix}/*"]
  }
  statement {
    sid       = "ListComputeLogs"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this["logs"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.compute_logs_prefix}/*"]
    }
  }
  statement {
    sid       = "DecryptComputeLogs"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "dagster" {
  name   = "read-compute-logs"
  role   = aws_iam_role.dagster.id
  policy = data.aws_iam_policy_document.dagster.json
}

# ------------------------------------------------------------------- Secrets Manager

# The Snowflake credentials, as JSON whose keys are the environment variables the code
# location reads: {"SNOWFLAKE_PASSWORD": "..."} or, for key-pair authentication,
# {"SNOWFLAKE_PRIVATE_KEY": "<PEM>", "SNOWFLAKE_PRIVATE_KEY_PASSWORD": "..."}. Terraform
# creates the entry only: an operator puts the value (README, Deploy) and the External
# Secrets Operator copies it into the cluster, so it is in no file, plan or state.
resource "aws_secretsmanager_secret" "snowflake" {
  #checkov:skip=CKV2_AWS_57:The Snowflake credentials are rotated in Snowflake by its administrators (no rotation Lambda can change them there); the entry is updated with put-secret-value and ESO refreshes the cluster's copy.
  name                    = "${var.name}/${var.environment}/snowflake"
  description             = "Snowflake credentials of ${local.prefix} (JSON: SNOWFLAKE_PASSWORD, or SNOWFLAKE_PRIVATE_KEY [+ SNOWFLAKE_PRIVATE_KEY_PASSWORD])"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

# The External Secrets Operator reads the two secret entries of this environment with this
# role (IRSA, through the SecretStore's service account), and nothing else: Terraform
# itself never reads a secret value.
resource "aws_iam_role" "external_secrets" {
  name                 = "${local.prefix}-external-secrets"
  description          = "IRSA role of ${var.namespace}/${var.external_secrets_service_account} (External Secrets Operator)"
  assume_role_policy   = data.aws_iam_policy_document.irsa_trust["external_secrets"].json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid       = "ReadDeploymentSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.snowflake.arn, var.postgres_password_secret_arn]
  }
  statement {
    sid       = "DecryptDeploymentSecrets"
    actions   = ["kms:Decrypt"]
    resources = concat([aws_kms_key.this.arn], compact([var.postgres_password_secret_kms_key_arn]))
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "external_secrets" {
  name   = "read-deployment-secrets"
  role   = aws_iam_role.external_secrets.id
  policy = data.aws_iam_policy_document.external_secrets.json
}
