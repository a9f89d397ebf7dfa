//! Raw data channel sessions over a real websocket on loopback, driven by the host's frame
//! codec: commands, input, resize, UTF-8 chunking, tokens, back-pressure, the handshake switch
//! and every fault knob.

use crate::common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{LIMIT, RawClient, execute, web_task};
use ecs_exec_emulator::{Config, Direction, Emulator, EmulatorHandle, FaultAction, FaultRule};
use ecs_exec_wire::frame::{Frame, MessageType, PayloadType};
use ecs_exec_wire::payload::{
    HandshakeRequest, HandshakeResponse, ProcessedClientAction, TerminalSize,
};

async fn start(config: Config) -> EmulatorHandle {
    Emulator::start(config).await.unwrap()
}

async fn session(handle: &EmulatorHandle, command: &str) -> RawClient {
    let (_, url, token) = execute(handle, &web_task(handle), command).await;
    RawClient::connect(&url, &token).await
}

#[tokio::test]
async fn echo_hi_runs_and_closes_after_all_output_is_acked() {
    let handle = start(Config::default()).await;
    let (session_id, url, token) = execute(&handle, &web_task(&handle), "echo hi").await;
    let mut client = RawClient::connect(&url, &token).await;
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output, b"hi\r\n");
    let first = &client.received[0];
    assert_eq!(first.sequence_number, 0);
    assert_eq!(first.flags, 1, "SYN on the first output");
    assert_eq!(first.payload_type, PayloadType::Output);
    let closed = client.closed.as_ref().unwrap();
    assert_eq!(closed.session_id, session_id);
    assert_eq!(closed.message_type, "channel_closed");
    assert!(closed.destination_id.starts_with("ecs:demo_"));
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.sessions_closed_cleanly, 1);
    assert_eq!(counters.processes_running, 0);
    assert_eq!(counters.processes_spawned, 1);
}

#[tokio::test]
async fn a_silent_failing_command_still_ends_the_session() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "sh -c 'exit 3'").await;
    client.run_to_end(LIMIT).await;
    assert!(client.output.is_empty());
    assert!(client.closed.is_some());
}

#[tokio::test]
async fn a_missing_program_is_reported_as_output() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "/nonexistent/program").await;
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("/nonexistent/program"), "{text}");
    assert!(client.closed.is_some());
}

#[tokio::test]
async fn input_size_and_acks_reach_the_command() {
    let handle = start(Config::default()).await;
    let mut client = session(
        &handle,
        "sh -c 'stty -echo; read line; stty size; echo got:$line'",
    )
    .await;
    let size = TerminalSize {
        cols: 123,
        rows: 45,
    };
    let size_seq = client.send(PayloadType::Size, &size.to_bytes()).await;
    let input_seq = client.send(PayloadType::Output, b"hello world\r").await;
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("45 123"), "{text}");
    assert!(text.contains("got:hello world"), "{text}");
    assert!(client.acked.contains(&size_seq) && client.acked.contains(&input_seq));
    assert!(client.unacked_input.is_empty());
    assert_eq!(handle.counters().input_bytes, 12);
}

#[tokio::test]
async fn duplicates_are_re_acked_and_not_written_twice() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "sh -c 'stty -echo; read a; read b; echo [$a][$b]'").await;
    let first = client.send(PayloadType::Output, b"one\r").await;
    client.run_until_acked(first, LIMIT).await;
    client.resend(first).await;
    client.send(PayloadType::Output, b"two\r").await;
    client.run_to_end(LIMIT).await;
    assert_eq!(
        client.acked.iter().filter(|s| **s == first).count(),
        2,
        "the duplicate was acked again"
    );
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("[one][two]"), "{text}");
    assert_eq!(handle.counters().duplicate_inputs, 1);
}

