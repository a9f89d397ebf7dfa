//! The emulator's configuration: the world it pretends to be (clusters, services, tasks,
//! containers), the credentials it accepts, how its agent behaves and which faults it injects.
//!
//! Everything has a default, so `Config::default()` is the documented default world (cluster
//! `demo`, services `web` and `no-agent`). A TOML file overrides any part of it; see
//! `docs-emulator.md` for the format. This module only parses and validates: it starts nothing
//! and touches no file other than the one it is asked to load.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Access key accepted by the default world.
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIAEMULATOREXAMPLE1";
/// Secret key accepted by the default world (a public, well-known test value).
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "emulator-secret-key";
/// Region of the default world.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Account id used in every ARN of the default world.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";
/// The KMS key of the default world's `secure` cluster.
pub const DEFAULT_KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:123456789012:key/1f2e3d4c-5b6a-4789-9abc-def012345678";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// The TOML text is malformed or has unknown fields.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// The values parse but contradict each other or are out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole emulator configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port. Loopback unless told otherwise.
    pub listen: SocketAddr,
    /// The only region requests may be signed for.
    pub region: String,
    /// Account id used in ARNs.
    pub account_id: String,
    /// Credentials whose SigV4 signatures are accepted.
    pub credentials: Vec<CredentialsConfig>,
    /// How the data channel agent behaves.
    pub agent: AgentConfig,
    /// Faults injected on the data channel.
    pub faults: FaultConfig,
    /// The clusters of the world.
    pub clusters: Vec<ClusterConfig>,
    /// The KMS API and its keys.
    pub kms: KmsConfig,
    /// CloudWatch Logs log groups (what DescribeLogGroups lists); none by default.
    pub log_groups: Vec<LogGroupConfig>,
    /// S3 buckets (what GetBucketEncryption knows); none by default.
    pub s3_buckets: Vec<S3BucketConfig>,
}

/// A CloudWatch Logs log group, where ECS Exec can log sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGroupConfig {
    /// Its name, e.g. `/ecs/exec`.
    pub name: String,
    /// The KMS key ARN it is encrypted with (DescribeLogGroups `kmsKeyId`); none when absent.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// An S3 bucket, where ECS Exec can log sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3BucketConfig {
    /// Its name, e.g. `exec-logs`.
    pub name: String,
    /// Its default encryption's `SSEAlgorithm` (`AES256`, `aws:kms`, `aws:kms:dsse`); without
    /// one, GetBucketEncryption answers `ServerSideEncryptionConfigurationNotFoundError`.
    #[serde(default)]
    pub sse_algorithm: Option<String>,
    /// `KMSMasterKeyID` of that default encryption (with `aws:kms`), when set.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// The KMS API: where it listens and which keys exist besides those clusters name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// Address of the KMS API; by default a free port on the address of `listen`.
    pub listen: Option<SocketAddr>,
    /// Keys. A key a cluster names exists and is enabled unless listed here otherwise.
    pub keys: Vec<KmsKeyConfig>,
}

/// One KMS key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsKeyConfig {
    /// `arn:aws:kms:REGION:ACCOUNT:key/KEY_ID`.
    pub arn: String,
    /// A disabled key fails GenerateDataKey and Decrypt with DisabledException.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An alias (`alias/NAME`) that names the key as well.
    #[serde(default)]
    pub alias: Option<String>,
}

/// Whether the agent's own KMS Decrypt (made with the task role) succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KmsDecrypt {
    /// The task role may decrypt.
    #[default]
    Ok,
    /// The task role lacks `kms:Decrypt`: AccessDeniedException, the session ends at once.
    AccessDenied,
}

