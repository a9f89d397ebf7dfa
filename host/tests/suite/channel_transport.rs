//! The websocket driver against tiny loopback servers written here (tokio-tungstenite
//! accept, and TLS for wss:// with the test certificates of `tests/fixtures/tls`) that play a
//! minimal agent: a whole session, and each failure as a typed error.
//! No sleeps: every step waits on a socket or channel event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ecs_exec::channel::frame::{Frame, MessageType, PayloadType};
use ecs_exec::channel::payload::{Acknowledge, ChannelClosed, OpenDataChannel, TerminalSize};
use ecs_exec::channel::session::Event;
use ecs_exec::channel::transport::{ConnectParams, DataChannel, ProxySetting};
use ecs_exec::channel::{ChannelError, Closure, TransportError};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use uuid::Uuid;

type ServerSocket = WebSocketStream<TcpStream>;

const DATE: u64 = 1_764_265_200_000;

fn params(url: String) -> ConnectParams {
    let mut params = ConnectParams::new(url, "loopback-token");
    params.proxy = ProxySetting::Direct;
    params
}

/// Accepts one websocket, returning it with the request path+query it was dialled with.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's, not ours
async fn accept(listener: &TcpListener) -> (ServerSocket, String) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut uri = String::new();
    let socket =
        tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, response: Response| {
            uri = request.uri().to_string();
            Ok(response)
        })
        .await
        .expect("websocket upgrade");
    (socket, uri)
}

async fn read_open<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
) -> OpenDataChannel {
    loop {
        match socket.next().await.expect("open frame").expect("read") {
            Message::Text(text) => return OpenDataChannel::from_json(&text).expect("json"),
            Message::Ping(_) => {}
            other => panic!("expected the OpenDataChannel text first, got {other:?}"),
        }
    }
}

