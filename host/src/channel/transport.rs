//! The websocket driver: the only async code of the data channel.
//!
//! Dials `streamUrl` verbatim (ws:// or wss://, TLS certificates always verified, against the
//! system roots of the process's one TLS configuration (`crate::tls`) unless the caller gives
//! another; an HTTP CONNECT proxy from the environment when one applies), then runs one
//! task that owns the [`Session`] and a single `select!` over the socket, the caller's
//! commands, event delivery and one timer armed from `poll_timeout`. Expiry is decided by
//! the clock, not by which future woke. Writes are batched (feed, then one flush).
//! When the socket dies mid-session and a [`ResumePolicy`] is given, the driver gets a new
//! token from its [`Resumer`] and reopens the channel, with backoff and a bound; the core then
//! resends what the agent has not acknowledged. When the agent asks for KMS encryption, the
//! driver gets the data key from its [`DataKeySource`] (bounded in time) and hands it to the core.
//! It holds no protocol logic: sequence numbers, acks and retransmission live in the core.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::channel::session::{
    Clock, DataKeyGrant, DataKeyRequest, Event, Session, SessionConfig, Transmit,
};
use crate::channel::{
    ChannelError, Closure, InvalidUrl, KmsError, ProxyError, ResumeError, TransportError,
};

/// Largest websocket message accepted: agents send at most a few KiB per frame.
const MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Events decoded but not yet taken by the caller; past this the socket is not read.
const MAX_PENDING_EVENTS: usize = 256;
/// Input writes queued between the caller and the driver. One: a streamed one-off's writes are
/// chunks of up to 1 MiB, and its pump goes on reading while a write waits, so a deeper queue
/// would only hold more of the input in memory.
const INPUT_QUEUE: usize = 1;
/// How long the final close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bound on getting a data key from KMS: the agent waits 15 s for our handshake response, so
/// a later key would be of no use.
const DATA_KEY_TIMEOUT: Duration = Duration::from_secs(15);

/// The system's real-time clock: the wall-clock `CreatedDate` the session stamps on frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_millis(&self) -> u64 {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or(1);
        u64::try_from(millis).unwrap_or(u64::MAX).max(1)
    }
}

/// Which proxy to dial through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// `HTTPS_PROXY`/`https_proxy` for wss://, `HTTP_PROXY`/`http_proxy` for ws://, minus
    /// the hosts in `NO_PROXY`/`no_proxy`.
    #[default]
    FromEnvironment,
    /// Connect directly.
    Direct,
    /// Tunnel through this `http://host:port` proxy with CONNECT.
    Url(String),
}

/// Gets a session back after its websocket dropped: a fresh stream URL and token for the same
/// session (SSM ResumeSession). Implemented by the run layer; the transport knows no AWS.
pub trait Resumer: Send + Sync {
    /// One attempt. The error is one line for the user; it must not contain the token.
    fn resume(&self) -> BoxFuture<'_, Result<ResumeTicket, String>>;
}

/// Gets the data key of a KMS-encrypted session: KMS GenerateDataKey with the session's
/// encryption context. Implemented by the run layer; the transport knows no AWS.
pub trait DataKeySource: Send + Sync {
    /// One call. Errors say what failed and what to do; they never carry key material.
    fn generate(
        &self,
        request: DataKeyRequest,
    ) -> BoxFuture<'static, Result<DataKeyGrant, KmsError>>;
}

/// Where and with which token to reopen a resumed session.
#[derive(Clone)]
pub struct ResumeTicket {
    pub stream_url: String,
    /// Never logged.
    pub token: String,
}

