//! The ECS control plane: one `SdkConfig`, target resolution and `ExecuteCommand`.
//!
//! [`load_sdk_config`] runs aws-config's default chains once (region, profile, credentials,
//! endpoint) with deliberate retries and timeouts; [`EcsApi`] turns a cluster plus a service or a
//! task into a [`Target`] (ListTasks pages → DescribeTasks batches → [`select_target`]) and opens
//! a [`Session`]. The calls go on the wire through [`api`] (signed JSON, no SDK crate), with the
//! `SdkConfig`'s retries and timeouts. Failures are typed [`EcsError`]s with their exit code. This module never prints,
//! never touches the data channel, and never logs the session token or credentials.

pub mod api;
mod error;
mod select;

use std::fmt;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};

use crate::aws_json::{self, JsonService};
use api::EcsCalls;
pub use error::{AwsErrorInfo, CREDENTIAL_SOURCES, CallContext, EcsError, Operation, from_call};
pub(crate) use error::{display_chain, one_line};
pub use select::{
    ContainerView, EXECUTE_COMMAND_AGENT, RUNNING, TaskView, select_target, task_id_of,
};

/// DescribeTasks accepts at most this many tasks per call.
pub const DESCRIBE_TASKS_BATCH: usize = 100;

/// Attempts per API call (first try plus retries) in the standard retry mode, which retries
/// throttling, transient and 5xx errors with jittered exponential backoff.
pub const MAX_ATTEMPTS: u32 = 4;
/// First retry backoff; it doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Ceiling of one retry backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// TCP + TLS connect timeout per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one attempt, from sending to the whole response.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of a whole call including retries: the API path cannot hang longer than this.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The AWS settings from the command line; `None` leaves the choice to aws-config's chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// `--region`; otherwise `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile, then IMDS.
    pub region: Option<String>,
    /// `--profile`; otherwise `AWS_PROFILE`, then `default`.
    pub profile: Option<String>,
    /// `--endpoint-url`; otherwise `AWS_ENDPOINT_URL_ECS`, `AWS_ENDPOINT_URL`, the profile.
    pub endpoint_url: Option<String>,
}

/// The retry policy: standard mode (throttling and transient errors retried).
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The timeouts of API calls (credential providers have their own, shorter ones).
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The aws-config loader with our settings applied, not yet loaded.
///
/// Exposed so tests can add `.empty_test_environment()` or `.test_credentials()`.
/// An explicit `--endpoint-url` is set on the loader, where it wins over `AWS_ENDPOINT_URL_ECS`;
/// the environment and profile endpoints are read when the client is built
/// ([`aws_json::configured_endpoint`]).
pub fn config_loader(settings: &AwsSettings) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint_url) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    loader
}

/// Loads the one `SdkConfig` the process uses: environment keys, profiles, SSO, web identity,
/// the container credentials endpoint and IMDS all come from aws-config's default chain.
///
/// Credentials are resolved lazily on the first call, so with keys in the environment no
/// other source (and no IMDS) is ever probed.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    config_loader(settings).load().await
}

/// How the task is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskSelector {
    /// `--task`: a task id or ARN, used as given.
    Task(String),
    /// `--service-name`: a RUNNING task of this service with a running ExecuteCommandAgent.
    Service(String),
}

/// The tasks a fan-out runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FanoutTasks {
    /// `--all-tasks`: every RUNNING task of this service whose ExecuteCommand agent runs.
    Service(String),
    /// `--tasks ID,ID`: these tasks (ids or ARNs), in this order.
    Tasks(Vec<String>),
}

/// Where a session runs: the resolved task and container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The cluster, as the user gave it (name or ARN).
    pub cluster_name: String,
    /// The task id (last part of the ARN).
    pub task_id: String,
    /// The full task ARN.
    pub task_arn: String,
    /// The container the command runs in.
    pub container_name: String,
    /// The container runtime id, when DescribeTasks reported one.
    pub runtime_id: Option<String>,
}