#[tokio::test]
async fn out_of_order_input_is_reassembled() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "sh -c 'stty -echo; read a; echo [$a]'").await;
    // Build seq 0..3 and send them backwards.
    let pieces: [&[u8]; 3] = [b"ab", b"cd", b"ef\r"];
    let frames: Vec<Bytes> = pieces
        .iter()
        .enumerate()
        .map(|(seq, p)| {
            Frame::stream(
                MessageType::InputStreamData,
                seq as i64,
                PayloadType::Output,
                Bytes::copy_from_slice(p),
                1_700_000_000_000,
                uuid::Uuid::new_v4(),
            )
            .to_bytes()
        })
        .collect();
    for frame in frames.iter().rev() {
        client.send_raw(frame.clone()).await;
    }
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("[abcdef]"), "{text}");
    let acked: BTreeSet<i64> = client.acked.iter().copied().collect();
    assert_eq!(acked, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn output_is_cut_on_utf8_boundaries() {
    let handle = start(Config::default()).await;
    // 3-byte characters in a stream long enough to be split into many frames.
    let mut client = session(
        &handle,
        "sh -c 'i=0; while [ $i -lt 3000 ]; do printf €€€€€€€€€€; i=$((i+1)); done'",
    )
    .await;
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output.len(), 3000 * 30);
    assert!(client.received.len() > 1, "output spans several frames");
    for frame in &client.received {
        assert!(
            std::str::from_utf8(&frame.payload).is_ok(),
            "frame {} is not valid UTF-8",
            frame.sequence_number
        );
    }
}

#[tokio::test]
async fn tokens_are_single_use_and_checked() {
    let handle = start(Config::default()).await;
    let (_, url, token) = execute(&handle, &web_task(&handle), "echo once").await;
    let mut wrong = RawClient::connect(&url, "not-the-token").await;
    assert!(!wrong.step().await || wrong.received.is_empty());
    let mut first = RawClient::connect(&url, &token).await;
    first.run_to_end(LIMIT).await;
    assert_eq!(first.output, b"once\r\n");
    let mut reused = RawClient::connect(&url, &token).await;
    while reused.step().await {}
    assert!(reused.received.is_empty(), "a used token opens nothing");
    let counters = handle.counters();
    assert_eq!(counters.tokens_rejected, 2);
    assert_eq!(counters.sessions_started, 1);
}

#[tokio::test]
async fn closing_the_websocket_kills_the_command() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "sh -c 'echo started; exec sleep 1000'").await;
    client.run_until_output(b"started", LIMIT).await;
    assert_eq!(handle.counters().processes_running, 1);
    drop(client);
    let counters = tokio::time::timeout(
        LIMIT,
        handle.wait_until(|c| c.sessions_finished == 1 && c.processes_running == 0),
    )
    .await
    .expect("the command was not killed");
    assert_eq!(counters.sessions_closed_cleanly, 0);
}

#[tokio::test]
async fn unacked_output_is_bounded_by_the_window() {
    let mut config = Config::default();
    config.agent.max_unacked_bytes = 64 * 1024;
    config.agent.read_chunk_bytes = 16 * 1024;
    let handle = start(config).await;
    let mut client = session(&handle, "seq 1 300000").await;
    client.ack_output = false;
    let mut total = 0usize;
    tokio::time::timeout(LIMIT, async {
        // Keep reading (never acking) until retransmissions have tripled the traffic.
        while total < 3 * 64 * 1024 {
            assert!(client.step().await);
            total = client.received.iter().map(|f| f.payload.len()).sum();
        }
    })
    .await
    .expect("no traffic");
    let mut distinct = std::collections::BTreeMap::new();
    for frame in &client.received {
        distinct.insert(frame.sequence_number, frame.payload.len());
    }
    let in_flight: usize = distinct.values().sum();
    assert!(
        in_flight <= 64 * 1024 + 16 * 1024,
        "{in_flight} bytes sent without acks"
    );
    assert!(handle.counters().output_retransmits > 0);
}

