//! The `sso-operator` command line: one module per subcommand, each with its
//! own clap `Args` and `run`, shared argument groups in [`args`], and one
//! way to start (logging, Kubernetes client, metrics server, shutdown) in
//! [`runtime`]. `main.rs` only calls [`main`].
//!
//! Exit codes, the same for every subcommand:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; a server stopped on SIGTERM or Ctrl-C |
//! | 1 | `check` found a manifest that fails; a server stopped on an error after it started |
//! | 2 | could not start: invalid arguments, unreadable input, no Kubernetes configuration, address in use |
//!
//! Every error reaches the user the same way: one `error: …` line on stderr.

pub mod args;
mod broker;
mod check;
mod controller;
mod dev;
mod print;
pub mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes (every subcommand):
  0  done; a server stopped on SIGTERM or Ctrl-C
  1  check found a manifest that fails; a server stopped on an error after it started
  2  could not start: invalid arguments, unreadable input, no Kubernetes configuration, address in use";

#[derive(Parser)]
#[command(
    name = "sso-operator",
    version,
    about = "Single sign-on identity providers as Kubernetes resources",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "SSO_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the IdentityProvider controller against the current cluster.
    Controller(controller::Args),
    /// Run the login broker (login page, callback, sessions, forward-auth).
    Broker(broker::Args),
    /// The controller's validation and the broker on this machine, from
    /// manifest files instead of a cluster (local development).
    Dev(dev::Args),
    /// Print the CustomResourceDefinitions (IdentityProvider, AccessPolicy)
    /// as YAML.
    Crd(print::CrdArgs),
    /// Print the public JWK set of a `private_key_jwt` client key (PEM), to
    /// register the client at the identity provider. Its `kid` is the one
    /// the broker's client assertions carry.
    PublicJwk(print::PublicJwkArgs),
    /// Validate IdentityProvider and AccessPolicy manifests from files, as
    /// the controller would.
    Check(check::Args),
}

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0.
    Done,
    /// Exit 1: the command ran and its answer is no (a failing manifest).
    Failed,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit 2: nothing was done.
    #[error("{0}")]
    CannotStart(String),
    /// Exit 1: a server stopped after it had started.
    #[error("{0}")]
    Stopped(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::CannotStart(_) => ExitCode::from(2),
            CliError::Stopped(_) => ExitCode::FAILURE,
        }
    }
}

pub type CliResult = Result<Verdict, CliError>;

/// Parses the command line, tunes the allocator for the subcommand (before
/// any thread allocates), runs the subcommand on a Tokio runtime and turns
/// its outcome into the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    runtime::tune_allocator(matches!(cli.command, Command::Controller(_)));
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Controller(a) => controller::run(a, cli.log_json).await,
        Command::Broker(a) => broker::run(a, cli.log_json).await,
        Command::Dev(a) => dev::run(a, cli.log_json).await,
        Command::Check(a) => check::run(a).await,
        Command::Crd(a) => print::crd(&a),
        Command::PublicJwk(a) => print::public_jwk(&a),
    };
    match outcome {
        Ok(Verdict::Done) => ExitCode::SUCCESS,
        Ok(Verdict::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
