//! Test support shared by the channel tests and benches: a fake agent written independently
//! from the client `Session` (the agent side of docs/protocol.md §8, with its own policy), a
//! simulated link with a seeded fault schedule, and a `Pair` that runs both on a virtual clock.
//! The agent can also encrypt with KMS ([`FakeKms`]): its cipher uses aws-lc-rs directly, not
//! the client's `SessionCipher`, so a mistake in one (key halves, nonce place) cannot hide.
//! Nothing here touches a socket or the real clock; time is virtual milliseconds.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ecs_exec::channel::crypto::DataKey;
use ecs_exec::channel::frame::{Frame, MessageType, PayloadType};
use ecs_exec::channel::payload::{
    Acknowledge, ChannelClosed, EncryptionChallenge, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, OpenDataChannel, RequestedClientAction, TerminalSize,
};
use ecs_exec::channel::session::{
    DataKeyGrant, DataKeyRequest, Event, FixedClock, Session, SessionConfig, Transmit,
};
use uuid::Uuid;

pub const TOKEN: &str = "test-token";
const DATE: u64 = 1_764_265_200_000;

/// Test data: fixed bytes, or a generated pattern of any length that is never held in memory.
#[derive(Clone, Debug)]
pub enum Data {
    Bytes(Bytes),
    Pattern { len: usize, salt: u8 },
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Bytes(bytes) => bytes.len(),
            Data::Pattern { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pattern_byte(salt: u8, index: usize) -> u8 {
        (index as u8).wrapping_mul(31).wrapping_add(salt) ^ (index >> 10) as u8
    }

    /// Bytes `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Bytes {
        match self {
            Data::Bytes(bytes) => bytes.slice(start..end),
            Data::Pattern { salt, .. } => Bytes::from(
                (start..end)
                    .map(|i| Self::pattern_byte(*salt, i))
                    .collect::<Vec<u8>>(),
            ),
        }
    }
}

/// Received bytes: kept for comparison, or (for a pattern) checked on arrival and dropped.
#[derive(Debug, Default)]
pub struct Received {
    pub kept: Vec<u8>,
    verify: Option<u8>,
    pub len: usize,
    pub mismatches: usize,
}

