//! The `ecs-exec-emulator` binary: one `listening on` line on stdout, a request log on stderr,
//! a TOML config, and a clean stop on SIGTERM/SIGINT that kills the commands it started.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::{ECS, RawClient, Signer, call};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecs-exec-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Running {
        child,
        stdout,
        addr,
    }
}

fn stop(mut running: Running, signal: Signal) -> (String, String) {
    kill(Pid::from_raw(running.child.id() as i32), signal).unwrap();
    let status = running.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut rest = String::new();
    running.stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    running
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (rest, stderr)
}

fn default_signer(addr: SocketAddr) -> Signer {
    let _ = addr;
    Signer {
        access_key_id: ecs_exec_emulator::DEFAULT_ACCESS_KEY_ID.into(),
        secret_access_key: ecs_exec_emulator::DEFAULT_SECRET_ACCESS_KEY.into(),
        session_token: None,
        region: "us-east-1".into(),
        service: "ecs".into(),
        time: std::time::SystemTime::now(),
    }
}

#[test]
fn prints_one_line_serves_and_stops_on_sigterm() {
    let running = start(&[]);
    assert!(running.addr.ip().is_loopback());
    assert_ne!(running.addr.port(), 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(call(
        running.addr,
        Some(&default_signer(running.addr)),
        &format!("{ECS}.ListTasks"),
        &serde_json::json!({"cluster": "demo"}),
    ));
    assert_eq!(reply.status, 200);
    let (stdout, stderr) = stop(running, Signal::SIGTERM);
    assert_eq!(stdout, "", "nothing but the listening line on stdout");
    assert!(stderr.contains("ListTasks"), "request logged: {stderr}");
    assert!(!stderr.contains(ecs_exec_emulator::DEFAULT_SECRET_ACCESS_KEY));
}

#[test]
fn sigint_kills_running_commands() {
    let running = start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = default_signer(running.addr);
    let pid: i32 = runtime.block_on(async {
        let demo_task = {
            let reply = call(running.addr, Some(&signer), &format!("{ECS}.ListTasks"), &serde_json::json!({"cluster": "demo", "serviceName": "web"})).await;
            reply.json["taskArns"][0].as_str().unwrap().rsplit('/').next().unwrap().to_string()
        };
        let reply = call(
            running.addr,
            Some(&signer),
            &format!("{ECS}.ExecuteCommand"),
            &serde_json::json!({"cluster": "demo", "task": demo_task, "container": "app", "command": "sh -c 'echo pid:$$; exec sleep 1000'", "interactive": true}),
        )
        .await;
        let session = &reply.json["session"];
        let mut client = RawClient::connect(session["streamUrl"].as_str().unwrap(), session["tokenValue"].as_str().unwrap()).await;
        client.run_until_output(b"\r\n", common::LIMIT).await;
        let text = String::from_utf8(client.output.clone()).unwrap();
        // Keep the client alive until the emulator is told to stop.
        std::mem::forget(client);
        text.trim().strip_prefix("pid:").unwrap().parse().unwrap()
    });
    assert!(process_alive(pid), "the command runs");
    let (_, stderr) = stop(running, Signal::SIGINT);
    assert!(stderr.contains("stopping"), "{stderr}");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        !process_alive(pid),
        "the command outlived the emulator: {state} {stderr}"
    );
}

/// Alive and not a zombie waiting to be reaped.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

#[test]
fn config_file_changes_the_world() {
    let dir = std::env::temp_dir().join(format!("emulator-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("world.toml");
    std::fs::write(
        &path,
        r#"
        region = "eu-west-1"
        [[credentials]]
        access_key_id = "AKIACONFIGFILE000000"
        secret_access_key = "config-file-secret"
        [[clusters]]
        name = "prod"
        [[clusters.services]]
        name = "api"
        running_tasks = 3
        "#,
    )
    .unwrap();
    let running = start(&["--config", path.to_str().unwrap()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = Signer {
        access_key_id: "AKIACONFIGFILE000000".into(),
        secret_access_key: "config-file-secret".into(),
        session_token: None,
        region: "eu-west-1".into(),
        service: "ecs".into(),
        time: std::time::SystemTime::now(),
    };
    let reply = runtime.block_on(call(
        running.addr,
        Some(&signer),
        &format!("{ECS}.ListTasks"),
        &serde_json::json!({"cluster": "prod", "serviceName": "api"}),
    ));
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["taskArns"].as_array().unwrap().len(), 3);
    assert!(
        reply.json["taskArns"][0]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:ecs:eu-west-1:")
    );
    // The default credentials are no longer accepted.
    let reply = runtime.block_on(call(
        running.addr,
        Some(&default_signer(running.addr)),
        &format!("{ECS}.ListTasks"),
        &serde_json::json!({"cluster": "prod"}),
    ));
    assert_eq!(reply.json["__type"], "UnrecognizedClientException");
    stop(running, Signal::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_file_is_one_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_ecs-exec-emulator"))
        .args(["--config", "/nonexistent/emulator.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read config file /nonexistent/emulator.toml"),
        "{stderr}"
    );
}

#[test]
fn names_its_kms_port_on_stderr_and_serves_kms_there() {
    let mut running = start(&[]);
    let mut stderr = BufReader::new(running.child.stderr.take().unwrap());
    let kms_addr: SocketAddr = loop {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "no kms line");
        if let Some(rest) = line.strip_prefix("kms listening on http://") {
            break rest.trim_end().parse().unwrap();
        }
    };
    assert!(kms_addr.ip().is_loopback());
    assert_ne!(kms_addr, running.addr);
    let mut signer = default_signer(kms_addr);
    signer.service = "kms".into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(call(
        kms_addr,
        Some(&signer),
        "TrentService.GenerateDataKey",
        &serde_json::json!({"KeyId": ecs_exec_emulator::DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64}),
    ));
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(running.child.wait().unwrap().success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let plaintext = reply.json["Plaintext"].as_str().unwrap();
    assert!(!rest.contains(plaintext), "the data key is never logged");
    assert!(rest.contains("GenerateDataKey"), "request logged: {rest}");
}
