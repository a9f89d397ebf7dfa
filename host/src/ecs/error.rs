//! `EcsError`: every way the control plane can fail, each with a one-line message that says what
//! failed, why, and what to do, and the exit code it maps to.
//!
//! The mapping from a failed call ([`CallError`]) lives here too ([`from_call`]), so the rest of
//! `ecs` never inspects error codes. AWS error codes and request ids stay in the message; credentials,
//! tokens and signatures never do.

use std::error::Error as StdError;
use std::fmt;

use crate::aws_json::CallError;
use crate::exit::Exit;

/// The ECS API operations `ecs-exec` calls, each with the IAM permission it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `ecs:ListTasks`, to find the tasks of a service.
    ListTasks,
    /// `ecs:DescribeTasks`, to find a running task, its containers and their agents.
    DescribeTasks,
    /// `ecs:ExecuteCommand`, to open the session.
    ExecuteCommand,
}

impl Operation {
    /// The IAM action that allows this operation.
    pub const fn permission(self) -> &'static str {
        match self {
            Operation::ListTasks => "ecs:ListTasks",
            Operation::DescribeTasks => "ecs:DescribeTasks",
            Operation::ExecuteCommand => "ecs:ExecuteCommand",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Operation::ListTasks => "ListTasks",
            Operation::DescribeTasks => "DescribeTasks",
            Operation::ExecuteCommand => "ExecuteCommand",
        };
        f.write_str(name)
    }
}

/// What AWS said about a failed call: error code, message and request id, each when present.
///
/// Displays as `(Code: message; request id R)`, on one line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsErrorInfo {
    /// The AWS error code, e.g. `ClusterNotFoundException`.
    pub code: Option<String>,
    /// The service's message.
    pub message: Option<String>,
    /// The `x-amzn-RequestId` of the failed call, for AWS support.
    pub request_id: Option<String>,
}

impl fmt::Display for AwsErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        f.write_str(self.code.as_deref().unwrap_or("no error code"))?;
        if let Some(message) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {}", one_line(message))?;
        }
        if let Some(request_id) = &self.request_id {
            write!(f, "; request id {}", one_line(request_id))?;
        }
        f.write_str(")")
    }
}

/// Where the default credential chain looks, in order, for the "no credentials" message.
pub const CREDENTIAL_SOURCES: &str = "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), \
    the shared config and credentials files (AWS_PROFILE or --profile, ~/.aws/config, ~/.aws/credentials, SSO), \
    web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), \
    the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI) \
    and EC2 instance metadata";

