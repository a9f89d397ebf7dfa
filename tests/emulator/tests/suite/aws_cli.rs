//! The real AWS CLI against the emulator: `aws ecs list-tasks`, `describe-tasks` (SigV4 from
//! botocore, JSON 1.1 parsing by botocore), `aws kms generate-data-key` / `decrypt` on the KMS
//! port, `aws logs describe-log-groups` and `aws s3api get-bucket-encryption` and, when
//! session-manager-plugin is installed, `execute-command`. Without `aws` a test is
//! skipped, except under `CI=true`, where it is required ([`require_tool`]). The plugin is in no
//! package registry CI reaches, so the tests that need it are skipped without it even in CI
//! ([`optional_tool`]).

use std::process::{Command, Output};

use ecs_exec_emulator::config::{LogGroupConfig, S3BucketConfig};
use ecs_exec_emulator::{Config, EmulatorHandle, Spawned, optional_tool, require_tool};

fn aws_available() -> bool {
    require_tool("aws")
}

fn plugin_available() -> bool {
    optional_tool("session-manager-plugin")
}

/// Runs `aws <args>` against the emulator with its credentials and nothing from the user's
/// own AWS configuration.
fn aws(handle: &EmulatorHandle, secret: &str, args: &[&str]) -> Output {
    aws_at(handle, &handle.endpoint(), secret, args)
}

/// [`aws`] against `endpoint` (the KMS API has its own).
fn aws_at(handle: &EmulatorHandle, endpoint: &str, secret: &str, args: &[&str]) -> Output {
    let mut command = Command::new("aws");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", handle.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", handle.region())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "");
    ecs_exec_emulator::testing::output(&mut command)
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "aws failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("aws prints JSON")
}

#[test]
fn aws_cli_lists_and_describes_tasks() {
    if !aws_available() {
        return;
    }
    let handle = EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
    let secret = handle.secret_access_key().to_string();

    // --page-size 1 makes the CLI follow nextToken through the emulator's paging.
    let listed = json_of(&aws(
        &handle,
        &secret,
        &[
            "ecs",
            "list-tasks",
            "--cluster",
            "demo",
            "--service-name",
            "web",
            "--page-size",
            "1",
        ],
    ));
    let arns = listed["taskArns"].as_array().unwrap();
    assert_eq!(arns.len(), 2);
    assert!(handle.counters().api_requests >= 2, "paged in two calls");
    let task_id = arns[0]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();

    let described = json_of(&aws(
        &handle,
        &secret,
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "demo",
            "--tasks",
            &task_id,
        ],
    ));
    let task = &described["tasks"][0];
    assert_eq!(task["lastStatus"], "RUNNING");
    assert_eq!(
        task["containers"][0]["managedAgents"][0]["name"],
        "ExecuteCommandAgent"
    );
    assert_eq!(
        task["containers"][0]["managedAgents"][0]["lastStatus"],
        "RUNNING"
    );
    assert_eq!(handle.counters().signature_failures, 0);
}

#[test]
fn aws_cli_sees_aws_errors() {
    if !aws_available() {
        return;
    }
    let handle = EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
    let wrong = aws(
        &handle,
        "not-the-secret",
        &["ecs", "list-tasks", "--cluster", "demo"],
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("InvalidSignatureException"), "{stderr}");

    let secret = handle.secret_access_key().to_string();
    let missing = aws(
        &handle,
        &secret,
        &["ecs", "list-tasks", "--cluster", "nope"],
    );
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("ClusterNotFoundException"), "{stderr}");
    assert!(stderr.contains("Cluster not found."), "{stderr}");
}