impl fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeTicket")
            .field("stream_url", &self.stream_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// When and how often a dropped websocket is reopened.
#[derive(Clone)]
pub struct ResumePolicy {
    pub resumer: Arc<dyn Resumer>,
    /// Attempts (a resume call plus a dial each) per drop. A drop also counts against this
    /// bound when the previous reopened socket carried no data, so a service that accepts
    /// sockets and closes them at once cannot keep the session in a loop.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl ResumePolicy {
    /// Five attempts over about six seconds.
    pub fn new(resumer: Arc<dyn Resumer>) -> Self {
        Self {
            resumer,
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl fmt::Debug for ResumePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumePolicy")
            .field("attempts", &self.attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// Everything needed to open a data channel.
#[derive(Clone)]
pub struct ConnectParams {
    /// The `streamUrl` from ExecuteCommand, used verbatim.
    pub stream_url: String,
    /// The `tokenValue` from ExecuteCommand. Never logged.
    pub token: String,
    pub session: SessionConfig,
    pub proxy: ProxySetting,
    /// Bound on TCP connect + proxy + TLS + websocket upgrade.
    pub connect_timeout: Duration,
    /// Reopen a dropped websocket; `None` makes a drop fatal.
    pub resume: Option<ResumePolicy>,
    /// Where data keys come from when the agent asks for KMS encryption; without one such a
    /// session fails with [`KmsError::NoKeySource`].
    pub data_keys: Option<Arc<dyn DataKeySource>>,
    /// TLS for wss://; `None` uses the process's configuration (the system's roots), which the
    /// AWS calls have read already.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ConnectParams {
    pub fn new(stream_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            stream_url: stream_url.into(),
            token: token.into(),
            session: SessionConfig::default(),
            proxy: ProxySetting::default(),
            connect_timeout: Duration::from_secs(20),
            resume: None,
            data_keys: None,
            tls: None,
        }
    }
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("stream_url", &self.stream_url)
            .field("token", &"<redacted>")
            .field("session", &self.session)
            .field("proxy", &self.proxy)
            .field("connect_timeout", &self.connect_timeout)
            .field("resume", &self.resume)
            .field("data_keys", &self.data_keys.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Entry point: dial and start the driver task.
pub struct DataChannel;

impl DataChannel {
    /// Opens the websocket and starts the session. Errors here are connection failures
    /// (URL, refused, proxy, TLS, upgrade rejected, timeout); later failures, such as a token
    /// the service rejects, arrive as [`Event::Lost`].
    pub async fn connect(
        params: ConnectParams,
    ) -> Result<(ChannelWriter, ChannelEvents), ChannelError> {
        let socket = tokio::time::timeout(params.connect_timeout, dial(&params))
            .await
            .map_err(|_| TransportError::ConnectTimeout {
                timeout: params.connect_timeout,
            })??;
        let mut session_config = params.session.clone();
        session_config.resumable = params.resume.is_some();
        let session = Session::new(
            session_config,
            &params.token,
            Box::new(SystemClock),
            Instant::now().into_std(),
        );
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel(MAX_PENDING_EVENTS);
        let (sink, stream) = socket.split();
        let driver = Driver {
            session,
            sink,
            stream,
            outgoing: std::collections::VecDeque::new(),
            input_rx,
            input_open: true,
            control_rx,
            control_open: true,
            events_tx,
            pending: std::collections::VecDeque::new(),
            received_any: false,
            flush_pending: false,
            resumed: false,
            drops_without_data: 0,
            data_key_call: None,
            params,
        };
        tokio::spawn(driver.run());
        Ok((
            ChannelWriter {
                input: input_tx,
                control: control_tx,
            },
            ChannelEvents { events: events_rx },
        ))
    }
}

enum Control {
    Resize { cols: u32, rows: u32 },
    Close,
}

/// The sending half. Cloneable; dropping every clone stops input but not output.
#[derive(Clone, Debug)]
pub struct ChannelWriter {
    input: mpsc::Sender<Bytes>,
    control: mpsc::UnboundedSender<Control>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resize { cols, rows } => write!(f, "Resize({cols}x{rows})"),
            Self::Close => f.write_str("Close"),
        }
    }
}

impl ChannelWriter {
    /// Sends input bytes (payload type 1). Waits while the unacked window is full, so a
    /// producer that awaits this never buffers more than a bounded amount.
    /// Consume [`ChannelEvents`] concurrently: output is what carries the acks in.
    pub async fn send_input(&self, data: Bytes) -> Result<(), ChannelError> {
        if data.is_empty() {
            return Ok(());
        }
        self.input
            .send(data)
            .await
            .map_err(|_| ChannelError::SessionClosed)
    }

    /// Sends the terminal size (payload type 3).
    pub fn send_resize(&self, cols: u32, rows: u32) -> Result<(), ChannelError> {
        self.control
            .send(Control::Resize { cols, rows })
            .map_err(|_| ChannelError::SessionClosed)
    }

    /// Ends the session from our side once queued input is acknowledged (bounded wait).
    pub fn close(&self) -> Result<(), ChannelError> {
        self.control
            .send(Control::Close)
            .map_err(|_| ChannelError::SessionClosed)
    }
}

/// The receiving half: session events in order, `None` once the driver has stopped.
#[derive(Debug)]
pub struct ChannelEvents {
    events: mpsc::Receiver<Event>,
}

impl ChannelEvents {
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What woke the driver.
enum Step {
    Delivered,
    ConsumerGone,
    Message(Option<Result<Message, tungstenite::Error>>),
    Control(Option<Control>),
    Input(Option<Bytes>),
    Written(Result<(), TransportError>),
    DataKey(Result<DataKeyGrant, KmsError>),
    Timeout,
}

struct Driver {
    session: Session,
    /// Written and read concurrently: a driver that awaited a write without reading could
    /// deadlock against a peer doing the same once both sockets' buffers are full.
    sink: SplitSink<Socket, Message>,
    stream: SplitStream<Socket>,
    /// Frames taken from the session, not yet accepted by the socket.
    outgoing: std::collections::VecDeque<Message>,
    input_rx: mpsc::Receiver<Bytes>,
    input_open: bool,
    control_rx: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    events_tx: mpsc::Sender<Event>,
    pending: std::collections::VecDeque<Event>,
    /// A frame arrived on the current socket.
    received_any: bool,
    /// tungstenite queued a pong for a server ping; it goes out with the next flush.
    flush_pending: bool,
    /// The current socket is a reopened one.
    resumed: bool,
    /// Reopened sockets in a row that dropped before carrying a frame.
    drops_without_data: u32,
    /// The GenerateDataKey call in flight, if the agent asked for KMS encryption.
    data_key_call: Option<BoxFuture<'static, Result<DataKeyGrant, KmsError>>>,
    /// How the channel was opened: redials reuse the proxy, timeouts and resume policy.
    params: ConnectParams,
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.queue_transmits();
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::DataKeyRequested(request) => self.start_data_key_call(request),
                    event => self.pending.push_back(event),
                }
            }
            if self.session.is_closed() {
                break;
            }
            if let Some(reason) = self.session.link_down().cloned() {
                self.resume_link(reason).await;
                continue;
            }
            let deadline = self.session.poll_timeout().map(Instant::from_std);
            // A slow consumer stops socket reads (and, with them, timers: a pong may be
            // sitting unread in the socket, so the connection is not known to be dead).
            let reading = self.pending.len() < MAX_PENDING_EVENTS;
            let can_send = self.session.can_send();
            let step = tokio::select! {
                biased;
                permit = self.events_tx.reserve(), if !self.pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.pending.pop_front() {
                            permit.send(event);
                        }
                        Step::Delivered
                    }
                    Err(_) => Step::ConsumerGone,
                },
                message = self.stream.next(), if reading => Step::Message(message),
                written = write_outgoing(&mut self.sink, &mut self.outgoing),
                    if !self.outgoing.is_empty() || self.flush_pending => Step::Written(written),
                grant = await_optional(&mut self.data_key_call), if self.data_key_call.is_some()
                    => Step::DataKey(grant),
                control = self.control_rx.recv(), if self.control_open => Step::Control(control),
                input = self.input_rx.recv(), if self.input_open && can_send => Step::Input(input),
                () = sleep_until_optional(deadline), if reading && deadline.is_some() => Step::Timeout,
            };
            let now = Instant::now().into_std();
            match step {
                Step::Delivered => {}
                Step::Written(Ok(())) => self.flush_pending = false,
                // Nothing more can be written to this socket.
                Step::Written(Err(error)) => {
                    self.outgoing.clear();
                    self.flush_pending = false;
                    self.session.link_lost(error.into());
                }
                // Nobody listens any more: end the session.
                Step::ConsumerGone => self.session.close(now),
                Step::Message(message) => self.on_message(message),
                Step::DataKey(result) => {
                    self.data_key_call = None;
                    self.session.supply_data_key(now, result);
                }
                Step::Control(Some(Control::Resize { cols, rows })) => {
                    // A failure is sticky and already reported as an event.
                    let _ = self.session.send_resize(cols, rows);
                }
                Step::Control(Some(Control::Close)) => self.session.close(now),
                Step::Control(None) => self.control_open = false,
                Step::Input(Some(data)) => {
                    let _ = self.session.send_input(data);
                }
                Step::Input(None) => self.input_open = false,
                // Decide from the clock, not from which future fired.
                Step::Timeout => self.session.handle_timeout(now),
            }
        }
        tracing::debug!(stats = ?self.session.stats(), "data channel session ended");
        // Flush whatever the end left queued (a final ack), then close politely.
        self.queue_transmits();
        let _ = tokio::time::timeout(
            CLOSE_GRACE,
            write_outgoing(&mut self.sink, &mut self.outgoing),
        )
        .await;
        while let Some(event) = self.session.poll_event() {
            self.pending.push_back(event);
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.sink.close()).await;
        for event in self.pending.drain(..) {
            if self.events_tx.send(event).await.is_err() {
                break;
            }
        }
    }

    /// Starts GenerateDataKey for the agent's KMS action; the result goes to the core.
    fn start_data_key_call(&mut self, request: DataKeyRequest) {
        tracing::debug!(
            key_id = %request.key_id,
            challenge = request.challenge.is_some(),
            "the agent asks for KMS encryption; calling GenerateDataKey"
        );
        let key_id = request.key_id.clone();
        let Some(source) = self.params.data_keys.clone() else {
            let now = Instant::now().into_std();
            self.session
                .supply_data_key(now, Err(KmsError::NoKeySource { key_id }));
            return;
        };
        self.data_key_call = Some(Box::pin(async move {
            tokio::time::timeout(DATA_KEY_TIMEOUT, source.generate(request))
                .await
                .unwrap_or_else(|_| {
                    Err(KmsError::Unavailable {
                        key_id,
                        detail: format!("no answer within {DATA_KEY_TIMEOUT:?}"),
                    })
                })
        }));
    }

    /// Moves every frame the session wants sent into the outgoing queue.
    fn queue_transmits(&mut self) {
        while let Some(transmit) = self.session.poll_transmit(Instant::now().into_std()) {
            self.outgoing.push_back(match transmit {
                Transmit::Text(text) => Message::text(text),
                Transmit::Binary(bytes) => Message::Binary(bytes),
                Transmit::Ping(bytes) => Message::Ping(bytes),
            });
        }
    }

    fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) {
        let now = Instant::now().into_std();
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                self.received_any = true;
                self.drops_without_data = 0;
                self.session.handle_frame(now, bytes);
            }
            Some(Ok(Message::Text(text))) => {
                // The plugin feeds late text frames to the binary parser; so do we.
                self.received_any = true;
                self.drops_without_data = 0;
                self.session.handle_frame(now, Bytes::from(text));
            }
            Some(Ok(Message::Pong(_))) => self.session.handle_pong(now),
            // tungstenite queues the pong itself; make sure the next pass flushes it.
            Some(Ok(Message::Ping(_))) => {
                self.flush_pending = true;
                self.session.handle_pong(now);
            }
            Some(Ok(Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                let closure = match frame {
                    Some(frame) => Closure::CloseFrame {
                        code: Some(u16::from(frame.code)),
                        reason: frame.reason.to_string(),
                    },
                    None => Closure::CloseFrame {
                        code: None,
                        reason: String::new(),
                    },
                };
                self.on_closed(closure);
            }
            None | Some(Err(tungstenite::Error::ConnectionClosed)) => {
                self.on_closed(Closure::Dropped)
            }
            Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))) => self.on_closed(Closure::Reset),
            Some(Err(error)) => {
                let reason = error.to_string();
                match socket_error(error) {
                    TransportError::Io { .. } | TransportError::ClosedMidway(_) => {
                        self.on_closed(Closure::Io { reason })
                    }
                    other => self.session.link_lost(other.into()),
                }
            }
        }
    }

    fn on_closed(&mut self, closure: Closure) {
        if self.session.is_closed() {
            return;
        }
        if self.received_any || self.resumed {
            let error = TransportError::ClosedMidway(closure);
            self.session.link_lost(error.into());
        } else {
            // The first socket closed before a single frame: the token was refused. A resume
            // would be refused the same way.
            let error = TransportError::TokenRejected(closure);
            self.session.fail(error.into());
        }
    }

    /// The websocket died: reopen it with a fresh token, with backoff and a bound, or fail the
    /// session. The session core keeps every unacked byte, so nothing is lost or repeated.
    async fn resume_link(&mut self, reason: ChannelError) {
        let Some(policy) = self.params.resume.clone() else {
            self.session.fail(reason);
            return;
        };
        if self.drops_without_data >= policy.attempts {
            self.session.fail(ChannelError::ResumeFailed {
                attempts: self.drops_without_data,
                last: ResumeError::NoDataAfterReopen(Box::new(reason)),
            });
            return;
        }
        tracing::info!(%reason, "data channel dropped; resuming the session");
        let mut last_error = ResumeError::Dropped(Box::new(reason));
        let mut backoff = policy.initial_backoff;
        for attempt in 1..=policy.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(policy.max_backoff);
            }
            match self.reopen(policy.resumer.as_ref()).await {
                Ok(()) => {
                    tracing::info!(attempt, "data channel resumed");
                    return;
                }
                Err(error) => {
                    tracing::debug!(attempt, %error, "resume attempt failed");
                    last_error = error;
                }
            }
        }
        self.session.fail(ChannelError::ResumeFailed {
            attempts: policy.attempts,
            last: last_error,
        });
    }

    /// One resume attempt: a new token, a new socket, then the session re-opens on it.
    async fn reopen(&mut self, resumer: &dyn Resumer) -> Result<(), ResumeError> {
        let ticket = resumer
            .resume()
            .await
            .map_err(|message| ResumeError::ResumeCall { message })?;
        self.params.stream_url = ticket.stream_url;
        let timeout = self.params.connect_timeout;
        let socket = tokio::time::timeout(timeout, dial(&self.params))
            .await
            .map_err(|_| ResumeError::ReopenTimeout { timeout })?
            .map_err(ResumeError::Dial)?;
        let (sink, stream) = socket.split();
        self.sink = sink;
        self.stream = stream;
        self.outgoing.clear();
        self.flush_pending = false;
        self.received_any = false;
        self.resumed = true;
        self.drops_without_data += 1;
        self.session
            .reconnect(Instant::now().into_std(), &ticket.token)
            .map_err(|error| ResumeError::Reconnect(Box::new(error)))
    }
}

