//! The thin part of `ecs-exec doctor`: the AWS calls that fill [`Facts`] (STS and IAM through
//! [`super::query`], the session log destinations through [`super::log_destinations`]). Each
//! call's failure becomes a fact (denied, failed) rather than an error, so one missing
//! permission or resource never stops the other checks. Nothing here decides a verdict ([`super::checks`] does) or
//! prints, and no credential or session token is kept or logged.

use std::time::Instant;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;

use super::checks::{
    BucketFacts, ClusterFacts, Facts, Fetched, KeyFacts, Probe, TASK_ROLE_ACTIONS,
    TaskDefinitionFacts, TaskFacts, simulation_principal,
};
use super::log_destinations::LogDestinationsApi;
use super::query::{QueryApi, QueryError};
use crate::aws_json::CallError;
use crate::ecs::api::{self, EcsCalls};
use crate::ecs::{AwsSettings, EXECUTE_COMMAND_AGENT, EcsApi, RUNNING};
use crate::kms::KmsApi;
use crate::ssm::SsmApi;

/// What the doctor looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoctorTarget {
    pub cluster: String,
    pub service: Option<String>,
    pub task: Option<String>,
    pub container: Option<String>,
}

/// The command the probe asks ExecuteCommand for; its session is ended unopened.
const PROBE_COMMAND: &str = "true";

/// A failed call as a fact: AccessDenied names the permission, anything else is one line.
fn call_failure<T>(permission: &str, error: &CallError) -> Fetched<T> {
    match error.code() {
        Some("AccessDeniedException" | "AccessDenied") => Fetched::Denied(permission.to_owned()),
        _ => Fetched::Failed(failure_text(error)),
    }
}

/// `Code: message` for an AWS error, else the failure on one line.
fn failure_text(error: &CallError) -> String {
    match error {
        CallError::Service { aws, .. } if aws.code.is_some() => format!(
            "{}: {}",
            aws.code.as_deref().unwrap_or_default(),
            crate::ecs::one_line(aws.message.as_deref().unwrap_or_default())
        ),
        other => crate::ecs::one_line(&other.to_string()),
    }
}

/// aws-config does not expose where credentials came from except in their `Debug` text, which
/// redacts the secret; only the `provider_name: "…"` field is read from it.
fn provider_name(credentials: &aws_credential_types::Credentials) -> Option<String> {
    let text = format!("{credentials:?}");
    let start = text.find("provider_name: \"")? + "provider_name: \"".len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_owned())
}

