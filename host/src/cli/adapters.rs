//! `ecs-exec adapters list|show|check`: inspect the adapters without touching AWS.
//!
//! Parses its own small grammar (clap), loads the adapter set through [`crate::adapter`], and
//! prints to stdout. It never runs a plan and never talks to the network: `show` prints the plan
//! an adapter makes for an example invocation, `check` holds a third-party component to the
//! contract on sample and generated invocations inside the sandbox. It shares exec's front
//! ([`super`]): one `ecs-exec: error: …` line, the documented exit codes, `-v`, and a quiet
//! exit when stdout's reader goes away.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, Subcommand};

use super::{print_stdout, report_error};
use crate::adapter::{
    ADAPTER_DIR_ENV, ADAPTER_INTERFACE, Adapter, AdapterError, AdapterErrorKind, AdapterSet, Cost,
    Invocation, LoadOptions, MAX_INLINE_INPUT, Plan, new_nonce, plan_extras, terminal_safe,
};
use crate::exit::Exit;

/// Inspect the pipe adapters: sandboxed WebAssembly components that turn a pipe into a plan.
#[derive(Debug, Parser)]
#[command(
    name = "ecs-exec adapters",
    version,
    after_help = "Exit codes: 0 done; 64 usage error; 65 the checked adapter failed the check; \
                  78 an adapter could not be loaded or planned (named in the message); 141 \
                  stdout was closed."
)]
struct AdaptersArgs {
    /// Also load every `*.wasm` adapter in this directory (may also come before `adapters`).
    #[arg(long, value_name = "DIR", env = ADAPTER_DIR_ENV, global = true)]
    adapter_dir: Option<PathBuf>,
    /// Trace on stderr (why the compile cache is or is not used, …); -vv for more.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the adapters: name, version, the adapter contract version each was built against,
    /// source (embedded or path), the programs each serves, and what third-party ones take over
    /// from the built-in ones.
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
    /// Hold a third-party adapter component to the contract: sample invocations plus a
    /// reproducible set of generated ones, each plan's cost, and what it takes over.
    Check {
        /// The component file.
        file: PathBuf,
        /// Stop (and fail) once the check has run this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        budget: f64,
    },
}

/// Runs `ecs-exec adapters …`: `globals` are the global flags that came before `adapters`,
/// `words` what came after it.
pub fn main(globals: Vec<OsString>, words: Vec<OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from("ecs-exec adapters"))
        .chain(words)
        .chain(globals);
    let args = match AdaptersArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(error) => {
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    print_stdout(&error.render().to_string())
                        .map_or_else(|code| code, |()| ExitCode::SUCCESS)
                }
                _ => {
                    let rendered = error.render().to_string();
                    let first = rendered.lines().next().unwrap_or("invalid arguments");
                    let message = first.strip_prefix("error: ").unwrap_or(first);
                    report_error(&format!("{message}; see 'ecs-exec adapters --help'"));
                    Exit::Usage.to_exit_code()
                }
            };
        }
    };
    super::exec::init_tracing(args.verbose);
    match run(args) {
        Ok(Report { text, passed }) => match print_stdout(&text) {
            Err(code) => code,
            Ok(()) if passed => ExitCode::SUCCESS,
            Ok(()) => Exit::DataErr.to_exit_code(),
        },
        Err(error) => {
            report_error(&error.to_string());
            Exit::Config.to_exit_code()
        }
    }
}

/// What a subcommand prints, and whether it passed.
struct Report {
    text: String,
    passed: bool,
}

impl Report {
    fn passed(text: String) -> Self {
        Self { text, passed: true }
    }
}

fn run(args: AdaptersArgs) -> Result<Report, AdapterError> {
    let options = LoadOptions {
        adapter_dir: args.adapter_dir,
        ..LoadOptions::default()
    };
    match args.command {
        Command::List => Ok(Report::passed(list(&AdapterSet::load(&options)?))),
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
            Ok(Report::passed(show(adapter, &invocation, &plan)))
        }
        Command::Check { file, budget } => {
            let budget = Duration::try_from_secs_f64(budget).unwrap_or(Duration::from_secs(10));
            check(&options, &file, budget)
        }
    }
}