async fn await_optional<T>(future: &mut Option<BoxFuture<'static, T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_optional(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn socket_error(error: tungstenite::Error) -> TransportError {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::ClosedMidway(Closure::Dropped)
        }
        tungstenite::Error::Io(error) => TransportError::Io {
            reason: error.to_string(),
        },
        other => TransportError::Protocol {
            reason: other.to_string(),
        },
    }
}

/// The parts of the stream URL the dialer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    secure: bool,
    host: String,
    port: u16,
}

fn parse_target(stream_url: &str) -> Result<Target, TransportError> {
    let invalid = TransportError::InvalidUrl;
    let (secure, rest) = if let Some(rest) = stream_url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = stream_url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(invalid(InvalidUrl::Scheme));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = split_host_port(host_port, if secure { 443 } else { 80 })
        .ok_or(invalid(InvalidUrl::HostOrPort))?;
    Ok(Target { secure, host, port })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (text, default_port),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// A proxy to tunnel through: where it is, and optional basic credentials.
#[derive(Clone, PartialEq, Eq)]
struct Proxy {
    host: String,
    port: u16,
    authorization: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn parse_proxy(url: &str) -> Result<Proxy, TransportError> {
    let invalid = || TransportError::Proxy {
        proxy: redact_userinfo(url),
        problem: ProxyError::NotHttpUrl,
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("HTTP://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(invalid());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = split_host_port(host_port, 80).ok_or_else(invalid)?;
    let authorization = userinfo.map(|userinfo| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(userinfo)
    });
    Ok(Proxy {
        host,
        port,
        authorization,
    })
}

fn redact_userinfo(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("<credentials>@{host}"),
        None => url.to_owned(),
    }
}

/// Whether `NO_PROXY` (comma-separated suffixes, `*` for all) exempts `host`.
fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.split(':').next().unwrap_or_default();
            let suffix = entry.trim_start_matches('*').trim_start_matches('.');
            host == suffix || host.ends_with(&format!(".{suffix}"))
        })
}

fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .filter(|value| !value.trim().is_empty())
}

fn choose_proxy(setting: &ProxySetting, target: &Target) -> Result<Option<Proxy>, TransportError> {
    let url = match setting {
        ProxySetting::Direct => return Ok(None),
        ProxySetting::Url(url) => url.clone(),
        ProxySetting::FromEnvironment => {
            let names: &[&str] = if target.secure {
                &["HTTPS_PROXY", "https_proxy"]
            } else {
                &["HTTP_PROXY", "http_proxy"]
            };
            let Some(url) = env_any(names) else {
                return Ok(None);
            };
            if env_any(&["NO_PROXY", "no_proxy"])
                .is_some_and(|no_proxy| no_proxy_matches(&no_proxy, &target.host))
            {
                return Ok(None);
            }
            url
        }
    };
    parse_proxy(&url).map(Some)
}

async fn dial(params: &ConnectParams) -> Result<Socket, TransportError> {
    let target = parse_target(&params.stream_url)?;
    let request = params
        .stream_url
        .as_str()
        .into_client_request()
        .map_err(|error| {
            TransportError::InvalidUrl(InvalidUrl::Rejected {
                reason: error.to_string(),
            })
        })?;
    let proxy = choose_proxy(&params.proxy, &target)?;
    let tcp = match &proxy {
        Some(proxy) => {
            let mut tcp = connect_tcp(&proxy.host, proxy.port).await?;
            tunnel(&mut tcp, proxy, &target).await?;
            tcp
        }
        None => connect_tcp(&target.host, target.port).await?,
    };
    // Small frames (keystrokes, acks) must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let connector = tls_connector(params, target.secure);
    match tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), connector)
        .await
    {
        Ok((socket, _response)) => Ok(socket),
        Err(error) => Err(handshake_error(error, &target)),
    }
}

