//! Helpers shared by the emulator's integration tests: an HTTP/1.1 client that signs requests
//! with the `aws-sigv4` crate (an implementation independent of the emulator's verifier), and
//! a minimal data channel client built on the host's frame codec.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ecs_exec_wire::frame::{Frame, MessageType, PayloadType};
use ecs_exec_wire::payload::{Acknowledge, ChannelClosed, OpenDataChannel};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

pub const ECS: &str = "AmazonEC2ContainerServiceV20141113";

/// Identity used to sign a request.
#[derive(Clone)]
pub struct Signer {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
}

impl Signer {
    pub fn for_handle(handle: &ecs_exec_emulator::EmulatorHandle) -> Self {
        Self {
            access_key_id: handle.access_key_id().to_string(),
            secret_access_key: handle.secret_access_key().to_string(),
            session_token: handle.session_token().map(str::to_string),
            region: handle.region().to_string(),
            service: "ecs".to_string(),
            time: SystemTime::now(),
        }
    }
}

/// A response: status, lower-case headers, body parsed as JSON (Null if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub json: Value,
}

/// POSTs `body` to `/` with `X-Amz-Target: target`, signed by `signer` (unsigned if None).
pub async fn call(
    addr: std::net::SocketAddr,
    signer: Option<&Signer>,
    target: &str,
    body: &Value,
) -> Reply {
    let body = body.to_string();
    let headers = request_headers(addr, signer, target, &body);
    raw_post(addr, &headers, body.as_bytes()).await
}

/// The headers of a JSON API request for `target` with `body`, SigV4-signed by `signer` with
/// the `aws-sigv4` crate (unsigned if None).
pub fn request_headers(
    addr: std::net::SocketAddr,
    signer: Option<&Signer>,
    target: &str,
    body: &str,
) -> Vec<(String, String)> {
    let host = addr.to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.clone()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-target".into(), target.into()),
    ];
    let Some(signer) = signer else {
        return headers;
    };
    let identity = aws_credential_types::Credentials::new(
        &signer.access_key_id,
        &signer.secret_access_key,
        signer.session_token.clone(),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&signer.region)
        .name(&signer.service)
        .time(signer.time)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{host}/");
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        aws_sigv4::http_request::SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .unwrap()
        .into_parts();
    let (signed, _) = instructions.into_parts();
    for header in signed {
        headers.push((header.name().to_string(), header.value().to_string()));
    }
    headers
}

/// Sends a POST with exactly these headers and reads the whole reply.
pub async fn raw_post(
    addr: std::net::SocketAddr,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    tokio::time::timeout(LIMIT, raw_post_unbounded(addr, headers, body))
        .await
        .unwrap_or_else(|_| panic!("no whole reply from {addr} within {LIMIT:?}"))
}

