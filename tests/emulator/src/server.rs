//! The emulator's HTTP servers: one port for the ECS/SSM JSON API (`POST /`, SigV4
//! verified, dispatched on `X-Amz-Target`), the STS and IAM Query API (`POST /` without a target,
//! dispatched on the form's `Action`), CloudWatch Logs (`X-Amz-Target: Logs_20140328.*`), S3
//! GetBucketEncryption (`GET /<bucket>?encryption`) and the data channel websockets
//! (`GET /v1/data-channel/<sessionId>`), a second port for the KMS JSON API (SigV4 service
//! `kms`), plus the [`Emulator`] / [`EmulatorHandle`] API that tests and the binary use to start
//! and stop it.
//!
//! It logs one line per request to stderr through `tracing`, never a body, key, token or
//! signature. Stopping the handle stops accepting, ends every session and kills every
//! process group the emulator started.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::agent::{self, AgentShared, Connection};
use crate::api::{self, ApiContext, ApiError, Operation};
use crate::config::Config;
use crate::counters::{Counters, CountersSnapshot};
use crate::iam::{self, QueryError, QueryOperation};
use crate::kms::Kms;
use crate::kms::api::KmsOperation;
use crate::log_destinations;
use crate::sessions::{Redeemed, SessionRegistry};
use crate::sigv4::{self, RequestToVerify};
use crate::world::World;
use ecs_exec_wire::payload::OpenDataChannel;

/// Largest API request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a test may wait for the counters ([`EmulatorHandle::wait_until`]) before it fails:
/// minutes, so only a hang reaches it, even on a loaded 2-core CI machine.
pub const COUNTER_WAIT_DEADLINE: Duration = Duration::from_secs(300);
/// How long a new websocket may take to send its OpenDataChannel frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest websocket message accepted from a client.
const MAX_WEBSOCKET_MESSAGE: usize = 8 * 1024 * 1024;
/// Path prefix of data channel websockets.
const DATA_CHANNEL_PREFIX: &str = "/v1/data-channel/";

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The background thread or its runtime could not start.
    #[error("cannot start the emulator thread: {0}")]
    Thread(std::io::Error),
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// ECS and SSM API, data channel websockets.
    Ecs,
    /// The KMS API.
    Kms,
}

struct State {
    config: Arc<Config>,
    kms: Arc<Kms>,
    world: Arc<World>,
    sessions: SessionRegistry,
    counters: Arc<Counters>,
    local_addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

/// Entry point: starts an emulator on the current tokio runtime.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Binds `config.listen`, starts serving in the background and returns at once.
    pub async fn start(config: Config) -> Result<EmulatorHandle, EmulatorError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let kms_wanted = config
            .kms
            .listen
            .unwrap_or_else(|| SocketAddr::new(config.listen.ip(), 0));
        let kms_listener =
            TcpListener::bind(kms_wanted)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: kms_wanted,
                    source,
                })?;
        let kms_addr = kms_listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: kms_wanted,
                source,
            })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let kms = Arc::new(Kms::from_config(&config));
        let config = Arc::new(config);
        let world = Arc::new(World::from_config(&config));
        let counters = Arc::new(Counters::default());
        let state = Arc::new(State {
            sessions: SessionRegistry::new(Duration::from_secs(config.agent.token_ttl_secs)),
            config: Arc::clone(&config),
            kms: Arc::clone(&kms),
            world: Arc::clone(&world),
            counters: Arc::clone(&counters),
            local_addr,
            shutdown: shutdown_rx,
        });
        let sessions = state.sessions.clone();
        tokio::spawn(accept_loop(listener, Arc::clone(&state), Service::Ecs));
        tokio::spawn(accept_loop(kms_listener, state, Service::Kms));
        Ok(EmulatorHandle {
            local_addr,
            kms_addr,
            kms,
            config,
            world,
            counters,
            sessions,
            shutdown: shutdown_tx,
            thread: None,
        })
    }
}

