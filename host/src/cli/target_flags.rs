//! The target flags `doctor` and `cp` share: which cluster, task and container, and how to
//! reach AWS, with exec's environment fallbacks (`CLUSTER_NAME`, `SERVICE_NAME`, `CONTAINER`).
//! Exec parses the same flags with its own Hoop-compatible grammar (`exec.rs`).

use clap::Args;

use crate::ecs::{AwsSettings, TaskSelector};

/// `--cluster`, `--service-name` | `--task`, `--container`, `--region`, `--profile`,
/// `--endpoint-url`.
#[derive(Debug, Clone, Args)]
pub struct TargetFlags {
    /// Cluster name or ARN
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster: String,
    /// A RUNNING task of this service whose ExecuteCommand agent runs
    #[arg(long = "service-name", env = "SERVICE_NAME")]
    pub service_name: Option<String>,
    /// This task (id or ARN); wins over --service-name
    #[arg(long)]
    pub task: Option<String>,
    /// Container; default: the first whose ExecuteCommand agent runs
    #[arg(long, env = "CONTAINER")]
    pub container: Option<String>,
    /// AWS region
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile
    #[arg(long)]
    pub profile: Option<String>,
    /// Endpoint for every AWS call (e.g. a local emulator)
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
}

impl TargetFlags {
    /// The task to use: `--task` as given, else a task of `--service-name`; `None` when
    /// neither was given.
    pub fn selector(&self) -> Option<TaskSelector> {
        match (&self.task, &self.service_name) {
            (Some(task), _) => Some(TaskSelector::Task(task.clone())),
            (None, Some(service)) => Some(TaskSelector::Service(service.clone())),
            (None, None) => None,
        }
    }

    /// `--region`, `--profile`, `--endpoint-url`.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}
