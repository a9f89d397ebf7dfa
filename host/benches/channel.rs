//! Data-channel speed: frame encode and decode at 1 KiB and 64 KiB payloads, AES-256-GCM
//! encrypt and decrypt of one payload (KMS sessions), and the client session against the test
//! fake agent back to back in memory (no sockets, no faults), in each direction, plain and
//! KMS-encrypted, beside SHA-256 alone as the baseline that bounds them.
//! Run: `cargo bench -p ecs-exec --bench channel`.

#[path = "../tests/suite/channel_support/mod.rs"]
mod channel_support;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use channel_support::{Ending, FakeAgent, Faults, Link, Pair};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ecs_exec::channel::crypto::{DataKey, SessionCipher};
use ecs_exec::channel::frame::{Frame, MessageType, PayloadType};
use ecs_exec::channel::session::SessionConfig;
use uuid::Uuid;

const SIZES: [usize; 2] = [1024, 64 * 1024];

fn frame(len: usize) -> Frame {
    Frame::stream(
        MessageType::OutputStreamData,
        42,
        PayloadType::Output,
        Bytes::from(vec![0x5Au8; len]),
        1_764_265_200_000,
        Uuid::from_u128(7),
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for len in SIZES {
        let frame = frame(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", len), &frame, |b, frame| {
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            b.iter(|| {
                buf.clear();
                black_box(frame).encode(&mut buf);
                black_box(buf.len())
            })
        });
        let wire = frame.to_bytes();
        group.bench_with_input(BenchmarkId::new("decode", len), &wire, |b, wire| {
            b.iter(|| Frame::decode_shared(black_box(wire)).map(|frame| frame.payload.len()))
        });
        // KMS sessions seal each payload before framing and open it after decoding. Both
        // halves of this key are equal, so what `seal` makes `open` accepts.
        let key = DataKey::from_slice(&[0x42; 64]).expect("64 bytes");
        let mut cipher = SessionCipher::new(&key).expect("cipher");
        group.bench_with_input(BenchmarkId::new("encrypt", len), &frame, |b, frame| {
            b.iter(|| {
                cipher
                    .seal(black_box(&frame.payload))
                    .map(|sealed| sealed.len())
            })
        });
        let sealed = cipher.seal(&frame.payload).expect("seal");
        group.bench_with_input(BenchmarkId::new("decrypt", len), &sealed, |b, sealed| {
            b.iter(|| cipher.open(black_box(sealed)).map(|plain| plain.len()))
        });
        // The baseline: every frame's payload is hashed once to encode and once to decode, so
        // SHA-256 alone bounds the codec, and at half its rate the session pair.
        group.bench_with_input(BenchmarkId::new("sha256_only", len), &frame, |b, frame| {
            b.iter(|| {
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(&frame.payload))
            })
        });
    }
    group.finish();
}

fn config() -> SessionConfig {
    SessionConfig {
        client_id: Uuid::from_u128(1),
        id_seed: Some(1),
        keepalive_interval: None,
        ..SessionConfig::default()
    }
}

fn transfer(input: &Bytes, output: &Bytes, chunk: usize, kms: bool) -> usize {
    let mut agent = FakeAgent::new(output.clone(), input.len());
    agent.chunk = chunk;
    agent.window = 4096;
    if kms {
        agent.encrypt(1);
    }
    let mut pair = Pair::new(config(), agent, Link::new(1, Faults::NONE), input.clone());
    pair.max_input_write = 64 * 1024;
    let ending = pair.run(u64::MAX);
    assert_eq!(
        ending,
        Ending::Closed {
            output: String::new()
        }
    );
    assert_eq!(pair.client_output.len, output.len());
    assert_eq!(pair.agent.received_input.len, input.len());
    pair.client_output.len + pair.agent.received_input.len
}

fn pair(c: &mut Criterion) {
    const TOTAL: usize = 8 << 20;
    let data = Bytes::from((0..TOTAL).map(|i| i as u8).collect::<Vec<u8>>());
    let mut group = c.benchmark_group("session_pair");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    // Each plain figure beside the same transfer KMS-encrypted (the fake agent seals and opens
    // too, so the encrypted pair pays for both ends' AES-GCM, as the plain one for both ends'
    // SHA-256).
    for kms in [false, true] {
        let suffix = if kms { "_kms" } else { "" };
        group.bench_function(format!("output_1KiB_frames{suffix}"), |b| {
            b.iter(|| transfer(&Bytes::new(), &data, 1024, kms))
        });
        group.bench_function(format!("output_16KiB_frames{suffix}"), |b| {
            b.iter(|| transfer(&Bytes::new(), &data, 16 * 1024, kms))
        });
        group.bench_function(format!("input_1KiB_frames{suffix}"), |b| {
            b.iter(|| transfer(&data, &Bytes::new(), 1024, kms))
        });
    }
    group.finish();
}

criterion_group!(benches, codec, pair);
criterion_main!(benches);