/// A failure of the control plane. Every variant displays as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EcsError {
    /// No region from `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile or IMDS.
    #[error(
        "no AWS region configured: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION, \
         or region in the profile)"
    )]
    NoRegion,

    /// The credential chain found nothing (or a source failed).
    #[error(
        "no usable AWS credentials for {operation}: looked in {CREDENTIAL_SOURCES}; set one of \
         them (for a Hoop connection: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the \
         container credentials endpoint) [{detail}]"
    )]
    NoCredentials {
        /// The call that needed them.
        operation: Operation,
        /// What the chain reported, one line.
        detail: String,
    },

    /// AWS did not accept the credentials (unknown key, bad signature, expired token).
    #[error(
        "AWS rejected the credentials on {operation} {aws}: check the access key, the secret \
         key, the session token's expiry and the clock"
    )]
    InvalidCredentials {
        /// The rejected call.
        operation: Operation,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// The identity lacks the IAM permission for the call.
    #[error(
        "access denied on {operation} {aws}: the identity needs the IAM permission {} on the \
         cluster's tasks",
        operation.permission()
    )]
    AccessDenied {
        /// The denied call.
        operation: Operation,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// `--cluster` names no cluster in this account and region.
    #[error(
        "cluster {cluster:?} not found in region {region} {aws}: check --cluster (CLUSTER_NAME) \
         and the region"
    )]
    ClusterNotFound {
        /// The cluster as given.
        cluster: String,
        /// The region the call went to.
        region: String,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// `--service-name` names no service in the cluster.
    #[error(
        "service {service:?} not found in cluster {cluster:?} {aws}: check --service-name \
         (SERVICE_NAME)"
    )]
    ServiceNotFound {
        /// The cluster as given.
        cluster: String,
        /// The service as given.
        service: String,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// ListTasks returned no task with desired status RUNNING.
    #[error(
        "service {service:?} in cluster {cluster:?} has no running tasks: check its desired \
         count and deployments, or pass --task"
    )]
    ServiceHasNoTasks {
        /// The cluster as given.
        cluster: String,
        /// The service as given.
        service: String,
    },

    /// `--task` names a task DescribeTasks does not know.
    #[error(
        "task {task:?} not found in cluster {cluster:?} ({reason}): it may have stopped; check \
         --task or use --service-name"
    )]
    TaskNotFound {
        /// The cluster as given.
        cluster: String,
        /// The task as given.
        task: String,
        /// DescribeTasks' failure reason, e.g. `MISSING`.
        reason: String,
    },

    /// Tasks exist but none is RUNNING with a RUNNING ExecuteCommandAgent in the wanted container.
    #[error(
        "no running task with a running ExecuteCommandAgent in cluster {cluster:?} ({summary}): \
         enable ECS Exec (aws ecs update-service --enable-execute-command \
         --force-new-deployment) and wait for the new tasks; it only applies to tasks started \
         after it is set"
    )]
    NoTaskWithAgent {
        /// The cluster as given.
        cluster: String,
        /// A short per-task diagnosis (status, enableExecuteCommand, agent status).
        summary: String,
    },

    /// `--container` names no container of the running tasks.
    #[error(
        "container {container:?} not found in task {task_id} (containers: {}): check \
         --container (CONTAINER)",
        available.join(", ")
    )]
    ContainerNotFound {
        /// The container as given.
        container: String,
        /// The task that was searched.
        task_id: String,
        /// The names the task does have.
        available: Vec<String>,
    },

    /// ExecuteCommand says the agent in the container is not connected to SSM.
    #[error(
        "the ExecuteCommand agent of task {task_id} container {container} is not connected \
         {aws}: usual causes: the task role lacks ssmmessages:CreateControlChannel/\
         CreateDataChannel/OpenControlChannel/OpenDataChannel, no network route from the task \
         to the ssmmessages endpoint (NAT or VPC endpoint), or the agent is still starting \
         (wait and retry)"
    )]
    TargetNotConnected {
        /// The task id.
        task_id: String,
        /// The container name.
        container: String,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// ExecuteCommand says execute command is not enabled on this task.
    #[error(
        "ExecuteCommand refused for task {task_id} {aws}: enable ECS Exec on the service \
         (--enable-execute-command) and start new tasks (--force-new-deployment)"
    )]
    ExecuteCommandNotEnabled {
        /// The task id.
        task_id: String,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// Still throttled after the retries of the standard retry mode.
    #[error("{operation} was throttled by AWS after retries {aws}: wait a moment and try again")]
    Throttled {
        /// The throttled call.
        operation: Operation,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// No answer within the configured timeouts.
    #[error("{operation} timed out: {detail}; check the network path to the ECS endpoint")]
    Timeout {
        /// The call that timed out.
        operation: Operation,
        /// What timed out, one line.
        detail: String,
    },

    /// The endpoint could not be reached (DNS, connection refused, TLS).
    #[error(
        "cannot reach the ECS endpoint for {operation}: {detail}; check the network, the region \
         and --endpoint-url / AWS_ENDPOINT_URL_ECS"
    )]
    Unreachable {
        /// The call that failed.
        operation: Operation,
        /// What went wrong, one line.
        detail: String,
    },

    /// A 5xx from AWS after retries.
    #[error("{operation} failed on the AWS side {aws}: try again later")]
    ServerError {
        /// The failed call.
        operation: Operation,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// Any other error response from AWS (e.g. InvalidParameterException).
    #[error("{operation} was rejected {aws}")]
    Rejected {
        /// The rejected call.
        operation: Operation,
        /// AWS's code, message and request id.
        aws: AwsErrorInfo,
    },

    /// The response could not be understood, or lacked a required field.
    #[error("malformed {operation} response: {detail}")]
    MalformedResponse {
        /// The call whose response was malformed.
        operation: Operation,
        /// What was wrong, one line.
        detail: String,
    },

    /// The request could not be built or signed (a bug, or an unusable endpoint URL).
    #[error("could not build the {operation} request: {detail}")]
    Internal {
        /// The call.
        operation: Operation,
        /// What failed, one line.
        detail: String,
    },
}

impl EcsError {
    /// The process exit code this failure maps to.
    pub fn exit(&self) -> Exit {
        match self {
            EcsError::NoRegion
            | EcsError::ClusterNotFound { .. }
            | EcsError::ServiceNotFound { .. }
            | EcsError::ContainerNotFound { .. } => Exit::Config,
            EcsError::NoCredentials { .. }
            | EcsError::InvalidCredentials { .. }
            | EcsError::AccessDenied { .. } => Exit::NoPerm,
            EcsError::ServiceHasNoTasks { .. }
            | EcsError::TaskNotFound { .. }
            | EcsError::NoTaskWithAgent { .. }
            | EcsError::TargetNotConnected { .. }
            | EcsError::ExecuteCommandNotEnabled { .. } => Exit::Unavailable,
            EcsError::Throttled { .. }
            | EcsError::Timeout { .. }
            | EcsError::Unreachable { .. }
            | EcsError::ServerError { .. } => Exit::TempFail,
            EcsError::MalformedResponse { .. } => Exit::Protocol,
            EcsError::Rejected { .. } | EcsError::Internal { .. } => Exit::Software,
        }
    }
}