/// A running emulator. Dropping it stops the emulator (and, for one started with
/// [`EmulatorHandle::spawn_in_thread`], waits for its thread, so every command is dead after).
#[derive(Debug)]
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    kms_addr: SocketAddr,
    kms: Arc<Kms>,
    config: Arc<Config>,
    world: Arc<World>,
    counters: Arc<Counters>,
    sessions: SessionRegistry,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmulatorHandle {
    /// Starts an emulator on a thread of its own with its own runtime, for tests that are not
    /// async (or that want the emulator off their runtime).
    pub fn spawn_in_thread(config: Config) -> Result<EmulatorHandle, EmulatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ecs-exec-emulator")
            .enable_all()
            .build()
            .map_err(EmulatorError::Thread)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ecs-exec-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match Emulator::start(config).await {
                        Ok(handle) => {
                            let mut stopped = handle.shutdown.subscribe();
                            let _ = ready_tx.send(Ok(handle.detached()));
                            // Serve until the caller's handle says stop.
                            while !*stopped.borrow_and_update() {
                                if stopped.changed().await.is_err() {
                                    break;
                                }
                            }
                            drop(handle);
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
                // Dropping the runtime drops every session task, which kills their commands.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(EmulatorError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(mut handle)) => {
                handle.thread = Some(thread);
                Ok(handle)
            }
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(EmulatorError::Thread(std::io::Error::other(
                    "emulator thread ended before it was ready",
                )))
            }
        }
    }

    /// A second handle sharing the same shutdown switch (used to hand one out of a thread).
    fn detached(&self) -> EmulatorHandle {
        EmulatorHandle {
            local_addr: self.local_addr,
            kms_addr: self.kms_addr,
            kms: Arc::clone(&self.kms),
            config: Arc::clone(&self.config),
            world: Arc::clone(&self.world),
            counters: Arc::clone(&self.counters),
            sessions: self.sessions.clone(),
            shutdown: self.shutdown.clone(),
            thread: None,
        }
    }

    /// `http://ADDR`, for `--endpoint-url`, `AWS_ENDPOINT_URL_ECS` or `AWS_ENDPOINT_URL_SSM`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` of the KMS API, for `AWS_ENDPOINT_URL_KMS`.
    pub fn kms_endpoint(&self) -> String {
        format!("http://{}", self.kms_addr)
    }

    /// The address the KMS API listens on.
    pub fn kms_local_addr(&self) -> SocketAddr {
        self.kms_addr
    }

    /// Its KMS keys.
    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    /// The plaintext of every data key GenerateDataKey handed out, for tests that check no
    /// key material leaks into a client's output or files. Never print them.
    pub fn issued_data_keys(&self) -> Vec<Vec<u8>> {
        self.kms.issued_data_keys()
    }

    /// The access key id of the first configured credentials.
    pub fn access_key_id(&self) -> &str {
        self.config
            .primary_credentials()
            .map_or("", |c| c.access_key_id.as_str())
    }

    /// The secret key of the first configured credentials (for the test's own signing; never
    /// print it).
    pub fn secret_access_key(&self) -> &str {
        self.config
            .primary_credentials()
            .map_or("", |c| c.secret_access_key.as_str())
    }

    /// The session token of the first configured credentials, if it has one.
    pub fn session_token(&self) -> Option<&str> {
        self.config
            .primary_credentials()
            .and_then(|c| c.session_token.as_deref())
    }

    /// The region requests must be signed for.
    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// Environment variables that point an AWS SDK or CLI at this emulator.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                self.access_key_id().to_string(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                self.secret_access_key().to_string(),
            ),
            ("AWS_REGION".to_string(), self.region().to_string()),
            ("AWS_DEFAULT_REGION".to_string(), self.region().to_string()),
            ("AWS_ENDPOINT_URL_ECS".to_string(), self.endpoint()),
            ("AWS_ENDPOINT_URL_SSM".to_string(), self.endpoint()),
            ("AWS_ENDPOINT_URL_KMS".to_string(), self.kms_endpoint()),
            ("AWS_ENDPOINT_URL_STS".to_string(), self.endpoint()),
            ("AWS_ENDPOINT_URL_IAM".to_string(), self.endpoint()),
            (
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS".to_string(),
                self.endpoint(),
            ),
            ("AWS_ENDPOINT_URL_S3".to_string(), self.endpoint()),
        ];
        if let Some(token) = self.session_token() {
            env.push(("AWS_SESSION_TOKEN".to_string(), token.to_string()));
        }
        env
    }

    /// Every data channel token it has handed out (ExecuteCommand and ResumeSession), for
    /// tests that check no token leaks into a client's output or files.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.sessions.issued_tokens()
    }

    /// The command string of every ExecuteCommand it served, in order: what an API audit log
    /// such as CloudTrail records, for tests that check what a command line gives away.
    pub fn executed_commands(&self) -> Vec<String> {
        self.sessions.commands()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The world it describes (task ids, ARNs…).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The counters right now.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// Waits (without polling) until the counters satisfy `condition`. It is for tests, where a
    /// hang must become a failure: a condition still unmet after [`COUNTER_WAIT_DEADLINE`]
    /// panics, naming the caller's line and the last counters.
    #[track_caller]
    pub fn wait_until(
        &self,
        condition: impl Fn(&CountersSnapshot) -> bool,
    ) -> impl Future<Output = CountersSnapshot> {
        let caller = std::panic::Location::caller();
        async move {
            let waited = self.counters.wait_until(condition);
            match tokio::time::timeout(COUNTER_WAIT_DEADLINE, waited).await {
                Ok(snapshot) => snapshot,
                Err(_) => panic!(
                    "the emulator's counters did not reach the condition at {caller} within \
                     {COUNTER_WAIT_DEADLINE:?}; last counters: {:?}",
                    self.counters.snapshot()
                ),
            }
        }
    }

    /// Blocking form of [`EmulatorHandle::wait_until`], for tests that are not async. Must
    /// not be called from inside a tokio runtime.
    #[track_caller]
    pub fn wait_until_blocking(
        &self,
        condition: impl Fn(&CountersSnapshot) -> bool,
    ) -> CountersSnapshot {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime.block_on(self.wait_until(condition)),
            Err(_) => self.counters.snapshot(),
        }
    }

    /// Asks the emulator to stop: no new connections, every session ends, every command is
    /// killed. Dropping the handle does the same.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, service: Service) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let mut shutdown = state.shutdown.clone();
                    let service_state = Arc::clone(&state);
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&service_state);
                        async move {
                            let response = match service {
                                Service::Ecs => route(state, peer, request).await,
                                Service::Kms => route_kms(state, peer, request).await,
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        result = connection => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                        }
                        _ = shutdown.wait_for(|stop| *stop) => {}
                    }
                });
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                tracing::info!("emulator stopping");
                return;
            }
        }
    }
}