#[tokio::test]
async fn handshake_switch_runs_the_handshake_first() {
    let mut config = Config::default();
    config.agent.handshake = true;
    let handle = start(config).await;
    let mut client = session(&handle, "echo after-handshake").await;
    assert!(client.step().await);
    let request = client.received[0].clone();
    assert_eq!(request.sequence_number, 0);
    assert_eq!(request.payload_type, PayloadType::HandshakeRequest);
    let parsed = HandshakeRequest::from_payload(&request.payload).unwrap();
    assert_eq!(
        parsed.requested_client_actions[0].session_type_name(),
        Some("InteractiveCommands")
    );
    let response = HandshakeResponse {
        client_version: "1.2.0.0".into(),
        processed_client_actions: vec![ProcessedClientAction {
            action_type: "SessionType".into(),
            action_status: 1,
            action_result: serde_json::Value::Null,
            error: String::new(),
        }],
        errors: vec![],
    };
    client
        .send(PayloadType::HandshakeResponse, &response.to_bytes())
        .await;
    client.run_to_end(LIMIT).await;
    assert_eq!(
        client.received[1].payload_type,
        PayloadType::HandshakeComplete
    );
    assert_eq!(client.received[1].sequence_number, 1);
    assert!(
        client
            .received
            .iter()
            .any(|f| f.sequence_number == 2 && f.payload_type == PayloadType::Output)
    );
    assert_eq!(client.output, b"after-handshake\r\n");
}

fn rule(direction: Direction, message_type: &str, seq: i64, action: FaultAction) -> FaultRule {
    FaultRule {
        direction,
        message_type: message_type.into(),
        sequence_number: Some(seq),
        action,
        times: 1,
    }
}

#[tokio::test]
async fn a_dropped_input_frame_must_be_retransmitted_by_the_client() {
    let mut config = Config::default();
    config.faults.rules = vec![rule(
        Direction::Inbound,
        "input_stream_data",
        0,
        FaultAction::Drop,
    )];
    let handle = start(config).await;
    let mut client = session(&handle, "sh -c 'stty -echo; read a; echo [$a]'").await;
    let lost = client.send(PayloadType::Output, b"lost-").await;
    let next = client.send(PayloadType::Output, b"once\r").await;
    // Seq 1 arrives ahead of the (dropped) seq 0: it is stashed and acked, 0 is not.
    client.run_until_acked(next, LIMIT).await;
    assert!(!client.acked.contains(&lost));
    client.resend(lost).await;
    client.run_to_end(LIMIT).await;
    assert!(client.acked.contains(&lost));
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("[lost-once]"), "{text}");
    assert_eq!(handle.counters().frames_dropped, 1);
}

#[tokio::test]
async fn a_dropped_output_frame_is_retransmitted_by_the_agent() {
    let mut config = Config::default();
    config.faults.rules = vec![rule(
        Direction::Outbound,
        "output_stream_data",
        0,
        FaultAction::Drop,
    )];
    let handle = start(config).await;
    let mut client = session(&handle, "echo resent").await;
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output, b"resent\r\n");
    let counters = handle.counters();
    assert_eq!(counters.frames_dropped, 1);
    assert!(counters.output_retransmits >= 1);
}

#[tokio::test]
async fn duplicated_output_is_seen_twice_but_displayed_once() {
    let mut config = Config::default();
    config.faults.rules = vec![rule(
        Direction::Outbound,
        "output_stream_data",
        0,
        FaultAction::Duplicate,
    )];
    let handle = start(config).await;
    let mut client = session(&handle, "echo twice").await;
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output, b"twice\r\n");
    assert_eq!(
        client
            .received
            .iter()
            .filter(|f| f.sequence_number == 0)
            .count(),
        2
    );
    assert_eq!(handle.counters().frames_duplicated, 1);
}

