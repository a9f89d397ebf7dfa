//! `ecs-exec-emulator`: a local stand-in for AWS ECS and the SSM data channel, so every test,
//! benchmark and first run works without an AWS account.
//!
//! One HTTP port serves the ECS JSON 1.1 API (ListTasks, DescribeTasks, DescribeClusters,
//! ExecuteCommand, and SSM ResumeSession/TerminateSession), every request SigV4-verified, the
//! calls of `ecs-exec doctor` (STS, IAM, CloudWatch Logs DescribeLogGroups, S3
//! GetBucketEncryption; see [`iam`] and [`log_destinations`]), and
//! the data channel websockets, whose agent side runs real commands under a PTY the way the SSM
//! agent does. A second port serves KMS (GenerateDataKey, Decrypt, DescribeKey) for clusters
//! whose ECS Exec configuration names a key; their sessions run the KMS handshake and are
//! encrypted.
//! Start one in-process with [`Emulator::start`] (async) or [`EmulatorHandle::spawn_in_thread`],
//! or run the `ecs-exec-emulator` binary. Faults (drop, duplicate, reorder, delay, disconnect)
//! and the real agent's timings are opt-in through [`Config`].
//!
//! Layout: [`config`] and [`world`] describe what exists; [`sigv4`] and [`api`] answer API
//! calls; [`kms`] keeps keys and seals data keys; [`sessions`] holds channel tokens; [`agent`]
//! runs sessions; [`faults`] injects faults; [`server`] wires them to sockets; [`testing`] has
//! helpers for tests: which programs are on this machine, child processes with a deadline.

pub mod agent;
pub mod api;
pub mod config;
pub mod counters;
pub mod faults;
pub mod iam;
pub mod kms;
pub mod log_destinations;
pub mod server;
pub mod sessions;
pub mod sigv4;
pub mod testing;
pub mod world;

pub use config::{
    AgentConfig, ClusterConfig, Config, ConfigError, ContainerConfig, CredentialsConfig,
    DEFAULT_ACCESS_KEY_ID, DEFAULT_KMS_KEY_ARN, DEFAULT_REGION, DEFAULT_SECRET_ACCESS_KEY,
    Direction, FaultAction, FaultConfig, FaultRates, FaultRule, KmsConfig, KmsDecrypt,
    KmsKeyConfig, ServiceConfig,
};
pub use counters::CountersSnapshot;
pub use server::{COUNTER_WAIT_DEADLINE, Emulator, EmulatorError, EmulatorHandle};
pub use testing::{Spawned, optional_tool, require_tool};
pub use world::World;