/// botocore signs S3 (single path encoding, `x-amz-content-sha256`) and CloudWatch Logs
/// itself, so this shows the emulator verifies and answers them as AWS does.
#[test]
fn aws_cli_reads_the_session_log_destinations() {
    if !aws_available() {
        return;
    }
    let key = ecs_exec_emulator::DEFAULT_KMS_KEY_ARN;
    let config = Config {
        log_groups: vec![
            LogGroupConfig {
                name: "/ecs/exec".into(),
                kms_key_id: Some(key.into()),
            },
            LogGroupConfig {
                name: "/other".into(),
                kms_key_id: None,
            },
        ],
        s3_buckets: vec![S3BucketConfig {
            name: "exec-logs".into(),
            sse_algorithm: Some("aws:kms".into()),
            kms_key_id: Some(key.into()),
        }],
        ..Config::default()
    };
    let handle = EmulatorHandle::spawn_in_thread(config).unwrap();
    let secret = handle.secret_access_key().to_string();
    let groups = json_of(&aws(
        &handle,
        &secret,
        &[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            "/ecs",
        ],
    ));
    assert_eq!(groups["logGroups"].as_array().map(Vec::len), Some(1));
    assert_eq!(groups["logGroups"][0]["kmsKeyId"], key);
    let encryption = json_of(&aws(
        &handle,
        &secret,
        &["s3api", "get-bucket-encryption", "--bucket", "exec-logs"],
    ));
    let rule = &encryption["ServerSideEncryptionConfiguration"]["Rules"][0];
    assert_eq!(
        rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "aws:kms"
    );
    assert_eq!(
        rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"],
        key
    );
    let missing = aws(
        &handle,
        &secret,
        &["s3api", "get-bucket-encryption", "--bucket", "nope"],
    );
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");
    let wrong = aws(
        &handle,
        "not-the-secret",
        &["s3api", "get-bucket-encryption", "--bucket", "exec-logs"],
    );
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
}

#[test]
fn aws_cli_generates_and_decrypts_a_data_key() {
    if !aws_available() {
        return;
    }
    let handle = EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
    let secret = handle.secret_access_key().to_string();
    let kms = handle.kms_endpoint();
    let key = ecs_exec_emulator::DEFAULT_KMS_KEY_ARN;
    let generated = json_of(&aws_at(
        &handle,
        &kms,
        &secret,
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            key,
            "--number-of-bytes",
            "64",
            "--encryption-context",
            "aws:ssm:SessionId=x",
        ],
    ));
    assert_eq!(generated["KeyId"], key);
    let plaintext = generated["Plaintext"].as_str().unwrap().to_string();
    let blob = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(generated["CiphertextBlob"].as_str().unwrap())
            .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("ecs-exec-kms-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blob_file = dir.join("blob");
    std::fs::write(&blob_file, &blob).unwrap();
    let blob_arg = format!("fileb://{}", blob_file.display());
    let decrypt = |context: &str| {
        aws_at(
            &handle,
            &kms,
            &secret,
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &blob_arg,
                "--encryption-context",
                context,
            ],
        )
    };
    let decrypted = json_of(&decrypt("aws:ssm:SessionId=x"));
    assert_eq!(decrypted["Plaintext"], plaintext.as_str());
    assert_eq!(decrypted["KeyId"], key);
    let wrong = decrypt("aws:ssm:SessionId=y");
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("InvalidCiphertextException"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(handle.counters().signature_failures, 0);
}

