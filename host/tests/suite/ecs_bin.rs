//! The `ecs-exec` binary against a loopback fake ECS: where credentials, region and endpoint
//! come from (environment keys, the container credentials endpoint, `AWS_ENDPOINT_URL_ECS`,
//! `AWS_DEFAULT_REGION`), and how failures print (one line, documented exit code, no secrets).
//!
//! Every process runs with a cleared environment and HOME in a temp dir, so nothing from the
//! machine (profiles, keys, IMDS) leaks in.

use crate::ecs_support;

use std::process::{Command, Output};

use ecs_support::{FakeServer, Request, Response, describe_answer, task_arn, task_json};
use serde_json::json;

const ACCESS_KEY: &str = "AKIDENVIRONMENTKEY01";
const SECRET_KEY: &str = "environment-secret-key-never-printed";
const SESSION_TOKEN: &str = "environment-session-token-never-printed";

/// A fake ECS with one service `web` in cluster `prod` whose task `t1` has a running agent;
/// cluster `nocluster` does not exist; ExecuteCommand reports the agent as not connected.
fn fake_ecs() -> FakeServer {
    let tasks = vec![task_json("t1", "RUNNING", &[("app", Some("RUNNING"))])];
    FakeServer::start(move |request: &Request, _| {
        if request.path == "/creds" {
            return Response {
                status: 200,
                body: json!({
                    "AccessKeyId": "ASIACONTAINERKEY0001",
                    "SecretAccessKey": "container-secret-never-printed",
                    "Token": "container-session-token-never-printed",
                    "Expiration": "2099-01-01T00:00:00Z"
                })
                .to_string(),
                content_type: "application/json",
            };
        }
        match (request.operation(), request.json()["cluster"].as_str()) {
            (_, Some("nocluster")) => {
                Response::error(400, "ClusterNotFoundException", "Cluster not found.")
            }
            (Some("ListTasks"), _) => Response::json(json!({ "taskArns": [task_arn("t1")] })),
            (Some("DescribeTasks"), _) => describe_answer(request, &tasks),
            (Some("ExecuteCommand"), _) => Response::error(
                400,
                "TargetNotConnectedException",
                "The execution target is not connected.",
            ),
            _ => Response::error(400, "UnknownOperationException", "unexpected"),
        }
    })
}

/// A command with a clean environment: HOME in a temp dir, no IMDS, no AWS variables.
fn ecs_exec() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-exec"));
    command
        .env_clear()
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn with_env_keys(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
}

fn run(command: &mut Command) -> (Output, String) {
    let output = ecs_exec_emulator::testing::output(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// The access key in the SigV4 `Authorization` header of every ECS request.
fn signing_keys(server: &FakeServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| r.operation().is_some())
        .filter_map(|r| {
            let auth = r.header("authorization")?;
            let credential = auth.split("Credential=").nth(1)?;
            Some(credential.split('/').next()?.to_owned())
        })
        .collect()
}

/// The region in the SigV4 credential scope of the first ECS request.
fn signing_region(server: &FakeServer) -> Option<String> {
    let requests = server.requests();
    let auth = requests
        .iter()
        .find(|r| r.operation().is_some())?
        .header("authorization")?
        .to_owned();
    let scope = auth
        .split("Credential=")
        .nth(1)?
        .split(',')
        .next()?
        .to_owned();
    scope.split('/').nth(2).map(str::to_owned)
}

/// The run ends after target resolution: ExecuteCommand says "not connected" (69) once the run
/// layer is wired, and until then the run layer's placeholder fails with 70. Either way: one line.
fn assert_resolved_and_stopped(output: &Output, stderr: &str) {
    assert!(
        matches!(output.status.code(), Some(69 | 70)),
        "exit {:?}: {stderr}",
        output.status.code()
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("ecs-exec: error:"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "stdout belongs to the remote program"
    );
}

#[test]
fn environment_keys_sign_the_requests() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .args([
            "--cluster=prod",
            "--service-name",
            "web",
            "--endpoint-url",
            &server.url(),
        ]));
    assert_resolved_and_stopped(&output, &stderr);
    assert_eq!(&server.operations()[..2], ["ListTasks", "DescribeTasks"]);
    assert!(
        signing_keys(&server).iter().all(|k| k == ACCESS_KEY),
        "{:?}",
        signing_keys(&server)
    );
    let token = server.requests()[0]
        .header("x-amz-security-token")
        .map(str::to_owned);
    assert_eq!(token.as_deref(), Some(SESSION_TOKEN));
}