async fn route(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if let Some(session_id) = path.strip_prefix(DATA_CHANNEL_PREFIX) {
        let session_id = session_id.to_string();
        return upgrade_data_channel(state, peer, session_id, request);
    }
    if request.method() == hyper::Method::POST && path == "/" {
        let is_logs = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|target| target.starts_with(log_destinations::LOGS_TARGET_PREFIX));
        if is_logs {
            return logs_request(state, peer, request).await;
        }
        if request.headers().contains_key("x-amz-target") {
            return api_request(state, peer, request).await;
        }
        return query_request(state, peer, request).await;
    }
    if request.method() == hyper::Method::GET
        && let Some(bucket) =
            log_destinations::bucket_encryption_request(&path, request.uri().query())
    {
        let bucket = bucket.to_string();
        return s3_request(state, peer, bucket, request).await;
    }
    tracing::info!(%peer, method = %request.method(), %path, status = 404, "request");
    plain(StatusCode::NOT_FOUND, "not found\n")
}

async fn route_kms(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() == hyper::Method::POST && request.uri().path() == "/" {
        return kms_request(state, peer, request).await;
    }
    tracing::info!(%peer, method = %request.method(), path = %request.uri().path(), status = 404, "kms request");
    plain(StatusCode::NOT_FOUND, "not found\n")
}