#[test]
fn aws_cli_execute_command_through_the_plugin() {
    if !aws_available() {
        return;
    }
    if !plugin_available() {
        return;
    }
    let handle = EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
    let secret = handle.secret_access_key().to_string();
    let demo = handle.world().cluster(Some("demo")).unwrap();
    let task = demo
        .tasks
        .iter()
        .find(|t| t.service == "web")
        .unwrap()
        .id
        .clone();
    let output = aws(
        &handle,
        &secret,
        &[
            "ecs",
            "execute-command",
            "--cluster",
            "demo",
            "--task",
            &task,
            "--container",
            "app",
            "--command",
            "echo hello-from-the-emulator",
            "--interactive",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Starting session with SessionId"),
        "{stdout}"
    );
    assert!(stdout.contains("hello-from-the-emulator"), "{stdout}");
    handle.wait_until_blocking(|c| c.sessions_finished == 1);
    assert_eq!(handle.counters().processes_running, 0);
}

/// Drives `aws ecs execute-command --command sh` under a real pseudo-terminal, as a person
/// would: type a command at the remote prompt, read the answer, type `exit`.
#[test]
fn aws_cli_interactive_shell_through_the_plugin() {
    interactive_shell(Config::default());
}

/// With the handshake switched on, and with the real agent's timings: the plugin copes with
/// both (it handshakes when asked, and waits out the 1 s first-read delay).
#[test]
fn aws_cli_interactive_shell_with_handshake_and_realistic_timing() {
    let mut config = Config::default();
    config.agent.handshake = true;
    config.agent.realistic = true;
    interactive_shell(config);
}

/// The same session with frames lost, repeated and delayed in both directions: the plugin's
/// and the emulator's retransmissions repair it. (No reordering: the plugin drops output
/// that overtakes its first message, see docs/protocol.md §16.)
#[test]
fn aws_cli_interactive_shell_survives_faults() {
    let mut config = Config::default();
    config.faults.seed = 7;
    for rates in [&mut config.faults.outbound, &mut config.faults.inbound] {
        rates.drop = 0.1;
        rates.duplicate = 0.1;
        rates.delay_ms = 5;
    }
    // And for certain: the first input message and the first output are lost once.
    let rule = |direction, message_type: &str, seq| ecs_exec_emulator::FaultRule {
        direction,
        message_type: message_type.into(),
        sequence_number: seq,
        action: ecs_exec_emulator::FaultAction::Drop,
        times: 1,
    };
    config.faults.rules = vec![
        rule(
            ecs_exec_emulator::Direction::Inbound,
            "input_stream_data",
            None,
        ),
        rule(
            ecs_exec_emulator::Direction::Outbound,
            "output_stream_data",
            Some(0),
        ),
    ];
    let Some(counters) = interactive_shell(config) else {
        return;
    };
    assert!(counters.frames_dropped >= 2, "{counters:?}");
    assert!(counters.output_retransmits >= 1);
}

fn interactive_shell(config: Config) -> Option<ecs_exec_emulator::CountersSnapshot> {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    if !aws_available() {
        return None;
    }
    if !plugin_available() {
        return None;
    }
    let handle = EmulatorHandle::spawn_in_thread(config).unwrap();
    let demo = handle.world().cluster(Some("demo")).unwrap();
    let task = demo
        .tasks
        .iter()
        .find(|t| t.service == "web")
        .unwrap()
        .id
        .clone();
    // A real size, so the plugin sends a Size message as a terminal would make it.
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut command = Command::new("aws");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    let slave = std::fs::File::from(pty.slave);
    // If an assertion fails, do not leave the CLI and its plugin running behind us: the whole
    // process group is killed then, and also if it hangs.
    let child = Spawned::spawn(
        command
            .args([
                "ecs",
                "execute-command",
                "--cluster",
                "demo",
                "--task",
                &task,
                "--container",
                "app",
                "--command",
                "sh",
                "--interactive",
                "--endpoint-url",
                &handle.endpoint(),
            ])
            .env("AWS_ACCESS_KEY_ID", handle.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", handle.secret_access_key())
            .env("AWS_DEFAULT_REGION", handle.region())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave),
    );
    let mut master = std::fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let wait_for = |needle: &str, screen: &mut Vec<u8>| {
        // The prompt is `# ` for root and `$ ` otherwise.
        let alternatives: Vec<&str> = needle.split('|').collect();
        while !alternatives
            .iter()
            .any(|n| String::from_utf8_lossy(screen).contains(n))
        {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(bytes) => screen.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "{needle:?} never appeared in {:?}",
                    String::from_utf8_lossy(screen)
                ),
            }
        }
    };
    wait_for("Starting session with SessionId", &mut screen);
    wait_for("\n# |\n$ ", &mut screen);
    writer.write_all(b"echo $((6*7))\r").unwrap();
    wait_for("42", &mut screen);
    writer.write_all(b"exit\r").unwrap();
    wait_for("Exiting session with sessionId", &mut screen);
    let (status, _) = child.wait("aws ecs execute-command after `exit`");
    assert!(status.success(), "{status:?}");
    let counters = handle.wait_until_blocking(|c| c.sessions_finished == 1);
    assert_eq!(
        counters.sessions_closed_cleanly, 1,
        "ended by channel_closed after all output was acked"
    );
    assert_eq!(counters.processes_running, 0);
    Some(counters)
}