#[test]
fn container_credentials_endpoint_is_used() {
    let server = fake_ecs();
    let (output, stderr) = run(ecs_exec()
        .env("AWS_REGION", "us-east-1")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/creds", server.url()),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth-token")
        .args([
            "--cluster=prod",
            "--service-name=web",
            &format!("--endpoint-url={}", server.url()),
        ]));
    assert_resolved_and_stopped(&output, &stderr);
    let requests = server.requests();
    let creds = requests
        .iter()
        .find(|r| r.path == "/creds")
        .expect("credentials endpoint called");
    assert_eq!(creds.method, "GET");
    assert_eq!(creds.header("authorization"), Some("container-auth-token"));
    let keys = signing_keys(&server);
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k == "ASIACONTAINERKEY0001"), "{keys:?}");
    let ecs_request = requests
        .iter()
        .find(|r| r.operation().is_some())
        .expect("an ECS call");
    assert_eq!(
        ecs_request.header("x-amz-security-token"),
        Some("container-session-token-never-printed")
    );
}

#[test]
fn endpoint_and_region_from_the_environment() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_DEFAULT_REGION", "eu-north-1")
        .env("AWS_ENDPOINT_URL_ECS", server.url())
        .args(["--cluster=prod", "--service-name=web"]));
    assert_resolved_and_stopped(&output, &stderr);
    assert_eq!(signing_region(&server).as_deref(), Some("eu-north-1"));

    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "ap-south-1")
        .env("AWS_DEFAULT_REGION", "eu-north-1")
        .env("AWS_ENDPOINT_URL", server.url())
        .args(["--cluster=prod", "--service-name=web"]));
    assert_resolved_and_stopped(&output, &stderr);
    assert_eq!(
        signing_region(&server).as_deref(),
        Some("ap-south-1"),
        "AWS_REGION wins"
    );
}

#[test]
fn flags_win_over_the_environment() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_ECS", "http://127.0.0.1:9")
        .env("CLUSTER_NAME", "nocluster")
        .args([
            "--cluster=prod",
            "--service-name=web",
            "--region=eu-west-3",
            "--endpoint-url",
            &server.url(),
        ]));
    assert_resolved_and_stopped(&output, &stderr);
    assert_eq!(signing_region(&server).as_deref(), Some("eu-west-3"));
}

#[test]
fn task_flag_appended_after_the_connection_command() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .env("CLUSTER_NAME", "prod")
        .env("SERVICE_NAME", "web")
        .args(["--endpoint-url", &server.url(), "--task", "t1"]));
    assert_resolved_and_stopped(&output, &stderr);
    assert_eq!(
        server.operations()[0],
        "DescribeTasks",
        "no ListTasks with --task"
    );
}

#[test]
fn cluster_not_found_is_one_line_with_code_and_request_id() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .args([
            "--cluster=nocluster",
            "--service-name=web",
            "--endpoint-url",
            &server.url(),
        ]));
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ecs-exec: error: cluster \"nocluster\" not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ClusterNotFoundException") && stderr.contains("request id req-"),
        "{stderr}"
    );
}

#[test]
fn no_credentials_says_where_it_looked() {
    let server = fake_ecs();
    let (output, stderr) = run(ecs_exec().env("AWS_REGION", "us-east-1").args([
        "--cluster=prod",
        "--service-name=web",
        "--endpoint-url",
        &server.url(),
    ]));
    assert_eq!(output.status.code(), Some(77), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for place in [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS",
        "instance metadata",
    ] {
        assert!(stderr.contains(place), "{place} missing: {stderr}");
    }
    assert!(server.operations().is_empty(), "nothing is sent unsigned");
}

#[test]
fn no_region_is_a_config_error() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec()).args([
        "--cluster=prod",
        "--service-name=web",
        "--endpoint-url",
        &server.url(),
    ]));
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("--region") && stderr.contains("AWS_REGION"),
        "{stderr}"
    );
}

#[test]
fn trace_goes_to_stderr_without_secrets() {
    let server = fake_ecs();
    let (output, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .args([
            "-vv",
            "--cluster=prod",
            "--service-name=web",
            "--endpoint-url",
            &server.url(),
        ]));
    assert!(output.stdout.is_empty());
    assert!(stderr.lines().count() > 3, "a trace: {stderr}");
    assert!(
        stderr.contains("ListTasks") && stderr.contains("target resolved"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET_KEY), "secret key leaked");
    assert!(!stderr.contains(SESSION_TOKEN), "session token leaked");

    let server = fake_ecs();
    let (_, stderr) = run(with_env_keys(&mut ecs_exec())
        .env("AWS_REGION", "us-east-1")
        .env("CONNECTION_DEBUG", "1")
        .args([
            "--cluster=prod",
            "--service-name=web",
            "--endpoint-url",
            &server.url(),
        ]));
    assert!(
        stderr.contains("target resolved"),
        "CONNECTION_DEBUG=1 traces: {stderr}"
    );
}