#[tokio::test]
async fn random_faults_still_deliver_every_byte() {
    let mut config = Config::default();
    config.faults.seed = 42;
    config.faults.outbound.drop = 0.2;
    config.faults.outbound.duplicate = 0.2;
    config.faults.outbound.reorder_window = 4;
    config.faults.outbound.delay_ms = 2;
    config.agent.read_chunk_bytes = 1024;
    let handle = start(config).await;
    let mut client = session(&handle, "seq 1 20000").await;
    client.run_to_end(LIMIT).await;
    let expected: String = (1..=20000).map(|i| format!("{i}\r\n")).collect();
    assert_eq!(String::from_utf8(client.output.clone()).unwrap(), expected);
    let counters = handle.counters();
    assert!(counters.frames_dropped > 0);
    assert!(counters.frames_duplicated > 0);
    assert!(counters.frames_reordered > 0);
    assert!(counters.frames_delayed > 0);
    assert!(counters.output_retransmits > 0);
}

#[tokio::test]
async fn disconnect_after_n_frames_ends_the_session() {
    let mut config = Config::default();
    // Frame 1 is the first output, frame 2 the client's ack of it: then the socket drops.
    config.faults.disconnect_after_frames = Some(2);
    let handle = start(config).await;
    let mut client = session(&handle, "sh -c 'echo a; exec sleep 1000'").await;
    tokio::time::timeout(LIMIT, async { while client.step().await {} })
        .await
        .expect("the socket was not dropped");
    assert!(
        client.closed.is_none(),
        "no channel_closed on an injected drop"
    );
    let counters = tokio::time::timeout(
        LIMIT,
        handle.wait_until(|c| c.sessions_finished == 1 && c.processes_running == 0),
    )
    .await
    .expect("the command was not killed");
    assert_eq!(counters.disconnects_injected, 1);
}

#[tokio::test]
async fn resume_session_reattaches_a_dropped_websocket() {
    let mut config = Config::default();
    config.faults.disconnect_after_frames = Some(1);
    config.agent.reconnect_grace_secs = 60;
    let handle = start(config).await;
    let (session_id, url, token) = execute(
        &handle,
        &web_task(&handle),
        "sh -c 'stty -echo; echo before; read a; echo [$a]'",
    )
    .await;
    let mut first = RawClient::connect(&url, &token).await;
    tokio::time::timeout(LIMIT, async { while first.step().await {} })
        .await
        .expect("the socket was not dropped");
    assert!(
        first.output.is_empty(),
        "the first output frame died with the socket"
    );

    let mut ssm = common::Signer::for_handle(&handle);
    ssm.service = "ssm".into();
    let reply = common::call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.ResumeSession",
        &serde_json::json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    let token2 = reply.json["TokenValue"].as_str().unwrap();
    assert_ne!(token2, token);
    let mut second = RawClient::connect(&url, token2).await;
    second.run_until_output(b"before\r\n", LIMIT).await;
    second.send(PayloadType::Output, b"x\r").await;
    second.run_to_end(LIMIT).await;
    assert_eq!(second.output, b"before\r\n[x]\r\n");
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.reconnects, 1);
    assert_eq!(counters.disconnects_injected, 1);
    assert_eq!(counters.sessions_closed_cleanly, 1);
    assert_eq!(counters.processes_running, 0);
}

#[tokio::test]
async fn realistic_mode_reads_one_kib_at_a_time() {
    let mut config = Config::default();
    config.agent.realistic = true;
    let handle = start(config).await;
    let mut client = session(&handle, "seq 1 2000").await;
    client.run_to_end(LIMIT).await;
    let expected: String = (1..=2000).map(|i| format!("{i}\r\n")).collect();
    assert_eq!(String::from_utf8(client.output.clone()).unwrap(), expected);
    assert!(client.received.iter().all(|f| f.payload.len() <= 1024));
    assert!(client.received.len() >= expected.len() / 1024);
}

#[tokio::test]
async fn fast_mode_sends_large_frames() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "head -c 1000000 /dev/zero").await;
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output.len(), 1_000_000);
    let largest = client
        .received
        .iter()
        .map(|f| f.payload.len())
        .max()
        .unwrap();
    assert!(
        largest > 4096,
        "frames gather several terminal reads (largest {largest})"
    );
}

