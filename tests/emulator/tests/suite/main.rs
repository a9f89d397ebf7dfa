//! The emulator's integration tests, linked into one test binary (one link of the AWS SDK
//! instead of one per file). They drive the emulator with raw clients built on the wire crate
//! (`ecs-exec-wire`); the host's own client against it is tested in the host's suite.
//! Filter by module: `cargo test -p ecs-exec-emulator --test suite aws_cli`.

mod common;

mod api;
mod aws_cli;
mod binary;
mod data_channel;
mod kms;
mod kms_session;
