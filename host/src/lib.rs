//! `ecs-exec`: run one-off and interactive commands inside AWS ECS containers.
//!
//! The crate is layered the way data flows (see `DESIGN.md`):
//! - [`cli`] parses and validates the command line (pure), then resolves it;
//! - [`adapter`] runs sandboxed WebAssembly adapters that turn a pipe and its input into a plan;
//! - [`ecs`] is the control plane: find the task and container, call ExecuteCommand;
//! - [`channel`] is the SSM data channel: a sans-IO frame codec and session core, and the
//!   websocket driver around them;
//! - [`terminal`] owns the local tty (raw mode, resize, signals);
//! - [`cp`] copies a file into or out of a container (`ecs-exec cp`);
//! - [`doctor`] checks everything ECS Exec needs for a task (`ecs-exec doctor`);
//! - [`kms`] gets the data key of a KMS-encrypted session (KMS GenerateDataKey);
//! - [`ssm`] resumes a data channel session whose websocket dropped (SSM ResumeSession);
//! - [`signed_http`] signs the few AWS calls made without an SDK crate (SSM, STS, IAM);
//! - [`tls`] is the one TLS client configuration both of those and the websocket use;
//! - [`run`] wires one-off and interactive runs together;
//! - [`exit`] is the table of `ecs-exec`'s own exit codes (sysexits style).

pub mod adapter;
pub mod aws_json;
pub mod channel;
pub mod cli;
pub mod cp;
pub mod doctor;
pub mod ecs;
pub mod exit;
pub mod kms;
pub mod plan_io;
pub mod run;
pub mod signed_http;
pub mod ssm;
pub mod terminal;
pub mod tls;
