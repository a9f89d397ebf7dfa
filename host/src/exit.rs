//! The process exit codes `ecs-exec` itself chooses, in one table (sysexits style).
//!
//! When the remote program ran and its status is known, that status is the exit code and this
//! table does not apply. Otherwise every failure maps to one of these codes; `--help` prints the
//! table from [`Exit::ALL`], so the documentation and the behaviour cannot drift apart.
//! This module only names codes; it must not print or decide policy.

use std::fmt;

/// An exit code of `ecs-exec`'s own (not the remote program's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// 64: the command line is wrong (unknown flag, missing `--cluster`, bad value).
    Usage,
    /// 65: `ecs-exec adapters check` ran and the adapter failed it.
    DataErr,
    /// 66: `ecs-exec cp`: the source file does not exist or is not a regular file.
    NoInput,
    /// 69: the target is not available: no running task, no running ExecuteCommand agent,
    /// task not found, or the agent is not connected.
    Unavailable,
    /// 70: a bug or an unexpected internal failure in `ecs-exec`.
    Software,
    /// 73: `ecs-exec cp`: the destination cannot be created or written.
    CantCreate,
    /// 74: an input/output error on our side: reading stdin or writing stderr failed.
    IoError,
    /// 75: a temporary failure: throttled after retries, timeout, endpoint unreachable, AWS
    /// server error, or a data channel that dropped and could not be resumed (the remote
    /// command may still be running). Trying again later may work.
    TempFail,
    /// 76: the remote side broke the protocol (malformed API response or data channel).
    Protocol,
    /// 77: no permission: no credentials, invalid credentials, or AccessDenied (KMS
    /// GenerateDataKey included), or an agent that ended a KMS session during its handshake
    /// (the task role's kms:Decrypt).
    NoPerm,
    /// 78: configuration: cluster, service or container that does not exist, no region, the
    /// cluster's KMS key not found or disabled.
    Config,
}

impl Exit {
    /// Every code, in numeric order, for `--help` and the README.
    pub const ALL: [Exit; 11] = [
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::Unavailable,
        Exit::Software,
        Exit::CantCreate,
        Exit::IoError,
        Exit::TempFail,
        Exit::Protocol,
        Exit::NoPerm,
        Exit::Config,
    ];

    /// The numeric process exit code.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Usage => 64,
            Exit::DataErr => 65,
            Exit::NoInput => 66,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::CantCreate => 73,
            Exit::IoError => 74,
            Exit::TempFail => 75,
            Exit::Protocol => 76,
            Exit::NoPerm => 77,
            Exit::Config => 78,
        }
    }

    /// One line saying when the code is used.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Usage => "usage error: unknown flag, missing or invalid value",
            Exit::DataErr => "`ecs-exec adapters check`: the adapter failed the check",
            Exit::Unavailable => {
                "target unavailable: no running task or agent, task gone, not connected"
            }
            Exit::NoInput => "`ecs-exec cp`: the source does not exist or is not a regular file",
            Exit::Software => "internal error in ecs-exec",
            Exit::CantCreate => "`ecs-exec cp`: the destination cannot be created or written",
            Exit::IoError => "I/O error: reading stdin or writing stderr failed",
            Exit::TempFail => {
                "temporary failure: throttled, timeout, unreachable, AWS 5xx, channel lost"
            }
            Exit::Protocol => {
                "protocol error: malformed response from the ECS API or the data channel"
            }
            Exit::NoPerm => {
                "no permission: no or invalid credentials, AccessDenied, KMS key use denied"
            }
            Exit::Config => {
                "configuration: cluster, service, container or KMS key not found, no region"
            }
        }
    }

    /// The exit code as the process return value.
    pub fn to_exit_code(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.code())
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The `--help` section listing every exit code, one per line.
pub fn help_table() -> String {
    let mut table =
        String::from("  0-255  the remote program's exit status, when it ran and is known\n");
    for exit in Exit::ALL {
        table.push_str(&format!("  {:<5}  {}\n", exit.code(), exit.meaning()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_sysexits_values() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [64, 65, 66, 69, 70, 73, 74, 75, 76, 77, 78]);
    }

    #[test]
    fn help_table_lists_every_code() {
        let table = help_table();
        for exit in Exit::ALL {
            assert!(
                table.contains(&format!("  {} ", exit.code())),
                "{exit} missing in {table}"
            );
        }
    }
}
