//! The checks of `ecs-exec doctor` as pure functions: [`evaluate`] turns the [`Facts`] gathered
//! from AWS into one [`Check`] per line of the report, each pass, warn, fail or skip, with a fix
//! for warn and fail. No IO here, so every verdict is unit-tested.

use serde::Serialize;

/// Lowest Fargate platform version with ECS Exec.
pub const MIN_FARGATE_PLATFORM: &str = "1.4.0";
/// Lowest ECS container agent version with ECS Exec.
pub const MIN_EC2_AGENT: &str = "1.50.2";
/// What the task role needs for the agent's data channel.
pub const TASK_ROLE_ACTIONS: [&str; 4] = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    /// The lowercase word used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(id: &'static str, status: Status, message: impl Into<String>) -> Self {
        Check {
            id,
            status,
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The result of one AWS call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched<T> {
    Got(T),
    /// AccessDenied: the caller lacks this permission.
    Denied(String),
    /// Any other failure, in one line.
    Failed(String),
    /// Not asked, because something it depends on is missing.
    NotAsked,
}

/// Who the caller is (STS GetCallerIdentity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub arn: String,
    pub account: String,
}

/// The cluster's ECS Exec configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    pub kms_key_id: Option<String>,
    /// `DEFAULT`, `NONE` or `OVERRIDE`.
    pub logging: Option<String>,
    pub log_group: Option<String>,
    /// `cloudWatchEncryptionEnabled`: the agent refuses sessions unless the group has a KMS key.
    pub cloud_watch_encryption: bool,
    pub s3_bucket: Option<String>,
    /// `s3EncryptionEnabled`: the agent refuses sessions unless the bucket has default
    /// encryption.
    pub s3_encryption: bool,
    pub s3_key_prefix: Option<String>,
}

impl ClusterFacts {
    /// The CloudWatch log group sessions are logged to (only with logging OVERRIDE).
    pub fn session_log_group(&self) -> Option<&str> {
        self.overrides_logging()
            .then_some(self.log_group.as_deref())
            .flatten()
    }

    /// The S3 bucket sessions are logged to (only with logging OVERRIDE).
    pub fn session_log_bucket(&self) -> Option<&str> {
        self.overrides_logging()
            .then_some(self.s3_bucket.as_deref())
            .flatten()
    }

    fn overrides_logging(&self) -> bool {
        self.logging.as_deref() == Some("OVERRIDE")
    }
}

/// CloudWatch Logs DescribeLogGroups of the session log group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogGroupFacts {
    Missing,
    /// With `kmsKeyId` when the group is encrypted with a KMS key.
    Found {
        kms_key_id: Option<String>,
    },
}

/// S3 GetBucketEncryption of the session log bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketFacts {
    Missing,
    /// No default encryption (`ServerSideEncryptionConfigurationNotFoundError`).
    Unencrypted,
    /// The first default-encryption rule: `SSEAlgorithm` and `KMSMasterKeyID`.
    Encrypted {
        algorithm: String,
        kms_key_id: Option<String>,
    },
}

/// The default encryptions the SSM agent takes for an encrypted bucket.
pub const AGENT_BUCKET_ALGORITHMS: [&str; 2] = ["AES256", "aws:kms"];

/// KMS DescribeKey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    pub enabled: bool,
    pub state: String,
}

/// The task DescribeTasks reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFacts {
    pub task_id: String,
    pub last_status: String,
    pub launch_type: String,
    pub platform_version: Option<String>,
    pub container_instance_arn: Option<String>,
    pub enable_execute_command: bool,
    /// Container name and its ExecuteCommandAgent's `lastStatus` (None: no such agent).
    pub containers: Vec<(String, Option<String>)>,
    pub task_definition_arn: Option<String>,
}

/// DescribeTaskDefinition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDefinitionFacts {
    /// Containers without `linuxParameters.initProcessEnabled`.
    pub without_init_process: Vec<String>,
    /// Containers with `readonlyRootFilesystem`.
    pub readonly_root: Vec<String>,
    pub pid_mode: Option<String>,
    pub task_role_arn: Option<String>,
}

/// IAM SimulatePrincipalPolicy: each action and its decision (`allowed`, `implicitDeny`…).
pub type Decisions = Vec<(String, String)>;

/// The live probe: ExecuteCommand of a no-op command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Connected { millis: u128 },
    NotConnected { millis: u128 },
    Denied(String),
    Failed(String),
    NotAsked,
}

/// Everything doctor learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub region: String,
    pub cluster_name: String,
    /// The container asked for with `--container`.
    pub container: Option<String>,
    /// Where the credentials came from (aws-config's provider name), when known.
    pub credentials_source: Option<String>,
    pub identity: Fetched<Identity>,
    pub cluster: Fetched<ClusterFacts>,
    pub key: Fetched<KeyFacts>,
    pub log_group: Fetched<LogGroupFacts>,
    pub log_bucket: Fetched<BucketFacts>,
    pub task: Fetched<TaskFacts>,
    pub agent_version: Fetched<String>,
    pub task_definition: Fetched<TaskDefinitionFacts>,
    pub caller_iam: Fetched<Decisions>,
    pub task_role_iam: Fetched<Decisions>,
    pub probe: Probe,
}

