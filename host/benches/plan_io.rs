//! The one-off output decoder (`plan_io::OutputDecoder`) on bulk data: 1 MiB of the program's
//! stderr framed as the built-in adapters frame it (`od -An -v -tx1` lines behind the tag), fed
//! in data-channel-sized pieces, beside the same 1 MiB as plain stdout through the same decoder
//! as the baseline. Its figure bounds how fast stderr can come back apart.
//! Run: `cargo bench -p ecs-exec --bench plan_io`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ecs_exec::adapter::{Plan, StdinMode};
use ecs_exec::plan_io::OutputDecoder;

const TAG: &str = "__ecs_exec_err_0123456789abcdef:";
const TRAILER: &str = "__ecs_exec_exit_0123456789abcdef:";
const MARKER: &str = "__ecs_exec_ready_0123456789abcdef:RF";
const PAYLOAD: usize = 1 << 20;
/// What the agent puts in one output message, about.
const PIECE: usize = 32 * 1024;

fn plan() -> Plan {
    Plan {
        command: "sh -c true".to_owned(),
        stdin: StdinMode::StreamBytes,
        ready_marker: Some(MARKER.to_owned()),
        exit_trailer: Some(TRAILER.to_owned()),
        stderr_tag: Some(TAG.to_owned()),
        alternatives: Vec::new(),
    }
}

/// `bytes` as the remote side prints them: the marker, then either od's lines behind the tag or
/// the bytes themselves, then the trailer.
fn remote_output(bytes: &[u8], framed: bool) -> Vec<u8> {
    let mut out = MARKER.as_bytes().to_vec();
    if framed {
        for line in bytes.chunks(16) {
            out.extend_from_slice(TAG.as_bytes());
            for byte in line {
                out.extend_from_slice(format!(" {byte:02x}").as_bytes());
            }
            out.push(b'\n');
        }
    } else {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(format!("{TRAILER}0\n").as_bytes());
    out
}

fn decode(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..PAYLOAD).map(|i| (i * 131 % 251) as u8).collect();
    let mut group = c.benchmark_group("output_decoder");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    for (name, framed) in [
        ("stderr_frames_1MiB", true),
        ("baseline_stdout_1MiB", false),
    ] {
        let output = remote_output(&bytes, framed);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut decoder = OutputDecoder::for_plan(&plan());
                let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
                for piece in output.chunks(PIECE) {
                    decoder.push(black_box(piece), &mut stdout, &mut stderr);
                }
                assert_eq!(stdout.len() + stderr.len(), PAYLOAD);
                (stdout, stderr)
            });
        });
    }
    group.finish();
}

criterion_group!(plan_io, decode);
criterion_main!(plan_io);