impl Received {
    /// Verifies against the pattern with this salt instead of keeping the bytes.
    pub fn verifying(salt: u8) -> Self {
        Self {
            verify: Some(salt),
            ..Self::default()
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        match self.verify {
            Some(salt) => {
                let start = self.len;
                self.mismatches += data
                    .iter()
                    .enumerate()
                    .filter(|(i, byte)| **byte != Data::pattern_byte(salt, start + i))
                    .count();
            }
            None => self.kept.extend_from_slice(data),
        }
        self.len += data.len();
    }
}

/// xorshift64*: a tiny seeded generator so schedules replay exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

/// The agent's half of a KMS-encrypted session: the data key (as KMS would issue it), the
/// agent's nonce counter, and the challenge it is waiting to see answered.
pub struct FakeKms {
    pub key_id: String,
    /// The challenge string of the HandshakeRequest (newer agents); `None` leaves it out.
    pub challenge: Option<String>,
    data_key: [u8; 64],
    pub blob: Bytes,
    nonce_counter: u64,
    rng: Rng,
    challenge_plain: Option<Vec<u8>>,
    pub challenge_verified: bool,
    /// Input payloads the agent opened.
    pub inputs_opened: u64,
}

impl FakeKms {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x006b_6d73);
        let mut data_key = [0u8; 64];
        for chunk in data_key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        let nonce_counter = rng.next_u64() >> 1;
        Self {
            key_id: "arn:aws:kms:us-east-1:123456789012:key/fake".to_owned(),
            challenge: Some(BASE64.encode(rng.next_u64().to_be_bytes())),
            data_key,
            blob: Bytes::from(format!("blob-{seed}")),
            nonce_counter,
            rng,
            challenge_plain: None,
            challenge_verified: false,
            inputs_opened: 0,
        }
    }

    /// What GenerateDataKey would give the client.
    pub fn grant(&self) -> DataKeyGrant {
        DataKeyGrant {
            ciphertext_blob: self.blob.clone(),
            data_key: DataKey::from_slice(&self.data_key).expect("64 bytes"),
        }
    }

    /// The bytes of the data key, for tests that look for it in output.
    pub fn data_key_bytes(&self) -> [u8; 64] {
        self.data_key
    }

    fn key(bytes: &[u8]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"))
    }

    /// Seals with the agent key (bytes 0-31); the nonce is the agent's counter.
    fn seal(&mut self, plain: &[u8]) -> Bytes {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.nonce_counter.to_be_bytes());
        self.nonce_counter += 1;
        let mut body = plain.to_vec();
        Self::key(&self.data_key[..32])
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .expect("seal");
        Bytes::from([&nonce[..], &body].concat())
    }

    /// Opens with the client key (bytes 32-63); `None` when it does not authenticate.
    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 28 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = Self::key(&self.data_key[32..])
            .open_in_place(nonce, Aad::empty(), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A fake agent: acks every stream message (re-acks duplicates), keeps its own expected
/// sequence number and stash, buffers its output until acked and resends anything unacked
/// after a fixed timeout, then sends channel_closed once its output is acked and the expected
/// input has arrived.
pub struct FakeAgent {
    opened: bool,
    pub open_messages: Vec<OpenDataChannel>,
    expected: i64,
    stash: BTreeMap<i64, Frame>,
    pub stash_limit: usize,
    pub max_stash_seen: usize,
    pub received_input: Received,
    pub sizes: Vec<TerminalSize>,
    pub duplicates_seen: u64,

    next_seq: i64,
    unacked: BTreeMap<i64, (Bytes, u64)>,
    pub window: usize,
    pub resend_after_ms: u64,
    /// No unacked message is due for a resend before this time (may be early, never late).
    resend_check_at: u64,
    pub resends: u64,
    outgoing: VecDeque<Bytes>,
    output: Data,
    output_offset: usize,
    pub chunk: usize,
    /// Payload type of the output (1 stdout; 11 stderr for routing tests).
    pub output_type: PayloadType,
    pub exit_code: Option<i32>,
    exit_sent: bool,

    pub handshake: bool,
    handshake_done: bool,
    handshake_sent: bool,
    /// KMS encryption (needs `handshake`); see [`FakeAgent::encrypt`].
    pub kms: Option<FakeKms>,

    pub expected_input_len: usize,
    closed_at: Option<u64>,
    ids: u128,
}

impl FakeAgent {
    pub fn new(output: Bytes, expected_input_len: usize) -> Self {
        Self::with_data(Data::Bytes(output), expected_input_len)
    }

    pub fn with_data(output: Data, expected_input_len: usize) -> Self {
        Self {
            opened: false,
            open_messages: Vec::new(),
            expected: 0,
            stash: BTreeMap::new(),
            stash_limit: 1000,
            max_stash_seen: 0,
            received_input: Received::default(),
            sizes: Vec::new(),
            duplicates_seen: 0,
            next_seq: 0,
            unacked: BTreeMap::new(),
            window: 256,
            resend_after_ms: 300,
            resend_check_at: u64::MAX,
            resends: 0,
            outgoing: VecDeque::new(),
            output,
            output_offset: 0,
            chunk: 1024,
            output_type: PayloadType::Output,
            exit_code: None,
            exit_sent: false,
            handshake: false,
            handshake_done: false,
            handshake_sent: false,
            kms: None,
            expected_input_len,
            closed_at: None,
            ids: 0,
        }
    }

    /// Makes the session a KMS-encrypted one (a handshake with the KMS action and challenge).
    pub fn encrypt(&mut self, seed: u64) {
        self.handshake = true;
        self.kms = Some(FakeKms::new(seed));
    }

    fn next_id(&mut self) -> Uuid {
        self.ids += 1;
        Uuid::from_u128(0xA000_0000_0000_0000_0000_0000_0000_0000 | self.ids)
    }

    pub fn receive_text(&mut self, text: &str) {
        let open = OpenDataChannel::from_json(text).expect("client sends valid OpenDataChannel");
        assert_eq!(open.token_value, TOKEN);
        self.open_messages.push(open);
        self.opened = true;
    }

    pub fn receive_binary(&mut self, now_ms: u64, bytes: &Bytes) {
        if !self.opened {
            return; // nothing is accepted before OpenDataChannel
        }
        let frame = Frame::decode(bytes).expect("client frames always decode");
        assert!(
            !frame.payload.is_empty(),
            "client must never send an empty payload"
        );
        match frame.message_type {
            MessageType::Acknowledge => {
                let ack = Acknowledge::from_payload(&frame.payload).expect("ack json");
                self.unacked
                    .remove(&ack.acknowledged_message_sequence_number);
            }
            MessageType::InputStreamData => self.receive_stream(now_ms, frame),
            other => panic!("client sent unexpected message type {other}"),
        }
    }

    fn ack(&mut self, frame: &Frame) {
        let id = self.next_id();
        self.outgoing
            .push_back(Acknowledge::frame_for(frame, DATE, id).to_bytes());
    }

    fn receive_stream(&mut self, now_ms: u64, frame: Frame) {
        let seq = frame.sequence_number;
        if seq < self.expected {
            self.duplicates_seen += 1;
            self.ack(&frame);
            return;
        }
        if seq > self.expected {
            if self.stash.len() >= self.stash_limit && !self.stash.contains_key(&seq) {
                return;
            }
            self.ack(&frame);
            self.stash.insert(seq, frame);
            self.max_stash_seen = self.max_stash_seen.max(self.stash.len());
            return;
        }
        self.ack(&frame);
        self.consume(now_ms, frame);
        while let Some(next) = self.stash.remove(&self.expected) {
            self.consume(now_ms, next);
        }
    }

    fn consume(&mut self, now_ms: u64, frame: Frame) {
        self.expected += 1;
        match frame.payload_type {
            PayloadType::Output if !self.handshake || self.handshake_done => match &mut self.kms {
                Some(kms) => {
                    let plain = kms
                        .open(&frame.payload)
                        .expect("client input opens with the client key");
                    kms.inputs_opened += 1;
                    self.received_input.push(&plain);
                }
                None => self.received_input.push(&frame.payload),
            },
            PayloadType::Size => self
                .sizes
                .push(TerminalSize::from_payload(&frame.payload).expect("size json")),
            PayloadType::HandshakeResponse => {
                let response =
                    HandshakeResponse::from_payload(&frame.payload).expect("response json");
                assert!(
                    response
                        .processed_client_actions
                        .iter()
                        .all(|action| action.action_status == 1),
                    "client refused an action: {response:?}"
                );
                if let Some(kms) = &mut self.kms {
                    let result = &response
                        .processed_client_actions
                        .iter()
                        .find(|action| action.action_type == "KMSEncryption")
                        .expect("the KMS action is answered")
                        .action_result;
                    assert_eq!(result["KMSCipherTextKey"], BASE64.encode(&kms.blob));
                    assert!(result["KMSCipherTextHash"].is_null());
                    if kms.challenge.is_some() {
                        assert_eq!(result["ChallengeAcknowledgement"], true);
                    }
                    let plain: Vec<u8> = (0..8)
                        .flat_map(|_| kms.rng.next_u64().to_be_bytes())
                        .collect();
                    let challenge = EncryptionChallenge {
                        challenge: BASE64.encode(kms.seal(&plain)),
                    };
                    kms.challenge_plain = Some(plain);
                    self.queue_stream(
                        now_ms,
                        PayloadType::EncChallengeRequest,
                        challenge.to_bytes(),
                    );
                    return;
                }
                self.complete_handshake(now_ms);
            }
            PayloadType::EncChallengeResponse => {
                let kms = self.kms.as_mut().expect("a challenge answer only with KMS");
                let answer =
                    EncryptionChallenge::from_payload(&frame.payload).expect("challenge json");
                let sealed = BASE64.decode(answer.challenge).expect("base64");
                let plain = kms
                    .open(&sealed)
                    .expect("the answer opens with the client key");
                assert_eq!(Some(plain), kms.challenge_plain, "the challenge is echoed");
                kms.challenge_verified = true;
                self.complete_handshake(now_ms);
            }
            _ => {} // discarded (but acked), as the agent does before the handshake
        }
    }

    fn complete_handshake(&mut self, now_ms: u64) {
        self.handshake_done = true;
        let complete = HandshakeComplete {
            handshake_time_to_complete: 1_000_000,
            customer_message: "welcome".to_owned(),
        };
        self.queue_stream(now_ms, PayloadType::HandshakeComplete, complete.to_bytes());
    }

    fn queue_stream(&mut self, now_ms: u64, payload_type: PayloadType, payload: Bytes) {
        let payload = match (&mut self.kms, payload_type) {
            // Sealed once: a resend repeats the same bytes.
            (Some(kms), PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode) => {
                kms.seal(&payload)
            }
            _ => payload,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.next_id();
        let wire = Frame::stream(
            MessageType::OutputStreamData,
            seq,
            payload_type,
            payload,
            DATE,
            id,
        )
        .to_bytes();
        self.unacked.insert(seq, (wire.clone(), now_ms));
        self.resend_check_at = self.resend_check_at.min(now_ms + self.resend_after_ms);
        self.outgoing.push_back(wire);
    }

    /// Produces output, resends, and ends the session when done.
    pub fn tick(&mut self, now_ms: u64) {
        if !self.opened {
            return;
        }
        if self.handshake && !self.handshake_sent {
            self.handshake_sent = true;
            let mut actions = vec![RequestedClientAction::session_type("InteractiveCommands")];
            if let Some(kms) = &self.kms {
                actions.push(RequestedClientAction::kms_encryption(
                    &kms.key_id,
                    kms.challenge.as_deref(),
                ));
            }
            let request = HandshakeRequest {
                agent_version: "3.3.0.0".to_owned(),
                requested_client_actions: actions,
            };
            self.queue_stream(now_ms, PayloadType::HandshakeRequest, request.to_bytes());
        }
        let may_output = !self.handshake || self.handshake_done;
        while may_output
            && self.output_offset < self.output.len()
            && self.unacked.len() < self.window
        {
            let end = self.output.len().min(self.output_offset + self.chunk);
            let chunk = self.output.slice(self.output_offset, end);
            self.output_offset = end;
            self.queue_stream(now_ms, self.output_type, chunk);
        }
        if may_output && self.output_offset == self.output.len() && !self.exit_sent {
            if let Some(code) = self.exit_code {
                self.queue_stream(
                    now_ms,
                    PayloadType::ExitCode,
                    Bytes::from(format!("EXIT_CODE: {code}")),
                );
            }
            self.exit_sent = true;
        }
        if now_ms >= self.resend_check_at {
            // Resend everything unacked for longer than the fixed timeout (no backoff).
            let mut next_check = u64::MAX;
            for (wire, last_sent) in self.unacked.values_mut() {
                if now_ms >= *last_sent + self.resend_after_ms {
                    *last_sent = now_ms;
                    self.resends += 1;
                    self.outgoing.push_back(wire.clone());
                }
                next_check = next_check.min(*last_sent + self.resend_after_ms);
            }
            self.resend_check_at = next_check;
        }
        let done = self.exit_sent
            && self.unacked.is_empty()
            && self.received_input.len >= self.expected_input_len;
        if done && self.closed_at.is_none_or(|at| now_ms >= at + 500) {
            // Repeated every 500 ms because the simulated link may drop it.
            self.closed_at = Some(now_ms);
            let closed = ChannelClosed {
                session_id: "s-1".to_owned(),
                message_type: "channel_closed".to_owned(),
                schema_version: 1,
                ..ChannelClosed::default()
            };
            let id = self.next_id();
            self.outgoing.push_back(
                Frame::control(MessageType::ChannelClosed, closed.to_bytes(), DATE, id).to_bytes(),
            );
        }
    }

    pub fn poll_send(&mut self) -> Option<Bytes> {
        self.outgoing.pop_front()
    }

    pub fn next_wakeup(&self, now_ms: u64) -> Option<u64> {
        if !self.opened {
            return None;
        }
        let resend = (!self.unacked.is_empty()).then_some(self.resend_check_at);
        let closing = self.closed_at.map(|at| at + 500);
        let producing = (self.output_offset < self.output.len()
            && self.unacked.len() < self.window)
            .then_some(now_ms + 1);
        [resend, closing, producing].into_iter().flatten().min()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    ToAgent,
    ToClient,
}

/// What the link does with one message.
#[derive(Clone, Copy, Debug)]
pub enum Fate {
    Deliver { delay_ms: u64 },
    Drop,
    Duplicate { first_ms: u64, second_ms: u64 },
}

#[derive(Clone, Debug)]
enum Payload {
    Text(String),
    Binary(Bytes),
    Pong,
}

/// Random faults: each binary message is dropped, duplicated or delayed (which reorders).
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        max_delay_ms: 0,
    };
}

/// A scripted fault: called for every binary message with its direction, decoded frame and
/// index in that direction; `None` falls back to the random schedule.
pub type Script = Box<dyn FnMut(Direction, &Frame, u64) -> Option<Fate>>;

pub struct Link {
    rng: Rng,
    faults: Faults,
    script: Option<Script>,
    queue: BinaryHeap<Reverse<(u64, u64, Direction)>>,
    payloads: BTreeMap<u64, Payload>,
    counter: u64,
    sent: [u64; 2],
    pub max_in_flight: usize,
}

impl Link {
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self {
            rng: Rng::new(seed),
            faults,
            script: None,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            counter: 0,
            sent: [0; 2],
            max_in_flight: 0,
        }
    }

    fn push(&mut self, at: u64, direction: Direction, payload: Payload) {
        self.counter += 1;
        self.queue.push(Reverse((at, self.counter, direction)));
        self.payloads.insert(self.counter, payload);
        self.max_in_flight = self.max_in_flight.max(self.queue.len());
    }

    fn random_fate(&mut self) -> Fate {
        let delay = |rng: &mut Rng, max: u64| rng.below(max + 1);
        if self.rng.unit() < self.faults.drop {
            Fate::Drop
        } else if self.rng.unit() < self.faults.duplicate {
            Fate::Duplicate {
                first_ms: delay(&mut self.rng, self.faults.max_delay_ms),
                second_ms: delay(&mut self.rng, self.faults.max_delay_ms),
            }
        } else {
            Fate::Deliver {
                delay_ms: delay(&mut self.rng, self.faults.max_delay_ms),
            }
        }
    }

    fn send_binary(&mut self, now_ms: u64, direction: Direction, bytes: Bytes) {
        let index = self.sent[direction as usize];
        self.sent[direction as usize] += 1;
        let scripted = match self.script.as_mut() {
            Some(script) => {
                let frame = Frame::decode(&bytes).expect("frames on the link decode");
                script(direction, &frame, index)
            }
            None => None,
        };
        match scripted.unwrap_or_else(|| self.random_fate()) {
            Fate::Drop => {}
            Fate::Deliver { delay_ms } => {
                self.push(now_ms + delay_ms, direction, Payload::Binary(bytes))
            }
            Fate::Duplicate {
                first_ms,
                second_ms,
            } => {
                self.push(now_ms + first_ms, direction, Payload::Binary(bytes.clone()));
                self.push(now_ms + second_ms, direction, Payload::Binary(bytes));
            }
        }
    }

    /// The socket dropped: everything in flight is lost.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.payloads.clear();
    }

    fn next_time(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self, now_ms: u64) -> Option<(Direction, Payload)> {
        let Reverse((at, counter, direction)) = *self.queue.peek()?;
        if at > now_ms {
            return None;
        }
        self.queue.pop();
        let payload = self.payloads.remove(&counter)?;
        Some((direction, payload))
    }
}