/// Makes every call and returns what it learnt.
pub async fn gather(config: &SdkConfig, target: &DoctorTarget) -> Facts {
    let region = config
        .region()
        .map_or_else(|| "(none)".to_owned(), ToString::to_string);
    let mut facts = Facts {
        region,
        cluster_name: target.cluster.clone(),
        container: target.container.clone(),
        credentials_source: None,
        identity: Fetched::NotAsked,
        cluster: Fetched::NotAsked,
        key: Fetched::NotAsked,
        log_group: Fetched::NotAsked,
        log_bucket: Fetched::NotAsked,
        task: Fetched::NotAsked,
        agent_version: Fetched::NotAsked,
        task_definition: Fetched::NotAsked,
        caller_iam: Fetched::NotAsked,
        task_role_iam: Fetched::NotAsked,
        probe: Probe::NotAsked,
    };
    let Some(query) = QueryApi::new(config) else {
        facts.identity = Fetched::Failed("no region or no credentials provider".to_owned());
        return facts;
    };
    match query.http().credentials().provide_credentials().await {
        Ok(credentials) => {
            facts.credentials_source = provider_name(&credentials);
            facts.identity = match query.get_caller_identity().await {
                Ok(identity) => Fetched::Got(identity),
                Err(error) if error.is_access_denied() => {
                    Fetched::Denied("sts:GetCallerIdentity".to_owned())
                }
                Err(error) => Fetched::Failed(error.to_string()),
            };
        }
        Err(error) => {
            facts.identity = Fetched::Failed(crate::ecs::display_chain(&error));
            return facts;
        }
    }
    let ecs = match EcsApi::new(config) {
        Ok(api) => api,
        Err(error) => {
            facts.cluster = Fetched::Failed(error.to_string());
            return facts;
        }
    };
    let ecs = ecs.calls();
    facts.cluster = describe_cluster(ecs, &target.cluster).await;
    let key_id = match &facts.cluster {
        Fetched::Got(cluster) => cluster.kms_key_id.clone(),
        _ => None,
    };
    let mut key_arn = key_id.clone();
    if let Some(key_id) = &key_id {
        let kms = KmsApi::new(config, &AwsSettings::default());
        facts.key = match kms.describe_key(key_id).await {
            Ok(output) => match output.key_metadata {
                Some(metadata) => {
                    key_arn = metadata.arn.or(key_arn);
                    Fetched::Got(KeyFacts {
                        enabled: metadata.enabled,
                        state: metadata.key_state.unwrap_or_else(|| "unknown".to_owned()),
                    })
                }
                None => Fetched::Failed("DescribeKey returned no KeyMetadata".to_owned()),
            },
            Err(error) => call_failure("kms:DescribeKey", &error),
        };
    }
    if let Fetched::Got(cluster) = &facts.cluster
        && let Some(destinations) = LogDestinationsApi::new(config, query.http().clone())
    {
        if let Some(group) = cluster.session_log_group() {
            facts.log_group = destination_fact(
                "logs:DescribeLogGroups",
                destinations.log_group(group).await,
            );
        }
        if let Some(bucket) = cluster.session_log_bucket() {
            facts.log_bucket = destination_fact(
                "s3:GetEncryptionConfiguration",
                destinations.bucket(bucket).await,
            );
        }
    }
    facts.task = describe_task(ecs, target).await;
    let Fetched::Got(task) = &facts.task else {
        return facts;
    };
    let task = task.clone();
    if let Some(instance) = &task.container_instance_arn {
        facts.agent_version = match ecs
            .describe_container_instance(&target.cluster, instance)
            .await
        {
            Ok(output) => output
                .container_instances
                .into_iter()
                .next()
                .and_then(|i| i.version_info)
                .and_then(|v| v.agent_version)
                .map_or_else(
                    || Fetched::Failed(format!("no agent version for {instance}")),
                    Fetched::Got,
                ),
            Err(error) => call_failure("ecs:DescribeContainerInstances", &error),
        };
    }
    if let Some(definition) = &task.task_definition_arn {
        facts.task_definition = describe_task_definition(ecs, definition).await;
    }
    let task_arn = format!(
        "arn:aws:ecs:{}:{}:task/{}/{}",
        facts.region,
        match &facts.identity {
            Fetched::Got(identity) => identity.account.as_str(),
            _ => "*",
        },
        target.cluster.rsplit('/').next().unwrap_or(&target.cluster),
        task.task_id
    );
    if let Fetched::Got(identity) = &facts.identity {
        let mut actions = vec![("ecs:ExecuteCommand", task_arn.as_str())];
        if let Some(key) = &key_arn {
            actions.push(("kms:GenerateDataKey", key.as_str()));
        }
        facts.caller_iam = simulate(&query, &simulation_principal(&identity.arn), &actions).await;
    }
    if let Fetched::Got(TaskDefinitionFacts {
        task_role_arn: Some(role),
        ..
    }) = &facts.task_definition
    {
        let mut actions: Vec<(&str, &str)> = TASK_ROLE_ACTIONS
            .iter()
            .map(|action| (*action, "*"))
            .collect();
        if let Some(key) = &key_arn {
            actions.push(("kms:Decrypt", key.as_str()));
        }
        let logging = match &facts.cluster {
            Fetched::Got(cluster) => logging_actions(&facts.region, cluster, &facts.log_bucket),
            _ => Vec::new(),
        };
        actions.extend(logging.iter().map(|(a, r)| (*a, r.as_str())));
        facts.task_role_iam = simulate(&query, role, &actions).await;
    }
    if task.last_status == RUNNING {
        facts.probe = probe(config, ecs, target, &task).await;
    }
    facts
}