/// The session token of the data channel. It is a secret: `Debug` redacts it, there is no
/// `Display`, and [`ChannelToken::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelToken(String);

impl ChannelToken {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        ChannelToken(value.into())
    }

    /// The token, for the data channel's open message only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelToken(<redacted>)")
    }
}

/// What ExecuteCommand returns: where and how to open the data channel.
#[derive(Clone, Debug)]
pub struct Session {
    /// The SSM session id.
    pub session_id: String,
    /// The websocket URL of the data channel.
    pub stream_url: String,
    /// The token for the channel's open message (redacted in `Debug`).
    pub token: ChannelToken,
}

/// The ECS API client, built from one `SdkConfig`.
#[derive(Clone, Debug)]
pub struct EcsApi {
    calls: EcsCalls,
    region: String,
}

impl EcsApi {
    /// Builds the client. Fails when no region could be found anywhere, or without a
    /// credentials provider (which aws-config's default chain always sets).
    pub fn new(config: &SdkConfig) -> Result<EcsApi, EcsError> {
        let region = config.region().ok_or(EcsError::NoRegion)?.to_string();
        let endpoint = aws_json::configured_endpoint(config, aws_json::ECS, &region);
        let service =
            JsonService::new(config, aws_json::ECS, &region, endpoint).ok_or_else(|| {
                EcsError::NoCredentials {
                    operation: Operation::ListTasks,
                    detail: "no credentials provider in the configuration".to_owned(),
                }
            })?;
        Ok(EcsApi {
            calls: EcsCalls::new(service),
            region,
        })
    }

    /// The region the client calls.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Where the calls go.
    pub fn endpoint(&self) -> &str {
        self.calls.endpoint()
    }

    /// The wire calls, for those this type does not wrap (`ecs-exec doctor`).
    pub fn calls(&self) -> &EcsCalls {
        &self.calls
    }

    /// Finds the task and container to run in.
    ///
    /// `--task` is used as given (one DescribeTasks); otherwise all pages of ListTasks for the
    /// service (desired status RUNNING) are described in batches of 100 until a task fits.
    pub async fn resolve_target(
        &self,
        cluster: &str,
        selector: &TaskSelector,
        container: Option<&str>,
    ) -> Result<Target, EcsError> {
        let task_arns = match selector {
            TaskSelector::Task(task) => vec![task.clone()],
            TaskSelector::Service(service) => {
                let arns = self.list_service_tasks(cluster, service).await?;
                if arns.is_empty() {
                    return Err(EcsError::ServiceHasNoTasks {
                        cluster: cluster.to_owned(),
                        service: service.clone(),
                    });
                }
                arns
            }
        };
        let mut described: Vec<TaskView> = Vec::new();
        for batch in task_arns.chunks(DESCRIBE_TASKS_BATCH) {
            let single_task = match selector {
                TaskSelector::Task(task) => Some(task.as_str()),
                TaskSelector::Service(_) => None,
            };
            let views = self.describe_tasks(cluster, batch, single_task).await?;
            if let Ok(target) = select_target(cluster, &views, container) {
                tracing::debug!(?target, "target resolved");
                return Ok(target);
            }
            described.extend(views);
        }
        select_target(cluster, &described, container)
    }