/// One KMS API call: the same credentials and region as ECS, signed for service `kms`.
async fn kms_request(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.kms_requests);
    let SignedCall {
        target,
        body,
        identity,
        ..
    } = match read_signed_call(&state, peer, request, |_| "kms").await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(operation) = KmsOperation::from_target(&target) else {
        return unknown_operation(&state, peer, &target);
    };
    match crate::kms::api::handle(&state.kms, operation, identity, &body) {
        Ok(value) => {
            tracing::info!(%peer, operation = ?operation, status = 200, "kms request");
            json_response(StatusCode::OK, &value, None)
        }
        Err(error) => error_response(&state, peer, &target, &error),
    }
}

/// One STS or IAM call (AWS Query protocol: a form with an `Action`, an XML answer).
async fn query_request(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.api_requests);
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let result = async {
        let (_, body) = read_api_body(&parts, body).await.ok_or_else(|| {
            QueryError::new(
                400,
                "MalformedInput",
                "Request body too large or unreadable.",
            )
        })?;
        let params = iam::parse_form(&body)
            .ok_or_else(|| QueryError::new(400, "MalformedInput", "Malformed form body."))?;
        let action = params
            .iter()
            .find(|(name, _)| name == "Action")
            .map_or("", |(_, value)| value.as_str());
        let operation = QueryOperation::from_action(action).ok_or_else(|| {
            QueryError::new(400, "InvalidAction", format!("Unknown action {action:?}."))
        })?;
        let region = operation.signing_region(&state.config.region);
        let identity =
            verify_signature_for(&state, &parts, &body, operation.signing_service(), &region)
                .map_err(|error| {
                    let code = match error.code {
                        "UnrecognizedClientException" => "InvalidClientTokenId",
                        "InvalidSignatureException" => "SignatureDoesNotMatch",
                        other => other,
                    };
                    QueryError::new(403, code, error.message)
                })?;
        let answer = iam::handle(
            &state.config,
            &state.world,
            operation,
            identity,
            &params,
            &request_id,
        )?;
        Ok::<_, QueryError>((operation, answer))
    }
    .await;
    let (status, body) = match result {
        Ok((operation, xml)) => {
            tracing::info!(%peer, operation = ?operation, status = 200, "query request");
            (StatusCode::OK, xml)
        }
        Err(error) => {
            Counters::bump(&state.counters.api_errors);
            tracing::info!(%peer, status = error.status, code = %error.code, "query request failed");
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, error.body(&request_id))
        }
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", request_id)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// One CloudWatch Logs call (JSON 1.1, signed for `logs`): DescribeLogGroups.
async fn logs_request(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.api_requests);
    let SignedCall {
        target,
        body,
        identity,
        ..
    } = match read_signed_call(&state, peer, request, |_| "logs").await {
        Ok(call) => call,
        Err(response) => return response,
    };
    if target != log_destinations::DESCRIBE_LOG_GROUPS_TARGET {
        return unknown_operation(&state, peer, &target);
    }
    match log_destinations::describe_log_groups(&state.config, identity, &body) {
        Ok(value) => {
            tracing::info!(%peer, operation = "DescribeLogGroups", status = 200, "request");
            json_response(StatusCode::OK, &value, None)
        }
        Err(error) => error_response(&state, peer, &target, &error),
    }
}

