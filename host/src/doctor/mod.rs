//! `ecs-exec doctor`: checks everything ECS Exec needs for one task and says what to fix.
//!
//! [`checks`] is the pure part (facts in, verdicts out, unit-tested); [`gather`] makes the AWS
//! calls (STS and IAM through [`query`], CloudWatch Logs and S3 through [`log_destinations`]); [`render`] prints the table or the JSON document.
//! This file parses the command line and wires them. Exit status: 0 when no check failed,
//! [`checks::FAILED_EXIT`] when one did, 64 for a usage error (README "Exit codes").

pub mod checks;
pub mod gather;
pub mod log_destinations;
pub mod query;
pub mod render;

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::cli::target_flags::TargetFlags;
use crate::ecs;
use crate::exit::Exit;
use gather::DoctorTarget;

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `ecs-exec doctor [TARGET FLAGS] [--output text|json]`.
#[derive(Debug, Parser)]
#[command(
    name = "ecs-exec doctor",
    about = "Check everything ECS Exec needs for a task, and say what to fix",
    after_help = "Exit status: 0 when no check failed, 1 when one did, 64 for a usage error.\n\
                  Checks: credentials, cluster, kms-key, log-group, log-bucket, task, platform,\n\
                  exec-enabled, exec-agent, init-process, readonly-root, pid-mode, caller-iam,\n\
                  task-role, probe."
)]
pub struct DoctorArgs {
    #[command(flatten)]
    target: TargetFlags,
    /// Report format
    #[arg(long, value_enum, default_value = "text")]
    output: OutputFormat,
}

/// Entry point for `argv` = `ecs-exec doctor …`.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let words = argv.into_iter().skip(2);
    let args = match DoctorArgs::try_parse_from(
        std::iter::once(OsString::from("ecs-exec doctor")).chain(words),
    ) {
        Ok(args) => args,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = write!(std::io::stdout().lock(), "{error}");
                return ExitCode::SUCCESS;
            }
            let first = error.to_string();
            let first = first.lines().next().unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            crate::cli::report_error(&format!("{first}; see 'ecs-exec doctor --help'"));
            return Exit::Usage.to_exit_code();
        }
    };
    if args.target.selector().is_none() {
        crate::cli::report_error(
            "doctor needs a task: give --service-name (or SERVICE_NAME) or --task; see 'ecs-exec doctor --help'",
        );
        return Exit::Usage.to_exit_code();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::cli::report_error(&format!("cannot start the async runtime: {error}"));
            return Exit::Software.to_exit_code();
        }
    };
    let settings = args.target.aws_settings();
    let target = DoctorTarget {
        cluster: args.target.cluster.clone(),
        service: args.target.service_name.clone(),
        task: args.target.task.clone(),
        container: args.target.container.clone(),
    };
    let facts = runtime.block_on(async {
        let config = ecs::load_sdk_config(&settings).await;
        gather::gather(&config, &target).await
    });
    runtime.shutdown_background();
    let checks = checks::evaluate(&facts);
    let heading = render::Heading {
        cluster: args.target.cluster.clone(),
        target: match (&facts.task, &args.target.service_name) {
            (checks::Fetched::Got(task), Some(service)) => {
                format!("service {service}, task {}", task.task_id)
            }
            (checks::Fetched::Got(task), None) => format!("task {}", task.task_id),
            (_, Some(service)) => format!("service {service}"),
            (_, None) => format!("task {}", args.target.task.as_deref().unwrap_or("?")),
        },
    };
    let stdout = std::io::stdout();
    let report = match args.output {
        OutputFormat::Json => render::json(&heading, &checks),
        OutputFormat::Text => render::text(
            &heading,
            &checks,
            render::use_colour(
                stdout.is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        ),
    };
    if stdout.lock().write_all(report.as_bytes()).is_err() {
        return Exit::IoError.to_exit_code();
    }
    ExitCode::from(checks::exit_status(&checks))
}