/// One accepted identity.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Access key id (`AKIA…` or `ASIA…`).
    pub access_key_id: String,
    /// Secret key; never logged.
    pub secret_access_key: String,
    /// When set, requests must carry exactly this `X-Amz-Security-Token`; never logged.
    #[serde(default)]
    pub session_token: Option<String>,
    /// ECS actions this identity is denied (`ecs:ListTasks`, `ecs:DescribeTasks`,
    /// `ecs:ExecuteCommand`, `ecs:DescribeClusters`, `kms:GenerateDataKey`, `kms:Decrypt`,
    /// `kms:DescribeKey`): they fail with AccessDeniedException. IAM SimulatePrincipalPolicy
    /// reports every action listed here (any service, e.g. `iam:SimulatePrincipalPolicy` or
    /// `sts:GetCallerIdentity` too) as denied for this identity, whose ARN is
    /// `arn:aws:iam::ACCOUNT:user/emulator` (the first credentials) or `user/emulator-N` (the
    /// N-th, counting from 1).
    #[serde(default)]
    pub deny: Vec<String>,
}

impl std::fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("deny", &self.deny)
            .finish()
    }
}

/// Data channel agent behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Run the handshake (HandshakeRequest/Response/Complete) even though the real agent skips
    /// it for InteractiveCommands sessions.
    pub handshake: bool,
    /// Behave like the real agent's timing: 1 s before the first output read, 1 KiB reads with
    /// a 1 ms sleep after each, retransmit only the oldest unacked message per 100 ms tick.
    pub realistic: bool,
    /// Largest payload of one output frame in fast mode (realistic mode always uses 1024).
    pub read_chunk_bytes: usize,
    /// Stop reading the PTY while this many output bytes are unacknowledged.
    pub max_unacked_bytes: usize,
    /// Stop taking input frames while this many input bytes wait to be written to the PTY.
    pub max_pending_input_bytes: usize,
    /// Largest number of out-of-order input frames kept for later.
    pub reorder_capacity: usize,
    /// Seconds a channel token stays valid after ExecuteCommand/ResumeSession returned it.
    pub token_ttl_secs: u64,
    /// Seconds a session waits for a reconnect (ResumeSession) after its websocket dropped
    /// before it kills the command; 0 ends the session at once, as when MGS gives up.
    pub reconnect_grace_secs: u64,
    /// Once the command has exited and its output is read, how long to wait for the client to
    /// acknowledge everything before closing anyway (the real agent gives up after 2 s,
    /// which realistic mode uses).
    pub drain_timeout_secs: u64,
    /// KMS sessions: put a `Challenge` string in the KMSEncryption action, as newer agents do.
    pub kms_challenge: bool,
    /// KMS sessions: refuse a client that does not acknowledge the challenge
    /// (`RequireKMSChallengeResponse`); needs `kms_challenge`.
    pub require_challenge_ack: bool,
    /// KMS sessions: whether the agent's Decrypt of the client's data key is allowed.
    pub kms_decrypt: KmsDecrypt,
    /// KMS sessions: how long the agent waits for a correct challenge answer before it ends the
    /// session (the real agent: 15 s).
    pub kms_challenge_timeout_ms: u64,
    /// How long the agent waits for the HandshakeResponse before it ends the session (the
    /// real agent: 15 s).
    pub handshake_timeout_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            handshake: false,
            realistic: false,
            read_chunk_bytes: 32 * 1024,
            max_unacked_bytes: 4 * 1024 * 1024,
            max_pending_input_bytes: 1024 * 1024,
            reorder_capacity: 10_000,
            token_ttl_secs: 300,
            reconnect_grace_secs: 0,
            drain_timeout_secs: 30,
            kms_challenge: true,
            require_challenge_ack: false,
            kms_decrypt: KmsDecrypt::Ok,
            kms_challenge_timeout_ms: 15_000,
            handshake_timeout_ms: 15_000,
        }
    }
}

/// Fault injection on the data channel. All randomness comes from one PRNG seeded with `seed`,
/// so the same seed and the same traffic give the same faults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Seed of the deterministic schedule.
    pub seed: u64,
    /// Faults applied to frames the agent sends (output, acks).
    pub outbound: FaultRates,
    /// Faults applied to frames the client sends (input, acks), before the agent sees them.
    pub inbound: FaultRates,
    /// Drop the websocket (no close frame) once this many binary frames have crossed it,
    /// counting both directions; applies to the first connection of each session only.
    pub disconnect_after_frames: Option<u64>,
    /// Targeted faults, for tests that need one particular frame lost or repeated.
    pub rules: Vec<FaultRule>,
}

