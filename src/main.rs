//! The `sso-operator` binary: everything is in [`sso_operator::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sso_operator::cli::main().await
}