#[tokio::test]
async fn a_client_that_never_acks_is_closed_after_the_drain_timeout() {
    let mut config = Config::default();
    config.agent.drain_timeout_secs = 1;
    let handle = start(config).await;
    let mut client = session(&handle, "echo unacked").await;
    client.ack_output = false;
    client.run_to_end(LIMIT).await;
    assert!(client.closed.is_some(), "channel_closed came anyway");
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.sessions_closed_cleanly, 0);
    assert!(
        counters.output_retransmits > 0,
        "the agent kept resending meanwhile"
    );
}

#[tokio::test]
async fn streamed_input_is_paced_by_the_socket_not_dropped() {
    let mut config = Config::default();
    config.agent.max_pending_input_bytes = 64 * 1024;
    let handle = start(config).await;
    let mut client = session(
        &handle,
        "sh -c 'stty -echo -icanon; echo READY; head -c 2000000 | wc -c'",
    )
    .await;
    client.run_until_output(b"READY\r\n", LIMIT).await;
    // Thirty times the input queue, sent at once by a client that never retransmits: every
    // byte must still arrive, so nothing was refused.
    let chunk = vec![b'z'; 16 * 1024];
    let mut sent = 0;
    while sent < 2_000_000 {
        let n = chunk.len().min(2_000_000 - sent);
        client.send(PayloadType::Output, &chunk[..n]).await;
        sent += n;
    }
    client.run_to_end(LIMIT).await;
    assert_eq!(client.output, b"READY\r\n2000000\r\n");
    assert!(client.unacked_input.is_empty());
    assert_eq!(handle.counters().input_bytes, 2_000_000);
}

#[tokio::test]
async fn terminate_session_ends_a_running_session() {
    let handle = start(Config::default()).await;
    let (session_id, url, token) = execute(
        &handle,
        &web_task(&handle),
        "sh -c 'echo up; exec sleep 1000'",
    )
    .await;
    let mut client = RawClient::connect(&url, &token).await;
    client.run_until_output(b"up\r\n", LIMIT).await;
    let mut ssm = common::Signer::for_handle(&handle);
    ssm.service = "ssm".into();
    let reply = common::call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.TerminateSession",
        &serde_json::json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.status, 200);
    client.run_to_end(LIMIT).await;
    assert!(
        client.closed.is_some(),
        "the client is told with channel_closed"
    );
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.processes_running, 0);
}

#[tokio::test]
async fn oversized_messages_end_the_connection() {
    let handle = start(Config::default()).await;
    let mut client = session(&handle, "sh -c 'echo up; exec sleep 1000'").await;
    client.run_until_output(b"up\r\n", LIMIT).await;
    // The agent may reset the connection while this is still being written.
    use futures_util::SinkExt;
    let huge = Bytes::from(vec![0u8; 9 * 1024 * 1024]);
    let _ = client
        .socket
        .send(tokio_tungstenite::tungstenite::Message::Binary(huge))
        .await;
    tokio::time::timeout(LIMIT, async { while client.step().await {} })
        .await
        .expect("the connection stayed open");
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.processes_running, 0);
}

#[tokio::test]
async fn control_keys_act_through_the_terminal() {
    let handle = start(Config::default()).await;
    // Ctrl-C (0x03) interrupts the foreground program: the terminal turns it into SIGINT.
    // The wrapper shell traps it, as the adapters' wrapper does, and reports the status.
    let mut client = session(
        &handle,
        "sh -c 'trap : INT; echo up; sleep 1000; echo after:$?'",
    )
    .await;
    client.run_until_output(b"up\r\n", LIMIT).await;
    client.send(PayloadType::Output, &[0x03]).await;
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("after:130"), "{text}");

    // Ctrl-D (0x04) at the start of a line is end of input for `cat`.
    let mut client = session(&handle, "sh -c 'stty -echo; echo up; cat; echo cat-done'").await;
    client.run_until_output(b"up\r\n", LIMIT).await;
    client.send(PayloadType::Output, b"line\r").await;
    client.send(PayloadType::Output, &[0x04]).await;
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&client.output);
    assert!(text.contains("line\r\ncat-done"), "{text}");
}