/// The client session and the fake agent joined by a link, on virtual time.
pub struct Pair {
    pub client: Session,
    pub agent: FakeAgent,
    pub link: Link,
    base: Instant,
    pub now_ms: u64,
    input: Data,
    input_offset: usize,
    input_rng: Rng,
    pub max_input_write: usize,
    pub client_output: Received,
    pub client_stderr: Vec<u8>,
    pub events: Vec<Event>,
    /// What the client asked KMS for (answered from the agent's [`FakeKms`]).
    pub key_requests: Vec<DataKeyRequest>,
    pub max_unacked_bytes_seen: usize,
    pub max_reorder_seen: (usize, usize),
    pub steps: u64,
    pub resize_first: Option<(u32, u32)>,
    started_input: bool,
    /// Virtual times at which the websocket drops and the client reconnects.
    pub disconnects: VecDeque<u64>,
}

/// What a run produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Closed { output: String },
    Lost(String),
}

impl Pair {
    pub fn new(config: SessionConfig, agent: FakeAgent, link: Link, input: Bytes) -> Self {
        Self::with_data(config, agent, link, Data::Bytes(input))
    }

    pub fn with_data(config: SessionConfig, agent: FakeAgent, link: Link, input: Data) -> Self {
        let base = Instant::now();
        let client = Session::new(config, TOKEN, Box::new(FixedClock(DATE)), base);
        Self {
            client,
            agent,
            link,
            base,
            now_ms: 0,
            input,
            input_offset: 0,
            input_rng: Rng::new(99),
            max_input_write: 4096,
            client_output: Received::default(),
            client_stderr: Vec::new(),
            events: Vec::new(),
            key_requests: Vec::new(),
            max_unacked_bytes_seen: 0,
            max_reorder_seen: (0, 0),
            steps: 0,
            resize_first: None,
            started_input: false,
            disconnects: VecDeque::new(),
        }
    }

