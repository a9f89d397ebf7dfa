//! The ECS API calls ecs-exec makes, on the wire: request and answer structs (AWS JSON 1.1,
//! camelCase) with only the fields we send or read, and [`EcsCalls`], which sends them through
//! [`crate::aws_json`]. Unknown fields in answers are ignored; absent ones are `None` or empty.
//! The ExecuteCommand token is moved into a [`super::ChannelToken`] by the caller, and nothing
//! here logs an answer.

use serde::{Deserialize, Serialize};

use crate::aws_json::{CallError, JsonService};

/// The ECS client: one [`JsonService`] at the ECS endpoint.
#[derive(Clone, Debug)]
pub struct EcsCalls {
    service: JsonService,
}

impl EcsCalls {
    /// Wraps the service client.
    pub fn new(service: JsonService) -> EcsCalls {
        EcsCalls { service }
    }

    /// Where the calls go.
    pub fn endpoint(&self) -> &str {
        self.service.endpoint()
    }

    /// One page of ListTasks.
    pub async fn list_tasks(&self, request: &ListTasks<'_>) -> Result<TaskArns, CallError> {
        self.service.call("ListTasks", request).await
    }

    /// DescribeTasks of at most 100 tasks.
    pub async fn describe_tasks(
        &self,
        request: &DescribeTasks<'_>,
    ) -> Result<DescribedTasks, CallError> {
        self.service.call("DescribeTasks", request).await
    }

    /// ExecuteCommand.
    pub async fn execute_command(
        &self,
        request: &ExecuteCommand<'_>,
    ) -> Result<ExecutedCommand, CallError> {
        self.service.call("ExecuteCommand", request).await
    }

    /// DescribeClusters of one cluster.
    pub async fn describe_clusters(&self, cluster: &str) -> Result<DescribedClusters, CallError> {
        let request = DescribeClusters {
            clusters: [cluster],
        };
        self.service.call("DescribeClusters", &request).await
    }

    /// DescribeTaskDefinition.
    pub async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<DescribedTaskDefinition, CallError> {
        let request = DescribeTaskDefinition { task_definition };
        self.service.call("DescribeTaskDefinition", &request).await
    }

    /// DescribeContainerInstances of one instance.
    pub async fn describe_container_instance(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Result<DescribedContainerInstances, CallError> {
        let request = DescribeContainerInstances {
            cluster,
            container_instances: [instance],
        };
        self.service
            .call("DescribeContainerInstances", &request)
            .await
    }
}

/// ListTasks of a service's tasks with one desired status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasks<'a> {
    pub cluster: &'a str,
    pub service_name: &'a str,
    pub desired_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<&'a str>,
}

/// A ListTasks page.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskArns {
    #[serde(default)]
    pub task_arns: Vec<String>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasks<'a> {
    pub cluster: &'a str,
    pub tasks: &'a [String],
}

/// DescribeTasks' answer: the tasks found and, for the others, why not.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedTasks {
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub failures: Vec<Failure>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_arn: Option<String>,
    pub last_status: Option<String>,
    #[serde(default)]
    pub enable_execute_command: bool,
    pub launch_type: Option<String>,
    pub platform_version: Option<String>,
    pub container_instance_arn: Option<String>,
    pub task_definition_arn: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: Option<String>,
    pub runtime_id: Option<String>,
    #[serde(default)]
    pub managed_agents: Vec<ManagedAgent>,
}

