//! `ecs-exec completions bash|zsh|fish` and `ecs-exec man`: a shell completion script
//! (clap_complete) and the man page in roff (clap_mangen), both printed on stdout and generated
//! from the same clap definitions the parsers use, so they cannot drift from the real flags.
//! Nothing here touches AWS, the adapters or the network.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{Arg, Command, value_parser};
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};

use super::{adapters, exec};
use crate::exit::Exit;

/// Whether `word` (the first word after the program name) names one of these commands.
pub fn handles(word: &OsString) -> bool {
    word == "completions" || word == "man"
}

/// Runs `ecs-exec completions SHELL` or `ecs-exec man`; `argv` is the whole command line.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let words = std::iter::once(OsString::from("ecs-exec")).chain(argv.into_iter().skip(1));
    let matches = match own_commands().try_get_matches_from(words) {
        Ok(matches) => matches,
        Err(error) => {
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    print(error.render().to_string().as_bytes())
                }
                _ => {
                    super::report_error(&format!(
                        "{}; see 'ecs-exec completions --help'",
                        first_line(&error.render().to_string())
                    ));
                    Exit::Usage.to_exit_code()
                }
            };
        }
    };
    let text = match matches.subcommand() {
        Some(("completions", sub)) => {
            let shell = sub
                .get_one::<Shell>("shell")
                .copied()
                .unwrap_or(Shell::Bash);
            completion_script(shell)
        }
        _ => man_page(),
    };
    print(&text)
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut full_command(), "ecs-exec", &mut script);
    script
}

/// The man page, section 1, in roff: clap_mangen's name, synopsis, description and options
/// sections, then the other commands and `--help`'s closing text (Hoop usage, environment, exit
/// codes) in sections of our own, since clap_mangen would point to separate pages per
/// subcommand and fill the help's columns into one paragraph.
pub fn man_page() -> Vec<u8> {
    let command = full_command();
    let man = clap_mangen::Man::new(exec::command());
    let mut page = Vec::new();
    // Writing into memory cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    let _ = man.render_options_section(&mut page);
    let _ = commands_section(&command).to_writer(&mut page);
    let _ = notes_section(&command).to_writer(&mut page);
    let _ = man.render_version_section(&mut page);
    page
}

/// `ecs-exec adapters list`, `… show`, `… check`, `ecs-exec completions`, `ecs-exec man`, each
/// with its one-line description.
fn commands_section(command: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in command.get_subcommands() {
        let nested: Vec<&Command> = sub.get_subcommands().collect();
        let entries: Vec<(String, &Command)> = if nested.is_empty() {
            vec![(format!("ecs-exec {}", sub.get_name()), sub)]
        } else {
            nested
                .into_iter()
                .map(|leaf| {
                    (
                        format!("ecs-exec {} {}", sub.get_name(), leaf.get_name()),
                        leaf,
                    )
                })
                .collect()
        };
        for (name, leaf) in entries {
            let operands: String = leaf
                .get_positionals()
                .map(|arg| format!(" <{}>", arg.get_id().as_str().to_uppercase()))
                .collect();
            roff.control("TP", []);
            roff.text([bold(name), italic(operands)]);
            roff.text([roman(
                leaf.get_about()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )]);
        }
    }
    roff
}

/// The closing text of `--help`, line for line (it is laid out in columns).
fn notes_section(command: &Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["NOTES"]);
    roff.control("nf", []);
    let text = command
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    for line in text.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff
}

/// Every grammar of the binary in one clap command: the exec flags, and `adapters`, `doctor`,
/// `cp`, `completions` and `man` as subcommands.
fn full_command() -> Command {
    let mut command = exec::command()
        .disable_help_subcommand(true)
        .subcommand(adapters::command().name("adapters"))
        .subcommand(<crate::doctor::DoctorArgs as clap::CommandFactory>::command().name("doctor"))
        .subcommand(<crate::cp::CpArgs as clap::CommandFactory>::command().name("cp"));
    for own in own_commands().get_subcommands() {
        command = command.subcommand(own.clone());
    }
    command
}

/// The grammar of this file's two commands.
fn own_commands() -> Command {
    Command::new("ecs-exec")
        .subcommand_required(true)
        .subcommand(
            Command::new("completions")
                .about("Print a shell completion script, e.g. ecs-exec completions bash > /usr/share/bash-completion/completions/ecs-exec")
                .arg(
                    Arg::new("shell")
                        .value_name("SHELL")
                        .required(true)
                        .value_parser(value_parser!(Shell)),
                ),
        )
        .subcommand(
            Command::new("man")
                .about("Print the man page (roff), e.g. ecs-exec man > /usr/local/share/man/man1/ecs-exec.1"),
        )
}

/// clap's error text up to its usage lines, as one line.
fn first_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let joined = words.join(" ");
    joined
        .strip_prefix("error: ")
        .map(str::to_owned)
        .unwrap_or(joined)
}

/// Writes `bytes` to stdout; a closed stdout (`| head`) is not an error worth a message.
fn print(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_command_is_consistent() {
        full_command().debug_assert();
        own_commands().debug_assert();
    }

    #[test]
    fn every_shell_gets_a_script_that_knows_the_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(shell)).expect("utf-8");
            for word in ["--cluster", "--service-name", "--pipe", "--interactive"] {
                let bare = word.trim_start_matches('-');
                assert!(
                    script.contains(word) || script.contains(bare),
                    "{shell:?} script lacks {word}"
                );
            }
            assert!(script.contains("adapters"), "{shell:?} lacks adapters");
        }
    }

    #[test]
    fn the_man_page_has_the_flags_and_the_exit_codes() {
        let page = String::from_utf8(man_page()).expect("utf-8");
        assert!(
            page.starts_with(".ie") || page.contains(".TH ecs-exec 1"),
            "{page}"
        );
        assert!(page.contains("cluster"), "{page}");
        assert!(page.contains("Exit codes"), "{page}");
        assert!(page.contains("ecs\\-exec adapters check"), "{page}");
        assert!(page.contains("ecs\\-exec completions"), "{page}");
        assert!(
            !page.contains("ecs\\-exec\\-adapters(1)"),
            "no page of that name: {page}"
        );
    }
}
