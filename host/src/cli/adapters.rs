//! `ecs-exec adapters list|show|check`: inspect the adapters without touching AWS.
//!
//! Parses its own small grammar (clap), loads the adapter set through [`crate::adapter`], and
//! prints to stdout. It never runs a plan and never talks to the network: `show` prints the plan
//! an adapter makes for an example invocation, `check` runs a third-party component on sample
//! invocations inside the sandbox and reports what the contract thinks of each answer.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::adapter::{
    ADAPTER_DIR_ENV, Adapter, AdapterErrorKind, AdapterSet, AdapterSource, Invocation, LoadOptions,
    MAX_INLINE_INPUT, new_nonce,
};

/// Inspect the pipe adapters: sandboxed WebAssembly components that turn a pipe into a plan.
#[derive(Debug, Parser)]
#[command(name = "ecs-exec adapters", version)]
struct AdaptersArgs {
    /// Also load every `*.wasm` adapter in this directory.
    #[arg(long, value_name = "DIR", env = ADAPTER_DIR_ENV, global = true)]
    adapter_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the adapters: name, version, source (embedded or path) and the programs each serves.
    List,
    /// Show the plan an adapter makes for an example invocation (nothing is run).
    Show {
        /// Adapter name, or a `.wasm` file.
        adapter: String,
        /// The example `--pipe` (default: none, the adapter's own default).
        #[arg(long)]
        pipe: Option<String>,
        /// Plan an interactive session instead of a one-off run.
        #[arg(long, conflicts_with_all = ["input_len", "input"])]
        interactive: bool,
        /// Example input size in bytes (default: unknown, streamed).
        #[arg(long, value_name = "N", conflicts_with = "input")]
        input_len: Option<u64>,
        /// Example input text (inlined when at most 1024 bytes).
        #[arg(long, value_name = "TEXT")]
        input: Option<String>,
        /// Extra words passed to the remote program.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Validate a third-party adapter component and run it on sample invocations in the sandbox.
    Check {
        /// The component file.
        file: PathBuf,
    },
}

/// Runs `ecs-exec adapters …`; `argv` is the whole command line, `argv[1] == "adapters"`.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let words =
        std::iter::once(OsString::from("ecs-exec adapters")).chain(argv.into_iter().skip(2));
    let args = match AdaptersArgs::try_parse_from(words) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ecs-exec: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: AdaptersArgs) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        adapter_dir: args.adapter_dir,
        ..LoadOptions::default()
    };
    match args.command {
        Command::List => {
            let adapters = AdapterSet::load(&options)?;
            print!("{}", list(&adapters));
            Ok(ExitCode::SUCCESS)
        }
        Command::Show {
            adapter,
            pipe,
            interactive,
            input_len,
            input,
            args,
        } => {
            let mut adapters = AdapterSet::load(&options)?;
            let adapter = adapters.select(None, Some(&adapter))?;
            let invocation = if interactive {
                Invocation::interactive(pipe, args)
            } else if let Some(text) = input {
                Invocation::one_off_with_input(pipe, args, text.as_bytes())
            } else {
                Invocation::one_off_streamed(pipe, args, input_len)
            };
            let plan = adapter.plan(&invocation, &new_nonce())?;
            print!("{}", show(adapter, &invocation, &plan));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file } => check(&options, &file),
    }
}

