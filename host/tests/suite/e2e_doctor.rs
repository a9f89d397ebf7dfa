//! `ecs-exec doctor` against the emulator: a healthy world passes every check, and for each
//! check a world configured to break it makes that check fail (or warn) with its message.

use std::time::Duration;

use ecs_exec_emulator::Config;
use ecs_exec_emulator::config::{
    DEFAULT_KMS_KEY_ARN, KmsKeyConfig, LogGroupConfig, S3BucketConfig,
};
use serde_json::Value;

use crate::e2e_support::{Outcome, World};

/// Far longer than a doctor run takes on a loaded machine; only a hang reaches it.
const HANG_LIMIT: Duration = Duration::from_secs(120);

fn run(world: &World, args: &[&str]) -> Outcome {
    let mut command = world.bare_command();
    command.arg("doctor").args(args);
    world.run_within(command, b"", HANG_LIMIT)
}

/// Runs doctor with `--output json`; returns the exit code and the document.
fn doctor_json(world: &World, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let outcome = run(world, &all);
    let document = serde_json::from_slice(&outcome.stdout).unwrap_or_else(|error| {
        panic!(
            "doctor printed no JSON ({error}): {} / {}",
            outcome.stdout_text(),
            outcome.stderr
        )
    });
    (outcome.code(), document)
}

/// The status and message of check `id`.
fn check(document: &Value, id: &str) -> (String, String) {
    let found = document["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {document}"));
    if matches!(found["status"].as_str(), Some("warn" | "fail")) {
        assert!(found["fix"].is_string(), "no fix for {found}");
    }
    (
        found["status"].as_str().unwrap_or_default().to_owned(),
        found["message"].as_str().unwrap_or_default().to_owned(),
    )
}

const WEB: [&str; 4] = ["--cluster", "demo", "--service-name", "web"];

#[test]
fn a_healthy_world_passes_every_check() {
    let world = World::start();
    let (code, document) = doctor_json(&world, &WEB);
    let checks = document["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 15, "{document}");
    for c in checks {
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c.get("fix").is_none(), "{c}");
    }
    assert_eq!(code, 0);
    let (_, credentials) = check(&document, "credentials");
    assert!(
        credentials.starts_with(
            "arn:aws:iam::123456789012:user/emulator (account 123456789012), from EnvironmentVariable"
        ),
        "{credentials}"
    );
    assert!(
        check(&document, "probe")
            .1
            .starts_with("ExecuteCommand answered with a session in ")
    );
    assert_eq!(document["summary"]["pass"], 15);

    let text = run(&world, &WEB);
    assert_eq!(text.code(), 0, "{}", text.stderr);
    let table = text.stdout_text();
    assert!(
        table.starts_with("ecs-exec doctor: cluster demo, service web, task "),
        "{table}"
    );
    assert!(
        table.contains("\npass  exec-agent     ExecuteCommandAgent RUNNING: app=RUNNING\n"),
        "{table}"
    );
    assert!(
        table.ends_with("15 checks: 15 pass, 0 warn, 0 fail, 0 skip\n"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "colour without a terminal");
}

#[test]
fn a_kms_cluster_checks_its_key_and_the_kms_permissions() {
    let world = World::start();
    let (code, document) = doctor_json(&world, &["--cluster", "secure", "--service-name", "web"]);
    assert_eq!(code, 0, "{document}");
    assert_eq!(
        check(&document, "kms-key"),
        ("pass".into(), format!("{DEFAULT_KMS_KEY_ARN} is Enabled"))
    );
    assert!(
        check(&document, "caller-iam")
            .1
            .contains("kms:GenerateDataKey")
    );
    assert!(check(&document, "task-role").1.contains("kms:Decrypt"));
}

#[test]
fn the_no_agent_service_fails_the_agent_check_and_the_probe() {
    let world = World::start();
    let (code, document) =
        doctor_json(&world, &["--cluster", "demo", "--service-name", "no-agent"]);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "exec-agent"),
        (
            "fail".into(),
            "no ExecuteCommandAgent running: app=STOPPED".into()
        )
    );
    let (status, probe) = check(&document, "probe");
    assert_eq!(status, "fail");
    assert!(probe.contains("TargetNotConnectedException"), "{probe}");
    assert!(
        probe.contains("the ExecuteCommandAgent is not running in app"),
        "{probe}"
    );
}