/// The websocket's TLS: none for ws://; for wss:// the caller's configuration, or else the
/// process's one. Without a connector tokio-tungstenite would read the system's roots again.
fn tls_connector(params: &ConnectParams, secure: bool) -> Option<tokio_tungstenite::Connector> {
    if !secure {
        return None;
    }
    params
        .tls
        .clone()
        .or_else(crate::tls::client_config)
        .map(tokio_tungstenite::Connector::Rustls)
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, TransportError> {
    TcpStream::connect((host, port))
        .await
        .map_err(|error| TransportError::Connect {
            host: format!("{host}:{port}"),
            reason: error.to_string(),
        })
}

fn handshake_error(error: tungstenite::Error, target: &Target) -> TransportError {
    match error {
        tungstenite::Error::Http(response) => TransportError::HandshakeRejected {
            status: response.status().as_u16(),
        },
        tungstenite::Error::Tls(error) => TransportError::Tls {
            host: target.host.clone(),
            reason: error.to_string(),
        },
        // tokio-rustls reports certificate and protocol failures as InvalidData.
        tungstenite::Error::Io(error)
            if target.secure && error.kind() == std::io::ErrorKind::InvalidData =>
        {
            TransportError::Tls {
                host: target.host.clone(),
                reason: error.to_string(),
            }
        }
        tungstenite::Error::Io(error) => TransportError::Connect {
            host: format!("{}:{}", target.host, target.port),
            reason: error.to_string(),
        },
        other => TransportError::Protocol {
            reason: other.to_string(),
        },
    }
}

/// Opens an HTTP CONNECT tunnel to the target through an already connected proxy socket.
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    target: &Target,
) -> Result<(), TransportError> {
    let proxy_error = |problem: ProxyError| TransportError::Proxy {
        proxy: format!("{}:{}", proxy.host, proxy.port),
        problem,
    };
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: Basic {authorization}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| {
            proxy_error(ProxyError::Write {
                reason: error.to_string(),
            })
        })?;
    // Read the reply byte by byte up to the blank line, so no tunnelled byte is consumed.
    let mut reply = Vec::with_capacity(256);
    while !reply.ends_with(b"\r\n\r\n") {
        if reply.len() > 16 * 1024 {
            return Err(proxy_error(ProxyError::ReplyTooLong));
        }
        let byte = stream.read_u8().await.map_err(|error| {
            proxy_error(ProxyError::Read {
                reason: error.to_string(),
            })
        })?;
        reply.push(byte);
    }
    let status_line = reply
        .split(|&byte| byte == b'\n')
        .next()
        .map(|line| String::from_utf8_lossy(line).trim().to_owned())
        .unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(proxy_error(ProxyError::Refused { status_line }));
    }
    Ok(())
}