fn skipped<T>(id: &'static str, what: &str, fetched: &Fetched<T>) -> Option<Check> {
    match fetched {
        Fetched::Got(_) => None,
        Fetched::Denied(permission) => Some(Check::new(
            id,
            Status::Skip,
            format!("{what}: not checked, the caller lacks {permission}"),
        )),
        Fetched::Failed(reason) => Some(
            Check::new(id, Status::Fail, format!("{what}: {reason}"))
                .fix("see the failure above; the other checks say more"),
        ),
        Fetched::NotAsked => Some(Check::new(
            id,
            Status::Skip,
            format!("{what}: not checked, it depends on a check that did not pass"),
        )),
    }
}

/// Every check, in report order.
pub fn evaluate(facts: &Facts) -> Vec<Check> {
    let mut checks = vec![
        credentials(facts),
        cluster(facts),
        kms_key(facts),
        log_group(facts),
        log_bucket(facts),
        task_running(facts),
        platform(facts),
        exec_enabled(facts),
        exec_agent(facts),
    ];
    checks.extend(task_definition(facts));
    checks.push(caller_iam(facts));
    checks.push(task_role_iam(facts));
    checks.push(probe(facts));
    checks
}

fn credentials(facts: &Facts) -> Check {
    let id = "credentials";
    let source = facts
        .credentials_source
        .as_deref()
        .map(|s| format!(", from {s}"))
        .unwrap_or_default();
    match &facts.identity {
        Fetched::Got(identity) => Check::new(
            id,
            Status::Pass,
            format!(
                "{} (account {}){source}, region {}",
                identity.arn, identity.account, facts.region
            ),
        ),
        Fetched::Failed(reason) => Check::new(
            id,
            Status::Fail,
            format!("sts:GetCallerIdentity failed: {reason}"),
        )
        .fix("set valid AWS credentials (AWS_PROFILE, `aws sso login`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and a region"),
        other => skipped(id, "caller identity", other).unwrap_or_else(|| unreachable_check(id)),
    }
}

/// A check for a state the callers rule out; kept total so no input can panic.
fn unreachable_check(id: &'static str) -> Check {
    Check::new(id, Status::Skip, "not checked")
}

fn cluster(facts: &Facts) -> Check {
    let id = "cluster";
    let Fetched::Got(cluster) = &facts.cluster else {
        return skipped(
            id,
            &format!("cluster {}", facts.cluster_name),
            &facts.cluster,
        )
        .unwrap_or_else(|| unreachable_check(id));
    };
    let logging = match cluster.logging.as_deref().unwrap_or("DEFAULT") {
        "NONE" => "session logging off".to_owned(),
        "OVERRIDE" => {
            let mut to = Vec::new();
            if let Some(group) = &cluster.log_group {
                to.push(format!("CloudWatch group {group}"));
            }
            if let Some(bucket) = &cluster.s3_bucket {
                to.push(format!("S3 bucket {bucket}"));
            }
            if to.is_empty() {
                "session logging OVERRIDE without a destination".to_owned()
            } else {
                format!("session logs to {}", to.join(" and "))
            }
        }
        _ => "session logging DEFAULT (the task's awslogs configuration)".to_owned(),
    };
    let key = match &cluster.kms_key_id {
        Some(key) => format!("KMS key {key}"),
        None => "no KMS key".to_owned(),
    };
    Check::new(
        id,
        Status::Pass,
        format!("{} found; {key}; {logging}", facts.cluster_name),
    )
}

fn kms_key(facts: &Facts) -> Check {
    let id = "kms-key";
    let key_id = match &facts.cluster {
        Fetched::Got(ClusterFacts {
            kms_key_id: Some(key),
            ..
        }) => key,
        Fetched::Got(_) => {
            return Check::new(
                id,
                Status::Pass,
                "no KMS key configured: sessions are encrypted by TLS only",
            );
        }
        _ => return Check::new(id, Status::Skip, "not checked: the cluster is unknown"),
    };
    match &facts.key {
        Fetched::Got(key) if key.enabled => {
            Check::new(id, Status::Pass, format!("{key_id} is {}", key.state))
        }
        Fetched::Got(key) => Check::new(
            id,
            Status::Fail,
            format!("{key_id} is {}: sessions on this cluster cannot start", key.state),
        )
        .fix(format!(
            "enable the key (`aws kms enable-key --key-id {key_id}`) or point the cluster's executeCommandConfiguration.kmsKeyId at an enabled key"
        )),
        Fetched::Failed(reason) => Check::new(
            id,
            Status::Fail,
            format!("{key_id}: kms:DescribeKey failed: {reason}"),
        )
        .fix("point the cluster's executeCommandConfiguration.kmsKeyId at a key that exists in this region"),
        other => skipped(id, &format!("KMS key {key_id}"), other)
            .unwrap_or_else(|| unreachable_check(id)),
    }
}

/// What the agent does with sessions when their log destination fails a demanded encryption.
const AGENT_REFUSES: &str = "the SSM agent refuses every session";