/// Next binary frame from the client, answering pings on the way.
async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>) -> Frame {
    loop {
        match socket.next().await.expect("frame").expect("read") {
            Message::Binary(bytes) => return Frame::decode(&bytes).expect("client frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Ends the session from the agent's side.
async fn send_channel_closed<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    closed: &ChannelClosed,
) {
    let frame = Frame::control(
        MessageType::ChannelClosed,
        closed.to_bytes(),
        DATE,
        Uuid::new_v4(),
    );
    socket
        .send(Message::Binary(frame.to_bytes()))
        .await
        .expect("send channel_closed");
}

fn output(seq: i64, payload: &'static [u8]) -> Message {
    Message::Binary(
        Frame::stream(
            MessageType::OutputStreamData,
            seq,
            PayloadType::Output,
            Bytes::from_static(payload),
            DATE,
            Uuid::new_v4(),
        )
        .to_bytes(),
    )
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, format!("ws://127.0.0.1:{port}"))
}

/// How long one step may take: minutes, so only a hang reaches it, even on a loaded CI machine.
const STEP_DEADLINE: Duration = Duration::from_secs(180);

/// Awaits `future`, failing the test with `what` if it has not finished within [`STEP_DEADLINE`].
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP_DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {STEP_DEADLINE:?}"))
}

async fn next_event(events: &mut ecs_exec::channel::transport::ChannelEvents) -> Event {
    within("the next channel event", events.next())
        .await
        .expect("the channel is still running")
}

#[tokio::test]
async fn a_whole_session_over_loopback() {
    let (listener, base) = listener().await;
    let url = format!("{base}/v1/data-channel/sess-1?role=publish_subscribe&cell-number=AAAA");
    let server = tokio::spawn(async move {
        let (mut socket, uri) = accept(&listener).await;
        let open = read_open(&mut socket).await;
        assert_eq!(open.token_value, "loopback-token");
        assert_eq!(open.message_schema_version, "1.0");
        // The size comes first, then input; ack each.
        let size = next_frame(&mut socket).await;
        assert_eq!(size.payload_type, PayloadType::Size);
        assert_eq!(
            TerminalSize::from_payload(&size.payload).expect("size"),
            TerminalSize { cols: 90, rows: 30 }
        );
        let ack = Acknowledge::frame_for(&size, DATE, Uuid::new_v4()).to_bytes();
        socket.send(Message::Binary(ack)).await.expect("ack");
        let mut input = Vec::new();
        while input.len() < 3000 {
            let frame = next_frame(&mut socket).await;
            assert_eq!(frame.message_type, MessageType::InputStreamData);
            assert!(frame.payload.len() <= 1024 && !frame.payload.is_empty());
            input.extend_from_slice(&frame.payload);
            let ack = Acknowledge::frame_for(&frame, DATE, Uuid::new_v4()).to_bytes();
            socket.send(Message::Binary(ack)).await.expect("ack");
        }
        socket.send(output(0, b"hello ")).await.expect("send");
        socket.send(output(1, b"world")).await.expect("send");
        let mut acked = Vec::new();
        while acked.len() < 2 {
            let frame = next_frame(&mut socket).await;
            assert_eq!(frame.message_type, MessageType::Acknowledge);
            let ack = Acknowledge::from_payload(&frame.payload).expect("ack");
            acked.push(ack.acknowledged_message_sequence_number);
        }
        let closed = ChannelClosed {
            output: "done".to_owned(),
            ..ChannelClosed::default()
        };
        send_channel_closed(&mut socket, &closed).await;
        // The client closes the websocket after channel_closed.
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        (uri, input, acked)
    });

    let (writer, mut events) = DataChannel::connect(params(url)).await.expect("connect");
    writer.send_resize(90, 30).expect("resize");
    writer
        .send_input(Bytes::from(vec![b'z'; 3000]))
        .await
        .expect("input");
    let mut output = Vec::new();
    let closing = loop {
        match next_event(&mut events).await {
            Event::Output(bytes) => output.extend_from_slice(&bytes),
            Event::Closed { output } => break output,
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(closing, "done");
    assert_eq!(output, b"hello world");
    assert!(
        within("the end of the events", events.next())
            .await
            .is_none(),
        "the driver stops after channel_closed"
    );
    let (uri, input, acked) = within("the server task", server).await.expect("server");
    assert_eq!(
        uri,
        "/v1/data-channel/sess-1?role=publish_subscribe&cell-number=AAAA"
    );
    assert_eq!(input, vec![b'z'; 3000]);
    assert_eq!(acked, vec![0, 1]);
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let (listener, base) = listener().await;
    drop(listener);
    let error = DataChannel::connect(params(format!("{base}/x")))
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            error,
            ChannelError::Transport(TransportError::Connect { .. })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn wss_to_a_server_that_does_not_speak_tls_is_a_tls_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut hello = [0u8; 64];
        let _ = tcp.read(&mut hello).await;
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let error = DataChannel::connect(params(format!("wss://localhost:{port}/x")))
        .await
        .expect_err("no TLS there");
    assert!(
        matches!(error, ChannelError::Transport(TransportError::Tls { .. })),
        "{error:?}"
    );
}

fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn aws_lc_rs() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS for a server at `localhost`, with a certificate from the test CA.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(tls_fixture("localhost.pem"))
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(tls_fixture("localhost.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(aws_lc_rs())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A client configuration that trusts the test CA and nothing else.
fn trusting_the_test_ca() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(tls_fixture("ca.pem")).expect("CA"))
        .expect("CA root");
    let config = rustls::ClientConfig::builder_with_provider(aws_lc_rs())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn a_whole_session_over_wss_with_a_trusted_certificate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tls_acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("TLS handshake");
        let mut socket = tokio_tungstenite::accept_async(tls)
            .await
            .expect("websocket upgrade");
        let open = read_open(&mut socket).await;
        socket.send(output(0, b"over TLS")).await.expect("send");
        let ack = next_frame(&mut socket).await;
        assert_eq!(ack.message_type, MessageType::Acknowledge);
        let closed = ChannelClosed {
            output: "done".to_owned(),
            ..ChannelClosed::default()
        };
        send_channel_closed(&mut socket, &closed).await;
        open.token_value
    });
    let mut params = params(format!("wss://localhost:{port}/v1/data-channel/s"));
    params.tls = Some(trusting_the_test_ca());
    let (_writer, mut events) = DataChannel::connect(params)
        .await
        .expect("connect over wss");
    let mut output = Vec::new();
    loop {
        match next_event(&mut events).await {
            Event::Output(bytes) => output.extend_from_slice(&bytes),
            Event::Closed { output } => break assert_eq!(output, "done"),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(output, b"over TLS");
    let token = within("the server task", server).await.expect("server");
    assert_eq!(token, "loopback-token");
}

#[tokio::test]
async fn wss_to_a_certificate_from_an_unknown_authority_is_a_tls_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tls_acceptor();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // The client gives up during the handshake.
        let _ = acceptor.accept(tcp).await;
    });
    // The default configuration: the system's roots, which do not hold the test CA.
    let error = DataChannel::connect(params(format!("wss://localhost:{port}/x")))
        .await
        .expect_err("an unknown certificate authority");
    match error {
        ChannelError::Transport(TransportError::Tls { host, reason }) => {
            assert_eq!(host, "localhost");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn upgrade_refused_with_403_is_reported_with_its_status() {
    let (listener, base) = listener().await;
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 2048];
        let _ = tcp.read(&mut request).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let error = DataChannel::connect(params(format!("{base}/x")))
        .await
        .expect_err("403");
    assert_eq!(
        error,
        ChannelError::Transport(TransportError::HandshakeRejected { status: 403 })
    );
}

#[tokio::test]
async fn closing_before_any_frame_means_the_token_was_rejected() {
    let (listener, base) = listener().await;
    tokio::spawn(async move {
        let (mut socket, _) = accept(&listener).await;
        let _ = read_open(&mut socket).await;
        let _ = socket
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "bad token".into(),
            }))
            .await;
    });
    let (_writer, mut events) = DataChannel::connect(params(format!("{base}/x")))
        .await
        .expect("connect");
    let event = next_event(&mut events).await;
    assert_eq!(
        event,
        Event::Lost {
            reason: ChannelError::Transport(TransportError::TokenRejected(Closure::CloseFrame {
                code: Some(1008),
                reason: "bad token".to_owned()
            }))
        }
    );
    assert!(
        within("the end of the events", events.next())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_drop_mid_session_is_reported_as_closed_midway() {
    let (listener, base) = listener().await;
    tokio::spawn(async move {
        let (mut socket, _) = accept(&listener).await;
        let _ = read_open(&mut socket).await;
        socket.send(output(0, b"partial")).await.expect("send");
        // Wait for the ack so the output was surely processed, then vanish without a close.
        let _ = next_frame(&mut socket).await;
        drop(socket);
    });
    let (writer, mut events) = DataChannel::connect(params(format!("{base}/x")))
        .await
        .expect("connect");
    assert_eq!(
        next_event(&mut events).await,
        Event::Output(Bytes::from_static(b"partial"))
    );
    let Event::Lost { reason } = next_event(&mut events).await else {
        panic!("expected the loss to be reported");
    };
    assert!(
        matches!(
            reason,
            ChannelError::Transport(TransportError::ClosedMidway(_))
        ),
        "{reason:?}"
    );
    assert!(
        within("the end of the events", events.next())
            .await
            .is_none()
    );
    // Commands after the end fail cleanly.
    assert!(writer.send_input(Bytes::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn a_silent_server_is_declared_dead_by_the_pong_deadline() {
    let (listener, base) = listener().await;
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = accept(&listener).await;
        let _ = read_open(&mut socket).await;
        // Stop reading: pings are never answered. Keep the socket open until the test ends.
        let _ = hold_rx.await;
        drop(socket);
    });
    let mut params = params(format!("{base}/x"));
    params.session.keepalive_interval = Some(Duration::from_millis(50));
    params.session.pong_timeout = Duration::from_millis(200);
    let (_writer, mut events) = DataChannel::connect(params).await.expect("connect");
    assert_eq!(
        next_event(&mut events).await,
        Event::Lost {
            reason: ChannelError::PongTimeout {
                timeout: Duration::from_millis(200)
            }
        }
    );
    let _ = hold_tx.send(());
}

#[tokio::test]
async fn an_explicit_proxy_is_used_with_connect() {
    let (ws_listener, base) = listener().await;
    let ws_addr = ws_listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut socket, uri) = accept(&ws_listener).await;
        let open = read_open(&mut socket).await;
        socket.send(output(0, b"via proxy")).await.expect("send");
        let _ = next_frame(&mut socket).await;
        send_channel_closed(&mut socket, &ChannelClosed::default()).await;
        (uri, open.token_value)
    });
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = proxy_listener.local_addr().expect("addr").port();
    let proxy = tokio::spawn(async move {
        let (mut client, _) = proxy_listener.accept().await.expect("accept");
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            request.push(client.read_u8().await.expect("request byte"));
        }
        let mut upstream = TcpStream::connect(ws_addr).await.expect("upstream");
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .expect("reply");
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        String::from_utf8(request).expect("ascii request")
    });
    let mut params = params(format!("{base}/tunnelled?q=1"));
    params.proxy = ProxySetting::Url(format!("http://127.0.0.1:{proxy_port}"));
    let (_writer, mut events) = DataChannel::connect(params).await.expect("connect");
    assert_eq!(
        next_event(&mut events).await,
        Event::Output(Bytes::from_static(b"via proxy"))
    );
    assert!(matches!(
        next_event(&mut events).await,
        Event::Closed { .. }
    ));
    let (uri, token) = within("the server task", server).await.expect("server");
    assert_eq!(uri, "/tunnelled?q=1");
    assert_eq!(token, "loopback-token");
    let request = proxy.await.expect("proxy");
    assert!(request.starts_with(&format!(
        "CONNECT 127.0.0.1:{} HTTP/1.1\r\n",
        ws_addr.port()
    )));
}

