//! KMS-encrypted sessions end to end: the `ecs-exec` binary against the emulator's `secure`
//! cluster, whose ECS Exec configuration names a KMS key, so every session starts with the KMS
//! handshake and carries sealed payloads (README "KMS encryption"). The emulator's agent does
//! its side with its own AES-GCM implementation and its own KMS, which decrypts the data key
//! only under the exact encryption context. Covers Hoop's one-off examples, 64 MiB each way,
//! a tmux session, faults with a cut and a resume, exit statuses, and each failure a user can
//! meet (denied GenerateDataKey, the task role's Decrypt denied, a disabled key).

use std::process::Command;
use std::time::Duration;

use ecs_exec_emulator::{Config, DEFAULT_KMS_KEY_ARN, KmsDecrypt, KmsKeyConfig};

use crate::e2e_faults::{
    cat_and_sha256sum_are_exact_on, every_fault_was_injected, hostile_network,
};
use crate::e2e_support::tmux::Terminal;
use crate::e2e_support::{Outcome, SERVICE, World, pseudo_random_bytes};

const SECURE: &str = "secure";
/// A failure must be reported well before the agent's or our own handshake bounds run out
/// twice over; a run still going then is a hang.
const FAILURE_LIMIT: Duration = Duration::from_secs(120);

/// Hoop's one-off connection command on the KMS cluster, plus the user's words.
fn secure_exec(world: &World, user_words: &[&str]) -> Command {
    let mut command = world.bare_command();
    command
        .arg(format!("--cluster={SECURE}"))
        .arg(format!("--service-name={SERVICE}"))
        .args(user_words);
    command
}

fn assert_success(outcome: &Outcome) {
    assert_eq!(
        outcome.code(),
        0,
        "exit status; stderr: {}; stdout: {:?}",
        outcome.stderr,
        outcome.stdout_text()
    );
}

/// Every session so far was encrypted: one data key per session was issued by the emulator's
/// KMS (and the agent could only have opened our input with it).
fn assert_encrypted(world: &World, sessions: usize) {
    let keys = world.emulator.issued_data_keys();
    assert_eq!(keys.len(), sessions, "one data key per session");
    assert!(keys.iter().all(|key| key.len() == 64));
}

fn one_line_error(outcome: &Outcome, code: i32) -> String {
    assert_eq!(outcome.code(), code, "stderr: {}", outcome.stderr);
    let stderr = outcome.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("ecs-exec: error: "), "{stderr}");
    assert!(outcome.stdout.is_empty(), "nothing on stdout");
    stderr.to_owned()
}

#[test]
fn hoop_one_off_examples_run_encrypted() {
    let world = World::start();
    let outcome = world.run(secure_exec(&world, &[]), b"echo \"hello world from bash\"");
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "hello world from bash\n");

    let script = "import os\nprint(6 * 7, os.environ.get(\"RAILS_ENV\"))\n";
    let outcome = world.run(
        secure_exec(&world, &["--pipe", "python3"]),
        script.as_bytes(),
    );
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "42 production\n");

    let outcome = world.run(
        secure_exec(&world, &["--pipe", "rails runner -"]),
        b"myvar='Hello from Rails'\nputs myvar\nputs Rails.env\n",
    );
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "Hello from Rails\nproduction\n");
    assert_encrypted(&world, 3);
}

#[test]
fn exit_statuses_pass_through_and_a_cluster_arn_works() {
    let world = World::start();
    let outcome = world.run(secure_exec(&world, &[]), b"echo before; exit 7");
    assert_eq!(outcome.code(), 7, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout_text(), "before\n");

    // The target id in the encryption context uses the cluster's name, also when --cluster
    // is an ARN; the agent's Decrypt would fail otherwise.
    let mut command = world.bare_command();
    command.args([
        "--cluster",
        "arn:aws:ecs:us-east-1:123456789012:cluster/secure",
        "--service-name",
        SERVICE,
    ]);
    let outcome = world.run(command, b"echo via-arn; exit 3");
    assert_eq!(outcome.code(), 3, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout_text(), "via-arn\n");

    // With --endpoint-url for ECS, AWS_ENDPOINT_URL_KMS still names the KMS endpoint.
    let mut command = world.bare_command();
    command
        .env_remove("AWS_ENDPOINT_URL_ECS")
        .args(["--endpoint-url", &world.emulator.endpoint()])
        .args(["--cluster", SECURE, "--service-name", SERVICE]);
    let outcome = world.run(command, b"echo via-flag");
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "via-flag\n");
    assert_encrypted(&world, 3);
}

