//! The ECS (and the two SSM) JSON 1.1 operations: ListTasks, DescribeTasks, DescribeClusters,
//! DescribeTaskDefinition, DescribeContainerInstances, ExecuteCommand, ResumeSession and
//! TerminateSession, with the response shapes and error codes AWS uses.
//!
//! Input is an already-authenticated request (target, body, identity); output is JSON or an
//! [`ApiError`] that the server turns into `400 {"__type", "message"}`. This module does no
//! HTTP and no signature checking, and starts no process: ExecuteCommand only registers a
//! session and returns its stream URL and token.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::CredentialsConfig;
use crate::sessions::{SessionRegistry, SessionSpec, new_session_id};
use crate::world::{Cluster, ExecEnvironment, Task, TaskStatus, World};

/// `X-Amz-Target` prefix of ECS operations.
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// `X-Amz-Target` prefix of SSM operations (the plugin sends ResumeSession here).
pub const SSM_TARGET_PREFIX: &str = "AmazonSSM.";

/// The operations the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// ECS ListTasks.
    ListTasks,
    /// ECS DescribeTasks.
    DescribeTasks,
    /// ECS DescribeClusters.
    DescribeClusters,
    /// ECS DescribeTaskDefinition.
    DescribeTaskDefinition,
    /// ECS DescribeContainerInstances.
    DescribeContainerInstances,
    /// ECS ExecuteCommand.
    ExecuteCommand,
    /// SSM ResumeSession.
    ResumeSession,
    /// SSM TerminateSession.
    TerminateSession,
}

impl Operation {
    /// Parses an `X-Amz-Target` header value.
    pub fn from_target(target: &str) -> Option<Self> {
        if let Some(name) = target.strip_prefix(ECS_TARGET_PREFIX) {
            return match name {
                "ListTasks" => Some(Self::ListTasks),
                "DescribeTasks" => Some(Self::DescribeTasks),
                "DescribeClusters" => Some(Self::DescribeClusters),
                "DescribeTaskDefinition" => Some(Self::DescribeTaskDefinition),
                "DescribeContainerInstances" => Some(Self::DescribeContainerInstances),
                "ExecuteCommand" => Some(Self::ExecuteCommand),
                _ => None,
            };
        }
        match target.strip_prefix(SSM_TARGET_PREFIX)? {
            "ResumeSession" => Some(Self::ResumeSession),
            "TerminateSession" => Some(Self::TerminateSession),
            _ => None,
        }
    }

    /// The SigV4 service name requests for this operation must be signed for.
    pub fn signing_service(self) -> &'static str {
        match self {
            Self::ResumeSession | Self::TerminateSession => "ssm",
            _ => "ecs",
        }
    }

    /// The IAM action name, as AccessDeniedException spells it.
    pub fn iam_action(self) -> &'static str {
        match self {
            Self::ListTasks => "ecs:ListTasks",
            Self::DescribeTasks => "ecs:DescribeTasks",
            Self::DescribeClusters => "ecs:DescribeClusters",
            Self::DescribeTaskDefinition => "ecs:DescribeTaskDefinition",
            Self::DescribeContainerInstances => "ecs:DescribeContainerInstances",
            Self::ExecuteCommand => "ecs:ExecuteCommand",
            Self::ResumeSession => "ssm:ResumeSession",
            Self::TerminateSession => "ssm:TerminateSession",
        }
    }
}

/// An AWS error: HTTP status, `__type` code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status (400 for client errors).
    pub status: u16,
    /// The `__type` value, e.g. `ClusterNotFoundException`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// A 400 error with that code and message.
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterException", message)
    }

    fn cluster_not_found() -> Self {
        Self::client("ClusterNotFoundException", "Cluster not found.")
    }

    /// The JSON body AWS sends for this error.
    pub fn body(&self) -> Value {
        json!({"__type": self.code, "message": self.message})
    }
}

/// What the operations read and write.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// The world.
    pub world: std::sync::Arc<World>,
    /// Sessions created by ExecuteCommand.
    pub sessions: SessionRegistry,
    /// `ws://HOST:PORT`, where the data channel listens.
    pub stream_base: String,
}

