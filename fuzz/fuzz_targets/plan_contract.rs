//! The adapter contract on whatever a guest could return: any command, stdin mode, ready
//! marker, exit trailer, stderr tag and alternatives (contract 0.2) against any invocation. Validation must answer without panicking;
//! a plan it accepts must keep the promises `Plan` documents; and the remote output decoder
//! that such a plan configures must, on any remote output in any chunking, hold back no more
//! than it may and pass through exactly what the program printed.
#![no_main]

use arbitrary::Arbitrary;
use ecs_exec::adapter::{
    AdapterInfo, Alternative, Invocation, MAX_COMMAND_BYTES, MAX_MARKER_BYTES, Plan, StdinMode,
    validate_info, validate_plan,
};
use ecs_exec::plan_io::{OutputDecoder, OutputState};
use libfuzzer_sys::fuzz_target;

const NONCE: &str = "0123456789abcdef0123456789abcdef";

#[derive(Arbitrary, Debug)]
struct Input {
    command: String,
    stdin: u8,
    ready_marker: Option<String>,
    exit_trailer: Option<String>,
    stderr_tag: Option<String>,
    /// (ready marker, stdin mode, stderr framed, notice) of each alternative.
    alternatives: Vec<(String, u8, bool, String)>,
    /// Put the nonce into the markers, so accepted plans are reached often.
    marker_with_nonce: bool,
    interactive: bool,
    pipe: Option<String>,
    args: Vec<String>,
    input: Option<Vec<u8>>,
    info: (String, String, Vec<String>, String, String),
    /// Remote output, split into chunks at these lengths.
    output: Vec<u8>,
    chunks: Vec<u8>,
}

fn with_nonce(marker: Option<String>, add: bool) -> Option<String> {
    marker.map(|m| if add { format!("{m}{NONCE}") } else { m })
}

fn stdin_mode(byte: u8) -> StdinMode {
    match byte % 6 {
        0 => StdinMode::None,
        1 => StdinMode::Raw,
        2 => StdinMode::Inline,
        3 => StdinMode::StreamBase64,
        4 => StdinMode::StreamBytes,
        _ => StdinMode::StreamChunks,
    }
}

fuzz_target!(|input: Input| {
    let nonce_in_markers = input.marker_with_nonce;
    let plan = Plan {
        command: input.command,
        stdin: stdin_mode(input.stdin),
        ready_marker: with_nonce(input.ready_marker, nonce_in_markers),
        exit_trailer: with_nonce(input.exit_trailer, nonce_in_markers),
        stderr_tag: with_nonce(input.stderr_tag, nonce_in_markers),
        alternatives: input
            .alternatives
            .into_iter()
            .map(|(marker, stdin, stderr_framed, notice)| Alternative {
                ready_marker: with_nonce(Some(marker), nonce_in_markers).unwrap_or_default(),
                stdin: stdin_mode(stdin),
                stderr_framed,
                notice,
            })
            .collect(),
    };
    let invocation = if input.interactive {
        Invocation::interactive(input.pipe, input.args)
    } else {
        match &input.input {
            Some(bytes) => Invocation::one_off_with_input(input.pipe, input.args, bytes),
            None => Invocation::one_off_streamed(input.pipe, input.args, None),
        }
    };
    let (name, version, programs, summary, contract) = input.info;
    let _ = validate_info(&AdapterInfo {
        name,
        version,
        programs,
        summary,
        contract,
    });

    if validate_plan(&plan, &invocation, NONCE).is_err() {
        return;
    }
    assert!(!plan.command.trim().is_empty());
    assert!(plan.command.len() <= MAX_COMMAND_BYTES);
    assert!(!plan.command.contains('\0'));
    if plan.stdin.is_streamed() || !plan.alternatives.is_empty() {
        assert!(plan.ready_marker.is_some());
    }
    let markers = plan
        .ready_marker
        .iter()
        .chain(&plan.exit_trailer)
        .chain(&plan.stderr_tag)
        .chain(plan.alternatives.iter().map(|a| &a.ready_marker));
    for marker in markers {
        assert!(marker.len() <= MAX_MARKER_BYTES && marker.contains(NONCE));
        assert!(marker.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    for alternative in &plan.alternatives {
        assert_ne!(alternative.stdin, StdinMode::Raw, "alternatives are one-off ways");
        assert!(!alternative.stderr_framed || plan.stderr_tag.is_some());
    }
    if input.interactive {
        assert!(matches!(plan.stdin, StdinMode::None | StdinMode::Raw));
        assert!(plan.ready_marker.is_none() && plan.stderr_tag.is_none());
        assert!(plan.alternatives.is_empty());
    }

    // Decode the remote output in the given chunking and in one piece: same result.
    let decode = |chunk_lengths: &[u8]| {
        let mut decoder =
            OutputDecoder::new(plan.ready_marker.as_deref(), plan.exit_trailer.as_deref());
        let mut out = Vec::new();
        let mut rest = input.output.as_slice();
        for &len in chunk_lengths {
            let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
            decoder.push(chunk, &mut out);
            rest = tail;
        }
        decoder.push(rest, &mut out);
        let state_before_finish = decoder.state();
        decoder.finish(&mut out);
        (out, state_before_finish, decoder.exit_status())
    };
    let (chunked, chunked_state, chunked_status) = decode(&input.chunks);
    let (whole, whole_state, whole_status) = decode(&[]);
    assert_eq!(chunked, whole, "output depends on chunking");
    assert_eq!(chunked_state, whole_state);
    assert_eq!(chunked_status, whole_status);
    assert!(whole.len() <= input.output.len(), "decoder invented output");
    if let OutputState::Exited(status) = whole_state {
        assert_eq!(whole_status, Some(status));
    }
});