/// A destination doctor could not look at: a warning, since the agent may refuse sessions
/// because of what was not seen.
fn could_not_check(
    id: &'static str,
    what: &str,
    fetched: &Fetched<impl Sized>,
    demand: &str,
) -> Check {
    let (why, fix) = match fetched {
        Fetched::Denied(permission) => (
            format!("the caller lacks {permission}"),
            format!("allow {permission} to the caller, or make sure yourself that {what} {demand}"),
        ),
        Fetched::Failed(reason) => (
            reason.clone(),
            format!("make sure yourself that {what} {demand}"),
        ),
        Fetched::Got(_) | Fetched::NotAsked => {
            return Check::new(
                id,
                Status::Skip,
                format!("{what}: not checked, it depends on a check that did not pass"),
            );
        }
    };
    Check::new(id, Status::Warn, format!("could not check {what}: {why}")).fix(fix)
}

fn log_group(facts: &Facts) -> Check {
    let id = "log-group";
    let Fetched::Got(cluster) = &facts.cluster else {
        return Check::new(id, Status::Skip, "not checked: the cluster is unknown");
    };
    let Some(group) = cluster.session_log_group() else {
        return Check::new(
            id,
            Status::Pass,
            format!(
                "no CloudWatch log group in the cluster's ECS Exec configuration (logging {})",
                cluster.logging.as_deref().unwrap_or("DEFAULT")
            ),
        );
    };
    let what = format!("log group {group}");
    let demanded = cluster.cloud_watch_encryption;
    match &facts.log_group {
        Fetched::Got(LogGroupFacts::Found {
            kms_key_id: Some(key),
        }) => Check::new(id, Status::Pass, format!("{what} exists, encrypted with {key}")),
        Fetched::Got(LogGroupFacts::Found { kms_key_id: None }) if demanded => Check::new(
            id,
            Status::Fail,
            format!("{what} has no KMS key, but cloudWatchEncryptionEnabled is true: {AGENT_REFUSES}"),
        )
        .fix(format!(
            "associate a KMS key with the group (`aws logs associate-kms-key --log-group-name {group} --kms-key-id KEY_ARN`; the key policy must allow logs.{}.amazonaws.com) or set cloudWatchEncryptionEnabled to false",
            facts.region
        )),
        Fetched::Got(LogGroupFacts::Found { kms_key_id: None }) => Check::new(
            id,
            Status::Pass,
            format!("{what} exists (no KMS key, and cloudWatchEncryptionEnabled is false)"),
        ),
        Fetched::Got(LogGroupFacts::Missing) if demanded => Check::new(
            id,
            Status::Fail,
            format!("{what} does not exist, and cloudWatchEncryptionEnabled is true: {AGENT_REFUSES}"),
        )
        .fix(format!(
            "create it with a KMS key (`aws logs create-log-group --log-group-name {group} --kms-key-id KEY_ARN`) or point logConfiguration.cloudWatchLogGroupName at an encrypted group"
        )),
        Fetched::Got(LogGroupFacts::Missing) => Check::new(
            id,
            Status::Warn,
            format!("{what} does not exist: sessions run, but their output is not logged"),
        )
        .fix(format!(
            "create it (`aws logs create-log-group --log-group-name {group}`) or point logConfiguration.cloudWatchLogGroupName at an existing group"
        )),
        other => could_not_check(
            id,
            &what,
            other,
            if demanded {
                "exists and has a KMS key (the SSM agent refuses sessions otherwise)"
            } else {
                "exists"
            },
        ),
    }
}

fn log_bucket(facts: &Facts) -> Check {
    let id = "log-bucket";
    let Fetched::Got(cluster) = &facts.cluster else {
        return Check::new(id, Status::Skip, "not checked: the cluster is unknown");
    };
    let Some(bucket) = cluster.session_log_bucket() else {
        return Check::new(
            id,
            Status::Pass,
            format!(
                "no S3 bucket in the cluster's ECS Exec configuration (logging {})",
                cluster.logging.as_deref().unwrap_or("DEFAULT")
            ),
        );
    };
    let what = format!("bucket {bucket}");
    let demanded = cluster.s3_encryption;
    let turn_on = format!(
        "turn default encryption on (`aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"AES256\"}}}}]}}'`) or set s3EncryptionEnabled to false"
    );
    match &facts.log_bucket {
        Fetched::Got(BucketFacts::Encrypted {
            algorithm,
            kms_key_id,
        }) if AGENT_BUCKET_ALGORITHMS.contains(&algorithm.as_str()) || !demanded => {
            let key = kms_key_id
                .as_ref()
                .map(|key| format!(" with {key}"))
                .unwrap_or_default();
            Check::new(
                id,
                Status::Pass,
                format!("{what} exists, default encryption {algorithm}{key}"),
            )
        }
        Fetched::Got(BucketFacts::Encrypted { algorithm, .. }) => Check::new(
            id,
            Status::Fail,
            format!(
                "{what} is encrypted with {algorithm}, which the SSM agent does not count (only {}), and s3EncryptionEnabled is true: {AGENT_REFUSES}",
                AGENT_BUCKET_ALGORITHMS.join(" or ")
            ),
        )
        .fix(turn_on),
        Fetched::Got(BucketFacts::Unencrypted) if demanded => Check::new(
            id,
            Status::Fail,
            format!("{what} has no default encryption, but s3EncryptionEnabled is true: {AGENT_REFUSES}"),
        )
        .fix(turn_on),
        Fetched::Got(BucketFacts::Unencrypted) => Check::new(
            id,
            Status::Pass,
            format!("{what} exists (no default encryption, and s3EncryptionEnabled is false)"),
        ),
        Fetched::Got(BucketFacts::Missing) if demanded => Check::new(
            id,
            Status::Fail,
            format!("{what} does not exist, and s3EncryptionEnabled is true: {AGENT_REFUSES}"),
        )
        .fix("create the bucket with default encryption (`aws s3 mb`, then `aws s3api put-bucket-encryption`) or point logConfiguration.s3BucketName at an encrypted bucket"),
        Fetched::Got(BucketFacts::Missing) => Check::new(
            id,
            Status::Warn,
            format!("{what} does not exist: sessions run, but their output is not uploaded"),
        )
        .fix(format!(
            "create it (`aws s3 mb s3://{bucket}`) or point logConfiguration.s3BucketName at an existing bucket"
        )),
        other => could_not_check(
            id,
            &what,
            other,
            if demanded {
                "exists and has default encryption (the SSM agent refuses sessions otherwise)"
            } else {
                "exists"
            },
        ),
    }
}