/// A log destination call's result as a fact: AccessDenied names the caller's missing
/// permission.
fn destination_fact<T>(permission: &str, result: Result<T, QueryError>) -> Fetched<T> {
    match result {
        Ok(fact) => Fetched::Got(fact),
        Err(error) if error.is_access_denied() => Fetched::Denied(permission.to_owned()),
        Err(error) => Fetched::Failed(format!("{permission}: {error}")),
    }
}

/// What the task role needs to write session logs where the cluster sends them (OVERRIDE): the
/// group's logs actions; `s3:PutObject` under the key prefix, `s3:GetEncryptionConfiguration`,
/// and `kms:GenerateDataKey` on the bucket's key when it encrypts with SSE-KMS (the agent then
/// uploads with that key).
fn logging_actions(
    region: &str,
    cluster: &ClusterFacts,
    bucket: &Fetched<BucketFacts>,
) -> Vec<(&'static str, String)> {
    let mut actions = Vec::new();
    if let Some(group) = cluster.session_log_group() {
        let arn = format!("arn:aws:logs:{region}:*:log-group:{group}:*");
        actions.push(("logs:DescribeLogGroups", "*".to_owned()));
        for action in [
            "logs:CreateLogStream",
            "logs:DescribeLogStreams",
            "logs:PutLogEvents",
        ] {
            actions.push((action, arn.clone()));
        }
    }
    if let Some(name) = cluster.session_log_bucket() {
        let prefix = cluster.s3_key_prefix.as_deref().unwrap_or_default();
        actions.push(("s3:PutObject", format!("arn:aws:s3:::{name}/{prefix}*")));
        actions.push((
            "s3:GetEncryptionConfiguration",
            format!("arn:aws:s3:::{name}"),
        ));
        if let Fetched::Got(BucketFacts::Encrypted {
            algorithm,
            kms_key_id: Some(key),
        }) = bucket
            && algorithm == "aws:kms"
            && key.starts_with("arn:")
        {
            actions.push(("kms:GenerateDataKey", key.clone()));
        }
    }
    actions
}

async fn simulate(
    query: &QueryApi,
    principal: &str,
    actions: &[(&str, &str)],
) -> Fetched<super::checks::Decisions> {
    match query.simulate(principal, actions).await {
        Ok(decisions) => Fetched::Got(decisions),
        Err(error) if error.is_access_denied() => {
            Fetched::Denied("iam:SimulatePrincipalPolicy".to_owned())
        }
        Err(error) => Fetched::Failed(format!("iam:SimulatePrincipalPolicy: {error}")),
    }
}

async fn describe_cluster(ecs: &EcsCalls, cluster: &str) -> Fetched<ClusterFacts> {
    let output = match ecs.describe_clusters(cluster).await {
        Ok(output) => output,
        Err(error) => return call_failure("ecs:DescribeClusters", &error),
    };
    let Some(found) = output.clusters.into_iter().next() else {
        return Fetched::Failed(format!("cluster {cluster} not found in this region"));
    };
    let exec = found
        .configuration
        .and_then(|c| c.execute_command_configuration)
        .unwrap_or_default();
    let log = exec.log_configuration.unwrap_or_default();
    Fetched::Got(ClusterFacts {
        kms_key_id: exec.kms_key_id,
        logging: exec.logging,
        log_group: log.cloud_watch_log_group_name,
        cloud_watch_encryption: log.cloud_watch_encryption_enabled,
        s3_bucket: log.s3_bucket_name,
        s3_encryption: log.s3_encryption_enabled,
        s3_key_prefix: log.s3_key_prefix.filter(|prefix| !prefix.is_empty()),
    })
}