/// One S3 call (REST, path-style, signed for `s3` with `x-amz-content-sha256`):
/// GetBucketEncryption.
async fn s3_request(
    state: Arc<State>,
    peer: SocketAddr,
    bucket: String,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.api_requests);
    let request_id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let (parts, body) = request.into_parts();
    let answer = match read_api_body(&parts, body).await {
        None => log_destinations::S3Answer::error(
            400,
            "IncompleteBody",
            "The request body could not be read.",
            None,
            &request_id,
        ),
        Some(_) if !parts.headers.contains_key("x-amz-content-sha256") => {
            log_destinations::S3Answer::error(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
                None,
                &request_id,
            )
        }
        // Bucket names hold no character that needs percent-encoding, so the canonical path
        // is the same under S3's single encoding and the other services' double one.
        Some((_, body)) => match verify_signature(&state, &parts, &body, "s3") {
            Ok(identity) => log_destinations::get_bucket_encryption(
                &state.config,
                identity,
                &bucket,
                &request_id,
            ),
            Err(error) => {
                log_destinations::S3Answer::signature_error(error.code, &error.message, &request_id)
            }
        },
    };
    if answer.status >= 400 {
        Counters::bump(&state.counters.api_errors);
    }
    tracing::info!(%peer, operation = "GetBucketEncryption", status = answer.status, "s3 request");
    Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST))
        .header("content-type", "application/xml")
        .header("x-amz-request-id", request_id)
        .body(Full::new(Bytes::from(answer.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A JSON-protocol API call whose body was read and whose SigV4 signature checks out.
struct SignedCall<'s> {
    parts: http::request::Parts,
    /// `X-Amz-Target`.
    target: String,
    body: Bytes,
    identity: &'s crate::config::CredentialsConfig,
}

/// Reads a JSON-protocol call and verifies it for the signing service `service_of(target)`
/// names; otherwise the response the caller gets (unreadable body, or a signature error).
async fn read_signed_call<'s>(
    state: &'s State,
    peer: SocketAddr,
    request: Request<Incoming>,
    service_of: impl FnOnce(&str) -> &'static str,
) -> Result<SignedCall<'s>, Response<Full<Bytes>>> {
    let (parts, body) = request.into_parts();
    let Some((target, body)) = read_api_body(&parts, body).await else {
        return Err(unreadable_body(state, peer));
    };
    match verify_signature(state, &parts, &body, service_of(&target)) {
        Ok(identity) => Ok(SignedCall {
            parts,
            target,
            body,
            identity,
        }),
        Err(error) => Err(error_response(state, peer, &target, &error)),
    }
}

/// The `X-Amz-Target` and the body of an API request; None when the body is too large.
async fn read_api_body(parts: &http::request::Parts, body: Incoming) -> Option<(String, Bytes)> {
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((target, body))
}

/// SigV4 for `service` against the configured credentials and region.
fn verify_signature<'s>(
    state: &'s State,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<&'s crate::config::CredentialsConfig, ApiError> {
    verify_signature_for(state, parts, body, service, &state.config.region)
}

/// SigV4 for `service` and `region` against the configured credentials.
fn verify_signature_for<'s>(
    state: &'s State,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
    region: &str,
) -> Result<&'s crate::config::CredentialsConfig, ApiError> {
    let to_verify = RequestToVerify {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    sigv4::verify(
        &to_verify,
        &state.config.credentials,
        region,
        service,
        SystemTime::now(),
    )
    .map_err(|error| {
        Counters::bump(&state.counters.signature_failures);
        ApiError {
            status: 400,
            code: error.aws_code(),
            message: error.to_string(),
        }
    })
}

async fn api_request(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.api_requests);
    let signing_service =
        |target: &str| Operation::from_target(target).map_or("ecs", Operation::signing_service);
    let SignedCall {
        parts,
        target,
        body,
        identity,
    } = match read_signed_call(&state, peer, request, signing_service).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(operation) = Operation::from_target(&target) else {
        return unknown_operation(&state, peer, &target);
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| state.local_addr.to_string());
    let context = ApiContext {
        world: Arc::clone(&state.world),
        sessions: state.sessions.clone(),
        stream_base: format!("ws://{host}"),
    };
    match api::handle(&context, operation, identity, &body, Instant::now()) {
        Ok(value) => {
            if operation == Operation::ExecuteCommand {
                Counters::bump(&state.counters.sessions_created);
            }
            tracing::info!(%peer, operation = ?operation, status = 200, "request");
            json_response(StatusCode::OK, &value, None)
        }
        Err(error) => error_response(&state, peer, &target, &error),
    }
}