async fn raw_post_unbounded(
    addr: std::net::SocketAddr,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = String::from("POST / HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// ExecuteCommand on `task` (id) of cluster demo; returns (sessionId, streamUrl, token).
pub async fn execute(
    handle: &ecs_exec_emulator::EmulatorHandle,
    task: &str,
    command: &str,
) -> (String, String, String) {
    let signer = Signer::for_handle(handle);
    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.ExecuteCommand"),
        &serde_json::json!({"cluster": "demo", "task": task, "container": "app", "command": command, "interactive": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let session = &reply.json["session"];
    (
        session["sessionId"].as_str().unwrap().to_string(),
        session["streamUrl"].as_str().unwrap().to_string(),
        session["tokenValue"].as_str().unwrap().to_string(),
    )
}

/// The id of the first RUNNING task of service `web` in the default world.
pub fn web_task(handle: &ecs_exec_emulator::EmulatorHandle) -> String {
    let demo = handle.world().cluster(Some("demo")).unwrap();
    demo.tasks
        .iter()
        .find(|t| t.service == "web" && t.status == ecs_exec_emulator::world::TaskStatus::Running)
        .unwrap()
        .id
        .clone()
}

pub type Socket = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A bare-bones client of the data channel: no retransmission unless asked, acks every output
/// frame, reassembles output in sequence order.
pub struct RawClient {
    pub socket: Socket,
    next_seq: i64,
    expected_output: i64,
    pending_output: BTreeMap<i64, Frame>,
    /// Output payloads (type 1) in order.
    pub output: Vec<u8>,
    /// Every stream frame received, in arrival order (duplicates included).
    pub received: Vec<Frame>,
    /// Sequence numbers the agent acked.
    pub acked: Vec<i64>,
    /// Input frames sent and not yet acked.
    pub unacked_input: BTreeMap<i64, Bytes>,
    /// Every input frame sent, for resends.
    sent_input: BTreeMap<i64, Bytes>,
    pub closed: Option<ChannelClosed>,
    /// Whether to ack output frames.
    pub ack_output: bool,
}

impl RawClient {
    /// Dials `stream_url` and sends OpenDataChannel with `token`.
    pub async fn connect(stream_url: &str, token: &str) -> Self {
        let (mut socket, _) =
            tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(stream_url))
                .await
                .unwrap_or_else(|_| panic!("no websocket from {stream_url} within {LIMIT:?}"))
                .unwrap();
        let open = OpenDataChannel::client(
            &Uuid::new_v4().to_string(),
            token,
            &Uuid::new_v4().to_string(),
            "1.2.0.0",
        );
        socket.send(Message::text(open.to_json())).await.unwrap();
        Self {
            socket,
            next_seq: 0,
            expected_output: 0,
            pending_output: BTreeMap::new(),
            output: Vec::new(),
            received: Vec::new(),
            acked: Vec::new(),
            unacked_input: BTreeMap::new(),
            sent_input: BTreeMap::new(),
            closed: None,
            ack_output: true,
        }
    }

    /// Sends one input message; returns its sequence number.
    pub async fn send(&mut self, payload_type: PayloadType, payload: &[u8]) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = Frame::stream(
            MessageType::InputStreamData,
            seq,
            payload_type,
            Bytes::copy_from_slice(payload),
            now_ms(),
            Uuid::new_v4(),
        )
        .to_bytes();
        self.unacked_input.insert(seq, frame.clone());
        self.sent_input.insert(seq, frame.clone());
        self.socket.send(Message::Binary(frame)).await.unwrap();
        seq
    }

    /// Sends input seq `seq` again, as it was.
    pub async fn resend(&mut self, seq: i64) {
        let frame = self.sent_input.get(&seq).unwrap().clone();
        self.socket.send(Message::Binary(frame)).await.unwrap();
    }

    /// Sends a raw frame without bookkeeping.
    pub async fn send_raw(&mut self, frame: Bytes) {
        self.socket.send(Message::Binary(frame)).await.unwrap();
    }

    /// Reads one message and handles it; false when the socket ended.
    pub async fn step(&mut self) -> bool {
        let Some(message) = self.socket.next().await else {
            return false;
        };
        let Ok(message) = message else { return false };
        let Message::Binary(bytes) = message else {
            if matches!(message, Message::Close(_)) {
                // Complete the closing handshake so the agent does not wait for us.
                let _ = self.socket.flush().await;
                return false;
            }
            return true;
        };
        let frame = Frame::decode(&bytes).expect("the agent sends valid frames");
        match frame.message_type {
            MessageType::OutputStreamData => {
                self.received.push(frame.clone());
                if self.ack_output {
                    let ack = Acknowledge::frame_for(&frame, now_ms(), Uuid::new_v4()).to_bytes();
                    // The agent may already have closed after channel_closed (a late duplicate).
                    let _ = self.socket.send(Message::Binary(ack)).await;
                }
                if frame.sequence_number >= self.expected_output {
                    self.pending_output.insert(frame.sequence_number, frame);
                }
                while let Some(next) = self.pending_output.remove(&self.expected_output) {
                    if next.payload_type == PayloadType::Output {
                        self.output.extend_from_slice(&next.payload);
                    }
                    self.expected_output += 1;
                }
            }
            MessageType::Acknowledge => {
                let ack = Acknowledge::from_payload(&frame.payload).unwrap();
                self.acked.push(ack.acknowledged_message_sequence_number);
                self.unacked_input
                    .remove(&ack.acknowledged_message_sequence_number);
            }
            MessageType::ChannelClosed => {
                self.closed = Some(ChannelClosed::from_payload(&frame.payload).unwrap());
            }
            _ => {}
        }
        true
    }

    /// Runs until channel_closed or the socket ends (bounded by `limit`).
    pub async fn run_to_end(&mut self, limit: Duration) {
        tokio::time::timeout(limit, async {
            while self.closed.is_none() && self.step().await {}
            // Read on until the agent hangs up, answering its close, as a polite client does.
            while self.step().await {}
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the session did not end within {limit:?}; channel_closed: {:?}; output so far: {:?}",
                self.closed,
                String::from_utf8_lossy(&self.output)
            )
        });
    }

    /// Runs until the in-order output contains `needle`.
    pub async fn run_until_output(&mut self, needle: &[u8], limit: Duration) {
        tokio::time::timeout(limit, async {
            while !contains(&self.output, needle) {
                assert!(
                    self.step().await,
                    "socket ended before {:?} appeared",
                    String::from_utf8_lossy(needle)
                );
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{:?} did not appear within {limit:?}; output so far: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.output)
            )
        });
    }

    /// Runs until input `seq` is acked.
    pub async fn run_until_acked(&mut self, seq: i64, limit: Duration) {
        tokio::time::timeout(limit, async {
            while !self.acked.contains(&seq) {
                assert!(self.step().await, "socket ended before the ack of {seq}");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no ack of {seq} within {limit:?}; acked: {:?}", self.acked));
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// How long one step of a test may take: minutes, so only a hang reaches it, even on a loaded
/// 2-core CI machine.
pub const LIMIT: Duration = Duration::from_secs(180);