fn task_running(facts: &Facts) -> Check {
    let id = "task";
    match &facts.task {
        Fetched::Got(task) if task.last_status == "RUNNING" => {
            Check::new(id, Status::Pass, format!("{} is RUNNING", task.task_id))
        }
        Fetched::Got(task) => Check::new(
            id,
            Status::Fail,
            format!("{} is {}, not RUNNING", task.task_id, task.last_status),
        )
        .fix("pick a RUNNING task (--task) or wait until it runs"),
        Fetched::Failed(reason) => Check::new(id, Status::Fail, reason.clone())
            .fix("check --cluster, --service-name and --task; the service needs a RUNNING task"),
        other => skipped(id, "task", other).unwrap_or_else(|| unreachable_check(id)),
    }
}

/// Compares dotted version numbers; None when either is not one.
pub fn version_at_least(version: &str, minimum: &str) -> Option<bool> {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.trim_start_matches('v')
            .split('.')
            .map(|part| part.parse().ok())
            .collect()
    };
    Some(parse(version)? >= parse(minimum)?)
}

fn platform(facts: &Facts) -> Check {
    let id = "platform";
    let Fetched::Got(task) = &facts.task else {
        return Check::new(id, Status::Skip, "not checked: no task");
    };
    if task.launch_type == "FARGATE" {
        let version = task.platform_version.as_deref().unwrap_or("LATEST");
        return match version_at_least(version, MIN_FARGATE_PLATFORM) {
            Some(true) => Check::new(id, Status::Pass, format!("Fargate platform {version}")),
            None if version == "LATEST" => {
                Check::new(id, Status::Pass, "Fargate platform LATEST")
            }
            _ => Check::new(
                id,
                Status::Fail,
                format!("Fargate platform {version} is older than {MIN_FARGATE_PLATFORM}, which ECS Exec needs"),
            )
            .fix("update the service with --platform-version LATEST (or 1.4.0) and a new deployment"),
        };
    }
    match &facts.agent_version {
        Fetched::Got(version) => match version_at_least(version, MIN_EC2_AGENT) {
            Some(true) => Check::new(
                id,
                Status::Pass,
                format!("{} launch type, ECS agent {version}", task.launch_type),
            ),
            _ => Check::new(
                id,
                Status::Fail,
                format!("ECS agent {version} is older than {MIN_EC2_AGENT}, which ECS Exec needs"),
            )
            .fix("update the container instance's ECS agent (`aws ecs update-container-agent`) or use a current ECS-optimised AMI"),
        },
        other => skipped(id, "container instance agent version", other)
            .unwrap_or_else(|| unreachable_check(id)),
    }
}

fn exec_enabled(facts: &Facts) -> Check {
    let id = "exec-enabled";
    match &facts.task {
        Fetched::Got(task) if task.enable_execute_command => {
            Check::new(id, Status::Pass, "enableExecuteCommand is true")
        }
        Fetched::Got(_) => Check::new(
            id,
            Status::Fail,
            "the task was started without enableExecuteCommand",
        )
        .fix("`aws ecs update-service --enable-execute-command --force-new-deployment` (or run-task --enable-execute-command), then use a new task"),
        _ => Check::new(id, Status::Skip, "not checked: no task"),
    }
}

