//! The host's own data channel client (`ecs_exec::channel::transport`) against the emulator,
//! with faults in both directions: the two reliability layers were written separately and
//! must still deliver every byte exactly once.

use std::time::Duration;

use aws_credential_types::Credentials;
use bytes::Bytes;
use ecs_exec::channel::session::Event;
use ecs_exec::channel::transport::{ConnectParams, DataChannel};
use ecs_exec::ecs::{self, AwsSettings, EcsApi, TaskSelector};
use ecs_exec_emulator::{Config, Emulator, EmulatorHandle};

/// How long one session may take: minutes, so only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(180);

/// ExecuteCommand on a task of service `web` in cluster `demo`, through the host's own ECS
/// client: the data channel's URL and token.
async fn execute(handle: &EmulatorHandle, command: &str) -> (String, String) {
    let settings = AwsSettings {
        region: Some(handle.region().to_owned()),
        profile: None,
        endpoint_url: Some(handle.endpoint()),
    };
    let credentials = Credentials::new(
        handle.access_key_id(),
        handle.secret_access_key(),
        handle.session_token().map(str::to_owned),
        None,
        "emulator",
    );
    let config = ecs::config_loader(&settings)
        .empty_test_environment()
        .credentials_provider(credentials)
        .load()
        .await;
    let api = EcsApi::new(&config).expect("region is set");
    let target = api
        .resolve_target(
            "demo",
            &TaskSelector::Service("web".to_owned()),
            Some("app"),
        )
        .await
        .expect("the demo service has a running task");
    let session = api
        .execute_command(&target, command, true)
        .await
        .expect("ExecuteCommand succeeds");
    (session.stream_url, session.token.expose().to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn run(
    config: Config,
    command: &str,
    input: Option<Vec<u8>>,
) -> (Vec<u8>, ecs_exec_emulator::CountersSnapshot) {
    let handle = Emulator::start(config).await.unwrap();
    let (url, token) = tokio::time::timeout(LIMIT, execute(&handle, command))
        .await
        .expect("ExecuteCommand did not answer in time");
    let (writer, mut events) = DataChannel::connect(ConnectParams::new(url, token))
        .await
        .unwrap();
    writer.send_resize(100, 40).unwrap();
    let mut output = Vec::new();
    let mut input = input;
    tokio::time::timeout(LIMIT, async {
        while let Some(event) = events.next().await {
            match event {
                Event::Output(bytes) => {
                    output.extend_from_slice(&bytes);
                    // Send the input once the command says it is ready for it.
                    if contains(&output, b"READY\r\n")
                        && let Some(data) = input.take()
                    {
                        let writer = writer.clone();
                        tokio::spawn(async move {
                            for chunk in data.chunks(8192) {
                                let chunk = Bytes::copy_from_slice(chunk);
                                writer.send_input(chunk).await.unwrap();
                            }
                        });
                    }
                }
                Event::Closed { .. } => break,
                Event::Lost { reason } => panic!("session lost: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("session did not end in time");
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    (output, counters)
}

fn faulty() -> Config {
    let mut config = Config::default();
    config.faults.seed = 11;
    for rates in [&mut config.faults.outbound, &mut config.faults.inbound] {
        rates.drop = 0.05;
        rates.duplicate = 0.05;
        rates.reorder_window = 4;
        rates.delay_ms = 1;
    }
    // Certain losses on top of the random ones, so every run exercises both repair paths.
    let drop_first = |direction, message_type: &str| ecs_exec_emulator::FaultRule {
        direction,
        message_type: message_type.into(),
        sequence_number: None,
        action: ecs_exec_emulator::FaultAction::Drop,
        times: 1,
    };
    config.faults.rules = vec![
        drop_first(ecs_exec_emulator::Direction::Outbound, "output_stream_data"),
        drop_first(ecs_exec_emulator::Direction::Inbound, "input_stream_data"),
    ];
    config.agent.read_chunk_bytes = 4096;
    config
}

#[tokio::test]
async fn output_survives_faults_with_the_host_client() {
    let (output, counters) = run(faulty(), "seq 1 30000", None).await;
    let expected: String = (1..=30000).map(|i| format!("{i}\r\n")).collect();
    assert_eq!(String::from_utf8(output).unwrap(), expected);
    assert!(counters.frames_dropped >= 2 && counters.frames_reordered > 0);
    assert_eq!(counters.sessions_closed_cleanly, 1);
}

#[tokio::test]
async fn input_survives_faults_with_the_host_client() {
    let data: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (output, counters) = run(
        faulty(),
        "sh -c 'stty -echo -icanon; echo READY; head -c 300000 | cksum'",
        Some(data.clone()),
    )
    .await;
    let text = String::from_utf8(output).unwrap();
    // cksum of the same bytes, computed here by the same tool.
    let cksum = ecs_exec_emulator::testing::output_within(
        &mut std::process::Command::new("cksum"),
        &data,
        ecs_exec_emulator::testing::PROCESS_DEADLINE,
    );
    let local = String::from_utf8(cksum.stdout).unwrap();
    assert!(
        text.contains(local.trim()),
        "remote {text:?} vs local {local:?}"
    );
    assert!(counters.frames_dropped >= 2);
    assert_eq!(counters.input_bytes, 300_000);
}
