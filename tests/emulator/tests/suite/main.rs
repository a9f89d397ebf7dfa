//! The emulator's integration tests, linked into one test binary (one link of the AWS SDK and
//! the host client instead of one per file). Filter by module: `cargo test -p
//! ecs-exec-emulator --test suite aws_cli`.

mod common;

mod api;
mod aws_cli;
mod binary;
mod data_channel;
mod host_client;
mod kms;
mod kms_session;
