//! The world the ECS API describes: clusters, tasks and containers with stable ids and ARNs,
//! built once from a [`Config`] and read-only afterwards.
//!
//! Task ids that the config does not give are derived from the cluster, service and index
//! (SHA-256), so the same config always yields the same ids. This module knows nothing about
//! HTTP, signatures or sessions; lookups accept ids or ARNs the way ECS does.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{Config, ContainerConfig, ExecLoggingConfig, TaskSetupConfig};

/// Task status as ECS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// The task runs.
    Running,
    /// The task has stopped.
    Stopped,
}

impl TaskStatus {
    /// The ECS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "RUNNING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

/// All clusters.
#[derive(Debug, Clone)]
pub struct World {
    /// Region in ARNs.
    pub region: String,
    /// Account in ARNs.
    pub account_id: String,
    /// Clusters in config order.
    pub clusters: Vec<Cluster>,
    /// One task definition per service: family = service name, revision = cluster position
    /// (from 1), so services of the same name in two clusters stay apart.
    pub task_definitions: Vec<TaskDefinition>,
}

/// The task definition of a service's tasks.
#[derive(Debug, Clone)]
pub struct TaskDefinition {
    /// `arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION`.
    pub arn: String,
    /// The service name.
    pub family: String,
    /// The cluster's position in the config, from 1.
    pub revision: u32,
    /// Container names, in order.
    pub containers: Vec<String>,
    /// `arn:aws:iam::ACCOUNT:role/CLUSTER-SERVICE-task-role` when the setup has a task role.
    pub task_role_arn: Option<String>,
    /// Launch and definition settings.
    pub setup: TaskSetupConfig,
}

/// A cluster and its tasks.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`.
    pub arn: String,
    /// Every task, in a stable order.
    pub tasks: Vec<Task>,
    /// Names of its services (a service may have no tasks).
    pub services: Vec<String>,
    /// The KMS key of its ECS Exec configuration, as configured (key ARN or key id).
    pub kms_key_id: Option<String>,
    /// Session logging of its ECS Exec configuration.
    pub exec_logging: ExecLoggingConfig,
}

/// A task.
#[derive(Debug, Clone)]
pub struct Task {
    /// 32 hex characters.
    pub id: String,
    /// `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`.
    pub arn: String,
    /// Name of the service that started it.
    pub service: String,
    /// Last (and desired) status.
    pub status: TaskStatus,
    /// Whether ExecuteCommand was enabled when it started.
    pub enable_execute_command: bool,
    /// Seconds since the epoch when it was created (a fixed time in the past).
    pub created_at: f64,
    /// Its containers.
    pub containers: Vec<Container>,
    /// The ARN of its task definition (see [`World::task_definitions`]).
    pub task_definition_arn: String,
    /// Launch type, platform and agent version.
    pub setup: TaskSetupConfig,
    /// EC2 tasks: the id of the container instance it runs on (one per task).
    pub container_instance_id: Option<String>,
}

/// A container of a task.
#[derive(Debug, Clone)]
pub struct Container {
    /// Name from the config.
    pub name: String,
    /// `arn:aws:ecs:REGION:ACCOUNT:container/CLUSTER/TASK/UUID`.
    pub arn: String,
    /// `<taskid>-<n>`, the Docker runtime id the CLI puts in the SSM target.
    pub runtime_id: String,
    /// RUNNING when the task runs, else STOPPED.
    pub status: TaskStatus,
    /// `lastStatus` of its ExecuteCommandAgent.
    pub agent_status: String,
    /// Image name.
    pub image: String,
    /// How commands run "inside" it on this machine.
    pub exec: ExecEnvironment,
}

/// What a command started in a container gets.
#[derive(Debug, Clone)]
pub struct ExecEnvironment {
    /// Working directory; the emulator's own when `None`.
    pub working_directory: Option<PathBuf>,
    /// Variables set over the inherited ones.
    pub environment: Vec<(String, String)>,
    /// Directories put in front of PATH.
    pub path_prepend: Vec<PathBuf>,
    /// Whether the emulator's environment (minus `AWS_*`) is inherited.
    pub inherit_environment: bool,
}

/// A fixed creation time (2024-01-01T00:00:00Z) so responses are reproducible.
const CREATED_AT: f64 = 1_704_067_200.0;