/// The names of the things an operation was about, for the messages of not-found errors.
#[derive(Clone, Debug, Default)]
pub struct CallContext<'a> {
    /// The cluster as given.
    pub cluster: &'a str,
    /// The region the client is configured for.
    pub region: &'a str,
    /// The service, for ListTasks.
    pub service: Option<&'a str>,
    /// The task id, for ExecuteCommand.
    pub task_id: Option<&'a str>,
    /// The container, for ExecuteCommand.
    pub container: Option<&'a str>,
}

/// Maps a failed call of `operation` (after its retries) to the matching [`EcsError`].
pub fn from_call(operation: Operation, context: &CallContext<'_>, err: CallError) -> EcsError {
    match err {
        CallError::Credentials(detail) => EcsError::NoCredentials { operation, detail },
        CallError::Service { status, aws } => {
            let error = from_service_code(operation, context, aws);
            match error {
                // A 5xx without a code we know is still the AWS side's failure.
                EcsError::Rejected { operation, aws } if status >= 500 => {
                    EcsError::ServerError { operation, aws }
                }
                other => other,
            }
        }
        CallError::Timeout(detail) => EcsError::Timeout {
            operation,
            detail: one_line(&detail),
        },
        CallError::Unreachable(detail) => EcsError::Unreachable {
            operation,
            detail: one_line(&detail),
        },
        CallError::Malformed(detail) => EcsError::MalformedResponse {
            operation,
            detail: one_line(&detail),
        },
        CallError::Signing(detail) => EcsError::Internal {
            operation,
            detail: one_line(&detail),
        },
    }
}

/// Maps an AWS error code to a variant. Pure, so each code is unit-tested.
pub fn from_service_code(
    operation: Operation,
    context: &CallContext<'_>,
    aws: AwsErrorInfo,
) -> EcsError {
    let code = aws.code.as_deref().unwrap_or_default();
    let task_id = context.task_id.unwrap_or_default().to_owned();
    match code {
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
            EcsError::AccessDenied { operation, aws }
        }
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => EcsError::InvalidCredentials { operation, aws },
        "ClusterNotFoundException" => EcsError::ClusterNotFound {
            cluster: context.cluster.to_owned(),
            region: context.region.to_owned(),
            aws,
        },
        "ServiceNotFoundException" => EcsError::ServiceNotFound {
            cluster: context.cluster.to_owned(),
            service: context.service.unwrap_or_default().to_owned(),
            aws,
        },
        "TargetNotConnectedException" => EcsError::TargetNotConnected {
            task_id,
            container: context.container.unwrap_or_default().to_owned(),
            aws,
        },
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => EcsError::Throttled { operation, aws },
        "ServerException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => EcsError::ServerError { operation, aws },
        "InvalidParameterException"
            if operation == Operation::ExecuteCommand
                && aws
                    .message
                    .as_deref()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("execute command")) =>
        {
            EcsError::ExecuteCommandNotEnabled { task_id, aws }
        }
        _ => EcsError::Rejected { operation, aws },
    }
}

/// An error and its sources joined with `: ` on one line (what `DisplayErrorContext` does,
/// without the `Debug` dump it appends). A source already quoted by its parent is skipped.
pub(crate) fn display_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        let part = current.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = current.source();
    }
    one_line(&text)
}