    /// Finds every target of a fan-out (`--all-tasks`, `--tasks`), one result per task.
    ///
    /// With a service: every RUNNING task whose ExecuteCommand agent runs (in `container`, or
    /// in its first container with one); tasks that fit nothing are left out, and when none fits
    /// the error is the one a single run would give. With task ids: one entry per id, in the
    /// order given, each the task's target or why it cannot be used, so that one task that is
    /// gone or not ready does not stop the others.
    pub async fn resolve_targets(
        &self,
        cluster: &str,
        tasks: &FanoutTasks,
        container: Option<&str>,
    ) -> Result<Vec<(String, Result<Target, EcsError>)>, EcsError> {
        match tasks {
            FanoutTasks::Service(service) => {
                let arns = self.list_service_tasks(cluster, service).await?;
                if arns.is_empty() {
                    return Err(EcsError::ServiceHasNoTasks {
                        cluster: cluster.to_owned(),
                        service: service.clone(),
                    });
                }
                let mut described = Vec::with_capacity(arns.len());
                for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
                    described.extend(self.describe_tasks(cluster, batch, None).await?);
                }
                let targets: Vec<_> = described
                    .iter()
                    .filter_map(|view| {
                        select_target(cluster, std::slice::from_ref(view), container)
                            .ok()
                            .map(|target| (target.task_id.clone(), Ok(target)))
                    })
                    .collect();
                if targets.is_empty() {
                    // No task fits: the single-run error says why, task by task.
                    return Err(select_target(cluster, &described, container)
                        .err()
                        .unwrap_or(EcsError::ServiceHasNoTasks {
                            cluster: cluster.to_owned(),
                            service: service.clone(),
                        }));
                }
                Ok(targets)
            }
            FanoutTasks::Tasks(ids) => {
                let mut resolved = Vec::with_capacity(ids.len());
                for batch in ids.chunks(DESCRIBE_TASKS_BATCH) {
                    let views = self.describe_tasks(cluster, batch, None).await?;
                    for id in batch {
                        let wanted = select::task_id_of(id);
                        let result = match views.iter().find(|view| view.task_id() == wanted) {
                            Some(view) => {
                                select_target(cluster, std::slice::from_ref(view), container)
                            }
                            None => Err(EcsError::TaskNotFound {
                                cluster: cluster.to_owned(),
                                task: id.clone(),
                                reason: "not returned by DescribeTasks".to_owned(),
                            }),
                        };
                        resolved.push((wanted.to_owned(), result));
                    }
                }
                Ok(resolved)
            }
        }
    }

    /// ExecuteCommand on the target: returns the data channel's URL and token.
    pub async fn execute_command(
        &self,
        target: &Target,
        command: &str,
        interactive: bool,
    ) -> Result<Session, EcsError> {
        let operation = Operation::ExecuteCommand;
        let context = CallContext {
            cluster: &target.cluster_name,
            region: &self.region,
            service: None,
            task_id: Some(&target.task_id),
            container: Some(&target.container_name),
        };
        tracing::debug!(task = %target.task_id, container = %target.container_name, interactive, "ExecuteCommand");
        let request = api::ExecuteCommand {
            cluster: &target.cluster_name,
            task: &target.task_arn,
            container: &target.container_name,
            command,
            interactive,
        };
        let output = self
            .calls
            .execute_command(&request)
            .await
            .map_err(|err| from_call(operation, &context, err))?;
        let session = output
            .session
            .ok_or_else(|| missing(operation, "session"))?;
        let session = Session {
            session_id: session
                .session_id
                .ok_or_else(|| missing(operation, "session.sessionId"))?,
            stream_url: session
                .stream_url
                .ok_or_else(|| missing(operation, "session.streamUrl"))?,
            token: ChannelToken::new(
                session
                    .token_value
                    .ok_or_else(|| missing(operation, "session.tokenValue"))?,
            ),
        };
        tracing::debug!(session_id = %session.session_id, "session opened");
        Ok(session)
    }

    /// All task ARNs of the service with desired status RUNNING, over every page.
    async fn list_service_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<String>, EcsError> {
        let context = CallContext {
            cluster,
            region: &self.region,
            service: Some(service),
            ..CallContext::default()
        };
        let mut arns = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = api::ListTasks {
                cluster,
                service_name: service,
                desired_status: RUNNING,
                max_results: None,
                next_token: next_token.as_deref(),
            };
            let page = self
                .calls
                .list_tasks(&request)
                .await
                .map_err(|err| from_call(Operation::ListTasks, &context, err))?;
            arns.extend(page.task_arns);
            // An empty token ends the pages too (the SDK's paginator stops on it as well).
            match page.next_token.filter(|token| !token.is_empty()) {
                Some(token) if Some(&token) != next_token.as_ref() => next_token = Some(token),
                _ => break,
            }
        }
        tracing::debug!(cluster, service, tasks = arns.len(), "ListTasks");
        Ok(arns)
    }

    /// DescribeTasks for one batch. With `single_task` (`--task`), a task that DescribeTasks
    /// reports as a failure is [`EcsError::TaskNotFound`].
    async fn describe_tasks(
        &self,
        cluster: &str,
        batch: &[String],
        single_task: Option<&str>,
    ) -> Result<Vec<TaskView>, EcsError> {
        let context = CallContext {
            cluster,
            region: &self.region,
            ..CallContext::default()
        };
        let request = api::DescribeTasks {
            cluster,
            tasks: batch,
        };
        let output = self
            .calls
            .describe_tasks(&request)
            .await
            .map_err(|err| from_call(Operation::DescribeTasks, &context, err))?;
        let views: Vec<TaskView> = output
            .tasks
            .iter()
            .filter_map(TaskView::from_wire)
            .collect();
        tracing::debug!(
            cluster,
            asked = batch.len(),
            described = views.len(),
            failures = output.failures.len(),
            "DescribeTasks"
        );
        if let Some(task) = single_task
            && views.is_empty()
        {
            let reason = output
                .failures
                .first()
                .and_then(|failure| failure.reason.as_deref())
                .unwrap_or("not returned by DescribeTasks");
            return Err(EcsError::TaskNotFound {
                cluster: cluster.to_owned(),
                task: task.to_owned(),
                reason: error::one_line(reason),
            });
        }
        Ok(views)
    }
}