#[test]
fn sixty_four_mib_each_way_byte_exact_under_kms() {
    let world = World::start();
    let input = pseudo_random_bytes(64 * 1024 * 1024);
    cat_and_sha256sum_are_exact_on(&world, || secure_exec(&world, &[]), &input);
    assert_encrypted(&world, 2);
}

#[test]
fn faults_a_cut_and_a_resume_stay_byte_exact_under_kms() {
    let world = World::start_with(|config| hostile_network(config, 0x6b6d73, Some(150)));
    let input = pseudo_random_bytes(4 * 1024 * 1024);
    cat_and_sha256sum_are_exact_on(&world, || secure_exec(&world, &[]), &input);
    let counters = every_fault_was_injected(&world);
    assert_eq!(counters.disconnects_injected, 2, "{counters:?}");
    assert_eq!(
        counters.reconnects, 2,
        "the sessions were resumed: {counters:?}"
    );
    assert_encrypted(&world, 2);
}

#[test]
fn an_interactive_session_is_encrypted_too() {
    let world = World::start();
    let mut command = world.bare_command();
    command.args([
        "--interactive",
        &format!("--cluster={SECURE}"),
        &format!("--service-name={SERVICE}"),
        "--pipe",
        "/bin/bash",
    ]);
    let terminal = Terminal::start(&command, 100, 30);
    terminal.type_line("echo typed-$((6 * 7))");
    terminal.wait_for_line("typed-42");
    terminal.type_line("echo cols-$(tput cols)");
    terminal.wait_for_line("cols-100");
    terminal.resize(120, 30);
    terminal.type_line("echo cols-$(tput cols)");
    terminal.wait_for_line("cols-120");
    terminal.type_line("exit 5");
    assert_eq!(terminal.wait_for_exit(), 5);
    assert_encrypted(&world, 1);
}

#[test]
fn an_agent_that_requires_the_challenge_acknowledgement_accepts_us() {
    // AWS's plugin fails here: it never acknowledges the challenge.
    let world = World::start_with(|config| {
        config.agent.kms_challenge = true;
        config.agent.require_challenge_ack = true;
    });
    let outcome = world.run(secure_exec(&world, &[]), b"echo acknowledged");
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "acknowledged\n");
    assert_encrypted(&world, 1);
}

#[test]
fn an_older_agent_without_a_challenge_works_too() {
    let world = World::start_with(|config| config.agent.kms_challenge = false);
    let outcome = world.run(secure_exec(&world, &[]), b"echo no-challenge");
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "no-challenge\n");
}

#[test]
fn denied_generate_data_key_is_exit_77_naming_the_action_and_the_key() {
    let world = World::start_with(|config: &mut Config| {
        config.credentials[0].deny = vec!["kms:GenerateDataKey".into()];
    });
    let outcome = world.run_within(secure_exec(&world, &[]), b"echo hi", FAILURE_LIMIT);
    let line = one_line_error(&outcome, 77);
    assert!(line.contains("kms:GenerateDataKey"), "{line}");
    assert!(line.contains(DEFAULT_KMS_KEY_ARN), "{line}");
    assert!(line.contains("AccessDeniedException"), "{line}");
}

#[test]
fn the_task_role_unable_to_decrypt_is_one_line_naming_kms_decrypt() {
    let world = World::start_with(|config| config.agent.kms_decrypt = KmsDecrypt::AccessDenied);
    let outcome = world.run_within(secure_exec(&world, &[]), b"echo hi", FAILURE_LIMIT);
    let line = one_line_error(&outcome, 77);
    assert!(line.contains("kms:Decrypt"), "{line}");
    assert!(line.contains("key policy"), "{line}");
    assert!(line.contains(DEFAULT_KMS_KEY_ARN), "{line}");
}

#[test]
fn a_disabled_key_is_a_configuration_error_naming_it() {
    let world = World::start_with(|config| {
        config.kms.keys.push(KmsKeyConfig {
            arn: DEFAULT_KMS_KEY_ARN.to_owned(),
            enabled: false,
            alias: None,
        });
    });
    let outcome = world.run_within(secure_exec(&world, &[]), b"echo hi", FAILURE_LIMIT);
    let line = one_line_error(&outcome, 78);
    assert!(line.contains(DEFAULT_KMS_KEY_ARN), "{line}");
    assert!(line.contains("disabled"), "{line}");
}

#[test]
fn the_plain_cluster_stays_unencrypted() {
    let world = World::start();
    let outcome = world.run(world.ecs_exec(), b"echo plain");
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "plain\n");
    assert_encrypted(&world, 0);
}
