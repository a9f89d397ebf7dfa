//! The `ecs-exec` binary: everything lives in the library; this only hands over the exit code.

fn main() -> std::process::ExitCode {
    ecs_exec::cli::main()
}