/// The `list` table: one line per adapter, programs another adapter shadows marked as such.
fn list(adapters: &AdapterSet) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "SOURCE".to_owned(),
        "PROGRAMS".to_owned(),
    ]];
    for adapter in adapters.adapters() {
        let programs: Vec<String> = adapter
            .info()
            .programs
            .iter()
            .map(|program| match adapters.serving(program) {
                Ok(Some(winner)) if !std::ptr::eq(winner, adapter) => {
                    format!(
                        "{program} (shadowed by {} from {})",
                        winner.info().name,
                        winner.source()
                    )
                }
                _ => program.clone(),
            })
            .collect();
        let info = adapter.info();
        rows.push([
            info.name.clone(),
            info.version.clone(),
            adapter.source().to_string(),
            programs.join(", "),
        ]);
    }
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for [name, version, source, programs] in &rows {
        out.push_str(&format!(
            "{name:<w0$}  {version:<w1$}  {source:<w2$}  {programs}\n",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    for adapter in adapters.adapters() {
        out.push_str(&format!(
            "\n{}: {}",
            adapter.info().name,
            adapter.info().summary
        ));
    }
    out.push('\n');
    out
}

/// The `show` report: the invocation, the plan, and the argv the agent will split it into.
fn show(adapter: &Adapter, invocation: &Invocation, plan: &crate::adapter::Plan) -> String {
    let info = adapter.info();
    let mut out = format!(
        "adapter:      {} {} ({})\n",
        info.name,
        info.version,
        adapter.source()
    );
    let input = match (&invocation.input, invocation.input_len) {
        (Some(bytes), _) => format!("{} bytes, inlinable", bytes.len()),
        (None, Some(length)) => format!("{length} bytes"),
        (None, None) if invocation.interactive => "keystrokes".to_owned(),
        (None, None) => "unknown length, streamed".to_owned(),
    };
    out.push_str(&format!(
        "invocation:   pipe={:?} args={:?} interactive={} input={input}\n",
        invocation.pipe, invocation.args, invocation.interactive
    ));
    out.push_str(&format!("command:      {}\n", plan.command));
    out.push_str(&format!("stdin:        {}\n", plan.stdin));
    out.push_str(&format!(
        "ready-marker: {}\n",
        plan.ready_marker.as_deref().unwrap_or("(none)")
    ));
    out.push_str(&format!(
        "exit-trailer: {}\n",
        plan.exit_trailer.as_deref().unwrap_or("(none)")
    ));
    match shell_words::split(&plan.command) {
        Ok(words) => {
            out.push_str("argv, as the agent splits the command:\n");
            for (index, word) in words.iter().enumerate() {
                out.push_str(&format!("  [{index}] {word:?}\n"));
            }
        }
        Err(error) => out.push_str(&format!("argv: the command does not split: {error}\n")),
    }
    out
}

/// `check FILE`: load it beside the built-in adapters, then plan sample invocations.
fn check(options: &LoadOptions, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        adapter_files: vec![file.to_owned()],
        ..options.clone()
    };
    let adapters =
        AdapterSet::load(&options).with_context(|| format!("{} cannot be used", file.display()))?;
    let adapter = adapters
        .adapters()
        .iter()
        .rev()
        .find(|adapter| adapter.source() == &AdapterSource::File(file.to_owned()))
        .context("the checked file is missing from the loaded set")?;
    let info = adapter.info();
    println!(
        "ok    loads as a component exporting {}",
        crate::adapter::CONTRACT_INTERFACE
    );
    println!(
        "ok    info: {} {}: {}",
        info.name, info.version, info.summary
    );
    for program in &info.programs {
        match adapters.serving(program) {
            Ok(Some(winner)) if std::ptr::eq(winner, adapter) => {
                println!("ok    serves `{program}`")
            }
            Ok(Some(winner)) => println!(
                "note  `{program}` is served by {} instead",
                winner.info().name
            ),
            _ => println!("note  `{program}` does not select it"),
        }
    }
    let mut pipes: Vec<Option<String>> = vec![None];
    pipes.extend(info.programs.iter().cloned().map(Some));
    let mut failures = 0;
    for pipe in pipes {
        let samples = [
            (
                "one-off, small input",
                Invocation::one_off_with_input(pipe.clone(), vec![], b"it's $HOME `x`\n\0\xff"),
            ),
            (
                "one-off, no input",
                Invocation::one_off_with_input(pipe.clone(), vec![], b""),
            ),
            (
                "one-off, streamed",
                Invocation::one_off_streamed(pipe.clone(), vec!["-a".to_owned()], None),
            ),
            (
                "one-off, large input",
                Invocation::one_off_streamed(
                    pipe.clone(),
                    vec![],
                    Some(MAX_INLINE_INPUT as u64 * 1000),
                ),
            ),
            ("interactive", Invocation::interactive(pipe.clone(), vec![])),
        ];
        for (label, invocation) in samples {
            let shown_pipe = pipe
                .as_deref()
                .map_or_else(|| "(no pipe)".to_owned(), |pipe| format!("`{pipe}`"));
            match adapter.plan(&invocation, &new_nonce()) {
                Ok(plan) => println!("ok    {shown_pipe}, {label}: stdin {}", plan.stdin),
                Err(error) if matches!(error.kind, AdapterErrorKind::Refused(_)) => {
                    println!("note  {shown_pipe}, {label}: refused: {}", error.kind);
                }
                Err(error) => {
                    failures += 1;
                    println!("FAIL  {shown_pipe}, {label}: {}", error.kind);
                }
            }
        }
    }
    if failures == 0 {
        println!("{} passes the check", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} fails {failures} sample invocation(s)", file.display());
        Ok(ExitCode::from(1))
    }
}

/// The `adapters` grammar as clap sees it, for the completion script and the man page.
pub fn command() -> clap::Command {
    <AdaptersArgs as clap::CommandFactory>::command()
}