/// Feeds the queued frames to the socket, then flushes once. Cancel-safe: a frame leaves the
/// queue only once the socket has taken it, so a cancelled call loses nothing.
async fn write_outgoing(
    sink: &mut SplitSink<Socket, Message>,
    outgoing: &mut std::collections::VecDeque<Message>,
) -> Result<(), TransportError> {
    while let Some(message) = outgoing.front() {
        sink.feed(message.clone()).await.map_err(socket_error)?;
        outgoing.pop_front();
    }
    sink.flush().await.map_err(socket_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rustls_config(connector: Option<tokio_tungstenite::Connector>) -> Arc<rustls::ClientConfig> {
        match connector {
            Some(tokio_tungstenite::Connector::Rustls(config)) => config,
            Some(_) => panic!("a connector that is not rustls"),
            None => panic!("no connector: tokio-tungstenite would read the roots itself"),
        }
    }

    #[test]
    fn wss_uses_the_process_tls_configuration_unless_given_one() {
        let mut params = ConnectParams::new("wss://h/x", "t");
        let shared = crate::tls::client_config().expect("a TLS configuration");
        assert!(Arc::ptr_eq(
            &rustls_config(tls_connector(&params, true)),
            &shared
        ));
        assert!(tls_connector(&params, false).is_none(), "ws:// has no TLS");
        let own = Arc::new((*shared).clone());
        params.tls = Some(Arc::clone(&own));
        assert!(Arc::ptr_eq(
            &rustls_config(tls_connector(&params, true)),
            &own
        ));
    }

    #[test]
    fn stream_urls_are_parsed_for_dialling() {
        assert_eq!(
            parse_target(
                "wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s?role=publish_subscribe"
            ),
            Ok(Target {
                secure: true,
                host: "ssmmessages.eu-west-1.amazonaws.com".to_owned(),
                port: 443
            })
        );
        assert_eq!(
            parse_target("ws://127.0.0.1:18301/v1/x?a=b"),
            Ok(Target {
                secure: false,
                host: "127.0.0.1".to_owned(),
                port: 18301
            })
        );
        assert_eq!(
            parse_target("ws://[::1]:9/p").map(|t| (t.host, t.port)),
            Ok(("::1".to_owned(), 9))
        );
        assert!(parse_target("https://example.com").is_err());
        assert!(parse_target("ws://host:notaport/").is_err());
        assert!(parse_target("ws:///path").is_err());
    }

    #[test]
    fn proxies_and_no_proxy() {
        let proxy = parse_proxy("http://user:pw@proxy.local:3128").expect("parses");
        assert_eq!(proxy.host, "proxy.local");
        assert_eq!(proxy.port, 3128);
        assert_eq!(proxy.authorization.as_deref(), Some("dXNlcjpwdw=="));
        assert!(!format!("{proxy:?}").contains("pw"));
        assert_eq!(parse_proxy("proxy:8080").map(|p| p.port), Ok(8080));
        assert!(parse_proxy("socks5://proxy:1080").is_err());

        assert!(no_proxy_matches(
            "localhost,.amazonaws.com",
            "ssmmessages.us-east-1.amazonaws.com"
        ));
        assert!(no_proxy_matches("amazonaws.com", "amazonaws.com"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("example.com", "notexample.com"));
        assert!(!no_proxy_matches("", "host"));
    }

    #[tokio::test]
    async fn tunnel_sends_connect_and_checks_the_status() {
        let target = Target {
            secure: true,
            host: "ssm.example".to_owned(),
            port: 443,
        };
        let proxy = Proxy {
            host: "p".to_owned(),
            port: 1,
            authorization: Some("abc".to_owned()),
        };
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serve = tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let read = server.read(&mut request).await.expect("read");
            server
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nTUNNEL")
                .await
                .expect("write");
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        tunnel(&mut client, &proxy, &target).await.expect("tunnel");
        let request = serve.await.expect("server task");
        assert!(request.starts_with("CONNECT ssm.example:443 HTTP/1.1\r\n"));
        assert!(request.contains("Proxy-Authorization: Basic abc\r\n"));
        let mut rest = [0u8; 6];
        client.read_exact(&mut rest).await.expect("tunnelled bytes");
        assert_eq!(&rest, b"TUNNEL");

        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let _ = server.read(&mut request).await;
            let _ = server
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .await;
        });
        let error = tunnel(&mut client, &proxy, &target).await.expect_err("407");
        assert!(matches!(error, TransportError::Proxy { .. }));
        assert!(error.to_string().contains("407"));
    }
}
