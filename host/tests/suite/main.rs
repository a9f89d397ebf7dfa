//! The host's integration tests, linked into one test binary.
//!
//! Every test here links wasmtime, the AWS SDK and the emulator; as separate binaries they took
//! over half a gigabyte of disk each and most of the suite's link time. One binary links once.
//! Run a group with its module name as the filter: `cargo test -p ecs-exec --test suite e2e_`.

mod adapter_common;
mod channel_support;
mod e2e_support;
mod ecs_support;

mod adapter_cli;
mod adapter_plans;
mod adapter_sandbox;
mod adapter_trust;
mod channel_adversity;
mod channel_emulator;
mod channel_fuzz;
mod channel_golden;
mod channel_transport;
mod cli_completions;
mod cli_usage;
mod e2e_cold;
mod e2e_cp;
mod e2e_doctor;
mod e2e_fanout;
mod e2e_faults;
mod e2e_hoop;
mod e2e_interactive;
mod e2e_kms;
mod e2e_load;
mod e2e_oneoff;
mod e2e_runpath;
mod e2e_secrets;
mod e2e_stdio;
mod e2e_teardown;
mod ecs_api;
mod ecs_bin;