impl Container {
    /// `lastStatus` of the managed agent called `name` (`UNKNOWN` without one); `None` when the
    /// container has no such agent.
    pub fn agent_status(&self, name: &str) -> Option<String> {
        self.managed_agents
            .iter()
            .find(|agent| agent.name.as_deref() == Some(name))
            .map(|agent| agent.last_status.as_deref().unwrap_or("UNKNOWN").to_owned())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAgent {
    pub name: Option<String>,
    pub last_status: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub arn: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommand<'a> {
    pub cluster: &'a str,
    pub task: &'a str,
    pub container: &'a str,
    pub command: &'a str,
    pub interactive: bool,
}

/// ExecuteCommand's answer. Its `Debug` never shows the token: [`SessionWire`] redacts it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutedCommand {
    pub session: Option<SessionWire>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionWire {
    pub session_id: Option<String>,
    pub stream_url: Option<String>,
    pub token_value: Option<String>,
}

impl std::fmt::Debug for SessionWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWire")
            .field("session_id", &self.session_id)
            .field("stream_url", &self.stream_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeClusters<'a> {
    clusters: [&'a str; 1],
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedClusters {
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub configuration: Option<ClusterConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    pub execute_command_configuration: Option<ExecuteCommandConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommandConfiguration {
    pub kms_key_id: Option<String>,
    pub logging: Option<String>,
    pub log_configuration: Option<ExecuteCommandLogConfiguration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommandLogConfiguration {
    pub cloud_watch_log_group_name: Option<String>,
    #[serde(default)]
    pub cloud_watch_encryption_enabled: bool,
    pub s3_bucket_name: Option<String>,
    #[serde(default)]
    pub s3_encryption_enabled: bool,
    pub s3_key_prefix: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTaskDefinition<'a> {
    task_definition: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedTaskDefinition {
    pub task_definition: Option<TaskDefinition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    #[serde(default)]
    pub container_definitions: Vec<ContainerDefinition>,
    pub pid_mode: Option<String>,
    pub task_role_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: Option<String>,
    pub linux_parameters: Option<LinuxParameters>,
    pub readonly_root_filesystem: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    pub init_process_enabled: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeContainerInstances<'a> {
    cluster: &'a str,
    container_instances: [&'a str; 1],
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedContainerInstances {
    #[serde(default)]
    pub container_instances: Vec<ContainerInstance>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub version_info: Option<VersionInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub agent_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_use_the_wire_names() {
        let list = ListTasks {
            cluster: "prod",
            service_name: "web",
            desired_status: "RUNNING",
            max_results: None,
            next_token: Some("page2"),
        };
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"cluster": "prod", "serviceName": "web", "desiredStatus": "RUNNING", "nextToken": "page2"})
        );
        let exec = ExecuteCommand {
            cluster: "prod",
            task: "arn:t",
            container: "app",
            command: "sh",
            interactive: true,
        };
        assert_eq!(
            serde_json::to_value(&exec).unwrap(),
            json!({"cluster": "prod", "task": "arn:t", "container": "app", "command": "sh", "interactive": true})
        );
        let clusters = DescribeClusters { clusters: ["prod"] };
        assert_eq!(
            serde_json::to_value(&clusters).unwrap(),
            json!({"clusters": ["prod"]})
        );
    }

    #[test]
    fn a_described_task_reads_its_agents_and_ignores_the_rest() {
        let answer: DescribedTasks = serde_json::from_value(json!({
            "tasks": [{
                "taskArn": "arn:aws:ecs:us-east-1:1:task/prod/abc",
                "lastStatus": "RUNNING",
                "enableExecuteCommand": true,
                "launchType": "FARGATE",
                "attachments": [{"id": "x"}],
                "containers": [
                    {"name": "app", "runtimeId": "rt-1", "managedAgents": [
                        {"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]},
                    {"name": "nginx"}
                ]
            }, {}],
            "failures": [{"arn": "arn:x", "reason": "MISSING"}]
        }))
        .unwrap();
        let task = &answer.tasks[0];
        assert_eq!(task.launch_type.as_deref(), Some("FARGATE"));
        assert_eq!(
            task.containers[0]
                .agent_status("ExecuteCommandAgent")
                .as_deref(),
            Some("RUNNING")
        );
        assert_eq!(task.containers[1].agent_status("ExecuteCommandAgent"), None);
        assert!(!answer.tasks[1].enable_execute_command);
        assert_eq!(answer.failures[0].reason.as_deref(), Some("MISSING"));
    }

    #[test]
    fn the_session_token_is_not_in_debug() {
        let answer: ExecutedCommand = serde_json::from_value(json!({
            "session": {"sessionId": "s", "streamUrl": "wss://h", "tokenValue": "SECRET-TOKEN"}
        }))
        .unwrap();
        let debug = format!("{answer:?}");
        assert!(!debug.contains("SECRET-TOKEN"), "{debug}");
        assert_eq!(
            answer.session.unwrap().token_value.as_deref(),
            Some("SECRET-TOKEN")
        );
    }

    #[test]
    fn cluster_configuration_is_read() {
        let answer: DescribedClusters = serde_json::from_value(json!({
            "clusters": [{"clusterName": "secure", "configuration": {"executeCommandConfiguration": {
                "kmsKeyId": "k", "logging": "OVERRIDE",
                "logConfiguration": {"cloudWatchLogGroupName": "/g", "s3EncryptionEnabled": true}}}}]
        }))
        .unwrap();
        let exec = answer.clusters[0]
            .configuration
            .as_ref()
            .and_then(|c| c.execute_command_configuration.as_ref())
            .unwrap();
        assert_eq!(exec.kms_key_id.as_deref(), Some("k"));
        let log = exec.log_configuration.as_ref().unwrap();
        assert_eq!(log.cloud_watch_log_group_name.as_deref(), Some("/g"));
        assert!(log.s3_encryption_enabled && !log.cloud_watch_encryption_enabled);
    }
}