impl World {
    /// Builds the world a config describes.
    pub fn from_config(config: &Config) -> Self {
        let mut task_definitions = Vec::new();
        let clusters = config
            .clusters
            .iter()
            .enumerate()
            .map(|(position, cluster)| {
                let revision = u32::try_from(position + 1).unwrap_or(u32::MAX);
                let arn = format!(
                    "arn:aws:ecs:{}:{}:cluster/{}",
                    config.region, config.account_id, cluster.name
                );
                let mut tasks = Vec::new();
                for service in &cluster.services {
                    let definition = TaskDefinition {
                        arn: format!(
                            "arn:aws:ecs:{}:{}:task-definition/{}:{revision}",
                            config.region, config.account_id, service.name
                        ),
                        family: service.name.clone(),
                        revision,
                        containers: service.containers.iter().map(|c| c.name.clone()).collect(),
                        task_role_arn: service.setup.task_role.then(|| {
                            format!(
                                "arn:aws:iam::{}:role/{}-{}-task-role",
                                config.account_id, cluster.name, service.name
                            )
                        }),
                        setup: service.setup.clone(),
                    };
                    let running_ids: Vec<String> = if service.task_ids.is_empty() {
                        (0..service.running_tasks)
                            .map(|i| derived_id(&cluster.name, &service.name, "running", i))
                            .collect()
                    } else {
                        service.task_ids.clone()
                    };
                    let stopped_ids = (0..service.stopped_tasks)
                        .map(|i| derived_id(&cluster.name, &service.name, "stopped", i));
                    let all = running_ids
                        .into_iter()
                        .map(|id| (id, TaskStatus::Running))
                        .chain(stopped_ids.map(|id| (id, TaskStatus::Stopped)));
                    for (id, status) in all {
                        let mut task = build_task(
                            config,
                            &cluster.name,
                            &service.name,
                            id,
                            status,
                            service.enable_execute_command,
                            &service.containers,
                        );
                        task.task_definition_arn = definition.arn.clone();
                        task.setup = service.setup.clone();
                        task.container_instance_id = (service.setup.launch_type == "EC2")
                            .then(|| derived_id(&cluster.name, &task.id, "instance", 0));
                        tasks.push(task);
                    }
                    task_definitions.push(definition);
                }
                Cluster {
                    name: cluster.name.clone(),
                    arn,
                    tasks,
                    services: cluster.services.iter().map(|s| s.name.clone()).collect(),
                    kms_key_id: cluster.kms_key_id.clone(),
                    exec_logging: cluster.exec_logging.clone(),
                }
            })
            .collect();
        Self {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            clusters,
            task_definitions,
        }
    }

    /// Finds a task definition by `FAMILY`, `FAMILY:REVISION` or ARN; a bare family means its
    /// latest revision, as in ECS.
    pub fn task_definition(&self, wanted: &str) -> Option<&TaskDefinition> {
        let name = match wanted.strip_prefix("arn:") {
            Some(_) => wanted.split_once(":task-definition/")?.1,
            None => wanted,
        };
        match name.split_once(':') {
            Some((family, revision)) => self
                .task_definitions
                .iter()
                .find(|d| d.family == family && d.revision.to_string() == revision),
            None => self
                .task_definitions
                .iter()
                .filter(|d| d.family == name)
                .max_by_key(|d| d.revision),
        }
    }

    /// Finds a cluster by name or ARN. A missing cluster parameter means `default`, as in ECS.
    pub fn cluster(&self, name_or_arn: Option<&str>) -> Option<&Cluster> {
        let wanted = name_or_arn.unwrap_or("default");
        self.clusters
            .iter()
            .find(|c| c.name == wanted || c.arn == wanted)
    }
}