/// Random faults in one direction. Channel-level messages (`channel_closed`) are never touched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRates {
    /// Probability in [0, 1] that a frame is dropped.
    pub drop: f64,
    /// Probability in [0, 1] that a frame is delivered twice.
    pub duplicate: f64,
    /// Frames are collected in groups of this many (or for at most 5 ms) and shuffled.
    pub reorder_window: usize,
    /// Fixed delay added to every frame, in milliseconds.
    pub delay_ms: u64,
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the agent to the client.
    Outbound,
    /// From the client to the agent.
    Inbound,
}

/// What a targeted rule does to the frames it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    /// The frame is lost.
    Drop,
    /// The frame is delivered twice.
    Duplicate,
}

/// Drop or duplicate the frames matching a direction, a message type and optionally a sequence
/// number, at most `times` times in each session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Which way the frame travels.
    pub direction: Direction,
    /// Message type, e.g. `input_stream_data`, `output_stream_data`, `acknowledge`.
    pub message_type: String,
    /// Sequence number to match; any when absent.
    #[serde(default)]
    pub sequence_number: Option<i64>,
    /// What to do.
    pub action: FaultAction,
    /// How many matching frames are affected (per session).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// A cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// Its services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// The KMS key of its ECS Exec configuration (`executeCommandConfiguration.kmsKeyId`): a
    /// key ARN or key id. Sessions on such a cluster run the KMS handshake and are encrypted.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Session logging of its ECS Exec configuration.
    #[serde(default)]
    pub exec_logging: ExecLoggingConfig,
}

/// `executeCommandConfiguration.logging` and its `logConfiguration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecLoggingConfig {
    /// `DEFAULT`, `NONE` or `OVERRIDE`.
    pub logging: String,
    /// OVERRIDE: the CloudWatch log group sessions are logged to.
    pub cloud_watch_log_group: Option<String>,
    /// OVERRIDE: `cloudWatchEncryptionEnabled`, the agent refuses sessions unless the group
    /// has a KMS key.
    pub cloud_watch_encryption_enabled: bool,
    /// OVERRIDE: the S3 bucket sessions are logged to.
    pub s3_bucket: Option<String>,
    /// OVERRIDE: `s3EncryptionEnabled`, the agent refuses sessions unless the bucket has
    /// default encryption.
    pub s3_encryption_enabled: bool,
    /// OVERRIDE: `s3KeyPrefix`, the folder of the session logs in the bucket.
    pub s3_key_prefix: Option<String>,
}

impl Default for ExecLoggingConfig {
    fn default() -> Self {
        Self {
            logging: "DEFAULT".to_string(),
            cloud_watch_log_group: None,
            cloud_watch_encryption_enabled: false,
            s3_bucket: None,
            s3_encryption_enabled: false,
            s3_key_prefix: None,
        }
    }
}

/// A service: a group of tasks running the same containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Number of RUNNING tasks (ignored when `task_ids` is given).
    #[serde(default = "one_usize")]
    pub running_tasks: usize,
    /// Number of STOPPED tasks.
    #[serde(default)]
    pub stopped_tasks: usize,
    /// Explicit ids of the RUNNING tasks (32 lowercase hex characters each).
    #[serde(default)]
    pub task_ids: Vec<String>,
    /// Whether the tasks were started with `enableExecuteCommand`.
    #[serde(default = "yes")]
    pub enable_execute_command: bool,
    /// The containers of every task of this service.
    #[serde(default = "default_containers")]
    pub containers: Vec<ContainerConfig>,
    /// How its tasks are launched and defined (what `ecs-exec doctor` inspects).
    #[serde(default)]
    pub setup: TaskSetupConfig,
}