fn exec_agent(facts: &Facts) -> Check {
    let id = "exec-agent";
    let Fetched::Got(task) = &facts.task else {
        return Check::new(id, Status::Skip, "not checked: no task");
    };
    let status_of = |agent: &Option<String>| agent.clone().unwrap_or_else(|| "absent".to_owned());
    let listing = task
        .containers
        .iter()
        .map(|(name, agent)| format!("{name}={}", status_of(agent)))
        .collect::<Vec<_>>()
        .join(", ");
    let running = |agent: &Option<String>| agent.as_deref() == Some("RUNNING");
    let fix = "the agent did not start or stopped: give the task role the ssmmessages permissions, let the task reach ssmmessages.REGION.amazonaws.com (NAT gateway or VPC endpoint), then start a new task";
    if let Some(wanted) = &facts.container {
        return match task.containers.iter().find(|(name, _)| name == wanted) {
            Some((_, agent)) if running(agent) => Check::new(
                id,
                Status::Pass,
                format!("ExecuteCommandAgent RUNNING in {wanted} ({listing})"),
            ),
            Some((_, agent)) => Check::new(
                id,
                Status::Fail,
                format!(
                    "ExecuteCommandAgent of {wanted} is {} ({listing})",
                    status_of(agent)
                ),
            )
            .fix(fix),
            None => Check::new(
                id,
                Status::Fail,
                format!("the task has no container {wanted} ({listing})"),
            )
            .fix("name one of the task's containers with --container"),
        };
    }
    let up = task.containers.iter().filter(|(_, a)| running(a)).count();
    if up == task.containers.len() && up > 0 {
        Check::new(
            id,
            Status::Pass,
            format!("ExecuteCommandAgent RUNNING: {listing}"),
        )
    } else if up > 0 {
        Check::new(
            id,
            Status::Warn,
            format!("ExecuteCommandAgent not running everywhere: {listing}"),
        )
        .fix(format!(
            "use --container with a container whose agent runs, or: {fix}"
        ))
    } else {
        Check::new(
            id,
            Status::Fail,
            format!("no ExecuteCommandAgent running: {listing}"),
        )
        .fix(fix)
    }
}

fn task_definition(facts: &Facts) -> Vec<Check> {
    let ids = ["init-process", "readonly-root", "pid-mode"];
    let definition = match &facts.task_definition {
        Fetched::Got(definition) => definition,
        other => {
            return ids
                .into_iter()
                .map(|id| {
                    skipped(id, "task definition", other).unwrap_or_else(|| unreachable_check(id))
                })
                .collect();
        }
    };
    let init = if definition.without_init_process.is_empty() {
        Check::new(
            ids[0],
            Status::Pass,
            "initProcessEnabled in every container",
        )
    } else {
        Check::new(
            ids[0],
            Status::Warn,
            format!(
                "initProcessEnabled is not set in {}: sessions can leave zombie processes",
                definition.without_init_process.join(", ")
            ),
        )
        .fix("set linuxParameters.initProcessEnabled to true in the container definitions")
    };
    let readonly = if definition.readonly_root.is_empty() {
        Check::new(ids[1], Status::Pass, "no read-only root filesystem")
    } else {
        Check::new(
            ids[1],
            Status::Warn,
            format!(
                "readonlyRootFilesystem in {}: the agent cannot write its files there",
                definition.readonly_root.join(", ")
            ),
        )
        .fix("set readonlyRootFilesystem to false, or mount writable volumes at /var/lib/amazon and /var/log/amazon")
    };
    let pid = match definition.pid_mode.as_deref() {
        None => Check::new(ids[2], Status::Pass, "pidMode not set"),
        Some(mode) => Check::new(
            ids[2],
            Status::Warn,
            format!("pidMode is {mode}: the containers share a process namespace, and ECS Exec may reach the processes of the other containers (or of the host) too"),
        )
        .fix("remove pidMode from the task definition unless the containers need it"),
    };
    vec![init, readonly, pid]
}

fn denied_actions(decisions: &Decisions) -> Vec<&str> {
    decisions
        .iter()
        .filter(|(_, decision)| decision != "allowed")
        .map(|(action, _)| action.as_str())
        .collect()
}

/// Pass when `who` may do every simulated action, else fail naming the denied ones, with the
/// fix "allow … `where_to_allow`".
fn iam_verdict(id: &'static str, who: &str, decisions: &Decisions, where_to_allow: &str) -> Check {
    match denied_actions(decisions).as_slice() {
        [] => {
            let allowed: Vec<&str> = decisions
                .iter()
                .map(|(action, _)| action.as_str())
                .collect();
            Check::new(
                id,
                Status::Pass,
                format!("{who} may {}", allowed.join(", ")),
            )
        }
        denied => Check::new(
            id,
            Status::Fail,
            format!("{who} is not allowed {}", denied.join(", ")),
        )
        .fix(format!("allow {} {where_to_allow}", denied.join(", "))),
    }
}

fn caller_iam(facts: &Facts) -> Check {
    let id = "caller-iam";
    match &facts.caller_iam {
        Fetched::Got(decisions) => iam_verdict(
            id,
            "the caller",
            decisions,
            "on the task (and on the cluster's KMS key) in the caller's IAM policy",
        ),
        other => skipped(id, "caller's IAM policy", other).unwrap_or_else(|| unreachable_check(id)),
    }
}

fn task_role_iam(facts: &Facts) -> Check {
    let id = "task-role";
    if let Fetched::Got(TaskDefinitionFacts {
        task_role_arn: None,
        ..
    }) = &facts.task_definition
    {
        return Check::new(id, Status::Fail, "the task definition has no task role").fix(format!(
            "add a taskRoleArn whose policy allows {}",
            TASK_ROLE_ACTIONS.join(", ")
        ));
    }
    match &facts.task_role_iam {
        Fetched::Got(decisions) => {
            iam_verdict(id, "the task role", decisions, "in the task role's policy")
        }
        other => {
            skipped(id, "task role's IAM policy", other).unwrap_or_else(|| unreachable_check(id))
        }
    }
}