impl Cluster {
    /// Finds a task by id or ARN (`…:task/ID` or `…:task/CLUSTER/ID`).
    pub fn task(&self, id_or_arn: &str) -> Option<&Task> {
        let id = task_id_of(id_or_arn)?;
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Whether the cluster has a service of that name.
    pub fn has_service(&self, name: &str) -> bool {
        self.services.iter().any(|s| s == name)
    }
}

/// The task id inside a task id or ARN, if it has the ECS shape.
pub fn task_id_of(id_or_arn: &str) -> Option<&str> {
    let id = match id_or_arn.strip_prefix("arn:") {
        Some(_) => {
            let (_, resource) = id_or_arn.split_once(":task/")?;
            resource.rsplit('/').next()?
        }
        None => id_or_arn,
    };
    crate::config::is_task_id(id).then_some(id)
}

fn derived_id(cluster: &str, service: &str, kind: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{cluster}/{service}/{kind}/{index}").as_bytes());
    let mut id = hex::encode(digest);
    id.truncate(32);
    id
}

fn build_task(
    config: &Config,
    cluster: &str,
    service: &str,
    id: String,
    status: TaskStatus,
    enable_execute_command: bool,
    containers: &[ContainerConfig],
) -> Task {
    let arn = format!(
        "arn:aws:ecs:{}:{}:task/{cluster}/{id}",
        config.region, config.account_id
    );
    let containers = containers
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let digest = Sha256::digest(format!("{id}/{}", spec.name).as_bytes());
            let mut uuid_bytes = [0u8; 16];
            uuid_bytes.copy_from_slice(&digest[..16]);
            let container_uuid = uuid::Builder::from_random_bytes(uuid_bytes).into_uuid();
            // ECS runtime ids of Fargate containers are `<taskid>-<number>`.
            let number = u32::from_be_bytes([digest[16], digest[17], digest[18], digest[19]]);
            Container {
                name: spec.name.clone(),
                arn: format!(
                    "arn:aws:ecs:{}:{}:container/{cluster}/{id}/{container_uuid}",
                    config.region, config.account_id
                ),
                runtime_id: format!("{id}-{}", u64::from(number) + index as u64),
                status,
                agent_status: if status == TaskStatus::Running {
                    spec.agent_status.clone()
                } else {
                    "STOPPED".to_string()
                },
                image: spec.image.clone(),
                exec: ExecEnvironment {
                    working_directory: spec.working_directory.clone(),
                    environment: spec
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    path_prepend: spec.path_prepend.clone(),
                    inherit_environment: spec.inherit_environment,
                },
            }
        })
        .collect();
    Task {
        id,
        arn,
        service: service.to_string(),
        status,
        enable_execute_command,
        created_at: CREATED_AT,
        containers,
        task_definition_arn: String::new(),
        setup: TaskSetupConfig::default(),
        container_instance_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_world_has_stable_ids_and_arns() {
        let world = World::from_config(&Config::default());
        let again = World::from_config(&Config::default());
        let demo = world.cluster(Some("demo")).unwrap();
        assert_eq!(demo.arn, "arn:aws:ecs:us-east-1:123456789012:cluster/demo");
        let web: Vec<_> = demo.tasks.iter().filter(|t| t.service == "web").collect();
        assert_eq!(web.len(), 3);
        assert_eq!(
            web.iter()
                .filter(|t| t.status == TaskStatus::Running)
                .count(),
            2
        );
        for (a, b) in demo
            .tasks
            .iter()
            .zip(&again.cluster(Some("demo")).unwrap().tasks)
        {
            assert_eq!(a.id, b.id);
            assert!(crate::config::is_task_id(&a.id));
            assert!(
                a.containers[0]
                    .runtime_id
                    .starts_with(&format!("{}-", a.id))
            );
        }
        let ids: std::collections::BTreeSet<_> = demo.tasks.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), demo.tasks.len());
    }

    #[test]
    fn lookups_accept_ids_and_arns() {
        let world = World::from_config(&Config::default());
        let demo = world
            .cluster(Some("arn:aws:ecs:us-east-1:123456789012:cluster/demo"))
            .unwrap();
        let task = &demo.tasks[0];
        assert_eq!(demo.task(&task.id).unwrap().id, task.id);
        assert_eq!(demo.task(&task.arn).unwrap().id, task.id);
        let short_arn = format!("arn:aws:ecs:us-east-1:123456789012:task/{}", task.id);
        assert_eq!(demo.task(&short_arn).unwrap().id, task.id);
        assert!(demo.task("not-a-task").is_none());
        assert!(world.cluster(None).is_none());
        assert!(world.cluster(Some("nope")).is_none());
    }

    #[test]
    fn stopped_tasks_have_stopped_agents() {
        let world = World::from_config(&Config::default());
        let demo = world.cluster(Some("demo")).unwrap();
        for task in &demo.tasks {
            if task.status == TaskStatus::Stopped {
                assert_eq!(task.containers[0].agent_status, "STOPPED");
            }
        }
        let no_agent = demo.tasks.iter().find(|t| t.service == "no-agent").unwrap();
        assert_eq!(no_agent.status, TaskStatus::Running);
        assert_eq!(no_agent.containers[0].agent_status, "STOPPED");
    }
}
