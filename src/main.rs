//! The `sso-operator` binary: everything is in [`sso_operator::cli`].

fn main() -> std::process::ExitCode {
    sso_operator::cli::main()
}