/// Collapses line breaks so that every message stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(code: &str, message: &str) -> AwsErrorInfo {
        AwsErrorInfo {
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
            request_id: Some("req-123".to_owned()),
        }
    }

    fn context() -> CallContext<'static> {
        CallContext {
            cluster: "prod",
            region: "eu-west-1",
            service: Some("web"),
            task_id: Some("abc"),
            container: Some("app"),
        }
    }

    #[test]
    fn access_denied_names_the_permission_and_keeps_code_and_request_id() {
        let err = from_service_code(
            Operation::DescribeTasks,
            &context(),
            info("AccessDeniedException", "User: x is not authorized"),
        );
        assert_eq!(err.exit(), Exit::NoPerm);
        let text = err.to_string();
        assert!(text.contains("ecs:DescribeTasks"), "{text}");
        assert!(text.contains("AccessDeniedException"), "{text}");
        assert!(text.contains("req-123"), "{text}");
    }

    #[test]
    fn each_operation_names_its_own_permission() {
        for (op, perm) in [
            (Operation::ListTasks, "ecs:ListTasks"),
            (Operation::DescribeTasks, "ecs:DescribeTasks"),
            (Operation::ExecuteCommand, "ecs:ExecuteCommand"),
        ] {
            let err = from_service_code(op, &context(), info("AccessDeniedException", "no"));
            assert!(err.to_string().contains(perm));
        }
    }

    #[test]
    fn cluster_and_service_not_found_are_config_errors() {
        let cluster = from_service_code(
            Operation::ListTasks,
            &context(),
            info("ClusterNotFoundException", "Cluster not found."),
        );
        assert!(matches!(cluster, EcsError::ClusterNotFound { .. }));
        assert_eq!(cluster.exit(), Exit::Config);
        assert!(cluster.to_string().contains("\"prod\""));
        assert!(cluster.to_string().contains("eu-west-1"));
        let service = from_service_code(
            Operation::ListTasks,
            &context(),
            info("ServiceNotFoundException", "Service not found."),
        );
        assert!(matches!(service, EcsError::ServiceNotFound { .. }));
        assert!(service.to_string().contains("\"web\""));
    }

    #[test]
    fn target_not_connected_hints_at_causes() {
        let err = from_service_code(
            Operation::ExecuteCommand,
            &context(),
            info(
                "TargetNotConnectedException",
                "The execution target is not connected",
            ),
        );
        assert_eq!(err.exit(), Exit::Unavailable);
        let text = err.to_string();
        assert!(text.contains("ssmmessages"), "{text}");
        assert!(text.contains("abc"), "{text}");
    }

    #[test]
    fn execute_command_not_enabled_is_recognised() {
        let err = from_service_code(
            Operation::ExecuteCommand,
            &context(),
            info(
                "InvalidParameterException",
                "The execute command failed because execute command was not enabled when the task was run",
            ),
        );
        assert!(
            matches!(err, EcsError::ExecuteCommandNotEnabled { .. }),
            "{err}"
        );
        let other = from_service_code(
            Operation::ListTasks,
            &context(),
            info("InvalidParameterException", "bad"),
        );
        assert!(matches!(other, EcsError::Rejected { .. }));
        assert_eq!(other.exit(), Exit::Software);
    }

    #[test]
    fn throttling_server_and_credential_codes() {
        let throttled = from_service_code(
            Operation::ListTasks,
            &context(),
            info("ThrottlingException", "Rate exceeded"),
        );
        assert_eq!(throttled.exit(), Exit::TempFail);
        let server = from_service_code(
            Operation::ListTasks,
            &context(),
            info("ServerException", "oops"),
        );
        assert_eq!(server.exit(), Exit::TempFail);
        let creds = from_service_code(
            Operation::ListTasks,
            &context(),
            info(
                "UnrecognizedClientException",
                "The security token included in the request is invalid",
            ),
        );
        assert_eq!(creds.exit(), Exit::NoPerm);
    }

    #[test]
    fn failed_calls_map_to_their_variants() {
        let call = |error| from_call(Operation::ListTasks, &context(), error);
        let no_credentials = call(CallError::Credentials("no providers in chain".into()));
        assert!(matches!(no_credentials, EcsError::NoCredentials { .. }));
        assert_eq!(no_credentials.exit(), Exit::NoPerm);
        let refused = call(CallError::Unreachable("connection refused".into()));
        assert!(matches!(refused, EcsError::Unreachable { .. }));
        assert_eq!(refused.exit(), Exit::TempFail);
        let slow = call(CallError::Timeout("no response".into()));
        assert!(matches!(slow, EcsError::Timeout { .. }));
        let garbled = call(CallError::Malformed("not JSON".into()));
        assert_eq!(garbled.exit(), Exit::Protocol);
        let bad_gateway = call(CallError::Service {
            status: 502,
            aws: AwsErrorInfo::default(),
        });
        assert!(matches!(bad_gateway, EcsError::ServerError { .. }));
        let cluster = call(CallError::Service {
            status: 400,
            aws: info("ClusterNotFoundException", "Cluster not found."),
        });
        assert!(matches!(cluster, EcsError::ClusterNotFound { .. }));
        assert!(
            cluster.to_string().contains("request id req-123"),
            "{cluster}"
        );
    }

    #[test]
    fn display_chain_joins_sources_once_without_debug() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner\nfailure")]
        struct Inner;
        assert_eq!(display_chain(&Outer(Inner)), "outer: inner failure");
    }

    #[test]
    fn messages_stay_on_one_line() {
        let err = from_service_code(
            Operation::ListTasks,
            &context(),
            info("Weird", "line one\nline two\r\n"),
        );
        assert!(!err.to_string().contains('\n'));
        assert!(err.to_string().contains("line one line two"));
    }
}