fn missing(operation: Operation, field: &str) -> EcsError {
    EcsError::MalformedResponse {
        operation,
        detail: format!("no {field} in the response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_token_is_redacted_in_debug() {
        let session = Session {
            session_id: "sid".to_owned(),
            stream_url: "wss://example".to_owned(),
            token: ChannelToken::new("SECRET-TOKEN-VALUE"),
        };
        let debug = format!("{session:?}");
        assert!(!debug.contains("SECRET-TOKEN-VALUE"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(session.token.expose(), "SECRET-TOKEN-VALUE");
    }

    #[test]
    fn retry_and_timeouts_are_bounded() {
        let retry = retry_config();
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        let timeouts = timeout_config();
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
    }

    #[test]
    fn no_region_is_a_config_error() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let err = EcsApi::new(&config).unwrap_err();
        assert!(matches!(err, EcsError::NoRegion));
        assert_eq!(err.exit(), crate::exit::Exit::Config);
    }

    #[tokio::test]
    async fn explicit_settings_reach_the_config() {
        let settings = AwsSettings {
            region: Some("eu-central-1".to_owned()),
            profile: None,
            endpoint_url: Some("http://127.0.0.1:9".to_owned()),
        };
        let config = config_loader(&settings)
            .empty_test_environment()
            .test_credentials()
            .load()
            .await;
        assert_eq!(
            config.region().map(|r| r.to_string()).as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:9"));
        let api = EcsApi::new(&config).unwrap();
        assert_eq!(api.region(), "eu-central-1");
        assert_eq!(api.endpoint(), "http://127.0.0.1:9/");
    }

    #[tokio::test]
    async fn without_an_endpoint_the_regional_one_is_called() {
        let settings = AwsSettings {
            region: Some("cn-north-1".to_owned()),
            ..AwsSettings::default()
        };
        let config = config_loader(&settings)
            .empty_test_environment()
            .test_credentials()
            .load()
            .await;
        let api = EcsApi::new(&config).unwrap();
        assert_eq!(api.endpoint(), "https://ecs.cn-north-1.amazonaws.com.cn/");
    }
}