#[test]
fn bad_credentials_fail_the_credentials_check() {
    let world = World::start();
    let mut command = world.bare_command();
    command
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args([
            "doctor",
            "--cluster",
            "demo",
            "--service-name",
            "web",
            "--output",
            "json",
        ]);
    let outcome = world.run_within(command, b"", HANG_LIMIT);
    assert_eq!(outcome.code(), 1);
    let document: Value = serde_json::from_slice(&outcome.stdout).expect("json");
    let (status, message) = check(&document, "credentials");
    assert_eq!(status, "fail");
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
}

#[test]
fn a_missing_cluster_fails_the_cluster_check() {
    let world = World::start();
    let (code, document) = doctor_json(&world, &["--cluster", "nope", "--service-name", "web"]);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "cluster"),
        (
            "fail".into(),
            "cluster nope: cluster nope not found in this region".into()
        )
    );
}

#[test]
fn a_disabled_key_fails_the_kms_check() {
    let world = World::start_with(|config| {
        config.kms.keys.push(KmsKeyConfig {
            arn: DEFAULT_KMS_KEY_ARN.into(),
            enabled: false,
            alias: None,
        });
    });
    let (code, document) = doctor_json(&world, &["--cluster", "secure", "--service-name", "web"]);
    assert_eq!(code, 1);
    let (status, message) = check(&document, "kms-key");
    assert_eq!(status, "fail");
    assert!(
        message.ends_with("is Disabled: sessions on this cluster cannot start"),
        "{message}"
    );
}

#[test]
fn a_stopped_task_fails_the_task_check() {
    let world = World::start();
    let stopped = world
        .emulator
        .world()
        .cluster(Some("demo"))
        .and_then(|c| c.tasks.iter().find(|t| t.status.as_str() == "STOPPED"))
        .map(|t| t.id.clone())
        .expect("a stopped task");
    let (code, document) = doctor_json(&world, &["--cluster", "demo", "--task", &stopped]);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "task"),
        ("fail".into(), format!("{stopped} is STOPPED, not RUNNING"))
    );
    assert_eq!(check(&document, "probe").0, "skip");
}

#[test]
fn an_old_platform_or_agent_fails_the_platform_check() {
    let world = World::start_with(|config| {
        config.clusters[0].services[0].setup.platform_version = "1.3.0".into();
        let ec2 = &mut config.clusters[1].services[0].setup;
        ec2.launch_type = "EC2".into();
        ec2.agent_version = "1.40.0".into();
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "platform"),
        (
            "fail".into(),
            "Fargate platform 1.3.0 is older than 1.4.0, which ECS Exec needs".into()
        )
    );
    let (_, document) = doctor_json(&world, &["--cluster", "secure", "--service-name", "web"]);
    assert_eq!(
        check(&document, "platform"),
        (
            "fail".into(),
            "ECS agent 1.40.0 is older than 1.50.2, which ECS Exec needs".into()
        )
    );
}

#[test]
fn a_task_without_exec_fails_the_exec_enabled_check() {
    let world = World::start_with(|config| {
        config.clusters[0].services[0].enable_execute_command = false;
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "exec-enabled"),
        (
            "fail".into(),
            "the task was started without enableExecuteCommand".into()
        )
    );
    assert!(
        check(&document, "probe")
            .1
            .contains("the task was started without enableExecuteCommand")
    );
}