/// A JSON API request whose body could not be read.
fn unreadable_body(state: &State, peer: SocketAddr) -> Response<Full<Bytes>> {
    let error = ApiError::client(
        "SerializationException",
        "Request body too large or unreadable.",
    );
    error_response(state, peer, "?", &error)
}

/// A JSON API request for an `X-Amz-Target` this endpoint does not serve.
fn unknown_operation(state: &State, peer: SocketAddr, target: &str) -> Response<Full<Bytes>> {
    let error = ApiError::client(
        "UnknownOperationException",
        format!("Unknown operation {target}"),
    );
    error_response(state, peer, target, &error)
}

fn error_response(
    state: &State,
    peer: SocketAddr,
    target: &str,
    error: &ApiError,
) -> Response<Full<Bytes>> {
    Counters::bump(&state.counters.api_errors);
    tracing::info!(%peer, %target, status = error.status, code = error.code, "request failed");
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &error.body(), Some(error.code))
}

fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    error_type: Option<&str>,
) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string());
    if let Some(code) = error_type {
        builder = builder.header("x-amzn-errortype", code);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

fn upgrade_data_channel(
    state: Arc<State>,
    peer: SocketAddr,
    session_id: String,
    mut request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let is_upgrade = request.method() == hyper::Method::GET
        && header_has_token(headers, http::header::UPGRADE, "websocket")
        && header_has_token(headers, http::header::CONNECTION, "upgrade")
        && headers
            .get(http::header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        tracing::info!(%peer, status = 400, "data channel request without a websocket upgrade");
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade required\n");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tracing::info!(%peer, session = %session_id, status = 101, "data channel");
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Data channel messages are at most a frame header plus one read or one input
                // chunk; a generous cap keeps a hostile peer from making us buffer 64 MiB.
                let limits = WebSocketConfig::default()
                    .max_message_size(Some(MAX_WEBSOCKET_MESSAGE))
                    .max_frame_size(Some(MAX_WEBSOCKET_MESSAGE));
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(limits),
                )
                .await;
                open_data_channel(state, session_id, socket).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(value) = http::HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

fn header_has_token(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
    token: &str,
) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Reads OpenDataChannel, checks its token and hands the socket to a new or running session.
async fn open_data_channel(state: Arc<State>, session_id: String, mut socket: Connection) {
    use futures_util::{SinkExt, StreamExt};
    let first = tokio::time::timeout(OPEN_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return Some(text),
                // The plugin may ping before it opens; tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let token = first
        .as_deref()
        .and_then(|text| OpenDataChannel::from_json(text).ok())
        .map(|open| open.token_value);
    let redeemed = match token {
        Some(token) => state
            .sessions
            .redeem(&session_id, &token, Instant::now())
            .map_err(|e| e.to_string()),
        None => Err("no OpenDataChannel frame".to_string()),
    };
    match redeemed {
        Ok(Redeemed::Start(spec)) => {
            let shared = AgentShared {
                agent: state.config.agent.clone(),
                faults: state.config.faults.clone(),
                counters: Arc::clone(&state.counters),
                sessions: state.sessions.clone(),
                shutdown: state.shutdown.clone(),
                kms: Arc::clone(&state.kms),
            };
            agent::run_session(shared, spec, socket).await;
        }
        Ok(Redeemed::Resume(sender)) => {
            if sender.send(socket).await.is_err() {
                tracing::info!(session = %session_id, "session ended before the reconnect");
            }
        }
        Err(reason) => {
            Counters::bump(&state.counters.tokens_rejected);
            tracing::info!(session = %session_id, %reason, "data channel refused");
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: "invalid token".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
            let _ = socket.close(None).await;
        }
    }
}