/// Launch type, platform or agent version, task definition settings and task role of the tasks
/// of a service. The defaults are a setup on which ECS Exec works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSetupConfig {
    /// `FARGATE` or `EC2`.
    pub launch_type: String,
    /// Fargate platform version (DescribeTasks `platformVersion`); ECS Exec needs 1.4.0.
    pub platform_version: String,
    /// EC2: the ECS agent version of the container instance (DescribeContainerInstances
    /// `versionInfo.agentVersion`); ECS Exec needs 1.50.2.
    pub agent_version: String,
    /// `linuxParameters.initProcessEnabled` of every container definition.
    pub init_process_enabled: bool,
    /// `readonlyRootFilesystem` of every container definition.
    pub readonly_root_filesystem: bool,
    /// The task definition's `pidMode` (`host` or `task`), absent when `None`.
    pub pid_mode: Option<String>,
    /// Whether the task definition has a task role
    /// (`arn:aws:iam::ACCOUNT:role/CLUSTER-SERVICE-task-role`).
    pub task_role: bool,
    /// Actions the task role is denied in IAM SimulatePrincipalPolicy (for example
    /// `ssmmessages:CreateControlChannel`, `kms:Decrypt`).
    pub task_role_deny: Vec<String>,
}

impl Default for TaskSetupConfig {
    fn default() -> Self {
        Self {
            launch_type: "FARGATE".to_string(),
            platform_version: "1.4.0".to_string(),
            agent_version: "1.89.2".to_string(),
            init_process_enabled: true,
            readonly_root_filesystem: false,
            pid_mode: None,
            task_role: true,
            task_role_deny: Vec::new(),
        }
    }
}

fn one_usize() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_containers() -> Vec<ContainerConfig> {
    vec![ContainerConfig::named("app")]
}

/// A container, and how a command "inside" it runs on this machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Container name.
    pub name: String,
    /// Directory commands start in; the emulator's own working directory when absent.
    #[serde(default)]
    pub working_directory: Option<PathBuf>,
    /// Environment variables set for commands (over the inherited ones).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Directories put in front of PATH, so a container can have its own programs.
    #[serde(default)]
    pub path_prepend: Vec<PathBuf>,
    /// Inherit the emulator's environment (minus every `AWS_*` variable) under `environment`.
    #[serde(default = "yes")]
    pub inherit_environment: bool,
    /// `lastStatus` of the container's ExecuteCommandAgent: `RUNNING` allows ExecuteCommand.
    #[serde(default = "running")]
    pub agent_status: String,
    /// Image name shown by DescribeTasks.
    #[serde(default = "default_image")]
    pub image: String,
}

fn running() -> String {
    "RUNNING".to_string()
}

fn default_image() -> String {
    "public.ecr.aws/docker/library/debian:stable".to_string()
}