/// `--task` as given; with `--service-name`, the first RUNNING task whose agent runs (in
/// `--container` when given), else the first RUNNING task, so a broken agent is still examined.
async fn describe_task(ecs: &EcsCalls, target: &DoctorTarget) -> Fetched<TaskFacts> {
    let arns = match (&target.task, &target.service) {
        (Some(task), _) => vec![task.clone()],
        (None, Some(service)) => {
            let request = api::ListTasks {
                cluster: &target.cluster,
                service_name: service,
                desired_status: RUNNING,
                max_results: Some(100),
                next_token: None,
            };
            match ecs.list_tasks(&request).await {
                Ok(output) if output.task_arns.is_empty() => {
                    return Fetched::Failed(format!("service {service} has no RUNNING task"));
                }
                Ok(output) => output.task_arns,
                Err(error) => return call_failure("ecs:ListTasks", &error),
            }
        }
        (None, None) => return Fetched::NotAsked,
    };
    let request = api::DescribeTasks {
        cluster: &target.cluster,
        tasks: &arns,
    };
    let output = match ecs.describe_tasks(&request).await {
        Ok(output) => output,
        Err(error) => return call_failure("ecs:DescribeTasks", &error),
    };
    let views: Vec<TaskFacts> = output.tasks.iter().map(task_facts).collect();
    let agent_ok = |task: &TaskFacts| {
        task.last_status == RUNNING
            && task.containers.iter().any(|(name, agent)| {
                target
                    .container
                    .as_ref()
                    .is_none_or(|wanted| wanted == name)
                    && agent.as_deref() == Some(RUNNING)
            })
    };
    match views
        .iter()
        .find(|t| agent_ok(t))
        .or_else(|| views.iter().find(|t| t.last_status == RUNNING))
        .or(views.first())
    {
        Some(task) => Fetched::Got(task.clone()),
        None => Fetched::Failed(format!(
            "task {} not found in cluster {}",
            target.task.as_deref().unwrap_or("?"),
            target.cluster
        )),
    }
}

fn task_facts(task: &api::Task) -> TaskFacts {
    TaskFacts {
        task_id: crate::ecs::task_id_of(task.task_arn.as_deref().unwrap_or_default()).to_owned(),
        last_status: task
            .last_status
            .clone()
            .unwrap_or_else(|| "UNKNOWN".to_owned()),
        launch_type: task
            .launch_type
            .clone()
            .unwrap_or_else(|| "UNKNOWN".to_owned()),
        platform_version: task.platform_version.clone(),
        container_instance_arn: task.container_instance_arn.clone(),
        enable_execute_command: task.enable_execute_command,
        containers: task
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.clone().unwrap_or_else(|| "?".to_owned()),
                    c.agent_status(EXECUTE_COMMAND_AGENT),
                )
            })
            .collect(),
        task_definition_arn: task.task_definition_arn.clone(),
    }
}

async fn describe_task_definition(ecs: &EcsCalls, arn: &str) -> Fetched<TaskDefinitionFacts> {
    let output = match ecs.describe_task_definition(arn).await {
        Ok(output) => output,
        Err(error) => return call_failure("ecs:DescribeTaskDefinition", &error),
    };
    let Some(definition) = output.task_definition else {
        return Fetched::Failed("DescribeTaskDefinition returned no taskDefinition".to_owned());
    };
    let containers = &definition.container_definitions;
    let name = |c: &api::ContainerDefinition| c.name.clone().unwrap_or_else(|| "?".to_owned());
    Fetched::Got(TaskDefinitionFacts {
        without_init_process: containers
            .iter()
            .filter(|c| {
                c.linux_parameters
                    .as_ref()
                    .and_then(|l| l.init_process_enabled)
                    != Some(true)
            })
            .map(name)
            .collect(),
        readonly_root: containers
            .iter()
            .filter(|c| c.readonly_root_filesystem == Some(true))
            .map(name)
            .collect(),
        pid_mode: definition.pid_mode,
        task_role_arn: definition.task_role_arn,
    })
}