    pub fn set_script(&mut self, script: Script) {
        self.link.script = Some(script);
    }

    fn instant(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn feed_input(&mut self) {
        if !self.started_input {
            // In a handshake session input waits for HandshakeComplete (see Session docs).
            let ready = !self.agent.handshake
                || self
                    .events
                    .iter()
                    .any(|event| matches!(event, Event::HandshakeComplete { .. }));
            if !ready {
                return;
            }
            self.started_input = true;
            if let Some((cols, rows)) = self.resize_first {
                self.client.send_resize(cols, rows).expect("session open");
            }
        }
        while self.client.can_send() && self.input_offset < self.input.len() {
            let len = 1 + self.input_rng.below(self.max_input_write as u64) as usize;
            let end = self.input.len().min(self.input_offset + len);
            let chunk = self.input.slice(self.input_offset, end);
            self.input_offset = end;
            self.client.send_input(chunk).expect("session open");
        }
    }

    fn pump(&mut self) {
        let now = self.instant(self.now_ms);
        while let Some(transmit) = self.client.poll_transmit(now) {
            match transmit {
                // The open message rides the fresh TCP connection: never lost or delayed.
                Transmit::Text(text) => {
                    self.link
                        .push(self.now_ms, Direction::ToAgent, Payload::Text(text))
                }
                Transmit::Binary(bytes) => {
                    self.link
                        .send_binary(self.now_ms, Direction::ToAgent, bytes)
                }
                Transmit::Ping(_) => {
                    let delay = self.link.faults.max_delay_ms;
                    self.link
                        .push(self.now_ms + delay, Direction::ToClient, Payload::Pong)
                }
            }
        }
        self.agent.tick(self.now_ms);
        while let Some(bytes) = self.agent.poll_send() {
            self.link
                .send_binary(self.now_ms, Direction::ToClient, bytes);
        }
        self.max_unacked_bytes_seen = self.max_unacked_bytes_seen.max(self.client.unacked_bytes());
        let (frames, bytes) = self.client.reorder_buffered();
        self.max_reorder_seen = (
            self.max_reorder_seen.0.max(frames),
            self.max_reorder_seen.1.max(bytes),
        );
    }

    fn drain_events(&mut self) -> Option<Ending> {
        let mut ending = None;
        while let Some(event) = self.client.poll_event() {
            match &event {
                Event::Output(bytes) => self.client_output.push(bytes),
                Event::Stderr(bytes) => self.client_stderr.extend_from_slice(bytes),
                Event::Closed { output } => {
                    ending.get_or_insert(Ending::Closed {
                        output: output.clone(),
                    });
                }
                Event::Lost { reason } => {
                    ending.get_or_insert(Ending::Lost(reason.to_string()));
                }
                Event::DataKeyRequested(request) => {
                    let kms = self.agent.kms.as_ref().expect("KMS asked for by the agent");
                    assert_eq!(request.key_id, kms.key_id);
                    assert_eq!(request.challenge, kms.challenge);
                    self.key_requests.push(request.clone());
                    let now = self.instant(self.now_ms);
                    self.client.supply_data_key(now, Ok(kms.grant()));
                }
                _ => {}
            }
            self.events.push(event);
        }
        ending
    }

    /// Runs until the client session ends or `max_steps` pass (then panics: a stall).
    pub fn run(&mut self, max_steps: u64) -> Ending {
        loop {
            self.feed_input();
            self.pump();
            if let Some(ending) = self.drain_events() {
                return ending;
            }
            self.feed_input();
            self.pump();
            self.steps += 1;
            let client_deadline = self.client.poll_timeout().map(|deadline| {
                // Round up from nanoseconds: truncating first could land just before it.
                let nanos = deadline.saturating_duration_since(self.base).as_nanos();
                u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX)
            });
            let next = [
                self.link.next_time(),
                client_deadline,
                self.agent.next_wakeup(self.now_ms),
                self.disconnects.front().copied(),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("something is always pending until the session ends");
            assert!(
                self.steps < max_steps,
                "no progress after {max_steps} steps at t={}ms: agent got {} of {} input bytes, \
                 client got {} output bytes; next link {:?}, client {:?}, agent {:?}; {:?}",
                self.now_ms,
                self.agent.received_input.len,
                self.input.len(),
                self.client_output.len,
                self.link.next_time(),
                client_deadline,
                self.agent.next_wakeup(self.now_ms),
                self.client,
            );
            self.now_ms = self.now_ms.max(next);
            let now = self.instant(self.now_ms);
            if self
                .disconnects
                .front()
                .is_some_and(|at| *at <= self.now_ms)
            {
                self.disconnects.pop_front();
                self.link.clear();
                self.client
                    .reconnect(now, TOKEN)
                    .expect("an open session can reconnect");
            }
            while let Some((direction, payload)) = self.link.pop_due(self.now_ms) {
                match (direction, payload) {
                    (Direction::ToAgent, Payload::Text(text)) => self.agent.receive_text(&text),
                    (Direction::ToAgent, Payload::Binary(bytes)) => {
                        self.agent.receive_binary(self.now_ms, &bytes)
                    }
                    (Direction::ToClient, Payload::Binary(bytes)) => {
                        self.client.handle_frame(now, bytes)
                    }
                    (Direction::ToClient, Payload::Pong) => self.client.handle_pong(now),
                    (direction, payload) => panic!("unexpected {payload:?} {direction:?}"),
                }
            }
            self.client.handle_timeout(now);
        }
    }
}