#[test]
fn task_definition_settings_warn_without_failing() {
    let world = World::start_with(|config| {
        let setup = &mut config.clusters[0].services[0].setup;
        setup.init_process_enabled = false;
        setup.readonly_root_filesystem = true;
        setup.pid_mode = Some("task".into());
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 0, "warnings alone exit 0: {document}");
    assert_eq!(
        check(&document, "init-process"),
        (
            "warn".into(),
            "initProcessEnabled is not set in app: sessions can leave zombie processes".into()
        )
    );
    assert_eq!(check(&document, "readonly-root").0, "warn");
    assert!(
        check(&document, "pid-mode")
            .1
            .starts_with("pidMode is task:")
    );
}

#[test]
fn the_callers_iam_is_simulated() {
    let world = World::start_with(|config| {
        config.credentials[0].deny = vec!["ecs:ExecuteCommand".into()];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "caller-iam"),
        (
            "fail".into(),
            "the caller is not allowed ecs:ExecuteCommand".into()
        )
    );
    assert_eq!(
        check(&document, "probe"),
        (
            "fail".into(),
            "ExecuteCommand was refused: the caller lacks ecs:ExecuteCommand".into()
        )
    );
}

#[test]
fn a_denied_simulation_is_skipped_naming_the_permission() {
    let world = World::start_with(|config| {
        config.credentials[0].deny = vec!["iam:SimulatePrincipalPolicy".into()];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 0, "{document}");
    for id in ["caller-iam", "task-role"] {
        let (status, message) = check(&document, id);
        assert_eq!(status, "skip");
        assert!(
            message.ends_with("not checked, the caller lacks iam:SimulatePrincipalPolicy"),
            "{message}"
        );
    }
}

#[test]
fn the_task_roles_iam_is_simulated() {
    let world = World::start_with(|config| {
        config.clusters[0].services[0].setup.task_role_deny =
            vec!["ssmmessages:OpenDataChannel".into()];
        config.clusters[1].services[0].setup.task_role = false;
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1);
    assert_eq!(
        check(&document, "task-role"),
        (
            "fail".into(),
            "the task role is not allowed ssmmessages:OpenDataChannel".into()
        )
    );
    let (_, document) = doctor_json(&world, &["--cluster", "secure", "--service-name", "web"]);
    assert_eq!(
        check(&document, "task-role"),
        ("fail".into(), "the task definition has no task role".into())
    );
}

#[test]
fn logging_to_cloudwatch_needs_the_logs_permissions_in_the_task_role() {
    let world = World::start_with(|config| {
        let logging = &mut config.clusters[0].exec_logging;
        logging.logging = "OVERRIDE".into();
        logging.cloud_watch_log_group = Some("/ecs/exec".into());
        config.clusters[0].services[0].setup.task_role_deny = vec!["logs:PutLogEvents".into()];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1);
    assert!(
        check(&document, "cluster")
            .1
            .ends_with("session logs to CloudWatch group /ecs/exec"),
        "{document}"
    );
    assert_eq!(
        check(&document, "task-role"),
        (
            "fail".into(),
            "the task role is not allowed logs:PutLogEvents".into()
        )
    );
}

/// The `demo` cluster logs sessions to the group `/ecs/exec` and to `s3://exec-logs/exec/`,
/// demanding encryption of each as asked; neither exists until a test adds it.
fn log_sessions(config: &mut Config, group_encryption: bool, bucket_encryption: bool) {
    let logging = &mut config.clusters[0].exec_logging;
    logging.logging = "OVERRIDE".into();
    logging.cloud_watch_log_group = Some("/ecs/exec".into());
    logging.cloud_watch_encryption_enabled = group_encryption;
    logging.s3_bucket = Some("exec-logs".into());
    logging.s3_key_prefix = Some("exec/".into());
    logging.s3_encryption_enabled = bucket_encryption;
}

fn log_group(name: &str, kms_key_id: Option<&str>) -> LogGroupConfig {
    LogGroupConfig {
        name: name.into(),
        kms_key_id: kms_key_id.map(str::to_owned),
    }
}

fn bucket(name: &str, sse_algorithm: Option<&str>, kms_key_id: Option<&str>) -> S3BucketConfig {
    S3BucketConfig {
        name: name.into(),
        sse_algorithm: sse_algorithm.map(str::to_owned),
        kms_key_id: kms_key_id.map(str::to_owned),
    }
}

#[test]
fn encrypted_log_destinations_pass_and_the_task_role_may_write_to_them() {
    let world = World::start_with(|config| {
        log_sessions(config, true, true);
        config.log_groups = vec![
            log_group("/ecs/exec-old", None),
            log_group("/ecs/exec", Some(DEFAULT_KMS_KEY_ARN)),
        ];
        config.s3_buckets = vec![bucket(
            "exec-logs",
            Some("aws:kms"),
            Some(DEFAULT_KMS_KEY_ARN),
        )];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 0, "{document}");
    assert_eq!(
        check(&document, "log-group"),
        (
            "pass".into(),
            format!("log group /ecs/exec exists, encrypted with {DEFAULT_KMS_KEY_ARN}")
        )
    );
    assert_eq!(
        check(&document, "log-bucket"),
        (
            "pass".into(),
            format!(
                "bucket exec-logs exists, default encryption aws:kms with {DEFAULT_KMS_KEY_ARN}"
            )
        )
    );
    let (status, task_role) = check(&document, "task-role");
    assert_eq!(status, "pass");
    for action in [
        "logs:PutLogEvents",
        "s3:PutObject",
        "s3:GetEncryptionConfiguration",
        "kms:GenerateDataKey",
    ] {
        assert!(task_role.contains(action), "{action}: {task_role}");
    }
    assert_eq!(document["summary"]["pass"], 15, "{document}");
}

#[test]
fn a_missing_log_group_warns_that_sessions_are_not_logged() {
    let world = World::start_with(|config| {
        log_sessions(config, false, false);
        config.log_groups = vec![log_group("/ecs/exec-other", None)];
        config.s3_buckets = vec![bucket("exec-logs", None, None)];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 0, "a warning alone exits 0: {document}");
    assert_eq!(
        check(&document, "log-group"),
        (
            "warn".into(),
            "log group /ecs/exec does not exist: sessions run, but their output is not logged"
                .into()
        )
    );
    assert_eq!(
        check(&document, "log-bucket"),
        (
            "pass".into(),
            "bucket exec-logs exists (no default encryption, and s3EncryptionEnabled is false)"
                .into()
        )
    );
}

#[test]
fn an_unencrypted_log_group_fails_when_the_cluster_demands_encryption() {
    let world = World::start_with(|config| {
        log_sessions(config, true, false);
        config.log_groups = vec![log_group("/ecs/exec", None)];
        config.s3_buckets = vec![bucket("exec-logs", Some("AES256"), None)];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1, "{document}");
    assert_eq!(
        check(&document, "log-group"),
        (
            "fail".into(),
            "log group /ecs/exec has no KMS key, but cloudWatchEncryptionEnabled is true: the SSM agent refuses every session".into()
        )
    );
    let text = run(&world, &WEB);
    assert_eq!(text.code(), 1, "{}", text.stderr);
    let table = text.stdout_text();
    assert!(
        table.contains(
            "\nfail  log-group      log group /ecs/exec has no KMS key, but cloudWatchEncryptionEnabled is true: the SSM agent refuses every session\n                     fix: associate a KMS key with the group (`aws logs associate-kms-key --log-group-name /ecs/exec --kms-key-id KEY_ARN`; "
        ),
        "{table}"
    );
}

#[test]
fn a_missing_bucket_fails_when_the_cluster_demands_encryption() {
    let world = World::start_with(|config| {
        log_sessions(config, false, true);
        config.log_groups = vec![log_group("/ecs/exec", None)];
        config.s3_buckets = vec![bucket("other-logs", Some("AES256"), None)];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1, "{document}");
    assert_eq!(
        check(&document, "log-bucket"),
        (
            "fail".into(),
            "bucket exec-logs does not exist, and s3EncryptionEnabled is true: the SSM agent refuses every session".into()
        )
    );
    assert_eq!(check(&document, "log-group").0, "pass");
}

#[test]
fn an_unencrypted_bucket_fails_when_the_cluster_demands_encryption() {
    let world = World::start_with(|config| {
        log_sessions(config, false, true);
        config.log_groups = vec![log_group("/ecs/exec", None)];
        config.s3_buckets = vec![bucket("exec-logs", None, None)];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 1, "{document}");
    assert_eq!(
        check(&document, "log-bucket"),
        (
            "fail".into(),
            "bucket exec-logs has no default encryption, but s3EncryptionEnabled is true: the SSM agent refuses every session".into()
        )
    );
    let fix = document["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == "log-bucket"))
        .and_then(|c| c["fix"].as_str())
        .unwrap_or_default();
    assert!(
        fix.starts_with(
            "turn default encryption on (`aws s3api put-bucket-encryption --bucket exec-logs "
        ),
        "{fix}"
    );
}

#[test]
fn destinations_the_caller_may_not_read_are_warnings_naming_the_permission() {
    let world = World::start_with(|config| {
        log_sessions(config, true, true);
        config.log_groups = vec![log_group("/ecs/exec", None)];
        config.s3_buckets = vec![bucket("exec-logs", None, None)];
        config.credentials[0].deny = vec![
            "logs:DescribeLogGroups".into(),
            "s3:GetEncryptionConfiguration".into(),
        ];
    });
    let (code, document) = doctor_json(&world, &WEB);
    assert_eq!(code, 0, "{document}");
    assert_eq!(
        check(&document, "log-group"),
        (
            "warn".into(),
            "could not check log group /ecs/exec: the caller lacks logs:DescribeLogGroups".into()
        )
    );
    assert_eq!(
        check(&document, "log-bucket"),
        (
            "warn".into(),
            "could not check bucket exec-logs: the caller lacks s3:GetEncryptionConfiguration"
                .into()
        )
    );
}

#[test]
fn doctor_needs_a_service_or_a_task() {
    let world = World::start();
    let outcome = run(&world, &["--cluster", "demo"]);
    assert_eq!(outcome.code(), 64);
    assert!(
        outcome
            .stderr
            .starts_with("ecs-exec: error: doctor needs a task"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.is_empty());
}