async fn probe(
    config: &SdkConfig,
    ecs: &EcsCalls,
    target: &DoctorTarget,
    task: &TaskFacts,
) -> Probe {
    let container = target
        .container
        .clone()
        .or_else(|| {
            task.containers
                .iter()
                .find(|(_, agent)| agent.as_deref() == Some(RUNNING))
                .or(task.containers.first())
                .map(|(name, _)| name.clone())
        })
        .unwrap_or_default();
    let started = Instant::now();
    let request = api::ExecuteCommand {
        cluster: &target.cluster,
        task: &task.task_id,
        container: &container,
        command: PROBE_COMMAND,
        interactive: true,
    };
    let result = ecs.execute_command(&request).await;
    let millis = started.elapsed().as_millis();
    match result {
        Ok(output) => {
            // The session is never opened; end it so it does not wait for a client.
            if let (Some(session_id), Some(ssm)) = (
                output.session.and_then(|s| s.session_id),
                SsmApi::new(config),
            ) && let Err(error) = ssm.terminate_session(&session_id).await
            {
                tracing::debug!(%error, "ending the probe session failed");
            }
            Probe::Connected { millis }
        }
        Err(error) => match error.code() {
            Some("TargetNotConnectedException") => Probe::NotConnected { millis },
            Some("AccessDeniedException") => Probe::Denied("ecs:ExecuteCommand".to_owned()),
            _ => Probe::Failed(failure_text(&error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_logging_needs_the_destinations_permissions() {
        let mut cluster = ClusterFacts {
            logging: Some("OVERRIDE".into()),
            log_group: Some("/ecs/exec".into()),
            s3_bucket: Some("logs".into()),
            ..ClusterFacts::default()
        };
        let actions = logging_actions("eu-west-1", &cluster, &Fetched::NotAsked);
        assert!(actions.contains(&(
            "logs:PutLogEvents",
            "arn:aws:logs:eu-west-1:*:log-group:/ecs/exec:*".to_owned()
        )));
        assert!(actions.contains(&("s3:PutObject", "arn:aws:s3:::logs/*".to_owned())));
        assert!(!actions.iter().any(|(action, _)| action.starts_with("kms:")));
        cluster.s3_key_prefix = Some("exec/".into());
        let sse_kms = Fetched::Got(BucketFacts::Encrypted {
            algorithm: "aws:kms".into(),
            kms_key_id: Some("arn:aws:kms:eu-west-1:1:key/k".into()),
        });
        let actions = logging_actions("eu-west-1", &cluster, &sse_kms);
        assert!(actions.contains(&("s3:PutObject", "arn:aws:s3:::logs/exec/*".to_owned())));
        assert!(actions.contains(&(
            "kms:GenerateDataKey",
            "arn:aws:kms:eu-west-1:1:key/k".to_owned()
        )));
        cluster.logging = Some("DEFAULT".into());
        assert!(logging_actions("eu-west-1", &cluster, &sse_kms).is_empty());
    }

    #[test]
    fn failed_calls_become_facts() {
        let service = |code: &str| CallError::Service {
            status: 400,
            aws: crate::ecs::AwsErrorInfo {
                code: Some(code.to_owned()),
                message: Some("the\nmessage".to_owned()),
                request_id: Some("r".to_owned()),
            },
        };
        assert!(matches!(
            call_failure::<()>("ecs:DescribeClusters", &service("AccessDeniedException")),
            Fetched::Denied(permission) if permission == "ecs:DescribeClusters"
        ));
        assert!(matches!(
            call_failure::<()>("ecs:DescribeTasks", &service("InvalidParameterException")),
            Fetched::Failed(text) if text == "InvalidParameterException: the message"
        ));
        assert!(matches!(
            call_failure::<()>("kms:DescribeKey", &CallError::Unreachable("refused".into())),
            Fetched::Failed(text) if text == "refused"
        ));
    }

    #[test]
    fn the_provider_name_is_read_without_the_secret() {
        let credentials =
            aws_credential_types::Credentials::new("AKID", "SECRET", None, None, "Environment");
        assert_eq!(provider_name(&credentials).as_deref(), Some("Environment"));
    }
}