fn probe(facts: &Facts) -> Check {
    let id = "probe";
    match &facts.probe {
        Probe::Connected { millis } => Check::new(
            id,
            Status::Pass,
            format!("ExecuteCommand answered with a session in {millis} ms"),
        ),
        Probe::NotConnected { millis } => Check::new(
            id,
            Status::Fail,
            format!(
                "ExecuteCommand: TargetNotConnectedException after {millis} ms; likely: {}",
                not_connected_causes(facts).join("; ")
            ),
        )
        .fix("fix the causes above, then start a new task (the agent only starts with the task)"),
        Probe::Denied(permission) => Check::new(
            id,
            Status::Fail,
            format!("ExecuteCommand was refused: the caller lacks {permission}"),
        )
        .fix(format!("allow {permission} in the caller's IAM policy")),
        Probe::Failed(reason) => {
            Check::new(id, Status::Fail, format!("ExecuteCommand failed: {reason}"))
                .fix("see the other checks")
        }
        Probe::NotAsked => Check::new(id, Status::Skip, "not run: no RUNNING task"),
    }
}

/// What the facts say about why the agent is not connected, most likely first.
pub fn not_connected_causes(facts: &Facts) -> Vec<String> {
    let mut causes = Vec::new();
    if let Fetched::Got(task) = &facts.task {
        if !task.enable_execute_command {
            causes.push("the task was started without enableExecuteCommand".to_owned());
        }
        let stopped: Vec<&str> = task
            .containers
            .iter()
            .filter(|(_, agent)| agent.as_deref() != Some("RUNNING"))
            .map(|(name, _)| name.as_str())
            .collect();
        if !stopped.is_empty() {
            causes.push(format!(
                "the ExecuteCommandAgent is not running in {}",
                stopped.join(", ")
            ));
        }
    }
    if let Fetched::Got(decisions) = &facts.task_role_iam {
        let denied = denied_actions(decisions);
        if !denied.is_empty() {
            causes.push(format!("the task role lacks {}", denied.join(", ")));
        }
    }
    if let Fetched::Got(TaskDefinitionFacts {
        task_role_arn: None,
        ..
    }) = &facts.task_definition
    {
        causes.push("the task has no task role".to_owned());
    }
    causes.push(format!(
        "the task cannot reach ssmmessages.{}.amazonaws.com (no NAT gateway, no VPC endpoint, or a proxy)",
        facts.region
    ));
    causes.push(
        "the task started less than a minute ago and the agent is still registering".to_owned(),
    );
    causes
}