/// Runs one operation for an authenticated identity.
pub fn handle(
    ctx: &ApiContext,
    operation: Operation,
    identity: &CredentialsConfig,
    body: &[u8],
    now: Instant,
) -> Result<Value, ApiError> {
    if identity.deny.iter().any(|d| d == operation.iam_action()) {
        return Err(ApiError::client(
            "AccessDeniedException",
            format!(
                "User: arn:aws:iam::{}:user/emulator is not authorized to perform: {} because no identity-based policy allows the {} action",
                ctx.world.account_id,
                operation.iam_action(),
                operation.iam_action()
            ),
        ));
    }
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    match operation {
        Operation::ListTasks => list_tasks(ctx, parse(body)?),
        Operation::DescribeTasks => describe_tasks(ctx, parse(body)?),
        Operation::DescribeClusters => describe_clusters(ctx, parse(body)?),
        Operation::DescribeTaskDefinition => describe_task_definition(ctx, parse(body)?),
        Operation::DescribeContainerInstances => describe_container_instances(ctx, parse(body)?),
        Operation::ExecuteCommand => execute_command(ctx, parse(body)?, now),
        Operation::ResumeSession => resume_session(ctx, parse(body)?, now),
        Operation::TerminateSession => terminate_session(ctx, parse(body)?),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::client(
            "SerializationException",
            format!("Unable to parse the request body: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasksRequest {
    cluster: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
}

/// Most results ListTasks returns per page.
const LIST_TASKS_PAGE_MAX: usize = 100;
const NEXT_TOKEN_PREFIX: &str = "emulator-list-tasks:";

fn list_tasks(ctx: &ApiContext, request: ListTasksRequest) -> Result<Value, ApiError> {
    let cluster = ctx
        .world
        .cluster(request.cluster.as_deref())
        .ok_or_else(ApiError::cluster_not_found)?;
    if let Some(service) = &request.service_name
        && !cluster.has_service(service)
    {
        return Err(ApiError::client(
            "ServiceNotFoundException",
            "Service not found.",
        ));
    }
    let desired = match request.desired_status.as_deref() {
        None | Some("RUNNING") => Some(TaskStatus::Running),
        Some("STOPPED") => Some(TaskStatus::Stopped),
        // The emulator has no PENDING tasks.
        Some("PENDING") => None,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid desiredStatus value: {other}. Valid values are RUNNING, PENDING and STOPPED."
            )));
        }
    };
    let page_size = match request.max_results {
        None => LIST_TASKS_PAGE_MAX,
        Some(n @ 1..=100) => usize::try_from(n).unwrap_or(LIST_TASKS_PAGE_MAX),
        Some(_) => {
            return Err(ApiError::invalid("maxResults can be between 1 and 100."));
        }
    };
    let start = match &request.next_token {
        None => 0,
        Some(token) => {
            decode_next_token(token).ok_or_else(|| ApiError::invalid("Invalid nextToken value."))?
        }
    };
    let matching: Vec<&Task> = cluster
        .tasks
        .iter()
        .filter(|t| Some(t.status) == desired)
        .filter(|t| {
            request
                .service_name
                .as_ref()
                .is_none_or(|s| &t.service == s)
        })
        .filter(|t| request.family.as_ref().is_none_or(|f| &t.service == f))
        .filter(|t| {
            request
                .started_by
                .as_ref()
                .is_none_or(|s| *s == started_by(t))
        })
        .collect();
    let page: Vec<&str> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .map(|t| t.arn.as_str())
        .collect();
    let mut response = json!({ "taskArns": page });
    let end = start.saturating_add(page_size);
    if end < matching.len() {
        response["nextToken"] = json!(encode_next_token(end));
    }
    Ok(response)
}

fn encode_next_token(offset: usize) -> String {
    hex::encode(format!("{NEXT_TOKEN_PREFIX}{offset}"))
}

fn decode_next_token(token: &str) -> Option<usize> {
    let bytes = hex::decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(NEXT_TOKEN_PREFIX)?.parse().ok()
}