#[tokio::test]
async fn server_pings_are_answered_promptly() {
    let (listener, base) = listener().await;
    let server = tokio::spawn(async move {
        let (mut socket, _) = accept(&listener).await;
        let _ = read_open(&mut socket).await;
        socket
            .send(Message::Ping(Bytes::from_static(b"are-you-there")))
            .await
            .expect("ping");
        // The client sends nothing else on its own (keepalive is off), so this is the pong.
        loop {
            match socket.next().await.expect("message").expect("read") {
                Message::Pong(payload) => break payload,
                Message::Ping(_) => {}
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    });
    let mut params = params(format!("{base}/x"));
    params.session.keepalive_interval = None;
    let (_writer, _events) = DataChannel::connect(params).await.expect("connect");
    let payload = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("pong within 20 s")
        .expect("server");
    assert_eq!(payload, Bytes::from_static(b"are-you-there"));
}

#[tokio::test]
async fn input_waits_while_the_unacked_window_is_full() {
    let (listener, base) = listener().await;
    let (window_tx, window_rx) = tokio::sync::oneshot::channel::<usize>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut socket, _) = accept(&listener).await;
        let _ = read_open(&mut socket).await;
        let mut frames = std::collections::BTreeMap::new();
        while frames.len() < 4 {
            let frame = next_frame(&mut socket).await;
            frames.insert(frame.sequence_number, frame);
        }
        // A ping round trip gives the client every chance to send more if it would.
        socket
            .send(Message::Ping(Bytes::from_static(b"probe")))
            .await
            .expect("ping");
        loop {
            match socket.next().await.expect("message").expect("read") {
                Message::Pong(_) => break,
                Message::Binary(bytes) => {
                    let frame = Frame::decode(&bytes).expect("frame");
                    frames.insert(frame.sequence_number, frame);
                }
                _ => {}
            }
        }
        let _ = window_tx.send(frames.len());
        let _ = go_rx.await;
        let mut received = Vec::new();
        let mut next_seq = 0;
        loop {
            while let Some(frame) = frames.remove(&next_seq) {
                received.extend_from_slice(&frame.payload);
                let ack = Acknowledge::frame_for(&frame, DATE, Uuid::new_v4()).to_bytes();
                socket.send(Message::Binary(ack)).await.expect("ack");
                next_seq += 1;
            }
            if received.len() == 64 * 1024 {
                break;
            }
            let frame = next_frame(&mut socket).await;
            if frame.sequence_number >= next_seq {
                frames.insert(frame.sequence_number, frame);
            }
        }
        send_channel_closed(&mut socket, &ChannelClosed::default()).await;
        received
    });
    let mut params = params(format!("{base}/x"));
    params.session.max_unacked_bytes = 4096;
    params.session.keepalive_interval = None;
    let (writer, mut events) = DataChannel::connect(params).await.expect("connect");
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer = {
        let completed = completed.clone();
        tokio::spawn(async move {
            for index in 0..64u8 {
                writer
                    .send_input(Bytes::from(vec![index; 1024]))
                    .await
                    .expect("input");
                completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let in_flight = within("the window to fill", window_rx)
        .await
        .expect("server saw the window fill");
    assert_eq!(
        in_flight, 4,
        "4 KiB window = four 1 KiB messages, then nothing until acked"
    );
    let accepted = completed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        accepted <= 4 + 4 + 1,
        "writes accepted without acks: {accepted}"
    );
    let _ = go_tx.send(());
    assert!(matches!(
        next_event(&mut events).await,
        Event::Closed { .. }
    ));
    producer.await.expect("producer");
    let received = within("the server task", server).await.expect("server");
    let expected: Vec<u8> = (0..64u8).flat_map(|index| vec![index; 1024]).collect();
    assert!(received == expected, "input arrives complete and in order");
}
