//! The frame decoder on arbitrary bytes, as a websocket peer could send them: it must return a
//! frame or a typed error, never panic, and whatever it accepts must survive a round trip
//! through the encoder unchanged.
#![no_main]

use bytes::Bytes;
use ecs_exec_wire::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let copied = Frame::decode(data);
    let shared = Frame::decode_shared(&Bytes::copy_from_slice(data));
    match (&copied, &shared) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "decode and decode_shared disagree"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("decode and decode_shared disagree on acceptance"),
    }
    let Ok(frame) = copied else {
        return;
    };
    assert!(frame.payload.len() <= data.len());
    let encoded = frame.to_bytes();
    assert_eq!(encoded.len(), frame.encoded_len());
    let again = Frame::decode(&encoded).expect("a re-encoded accepted frame must decode");
    assert_eq!(again, frame, "round trip changed the frame");
});