fn started_by(task: &Task) -> String {
    format!("ecs-svc/{}", &task.id.get(..19).unwrap_or(&task.id))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTasksRequest {
    cluster: Option<String>,
    #[serde(default)]
    tasks: Vec<String>,
}

fn describe_tasks(ctx: &ApiContext, request: DescribeTasksRequest) -> Result<Value, ApiError> {
    let cluster = ctx
        .world
        .cluster(request.cluster.as_deref())
        .ok_or_else(ApiError::cluster_not_found)?;
    if request.tasks.is_empty() {
        return Err(ApiError::invalid("Tasks cannot be empty."));
    }
    if request.tasks.len() > 100 {
        return Err(ApiError::invalid(
            "Tasks length cannot be greater than 100.",
        ));
    }
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for wanted in &request.tasks {
        match cluster.task(wanted) {
            Some(task) => tasks.push(task_json(ctx, cluster, task)),
            None => {
                let arn = if wanted.starts_with("arn:") {
                    wanted.clone()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:task/{}",
                        ctx.world.region, ctx.world.account_id, wanted
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"tasks": tasks, "failures": failures}))
}

fn task_json(ctx: &ApiContext, cluster: &Cluster, task: &Task) -> Value {
    let running = task.status == TaskStatus::Running;
    let containers: Vec<Value> = task
        .containers
        .iter()
        .map(|c| {
            let mut container = json!({
                "containerArn": c.arn,
                "taskArn": task.arn,
                "name": c.name,
                "image": c.image,
                "runtimeId": c.runtime_id,
                "lastStatus": c.status.as_str(),
                "networkInterfaces": [],
                "healthStatus": "UNKNOWN",
                "managedAgents": [{
                    "lastStartedAt": task.created_at + 30.0,
                    "name": "ExecuteCommandAgent",
                    "lastStatus": c.agent_status,
                }],
                "cpu": "0",
            });
            if !running {
                container["exitCode"] = json!(0);
            }
            container
        })
        .collect();
    let mut value = json!({
        "attachments": [],
        "attributes": [],
        "availabilityZone": format!("{}a", ctx.world.region),
        "clusterArn": cluster.arn,
        "connectivity": "CONNECTED",
        "connectivityAt": task.created_at + 5.0,
        "containers": containers,
        "cpu": "256",
        "createdAt": task.created_at,
        "desiredStatus": task.status.as_str(),
        "enableExecuteCommand": task.enable_execute_command,
        "group": format!("service:{}", task.service),
        "healthStatus": "UNKNOWN",
        "lastStatus": task.status.as_str(),
        "launchType": task.setup.launch_type,
        "memory": "512",
        "overrides": {"containerOverrides": task.containers.iter().map(|c| json!({"name": c.name})).collect::<Vec<_>>(), "inferenceAcceleratorOverrides": []},
        "platformFamily": "Linux",
        "pullStartedAt": task.created_at + 10.0,
        "pullStoppedAt": task.created_at + 20.0,
        "startedAt": task.created_at + 25.0,
        "startedBy": started_by(task),
        "tags": [],
        "taskArn": task.arn,
        "taskDefinitionArn": task.task_definition_arn,
        "version": if running { 3 } else { 5 },
        "ephemeralStorage": {"sizeInGiB": 20},
    });
    match &task.container_instance_id {
        Some(instance) => {
            value["containerInstanceArn"] = json!(container_instance_arn(ctx, cluster, instance));
        }
        None => value["platformVersion"] = json!(task.setup.platform_version),
    }
    if !running {
        value["stopCode"] = json!("EssentialContainerExited");
        value["stoppedReason"] = json!("Essential container in task exited");
        value["stoppingAt"] = json!(task.created_at + 3600.0);
        value["stoppedAt"] = json!(task.created_at + 3610.0);
        value["executionStoppedAt"] = json!(task.created_at + 3605.0);
    }
    value
}

fn container_instance_arn(ctx: &ApiContext, cluster: &Cluster, instance: &str) -> String {
    format!(
        "arn:aws:ecs:{}:{}:container-instance/{}/{instance}",
        ctx.world.region, ctx.world.account_id, cluster.name
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTaskDefinitionRequest {
    task_definition: Option<String>,
}

fn describe_task_definition(
    ctx: &ApiContext,
    request: DescribeTaskDefinitionRequest,
) -> Result<Value, ApiError> {
    let wanted = request
        .task_definition
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("TaskDefinition cannot be empty."))?;
    let definition = ctx.world.task_definition(&wanted).ok_or_else(|| {
        ApiError::client("ClientException", "Unable to describe task definition.")
    })?;
    let setup = &definition.setup;
    let containers: Vec<Value> = definition
        .containers
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "image": "public.ecr.aws/docker/library/debian:stable",
                "essential": true,
                "readonlyRootFilesystem": setup.readonly_root_filesystem,
                "linuxParameters": {"initProcessEnabled": setup.init_process_enabled},
            })
        })
        .collect();
    let mut value = json!({
        "taskDefinitionArn": definition.arn,
        "family": definition.family,
        "revision": definition.revision,
        "containerDefinitions": containers,
        "status": "ACTIVE",
        "networkMode": "awsvpc",
        "requiresCompatibilities": [setup.launch_type],
        "cpu": "256",
        "memory": "512",
    });
    if let Some(role) = &definition.task_role_arn {
        value["taskRoleArn"] = json!(role);
    }
    if let Some(pid_mode) = &setup.pid_mode {
        value["pidMode"] = json!(pid_mode);
    }
    Ok(json!({"taskDefinition": value, "tags": []}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeContainerInstancesRequest {
    cluster: Option<String>,
    #[serde(default)]
    container_instances: Vec<String>,
}

/// Every EC2 task runs on a container instance of its own, whose agent version its service's
/// setup gives.
fn describe_container_instances(
    ctx: &ApiContext,
    request: DescribeContainerInstancesRequest,
) -> Result<Value, ApiError> {
    let cluster = ctx
        .world
        .cluster(request.cluster.as_deref())
        .ok_or_else(ApiError::cluster_not_found)?;
    if request.container_instances.is_empty() {
        return Err(ApiError::invalid("ContainerInstances cannot be empty."));
    }
    let mut instances = Vec::new();
    let mut failures = Vec::new();
    for wanted in &request.container_instances {
        let id = wanted.rsplit('/').next().unwrap_or(wanted);
        let task = cluster
            .tasks
            .iter()
            .find(|t| t.container_instance_id.as_deref() == Some(id));
        match task {
            Some(task) => instances.push(json!({
                "containerInstanceArn": container_instance_arn(ctx, cluster, id),
                "ec2InstanceId": format!("i-{}", &id[..17.min(id.len())]),
                "status": "ACTIVE",
                "agentConnected": true,
                "runningTasksCount": 1,
                "pendingTasksCount": 0,
                "versionInfo": {
                    "agentVersion": task.setup.agent_version,
                    "agentHash": "emulator",
                    "dockerVersion": "DockerVersion: 25.0.8",
                },
            })),
            None => failures.push(json!({"arn": wanted, "reason": "MISSING"})),
        }
    }
    Ok(json!({"containerInstances": instances, "failures": failures}))
}

#[derive(Debug, Deserialize)]
struct DescribeClustersRequest {
    #[serde(default)]
    clusters: Vec<String>,
    /// Extra sections (ATTACHMENTS, SETTINGS…); the emulator always returns the same ones.
    #[serde(default, rename = "include")]
    _include: Vec<String>,
}

fn describe_clusters(
    ctx: &ApiContext,
    request: DescribeClustersRequest,
) -> Result<Value, ApiError> {
    if request.clusters.len() > 100 {
        return Err(ApiError::invalid(
            "Clusters length cannot be greater than 100.",
        ));
    }
    let wanted = if request.clusters.is_empty() {
        vec!["default".to_string()]
    } else {
        request.clusters
    };
    let mut clusters = Vec::new();
    let mut failures = Vec::new();
    for name in &wanted {
        match ctx.world.cluster(Some(name)) {
            Some(cluster) => clusters.push(cluster_json(cluster)),
            None => {
                let arn = if name.starts_with("arn:") {
                    name.clone()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:cluster/{name}",
                        ctx.world.region, ctx.world.account_id
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"clusters": clusters, "failures": failures}))
}

fn cluster_json(cluster: &Cluster) -> Value {
    let running = cluster
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .count();
    let logging = &cluster.exec_logging;
    let mut exec_config = json!({"logging": logging.logging});
    if logging.cloud_watch_log_group.is_some() || logging.s3_bucket.is_some() {
        let mut log = json!({
            "cloudWatchEncryptionEnabled": logging.cloud_watch_encryption_enabled,
            "s3EncryptionEnabled": logging.s3_encryption_enabled,
        });
        if let Some(group) = &logging.cloud_watch_log_group {
            log["cloudWatchLogGroupName"] = json!(group);
        }
        if let Some(bucket) = &logging.s3_bucket {
            log["s3BucketName"] = json!(bucket);
        }
        if let Some(prefix) = &logging.s3_key_prefix {
            log["s3KeyPrefix"] = json!(prefix);
        }
        exec_config["logConfiguration"] = log;
    }
    if let Some(key) = &cluster.kms_key_id {
        exec_config["kmsKeyId"] = json!(key);
    }
    json!({
        "clusterArn": cluster.arn,
        "clusterName": cluster.name,
        "configuration": {"executeCommandConfiguration": exec_config},
        "status": "ACTIVE",
        "registeredContainerInstancesCount": 0,
        "runningTasksCount": running,
        "pendingTasksCount": 0,
        "activeServicesCount": cluster.services.len(),
        "statistics": [],
        "tags": [],
        "settings": [{"name": "containerInsights", "value": "disabled"}],
        "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
        "defaultCapacityProviderStrategy": [],
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteCommandRequest {
    cluster: Option<String>,
    container: Option<String>,
    command: Option<String>,
    interactive: Option<bool>,
    task: Option<String>,
}

/// What ECS says when the agent cannot take the session.
const TARGET_NOT_CONNECTED: &str = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn't running. Wait and try the command again or run a new task with execute command enabled and try again.";

fn execute_command(
    ctx: &ApiContext,
    request: ExecuteCommandRequest,
    now: Instant,
) -> Result<Value, ApiError> {
    let command = request
        .command
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("Command cannot be empty."))?;
    if command.len() > 4096 {
        return Err(ApiError::invalid(
            "Command length cannot be greater than 4096.",
        ));
    }
    match request.interactive {
        Some(true) => {}
        Some(false) => {
            return Err(ApiError::invalid(
                "Interactive is the only mode supported currently.",
            ));
        }
        None => return Err(ApiError::invalid("Interactive cannot be empty.")),
    }
    let task_ref = request
        .task
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("Task cannot be empty."))?;
    let cluster = ctx
        .world
        .cluster(request.cluster.as_deref())
        .ok_or_else(ApiError::cluster_not_found)?;
    let task = cluster
        .task(&task_ref)
        .ok_or_else(|| ApiError::invalid("The specified task was not found."))?;
    if task.status != TaskStatus::Running {
        return Err(ApiError::invalid(
            "The specified task is not in RUNNING status.",
        ));
    }
    let container = match request.container.as_deref() {
        Some(name) => task
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                ApiError::invalid("The specified container was not found in the task.")
            })?,
        None => match task.containers.as_slice() {
            [only] => only,
            _ => {
                return Err(ApiError::invalid(
                    "The task has more than one container: a container name must be specified.",
                ));
            }
        },
    };
    if !task.enable_execute_command || container.agent_status != "RUNNING" {
        return Err(ApiError::client(
            "TargetNotConnectedException",
            TARGET_NOT_CONNECTED,
        ));
    }
    let session_id = new_session_id();
    let spec = SessionSpec {
        session_id: session_id.clone(),
        cluster: cluster.name.clone(),
        task_id: task.id.clone(),
        container: container.name.clone(),
        target: format!("ecs:{}_{}_{}", cluster.name, task.id, container.runtime_id),
        command,
        exec: with_metadata_uri(&container.exec, &container.runtime_id),
        kms_key_id: cluster.kms_key_id.clone(),
    };
    let token = ctx.sessions.create(spec, now);
    Ok(json!({
        "clusterArn": cluster.arn,
        "containerArn": container.arn,
        "containerName": container.name,
        "interactive": true,
        "session": {
            "sessionId": session_id,
            "streamUrl": stream_url(ctx, &session_id),
            "tokenValue": token,
        },
        "taskArn": task.arn,
    }))
}

/// ECS gives every container `ECS_CONTAINER_METADATA_URI_V4`, naming the container; so does the
/// emulator (unless the config sets it), which also tells a test which task a command ran in.
fn with_metadata_uri(exec: &ExecEnvironment, runtime_id: &str) -> ExecEnvironment {
    let mut exec = exec.clone();
    if !exec
        .environment
        .iter()
        .any(|(name, _)| name == METADATA_URI_VARIABLE)
    {
        exec.environment.push((
            METADATA_URI_VARIABLE.to_string(),
            format!("http://169.254.170.2/v4/{runtime_id}"),
        ));
    }
    exec
}

const METADATA_URI_VARIABLE: &str = "ECS_CONTAINER_METADATA_URI_V4";

fn stream_url(ctx: &ApiContext, session_id: &str) -> String {
    format!(
        "{}/v1/data-channel/{session_id}?role=publish_subscribe",
        ctx.stream_base
    )
}

#[derive(Debug, Deserialize)]
struct SessionIdRequest {
    #[serde(rename = "SessionId")]
    session_id: String,
}

fn resume_session(
    ctx: &ApiContext,
    request: SessionIdRequest,
    now: Instant,
) -> Result<Value, ApiError> {
    let token = ctx
        .sessions
        .issue_token(&request.session_id, now)
        .ok_or_else(|| {
            ApiError::client(
                "DoesNotExistException",
                format!(
                    "Session {} does not exist or is not active.",
                    request.session_id
                ),
            )
        })?;
    Ok(json!({
        "SessionId": request.session_id,
        "TokenValue": token,
        "StreamUrl": stream_url(ctx, &request.session_id),
    }))
}

fn terminate_session(ctx: &ApiContext, request: SessionIdRequest) -> Result<Value, ApiError> {
    // SSM answers TerminateSession for an unknown id with the id as well.
    ctx.sessions.terminate(&request.session_id);
    Ok(json!({"SessionId": request.session_id}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;
    use std::time::Duration;

    fn context() -> (ApiContext, CredentialsConfig) {
        let config = Config::default();
        let ctx = ApiContext {
            world: Arc::new(World::from_config(&config)),
            sessions: SessionRegistry::new(Duration::from_secs(60)),
            stream_base: "ws://127.0.0.1:9".into(),
        };
        (ctx, config.credentials[0].clone())
    }

    fn call(
        ctx: &ApiContext,
        who: &CredentialsConfig,
        op: Operation,
        body: Value,
    ) -> Result<Value, ApiError> {
        handle(ctx, op, who, body.to_string().as_bytes(), Instant::now())
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Operation::from_target("AmazonEC2ContainerServiceV20141113.ListTasks"),
            Some(Operation::ListTasks)
        );
        assert_eq!(
            Operation::from_target("AmazonSSM.ResumeSession").map(Operation::signing_service),
            Some("ssm")
        );
        assert_eq!(
            Operation::from_target("AmazonEC2ContainerServiceV20141113.RunTask"),
            None
        );
        assert_eq!(Operation::from_target("ListTasks"), None);
    }

    #[test]
    fn list_tasks_pages_through_running_tasks() {
        let (ctx, who) = context();
        let first = call(
            &ctx,
            &who,
            Operation::ListTasks,
            json!({"cluster": "demo", "serviceName": "web", "maxResults": 1}),
        )
        .unwrap();
        assert_eq!(first["taskArns"].as_array().unwrap().len(), 1);
        let token = first["nextToken"].as_str().unwrap();
        let second = call(
            &ctx,
            &who,
            Operation::ListTasks,
            json!({"cluster": "demo", "serviceName": "web", "maxResults": 1, "nextToken": token}),
        )
        .unwrap();
        assert_eq!(second["taskArns"].as_array().unwrap().len(), 1);
        assert!(second.get("nextToken").is_none());
        assert_ne!(first["taskArns"][0], second["taskArns"][0]);
        let stopped = call(
            &ctx,
            &who,
            Operation::ListTasks,
            json!({"cluster": "demo", "serviceName": "web", "desiredStatus": "STOPPED"}),
        )
        .unwrap();
        assert_eq!(stopped["taskArns"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn list_tasks_errors() {
        let (ctx, who) = context();
        let code = |body| {
            call(&ctx, &who, Operation::ListTasks, body)
                .unwrap_err()
                .code
        };
        assert_eq!(code(json!({"cluster": "nope"})), "ClusterNotFoundException");
        assert_eq!(code(json!({})), "ClusterNotFoundException");
        assert_eq!(
            code(json!({"cluster": "demo", "serviceName": "x"})),
            "ServiceNotFoundException"
        );
        assert_eq!(
            code(json!({"cluster": "demo", "maxResults": 0})),
            "InvalidParameterException"
        );
        assert_eq!(
            code(json!({"cluster": "demo", "nextToken": "zz"})),
            "InvalidParameterException"
        );
        assert_eq!(code(json!({"cluster": 5})), "SerializationException");
    }

    #[test]
    fn a_service_without_tasks_lists_nothing() {
        let mut config = Config::default();
        config.clusters[0].services[0].running_tasks = 0;
        config.clusters[0].services[0].stopped_tasks = 0;
        let ctx = ApiContext {
            world: Arc::new(World::from_config(&config)),
            sessions: SessionRegistry::new(Duration::from_secs(60)),
            stream_base: "ws://127.0.0.1:9".into(),
        };
        let out = call(
            &ctx,
            &config.credentials[0],
            Operation::ListTasks,
            json!({"cluster": "demo", "serviceName": "web"}),
        )
        .unwrap();
        assert_eq!(out["taskArns"], json!([]));
    }

    #[test]
    fn describe_tasks_reports_missing_tasks_as_failures() {
        let (ctx, who) = context();
        let id = ctx.world.clusters[0].tasks[0].id.clone();
        let missing = "f".repeat(32);
        let out = call(
            &ctx,
            &who,
            Operation::DescribeTasks,
            json!({"cluster": "demo", "tasks": [id, missing]}),
        )
        .unwrap();
        assert_eq!(
            out["tasks"][0]["containers"][0]["managedAgents"][0]["name"],
            "ExecuteCommandAgent"
        );
        assert_eq!(out["failures"][0]["reason"], "MISSING");
        assert!(
            out["failures"][0]["arn"]
                .as_str()
                .unwrap()
                .ends_with(&missing)
        );
        let empty = call(
            &ctx,
            &who,
            Operation::DescribeTasks,
            json!({"cluster": "demo", "tasks": []}),
        )
        .unwrap_err();
        assert_eq!(empty.code, "InvalidParameterException");
    }

    #[test]
    fn execute_command_checks_and_creates_a_session() {
        let (ctx, who) = context();
        let demo = &ctx.world.clusters[0];
        let running = demo
            .tasks
            .iter()
            .find(|t| t.service == "web" && t.status == TaskStatus::Running)
            .unwrap();
        let stopped = demo
            .tasks
            .iter()
            .find(|t| t.status == TaskStatus::Stopped)
            .unwrap();
        let no_agent = demo.tasks.iter().find(|t| t.service == "no-agent").unwrap();
        let exec = |task: &str, interactive: bool| {
            call(
                &ctx,
                &who,
                Operation::ExecuteCommand,
                json!({"cluster": "demo", "task": task, "container": "app", "command": "echo hi", "interactive": interactive}),
            )
        };
        let err = exec(&running.id, false).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                "InvalidParameterException",
                "Interactive is the only mode supported currently."
            )
        );
        assert_eq!(
            exec(&no_agent.id, true).unwrap_err().code,
            "TargetNotConnectedException"
        );
        assert_eq!(
            exec(&stopped.id, true).unwrap_err().code,
            "InvalidParameterException"
        );
        assert_eq!(
            exec(&"e".repeat(32), true).unwrap_err().code,
            "InvalidParameterException"
        );
        let ok = exec(&running.arn, true).unwrap();
        let session = &ok["session"];
        let sid = session["sessionId"].as_str().unwrap();
        assert!(sid.starts_with("ecs-execute-command-"));
        assert_eq!(
            session["streamUrl"],
            format!("ws://127.0.0.1:9/v1/data-channel/{sid}?role=publish_subscribe")
        );
        assert_eq!(ok["containerName"], "app");
        assert_eq!(ok["taskArn"], running.arn);
        assert_eq!(ctx.sessions.len(), 1);
        let again = exec(&running.id, true).unwrap();
        assert_ne!(again["session"]["tokenValue"], session["tokenValue"]);
    }

    #[test]
    fn denied_actions_are_access_denied() {
        let (ctx, mut who) = context();
        who.deny = vec!["ecs:ListTasks".into()];
        let err = call(&ctx, &who, Operation::ListTasks, json!({"cluster": "demo"})).unwrap_err();
        assert_eq!(err.code, "AccessDeniedException");
        assert!(err.message.contains("ecs:ListTasks"));
        assert!(
            call(
                &ctx,
                &who,
                Operation::DescribeTasks,
                json!({"cluster": "demo", "tasks": ["x"]})
            )
            .is_ok()
        );
    }

    #[test]
    fn describe_clusters_shows_the_kms_key_and_missing_clusters() {
        let (ctx, who) = context();
        let out = call(
            &ctx,
            &who,
            Operation::DescribeClusters,
            json!({"clusters": ["secure", "arn:aws:ecs:us-east-1:123456789012:cluster/demo", "nope"], "include": ["SETTINGS"]}),
        )
        .unwrap();
        let secure = &out["clusters"][0];
        assert_eq!(secure["clusterName"], "secure");
        assert_eq!(
            secure["configuration"]["executeCommandConfiguration"]["kmsKeyId"],
            crate::config::DEFAULT_KMS_KEY_ARN
        );
        assert_eq!(
            secure["configuration"]["executeCommandConfiguration"]["logging"],
            "DEFAULT"
        );
        assert_eq!(secure["runningTasksCount"], 2);
        let demo = &out["clusters"][1];
        assert_eq!(demo["clusterName"], "demo");
        assert!(
            demo["configuration"]["executeCommandConfiguration"]
                .get("kmsKeyId")
                .is_none()
        );
        assert_eq!(
            out["failures"],
            json!([{"arn": "arn:aws:ecs:us-east-1:123456789012:cluster/nope", "reason": "MISSING"}])
        );
        let default = call(&ctx, &who, Operation::DescribeClusters, json!({})).unwrap();
        assert_eq!(default["clusters"], json!([]));
        assert_eq!(default["failures"][0]["reason"], "MISSING");
    }

    #[test]
    fn describe_clusters_shows_the_log_configuration() {
        let mut config = Config::default();
        let logging = &mut config.clusters[0].exec_logging;
        logging.logging = "OVERRIDE".into();
        logging.cloud_watch_log_group = Some("/ecs/exec".into());
        logging.cloud_watch_encryption_enabled = true;
        logging.s3_bucket = Some("exec-logs".into());
        logging.s3_key_prefix = Some("exec/".into());
        let ctx = ApiContext {
            world: Arc::new(World::from_config(&config)),
            sessions: SessionRegistry::new(Duration::from_secs(60)),
            stream_base: "ws://127.0.0.1:9".into(),
        };
        let out = call(
            &ctx,
            &config.credentials[0],
            Operation::DescribeClusters,
            json!({"clusters": ["demo"]}),
        )
        .unwrap();
        let exec = &out["clusters"][0]["configuration"]["executeCommandConfiguration"];
        assert_eq!(exec["logging"], "OVERRIDE");
        assert_eq!(
            exec["logConfiguration"],
            json!({
                "cloudWatchLogGroupName": "/ecs/exec",
                "cloudWatchEncryptionEnabled": true,
                "s3BucketName": "exec-logs",
                "s3EncryptionEnabled": false,
                "s3KeyPrefix": "exec/",
            })
        );
    }

    #[test]
    fn task_definitions_and_container_instances_follow_the_setup() {
        let mut config = Config::default();
        let setup = &mut config.clusters[0].services[0].setup;
        setup.launch_type = "EC2".into();
        setup.agent_version = "1.40.0".into();
        setup.pid_mode = Some("host".into());
        setup.init_process_enabled = false;
        let ctx = ApiContext {
            world: Arc::new(World::from_config(&config)),
            sessions: SessionRegistry::new(Duration::from_secs(60)),
            stream_base: "ws://127.0.0.1:9".into(),
        };
        let who = &config.credentials[0];
        let web = ctx.world.clusters[0].tasks[0].id.clone();
        let task = call(
            &ctx,
            who,
            Operation::DescribeTasks,
            json!({"cluster": "demo", "tasks": [web]}),
        )
        .unwrap()["tasks"][0]
            .clone();
        assert_eq!(task["launchType"], "EC2");
        assert!(task.get("platformVersion").is_none());
        let instance = task["containerInstanceArn"].as_str().unwrap();
        let instances = call(
            &ctx,
            who,
            Operation::DescribeContainerInstances,
            json!({"cluster": "demo", "containerInstances": [instance]}),
        )
        .unwrap();
        assert_eq!(
            instances["containerInstances"][0]["versionInfo"]["agentVersion"],
            "1.40.0"
        );
        let definition = call(
            &ctx,
            who,
            Operation::DescribeTaskDefinition,
            json!({"taskDefinition": task["taskDefinitionArn"]}),
        )
        .unwrap()["taskDefinition"]
            .clone();
        assert_eq!(definition["pidMode"], "host");
        assert_eq!(
            definition["containerDefinitions"][0]["linuxParameters"]["initProcessEnabled"],
            false
        );
        assert_eq!(
            definition["taskRoleArn"],
            "arn:aws:iam::123456789012:role/demo-web-task-role"
        );
        // The same family in the second cluster is revision 2, its latest.
        let secure = call(
            &ctx,
            who,
            Operation::DescribeTaskDefinition,
            json!({"taskDefinition": "web"}),
        )
        .unwrap();
        assert_eq!(secure["taskDefinition"]["revision"], 2);
        assert!(secure["taskDefinition"].get("pidMode").is_none());
        assert_eq!(
            call(
                &ctx,
                who,
                Operation::DescribeTaskDefinition,
                json!({"taskDefinition": "nope"})
            )
            .unwrap_err()
            .code,
            "ClientException"
        );
    }

    #[test]
    fn resume_and_terminate() {
        let (ctx, who) = context();
        let err = call(
            &ctx,
            &who,
            Operation::ResumeSession,
            json!({"SessionId": "nope"}),
        )
        .unwrap_err();
        assert_eq!(err.code, "DoesNotExistException");
        let out = call(
            &ctx,
            &who,
            Operation::TerminateSession,
            json!({"SessionId": "nope"}),
        )
        .unwrap();
        assert_eq!(out["SessionId"], "nope");
    }
}