/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` → `arn:aws:iam::ACCOUNT:role/ROLE`, the
/// principal IAM can simulate; any other ARN is returned as is.
pub fn simulation_principal(caller_arn: &str) -> String {
    let Some(rest) = caller_arn.strip_prefix("arn:") else {
        return caller_arn.to_owned();
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    if let [partition, "sts", "", account, resource] = parts.as_slice()
        && let Some(role_session) = resource.strip_prefix("assumed-role/")
        && let Some((role, _session)) = role_session.split_once('/')
    {
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    caller_arn.to_owned()
}

/// Exit status of the process: 0 when nothing failed, [`FAILED_EXIT`] when a check failed.
pub fn exit_status(checks: &[Check]) -> u8 {
    if checks.iter().any(|c| c.status == Status::Fail) {
        FAILED_EXIT
    } else {
        0
    }
}

/// Exit status when at least one check failed.
pub const FAILED_EXIT: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            region: "us-east-1".into(),
            cluster_name: "demo".into(),
            container: None,
            credentials_source: Some("Environment".into()),
            identity: Fetched::Got(Identity {
                arn: "arn:aws:iam::1:user/u".into(),
                account: "1".into(),
            }),
            cluster: Fetched::Got(ClusterFacts {
                kms_key_id: Some("k".into()),
                logging: Some("DEFAULT".into()),
                ..ClusterFacts::default()
            }),
            key: Fetched::Got(KeyFacts {
                enabled: true,
                state: "Enabled".into(),
            }),
            log_group: Fetched::NotAsked,
            log_bucket: Fetched::NotAsked,
            task: Fetched::Got(TaskFacts {
                task_id: "t".into(),
                last_status: "RUNNING".into(),
                launch_type: "FARGATE".into(),
                platform_version: Some("1.4.0".into()),
                enable_execute_command: true,
                containers: vec![("app".into(), Some("RUNNING".into()))],
                ..TaskFacts::default()
            }),
            agent_version: Fetched::NotAsked,
            task_definition: Fetched::Got(TaskDefinitionFacts {
                task_role_arn: Some("arn:aws:iam::1:role/r".into()),
                ..TaskDefinitionFacts::default()
            }),
            caller_iam: Fetched::Got(vec![("ecs:ExecuteCommand".into(), "allowed".into())]),
            task_role_iam: Fetched::Got(
                TASK_ROLE_ACTIONS
                    .iter()
                    .map(|a| (a.to_string(), "allowed".to_string()))
                    .collect(),
            ),
            probe: Probe::Connected { millis: 3 },
        }
    }

    fn status(facts: &Facts, id: &str) -> (Status, String) {
        let check = evaluate(facts).into_iter().find(|c| c.id == id).unwrap();
        assert_eq!(
            check.fix.is_some(),
            matches!(check.status, Status::Warn | Status::Fail),
            "{check:?}"
        );
        (check.status, check.message)
    }

    #[test]
    fn a_healthy_setup_passes_everything() {
        let checks = evaluate(&healthy());
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:#?}"
        );
        assert_eq!(exit_status(&checks), 0);
        assert_eq!(checks.len(), 15);
    }

    fn task_mut(facts: &mut Facts) -> &mut TaskFacts {
        match &mut facts.task {
            Fetched::Got(task) => task,
            _ => unreachable!("healthy() has a task"),
        }
    }

    #[test]
    fn each_fact_fails_its_own_check() {
        let mut f = healthy();
        f.key = Fetched::Got(KeyFacts {
            enabled: false,
            state: "Disabled".into(),
        });
        assert_eq!(status(&f, "kms-key").0, Status::Fail);
        let mut f = healthy();
        task_mut(&mut f).platform_version = Some("1.3.0".into());
        assert_eq!(status(&f, "platform").0, Status::Fail);
        task_mut(&mut f).launch_type = "EC2".into();
        f.agent_version = Fetched::Got("1.50.1".into());
        assert_eq!(status(&f, "platform").0, Status::Fail);
        f.agent_version = Fetched::Got("1.50.10".into());
        assert_eq!(status(&f, "platform").0, Status::Pass);
        f.agent_version = Fetched::Denied("ecs:DescribeContainerInstances".into());
        assert_eq!(status(&f, "platform").0, Status::Skip);
        let mut f = healthy();
        task_mut(&mut f).enable_execute_command = false;
        task_mut(&mut f)
            .containers
            .push(("side".into(), Some("STOPPED".into())));
        assert_eq!(status(&f, "exec-enabled").0, Status::Fail);
        assert_eq!(status(&f, "exec-agent").0, Status::Warn);
        f.container = Some("side".into());
        assert_eq!(status(&f, "exec-agent").0, Status::Fail);
        f.container = Some("app".into());
        assert_eq!(status(&f, "exec-agent").0, Status::Pass);
        let mut f = healthy();
        f.task_definition = Fetched::Got(TaskDefinitionFacts {
            without_init_process: vec!["app".into()],
            readonly_root: vec!["app".into()],
            pid_mode: Some("host".into()),
            task_role_arn: None,
        });
        for id in ["init-process", "readonly-root", "pid-mode"] {
            assert_eq!(status(&f, id).0, Status::Warn, "{id}");
        }
        assert_eq!(status(&f, "task-role").0, Status::Fail);
        assert_eq!(exit_status(&evaluate(&f)), FAILED_EXIT);
        let mut f = healthy();
        f.caller_iam = Fetched::Denied("iam:SimulatePrincipalPolicy".into());
        let (s, message) = status(&f, "caller-iam");
        assert_eq!(s, Status::Skip);
        assert!(message.contains("iam:SimulatePrincipalPolicy"));
        f.task_role_iam = Fetched::Got(vec![("kms:Decrypt".into(), "implicitDeny".into())]);
        let (s, message) = status(&f, "task-role");
        assert_eq!(
            (s, message.as_str()),
            (Status::Fail, "the task role is not allowed kms:Decrypt")
        );
    }

    /// `healthy()` logging to `s3://logs/exec/` and the group `/ecs/exec`, each demanding
    /// encryption as asked.
    fn logging_to_both(group_encryption: bool, bucket_encryption: bool) -> Facts {
        let mut f = healthy();
        f.cluster = Fetched::Got(ClusterFacts {
            logging: Some("OVERRIDE".into()),
            log_group: Some("/ecs/exec".into()),
            cloud_watch_encryption: group_encryption,
            s3_bucket: Some("logs".into()),
            s3_encryption: bucket_encryption,
            s3_key_prefix: Some("exec/".into()),
            ..ClusterFacts::default()
        });
        f
    }

    #[test]
    fn the_log_group_must_exist_and_be_encrypted_when_demanded() {
        let mut f = logging_to_both(true, false);
        f.log_group = Fetched::Got(LogGroupFacts::Found {
            kms_key_id: Some("arn:aws:kms:us-east-1:1:key/k".into()),
        });
        assert_eq!(
            status(&f, "log-group"),
            (
                Status::Pass,
                "log group /ecs/exec exists, encrypted with arn:aws:kms:us-east-1:1:key/k".into()
            )
        );
        f.log_group = Fetched::Got(LogGroupFacts::Found { kms_key_id: None });
        assert_eq!(
            status(&f, "log-group"),
            (
                Status::Fail,
                "log group /ecs/exec has no KMS key, but cloudWatchEncryptionEnabled is true: the SSM agent refuses every session".into()
            )
        );
        f.log_group = Fetched::Got(LogGroupFacts::Missing);
        assert_eq!(status(&f, "log-group").0, Status::Fail);
        assert_eq!(exit_status(&evaluate(&f)), FAILED_EXIT);

        let mut f = logging_to_both(false, false);
        f.log_group = Fetched::Got(LogGroupFacts::Found { kms_key_id: None });
        assert_eq!(status(&f, "log-group").0, Status::Pass);
        f.log_group = Fetched::Got(LogGroupFacts::Missing);
        assert_eq!(
            status(&f, "log-group"),
            (
                Status::Warn,
                "log group /ecs/exec does not exist: sessions run, but their output is not logged"
                    .into()
            )
        );
    }

    #[test]
    fn the_log_bucket_must_exist_and_be_encrypted_when_demanded() {
        let mut f = logging_to_both(false, true);
        f.log_bucket = Fetched::Got(BucketFacts::Encrypted {
            algorithm: "AES256".into(),
            kms_key_id: None,
        });
        assert_eq!(
            status(&f, "log-bucket"),
            (
                Status::Pass,
                "bucket logs exists, default encryption AES256".into()
            )
        );
        f.log_bucket = Fetched::Got(BucketFacts::Encrypted {
            algorithm: "aws:kms:dsse".into(),
            kms_key_id: None,
        });
        assert_eq!(status(&f, "log-bucket").0, Status::Fail);
        f.log_bucket = Fetched::Got(BucketFacts::Unencrypted);
        assert_eq!(
            status(&f, "log-bucket"),
            (
                Status::Fail,
                "bucket logs has no default encryption, but s3EncryptionEnabled is true: the SSM agent refuses every session".into()
            )
        );
        f.log_bucket = Fetched::Got(BucketFacts::Missing);
        assert_eq!(status(&f, "log-bucket").0, Status::Fail);

        let mut f = logging_to_both(false, false);
        f.log_bucket = Fetched::Got(BucketFacts::Unencrypted);
        assert_eq!(status(&f, "log-bucket").0, Status::Pass);
        f.log_bucket = Fetched::Got(BucketFacts::Missing);
        assert_eq!(status(&f, "log-bucket").0, Status::Warn);
        assert_eq!(exit_status(&evaluate(&f)), 0);
    }

    #[test]
    fn an_unreadable_destination_is_a_warning_naming_the_permission() {
        let mut f = logging_to_both(true, true);
        f.log_group = Fetched::Denied("logs:DescribeLogGroups".into());
        f.log_bucket = Fetched::Failed("no answer within 10s".into());
        assert_eq!(
            status(&f, "log-group"),
            (
                Status::Warn,
                "could not check log group /ecs/exec: the caller lacks logs:DescribeLogGroups"
                    .into()
            )
        );
        assert_eq!(
            status(&f, "log-bucket"),
            (
                Status::Warn,
                "could not check bucket logs: no answer within 10s".into()
            )
        );
        assert_eq!(exit_status(&evaluate(&f)), 0);
    }

    #[test]
    fn destinations_are_only_checked_with_override_logging() {
        let mut f = logging_to_both(true, true);
        if let Fetched::Got(cluster) = &mut f.cluster {
            cluster.logging = Some("DEFAULT".into());
        }
        assert_eq!(
            status(&f, "log-group"),
            (
                Status::Pass,
                "no CloudWatch log group in the cluster's ECS Exec configuration (logging DEFAULT)"
                    .into()
            )
        );
        assert_eq!(status(&f, "log-bucket").0, Status::Pass);
        f.cluster = Fetched::Failed("cluster demo not found in this region".into());
        assert_eq!(status(&f, "log-group").0, Status::Skip);
    }

    #[test]
    fn without_a_task_the_task_checks_skip() {
        let mut f = healthy();
        f.task = Fetched::Failed("service web has no RUNNING task".into());
        f.task_definition = Fetched::NotAsked;
        f.caller_iam = Fetched::NotAsked;
        f.task_role_iam = Fetched::NotAsked;
        f.probe = Probe::NotAsked;
        let checks = evaluate(&f);
        assert_eq!(status(&f, "task").0, Status::Fail);
        for id in ["platform", "exec-agent", "init-process", "probe"] {
            assert_eq!(status(&f, id).0, Status::Skip, "{id}");
        }
        assert_eq!(exit_status(&checks), FAILED_EXIT);
    }

    #[test]
    fn not_connected_names_the_likely_causes() {
        let mut f = healthy();
        let Fetched::Got(task) = &mut f.task else {
            unreachable!()
        };
        task.containers[0].1 = Some("STOPPED".into());
        f.probe = Probe::NotConnected { millis: 5 };
        let (s, message) = status(&f, "probe");
        assert_eq!(s, Status::Fail);
        assert!(message.contains("TargetNotConnectedException"));
        assert!(message.contains("the ExecuteCommandAgent is not running in app"));
        assert!(message.contains("ssmmessages.us-east-1.amazonaws.com"));
        assert_eq!(exit_status(&evaluate(&f)), FAILED_EXIT);
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_at_least("1.10.0", "1.4.0"), Some(true));
        assert_eq!(version_at_least("1.3.0", "1.4.0"), Some(false));
        assert_eq!(version_at_least("LATEST", "1.4.0"), None);
    }

    #[test]
    fn assumed_roles_simulate_as_their_role() {
        assert_eq!(
            simulation_principal("arn:aws:sts::123:assumed-role/Admin/me@example.com"),
            "arn:aws:iam::123:role/Admin"
        );
        assert_eq!(
            simulation_principal("arn:aws:iam::1:user/u"),
            "arn:aws:iam::1:user/u"
        );
        assert_eq!(simulation_principal("garbage"), "garbage");
    }
}