impl ContainerConfig {
    /// A container with every field at its default.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            working_directory: None,
            environment: BTreeMap::new(),
            path_prepend: Vec::new(),
            inherit_environment: true,
            agent_status: running(),
            image: default_image(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut no_agent = ContainerConfig::named("app");
        no_agent.agent_status = "STOPPED".to_string();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: DEFAULT_REGION.to_string(),
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            credentials: vec![CredentialsConfig {
                access_key_id: DEFAULT_ACCESS_KEY_ID.to_string(),
                secret_access_key: DEFAULT_SECRET_ACCESS_KEY.to_string(),
                session_token: None,
                deny: Vec::new(),
            }],
            agent: AgentConfig::default(),
            faults: FaultConfig::default(),
            clusters: vec![
                ClusterConfig {
                    name: "demo".to_string(),
                    kms_key_id: None,
                    exec_logging: ExecLoggingConfig::default(),
                    services: vec![
                        ServiceConfig {
                            name: "web".to_string(),
                            running_tasks: 2,
                            stopped_tasks: 1,
                            task_ids: Vec::new(),
                            enable_execute_command: true,
                            containers: default_containers(),
                            setup: TaskSetupConfig::default(),
                        },
                        ServiceConfig {
                            name: "no-agent".to_string(),
                            running_tasks: 1,
                            stopped_tasks: 0,
                            task_ids: Vec::new(),
                            enable_execute_command: true,
                            containers: vec![no_agent],
                            setup: TaskSetupConfig::default(),
                        },
                    ],
                },
                ClusterConfig {
                    name: "secure".to_string(),
                    kms_key_id: Some(DEFAULT_KMS_KEY_ARN.to_string()),
                    exec_logging: ExecLoggingConfig::default(),
                    services: vec![ServiceConfig {
                        name: "web".to_string(),
                        running_tasks: 2,
                        stopped_tasks: 0,
                        task_ids: Vec::new(),
                        enable_execute_command: true,
                        containers: default_containers(),
                        setup: TaskSetupConfig::default(),
                    }],
                },
            ],
            kms: KmsConfig::default(),
            log_groups: Vec::new(),
            s3_buckets: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML document; fields it leaves out keep their defaults (so a file that only
    /// sets `[faults]` still has the default world).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// The first configured credentials (what tests and the binary's banner use).
    pub fn primary_credentials(&self) -> Option<&CredentialsConfig> {
        self.credentials.first()
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.credentials.is_empty() {
            return invalid("at least one [[credentials]] entry is needed".into());
        }
        for rates in [&self.faults.outbound, &self.faults.inbound] {
            for (name, p) in [("drop", rates.drop), ("duplicate", rates.duplicate)] {
                if !(0.0..=1.0).contains(&p) {
                    return invalid(format!("faults {name} must be within 0..=1, got {p}"));
                }
            }
        }
        if self.agent.read_chunk_bytes == 0 || self.agent.read_chunk_bytes > 1024 * 1024 {
            return invalid("agent.read_chunk_bytes must be within 1..=1048576".into());
        }
        if self.agent.max_unacked_bytes < self.agent.read_chunk_bytes {
            return invalid("agent.max_unacked_bytes must be at least read_chunk_bytes".into());
        }
        if self.agent.require_challenge_ack && !self.agent.kms_challenge {
            return invalid("agent.require_challenge_ack needs agent.kms_challenge".into());
        }
        let mut key_arns = std::collections::BTreeSet::new();
        for key in &self.kms.keys {
            if crate::kms::parse_key_arn(&key.arn).is_none() {
                return invalid(format!(
                    "kms key {:?} is not a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)",
                    key.arn
                ));
            }
            if !key_arns.insert(&key.arn) {
                return invalid(format!("kms key {:?} is defined twice", key.arn));
            }
            if let Some(alias) = &key.alias
                && (!alias.starts_with("alias/") || alias.len() <= "alias/".len())
            {
                return invalid(format!("kms alias {alias:?} must look like alias/NAME"));
            }
        }
        let mut group_names = std::collections::BTreeSet::new();
        for group in &self.log_groups {
            if !valid_log_group_name(&group.name) || !group_names.insert(&group.name) {
                return invalid(format!(
                    "log group {:?} is invalid or defined twice",
                    group.name
                ));
            }
        }
        let mut bucket_names = std::collections::BTreeSet::new();
        for bucket in &self.s3_buckets {
            if !valid_bucket_name(&bucket.name) || !bucket_names.insert(&bucket.name) {
                return invalid(format!(
                    "s3 bucket {:?} is invalid (3-63 of a-z, 0-9, '.', '-') or defined twice",
                    bucket.name
                ));
            }
        }
        let mut cluster_names = std::collections::BTreeSet::new();
        for cluster in &self.clusters {
            let logging = &cluster.exec_logging;
            if !matches!(logging.logging.as_str(), "DEFAULT" | "NONE" | "OVERRIDE") {
                return invalid(format!(
                    "exec_logging.logging of cluster {:?} must be DEFAULT, NONE or OVERRIDE",
                    cluster.name
                ));
            }
            if let Some(key) = &cluster.kms_key_id
                && crate::kms::parse_key_arn(key).is_none()
                && !crate::kms::is_key_id(key)
            {
                return invalid(format!(
                    "kms_key_id {key:?} of cluster {:?} is neither a key ARN nor a key id",
                    cluster.name
                ));
            }
            if !valid_name(&cluster.name) {
                return invalid(format!("cluster name {:?} is not valid", cluster.name));
            }
            if !cluster_names.insert(&cluster.name) {
                return invalid(format!("cluster {:?} is defined twice", cluster.name));
            }
            let mut service_names = std::collections::BTreeSet::new();
            for service in &cluster.services {
                if !valid_name(&service.name) || !service_names.insert(&service.name) {
                    return invalid(format!(
                        "service {:?} in cluster {:?} is invalid or defined twice",
                        service.name, cluster.name
                    ));
                }
                if service.containers.is_empty() {
                    return invalid(format!("service {:?} has no containers", service.name));
                }
                for id in &service.task_ids {
                    if !is_task_id(id) {
                        return invalid(format!(
                            "task id {id:?} must be 32 lowercase hexadecimal characters"
                        ));
                    }
                }
                for container in &service.containers {
                    if !valid_name(&container.name) {
                        return invalid(format!(
                            "container name {:?} is not valid",
                            container.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Names of clusters, services and containers: 1-255 letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// CloudWatch Logs group names: 1-512 letters, digits, `_`, `-`, `/`, `.` and `#`.
fn valid_log_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b))
}

/// S3 bucket names: 3-63 lowercase letters, digits, `.` and `-`, starting and ending with a
/// letter or digit.
fn valid_bucket_name(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Whether `id` looks like an ECS task id (32 lowercase hex characters).
pub fn is_task_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_is_the_documented_one() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.clusters.len(), 2);
        let secure = &config.clusters[1];
        assert_eq!(
            (secure.name.as_str(), secure.kms_key_id.as_deref()),
            ("secure", Some(DEFAULT_KMS_KEY_ARN))
        );
        assert_eq!(secure.services[0].running_tasks, 2);
        assert!(config.agent.kms_challenge && !config.agent.require_challenge_ack);
        let demo = &config.clusters[0];
        assert!(demo.kms_key_id.is_none());
        assert_eq!(demo.name, "demo");
        let web = &demo.services[0];
        assert_eq!(
            (web.name.as_str(), web.running_tasks, web.stopped_tasks),
            ("web", 2, 1)
        );
        assert_eq!(demo.services[1].containers[0].agent_status, "STOPPED");
        let creds = config.primary_credentials().unwrap();
        assert_eq!(creds.access_key_id, DEFAULT_ACCESS_KEY_ID);
        assert!(config.listen.ip().is_loopback());
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config = Config::from_toml_str(
            r#"
            [agent]
            handshake = true
            [faults]
            seed = 7
            [faults.inbound]
            drop = 0.5
            "#,
        )
        .unwrap();
        assert!(config.agent.handshake);
        assert_eq!(
            config.agent.read_chunk_bytes,
            AgentConfig::default().read_chunk_bytes
        );
        assert_eq!(config.faults.seed, 7);
        assert_eq!(config.faults.inbound.drop, 0.5);
        assert_eq!(config.clusters[0].name, "demo");
    }

    #[test]
    fn full_world_parses() {
        let config = Config::from_toml_str(
            r#"
            region = "eu-west-1"
            [[credentials]]
            access_key_id = "ASIAEXAMPLE"
            secret_access_key = "s"
            session_token = "t"
            deny = ["ecs:ExecuteCommand"]
            [[clusters]]
            name = "prod"
            [[clusters.services]]
            name = "api"
            task_ids = ["0123456789abcdef0123456789abcdef"]
            [[clusters.services.containers]]
            name = "rails"
            working_directory = "/tmp"
            path_prepend = ["/opt/shims"]
            environment = { RAILS_ENV = "production" }
            "#,
        )
        .unwrap();
        assert_eq!(config.region, "eu-west-1");
        let container = &config.clusters[0].services[0].containers[0];
        assert_eq!(container.environment["RAILS_ENV"], "production");
        assert_eq!(container.path_prepend, vec![PathBuf::from("/opt/shims")]);
        assert_eq!(config.credentials[0].deny, vec!["ecs:ExecuteCommand"]);
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/world.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.credentials.len(), 2);
        assert_eq!(
            config.credentials[1].deny,
            vec!["ecs:ExecuteCommand", "kms:GenerateDataKey"]
        );
        let prod = &config.clusters[1];
        assert_eq!(prod.services[0].containers.len(), 2);
        assert!(!prod.services[0].containers[0].inherit_environment);
        assert_eq!(
            config.clusters[2].kms_key_id.as_deref(),
            Some(DEFAULT_KMS_KEY_ARN)
        );
        assert_eq!(config.kms.keys.len(), 2);
        assert!(!config.kms.keys[1].enabled);
        let logging = &prod.exec_logging;
        assert!(logging.cloud_watch_encryption_enabled && logging.s3_encryption_enabled);
        assert_eq!(logging.s3_key_prefix.as_deref(), Some("exec/"));
        assert_eq!(config.log_groups[0].name, "/ecs/exec/prod");
        assert_eq!(
            config.s3_buckets[0].sse_algorithm.as_deref(),
            Some("AES256")
        );
        assert_eq!(config.agent.kms_decrypt, KmsDecrypt::Ok);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(matches!(
            Config::from_toml_str("[faults.outbound]\ndrop = 1.5"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_toml_str("credentials = []"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_toml_str(
                "[[clusters]]\nname = \"c\"\n[[clusters.services]]\nname = \"s\"\ntask_ids = [\"xyz\"]"
            ),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_toml_str("nonsense = 1"),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn kms_settings_are_checked() {
        let config = Config::from_toml_str(
            r#"
            [agent]
            kms_decrypt = "access-denied"
            require_challenge_ack = true
            kms_challenge_timeout_ms = 100
            [[clusters]]
            name = "c"
            kms_key_id = "1f2e3d4c-5b6a-4789-9abc-def012345678"
            "#,
        )
        .unwrap();
        assert_eq!(config.agent.kms_decrypt, KmsDecrypt::AccessDenied);
        for bad in [
            "[agent]\nkms_challenge = false\nrequire_challenge_ack = true",
            "[[clusters]]\nname = \"c\"\nkms_key_id = \"not a key\"",
            "[[kms.keys]]\narn = \"arn:aws:kms:us-east-1:1:alias/x\"",
            "[[kms.keys]]\narn = \"arn:aws:kms:us-east-1:1:key/k\"\nalias = \"k\"",
        ] {
            assert!(
                matches!(Config::from_toml_str(bad), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Config::from_toml_str("[agent]\nkms_decrypt = \"maybe\""),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn log_destinations_are_checked() {
        for bad in [
            "[[s3_buckets]]\nname = \"Upper\"",
            "[[s3_buckets]]\nname = \"b-\"",
            "[[log_groups]]\nname = \"a b\"",
            "[[log_groups]]\nname = \"g\"\n[[log_groups]]\nname = \"g\"",
            "[[clusters]]\nname = \"c\"\n[clusters.exec_logging]\nlogging = \"ON\"",
        ] {
            assert!(
                matches!(Config::from_toml_str(bad), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
        let config = Config::from_toml_str(
            "[[s3_buckets]]\nname = \"exec.logs-1\"\nsse_algorithm = \"aws:kms\"\n[[log_groups]]\nname = \"/ecs/exec_1#a.b-c\"",
        )
        .unwrap();
        assert_eq!(config.s3_buckets[0].name, "exec.logs-1");
        assert_eq!(config.log_groups[0].name, "/ecs/exec_1#a.b-c");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let text = format!("{:?}", Config::default());
        assert!(!text.contains(DEFAULT_SECRET_ACCESS_KEY));
    }
}
