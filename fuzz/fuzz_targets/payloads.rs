//! The JSON bodies a data channel peer sends (acknowledge, channel_closed, the handshake
//! messages, terminal size, the exit-code text, OpenDataChannel) on arbitrary bytes: each
//! parser returns a value or an error, never panics, and what it accepts serialises to
//! something it accepts again as the same value.
#![no_main]

use ecs_exec_wire::payload::{
    Acknowledge, ChannelClosed, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    OpenDataChannel, TerminalSize, parse_exit_code,
};
use libfuzzer_sys::fuzz_target;

macro_rules! round_trip {
    ($type:ty, $data:expr) => {
        if let Ok(value) = <$type>::from_payload($data) {
            let bytes = value.to_bytes();
            let again = <$type>::from_payload(&bytes)
                .expect(concat!(stringify!($type), " must parse what it wrote"));
            assert_eq!(
                again.to_bytes(),
                bytes,
                concat!(stringify!($type), " round trip")
            );
        }
    };
}

fuzz_target!(|data: &[u8]| {
    round_trip!(Acknowledge, data);
    round_trip!(ChannelClosed, data);
    round_trip!(HandshakeRequest, data);
    round_trip!(HandshakeResponse, data);
    round_trip!(HandshakeComplete, data);
    round_trip!(TerminalSize, data);
    let _ = parse_exit_code(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(open) = OpenDataChannel::from_json(text)
    {
        let again = OpenDataChannel::from_json(&open.to_json())
            .expect("OpenDataChannel must parse what it wrote");
        assert!(again == open, "OpenDataChannel round trip");
    }
});