/// The `list` table: one line per adapter, programs another adapter shadows marked as such,
/// then what each third-party adapter takes over, then the summaries. Terminal-safe.
fn list(adapters: &AdapterSet) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "CONTRACT".to_owned(),
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
            terminal_safe(&info.version),
            terminal_safe(adapter.contract()),
            adapter.source().to_string(),
            terminal_safe(&programs.join(", ")),
        ]);
    }
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for [name, version, contract, source, programs] in &rows {
        out.push_str(&format!(
            "{name:<w0$}  {version:<w1$}  {contract:<w2$}  {source:<w3$}  {programs}\n",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
    }
    let takeovers: Vec<&Adapter> = adapters
        .adapters()
        .iter()
        .filter(|adapter| !adapter.takes_over().is_empty())
        .collect();
    if !takeovers.is_empty() {
        out.push('\n');
    }
    for adapter in takeovers {
        let pinned = if adapter.pinned() {
            "pinned"
        } else {
            "NOT PINNED: every run it takes over prints a warning"
        };
        for takeover in adapter.takes_over() {
            out.push_str(&format!(
                "takeover: {} ({}, sha256 {}, {pinned}) takes over {}\n",
                adapter.info().name,
                adapter.source(),
                adapter.sha256(),
                terminal_safe(&takeover.to_string()),
            ));
        }
    }
    for adapter in adapters.adapters() {
        out.push_str(&format!(
            "\n{}: {}",
            adapter.info().name,
            terminal_safe(&adapter.info().summary)
        ));
    }
    out.push('\n');
    out
}

/// The `show` report: the invocation, the plan, and the argv the agent will split it into.
fn show(adapter: &Adapter, invocation: &Invocation, plan: &Plan) -> String {
    let info = adapter.info();
    let mut out = format!(
        "adapter:      {} {} ({}, contract {})\n",
        info.name,
        terminal_safe(&info.version),
        adapter.source(),
        terminal_safe(adapter.contract())
    );
    let input = match (&invocation.input, invocation.input_len) {
        (Some(bytes), _) => format!("{} bytes, inlinable", bytes.len()),
        (None, Some(length)) => format!("{length} bytes"),
        (None, None) if invocation.interactive => "keystrokes".to_owned(),
        (None, None) => "unknown length, streamed".to_owned(),
    };
    out.push_str(&terminal_safe(&format!(
        "invocation:   pipe={:?} args={:?} interactive={} input={input}",
        invocation.pipe, invocation.args, invocation.interactive
    )));
    out.push('\n');
    out.push_str(&format!("command:      {}\n", terminal_safe(&plan.command)));
    out.push_str(&format!("stdin:        {}\n", plan.stdin));
    out.push_str(&format!(
        "ready-marker: {}\n",
        plan.ready_marker.as_deref().unwrap_or("(none)")
    ));
    out.push_str(&format!(
        "exit-trailer: {}\n",
        plan.exit_trailer.as_deref().unwrap_or("(none)")
    ));
    for line in plan_extras(plan) {
        let (key, value) = line.split_once(": ").unwrap_or((&line, ""));
        out.push_str(&format!("{:<13} {value}\n", format!("{key}:")));
    }
    match shell_words::split(&plan.command) {
        Ok(words) => {
            out.push_str("argv, as the agent splits the command:\n");
            for (index, word) in words.iter().enumerate() {
                out.push_str(&format!(
                    "  [{index}] {}\n",
                    terminal_safe(&format!("{word:?}"))
                ));
            }
        }
        Err(error) => out.push_str(&format!("argv: the command does not split: {error}\n")),
    }
    out
}

/// How many generated invocations `check` runs after the samples.
const GENERATED_INVOCATIONS: usize = 48;
/// The seed of the generated invocations: fixed, so a check is reproducible.
const CHECK_SEED: u64 = 0x6368_6563_6b21;

/// `check FILE`: load it beside the built-in adapters (and the directory's), then plan sample
/// and generated invocations within `budget`.
fn check(options: &LoadOptions, file: &Path, budget: Duration) -> Result<Report, AdapterError> {
    let started = Instant::now();
    let mut adapters = AdapterSet::load(options)?;
    adapters.add_file_for_check(file)?;
    let adapters = adapters;
    let adapter = adapters.adapters().last().ok_or_else(|| {
        let reason = "the checked adapter is missing from the set".to_owned();
        AdapterError::new("(check)", AdapterErrorKind::Host(reason))
    })?;
    let info = adapter.info();
    let mut out = Output::default();
    out.line(
        "ok",
        format!(
            "loads as a component exporting {ADAPTER_INTERFACE}@{}",
            terminal_safe(adapter.contract())
        ),
    );
    out.line(
        "ok",
        format!(
            "info: {} {}: {}",
            info.name,
            terminal_safe(&info.version),
            terminal_safe(&info.summary)
        ),
    );
    let pin = if adapter.pinned() {
        "pinned".to_owned()
    } else if adapters.pinning() {
        "NOT pinned: pinning is on, so runs would refuse it".to_owned()
    } else {
        "not pinned (pinning is off)".to_owned()
    };
    out.line("note", format!("sha256 {}, {pin}", adapter.sha256()));
    for takeover in adapter.takes_over() {
        out.line(
            "WARN",
            format!(
                "takes over {}: every run it serves says so on stderr unless it is pinned",
                terminal_safe(&takeover.to_string())
            ),
        );
    }
    for program in &info.programs {
        match adapters.serving(program) {
            Ok(Some(winner)) if std::ptr::eq(winner, adapter) => {
                out.line("ok", format!("serves `{program}`"));
            }
            Ok(Some(winner)) => out.line(
                "note",
                format!("`{program}` is served by {} instead", winner.info().name),
            ),
            _ => out.line("note", format!("`{program}` does not select it")),
        }
    }

    let declared = |pipe: &Option<String>| {
        pipe.as_deref().is_some_and(|pipe| {
            adapters
                .serving(pipe)
                .ok()
                .flatten()
                .is_some_and(|winner| std::ptr::eq(winner, adapter))
        })
    };
    let mut cases = samples(&info.programs);
    cases.extend(generated(&info.programs, GENERATED_INVOCATIONS, CHECK_SEED));
    let total = cases.len();
    let mut worst: Option<Cost> = None;
    let mut generated_ok = 0;
    for (number, (label, invocation)) in cases.into_iter().enumerate() {
        if started.elapsed() >= budget {
            out.fail(format!(
                "stopped after {number} of {total} invocations: the check's budget of {:.1} s \
                 ran out; plans this slow stall every run",
                budget.as_secs_f64()
            ));
            break;
        }
        let shown_pipe = invocation.pipe.as_deref().map_or_else(
            || "(no pipe)".to_owned(),
            |pipe| format!("`{}`", terminal_safe(pipe)),
        );
        let is_sample = label.is_some();
        let label = label.unwrap_or_else(|| format!("generated #{}", number + 1));
        let (plan, cost) = adapter.plan_with_cost(&invocation, &new_nonce());
        if let Some(cost) = cost {
            worst = Some(worst.map_or(cost, |worst| Cost {
                fuel: worst.fuel.max(cost.fuel),
                elapsed: worst.elapsed.max(cost.elapsed),
            }));
        }
        let cost_text = cost.map_or_else(String::new, |cost| format!(" ({})", cost_line(cost)));
        match plan {
            Ok(plan) if is_sample => out.line(
                "ok",
                format!(
                    "{shown_pipe}, {label}: stdin {}{}{cost_text}",
                    plan.stdin,
                    ways(&plan)
                ),
            ),
            Ok(_) => generated_ok += 1,
            Err(error) if matches!(error.kind, AdapterErrorKind::Refused(_)) => {
                if declared(&invocation.pipe) {
                    out.fail(format!(
                        "{shown_pipe}, {label}: refuses a program it declares: {}{}",
                        error.kind,
                        describe_invocation(&invocation)
                    ));
                } else {
                    out.line(
                        "note",
                        format!("{shown_pipe}, {label}: refused: {}", error.kind),
                    );
                }
            }
            Err(error) => out.fail(format!(
                "{shown_pipe}, {label}: {}{}",
                error.kind,
                describe_invocation(&invocation)
            )),
        }
    }
    if generated_ok > 0 {
        out.line(
            "ok",
            format!("{generated_ok} of {GENERATED_INVOCATIONS} generated invocations planned (seed {CHECK_SEED:#x})"),
        );
    }
    if let Some(worst) = worst {
        out.line("note", format!("costliest plan: {}", cost_line(worst)));
    }
    let file = crate::adapter::safe_path(file);
    let passed = out.failures == 0;
    let verdict = if passed {
        format!(
            "{file} passes the check ({:.1} s)\n",
            started.elapsed().as_secs_f64()
        )
    } else {
        format!("{file} fails the check: {} failure(s)\n", out.failures)
    };
    out.text.push_str(&verdict);
    Ok(Report {
        text: out.text,
        passed,
    })
}

#[derive(Default)]
struct Output {
    text: String,
    failures: usize,
}

impl Output {
    fn line(&mut self, status: &str, message: String) {
        self.text.push_str(&format!("{status:<4}  {message}\n"));
    }

    fn fail(&mut self, message: String) {
        self.failures += 1;
        self.line("FAIL", message);
    }
}

/// What a plan adds to contract 0.1, briefly: `, stderr framed, 2 alternatives`, or nothing.
fn ways(plan: &Plan) -> String {
    let mut text = String::new();
    if plan.stderr_tag.is_some() {
        text.push_str(", stderr framed");
    }
    match plan.alternatives.len() {
        0 => {}
        1 => text.push_str(", 1 alternative"),
        many => text.push_str(&format!(", {many} alternatives")),
    }
    text
}

fn cost_line(cost: Cost) -> String {
    format!(
        "{:.1} ms, {} fuel",
        cost.elapsed.as_secs_f64() * 1000.0,
        cost.fuel
    )
}

/// The parts of a failing invocation a pipe label does not show, to reproduce it.
fn describe_invocation(invocation: &Invocation) -> String {
    terminal_safe(&format!(
        " [args={:?} interactive={} input-len={:?}]",
        invocation.args, invocation.interactive, invocation.input_len
    ))
}

/// The fixed samples: each kind of run, with no pipe and with every declared program.
fn samples(programs: &[String]) -> Vec<(Option<String>, Invocation)> {
    let mut pipes: Vec<Option<String>> = vec![None];
    pipes.extend(programs.iter().cloned().map(Some));
    let mut cases = Vec::new();
    for pipe in pipes {
        let label = |text: &str| Some(text.to_owned());
        cases.extend([
            (
                label("one-off, small input"),
                Invocation::one_off_with_input(pipe.clone(), vec![], b"it's $HOME `x`\n\0\xff"),
            ),
            (
                label("one-off, no input"),
                Invocation::one_off_with_input(pipe.clone(), vec![], b""),
            ),
            (
                label("one-off, streamed"),
                Invocation::one_off_streamed(pipe.clone(), vec!["-a".to_owned()], None),
            ),
            (
                label("one-off, large input"),
                Invocation::one_off_streamed(
                    pipe.clone(),
                    vec![],
                    Some(MAX_INLINE_INPUT as u64 * 1000),
                ),
            ),
            (
                label("interactive"),
                Invocation::interactive(pipe.clone(), vec![]),
            ),
        ]);
    }
    cases
}

/// `count` invocations drawn from a fixed seed: a declared program (sometimes with more pipe
/// words, a path or `env X=1` in front), odd extra words, and every kind of run and input.
fn generated(programs: &[String], count: usize, seed: u64) -> Vec<(Option<String>, Invocation)> {
    let mut random = SplitMix(seed);
    const WORDS: [&str; 12] = [
        "-", "--", "-e", "x y", "it's", "\"q\"", "$HOME", "`id`", "#c", "ü✓", "a\\b", "",
    ];
    (0..count)
        .map(|_| {
            let pipe = if programs.is_empty() || random.below(8) == 0 {
                None
            } else {
                let program = &programs[random.below(programs.len())];
                let pipe = match random.below(4) {
                    0 => format!("env LANG=C {program}"),
                    1 if !program.contains('/') && !program.contains(' ') => {
                        format!("/usr/local/bin/{program}")
                    }
                    _ => program.clone(),
                };
                let extra: Vec<String> = (0..random.below(3))
                    .map(|_| shell_words::quote(WORDS[random.below(WORDS.len())]).into_owned())
                    .collect();
                Some(if extra.is_empty() {
                    pipe
                } else {
                    format!("{pipe} {}", extra.join(" "))
                })
            };
            let args: Vec<String> = (0..random.below(4))
                .map(|_| match random.below(3) {
                    0 => {
                        let length = random.below(40);
                        random.printable(length)
                    }
                    _ => WORDS[random.below(WORDS.len())].to_owned(),
                })
                .collect();
            let invocation = match random.below(5) {
                0 => Invocation::interactive(pipe, args),
                1 => {
                    let input: Vec<u8> = (0..random.below(MAX_INLINE_INPUT + 1))
                        .map(|_| random.next() as u8)
                        .collect();
                    Invocation::one_off_with_input(pipe, args, &input)
                }
                2 => Invocation::one_off_with_input(pipe, args, b""),
                3 => Invocation::one_off_streamed(pipe, args, None),
                _ => Invocation::one_off_streamed(
                    pipe,
                    args,
                    Some(MAX_INLINE_INPUT as u64 + 1 + random.next() % (1 << 30)),
                ),
            };
            (None, invocation)
        })
        .collect()
}

/// splitmix64: a tiny fixed-seed generator, so the generated invocations never change.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    /// Printable ASCII words, quotes and `$` included (what a command line can carry).
    fn printable(&mut self, length: usize) -> String {
        (0..length)
            .map(|_| char::from(b' ' + self.below(95) as u8))
            .collect()
    }
}

/// The `adapters` grammar as clap sees it, for the completion script and the man page.
pub fn command() -> clap::Command {
    <AdaptersArgs as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_invocations_are_reproducible_and_valid() {
        let programs = vec!["rails".to_owned(), "bundle exec rails".to_owned()];
        let one = generated(&programs, 200, CHECK_SEED);
        let two = generated(&programs, 200, CHECK_SEED);
        assert_eq!(
            one.iter().map(|(_, inv)| inv).collect::<Vec<_>>(),
            two.iter().map(|(_, inv)| inv).collect::<Vec<_>>()
        );
        for (_, invocation) in &one {
            assert_eq!(invocation.check(), Ok(()), "{invocation:?}");
            if let Some(pipe) = &invocation.pipe {
                assert!(shell_words::split(pipe).is_ok(), "{pipe}");
            }
            assert!(invocation.args.iter().all(|arg| !arg.contains('\0')));
        }
        assert!(one.iter().any(|(_, inv)| inv.interactive));
        assert!(one.iter().any(|(_, inv)| inv.input.is_some()));
        assert!(one.iter().any(|(_, inv)| inv.pipe.is_none()));
    }
}
