//! `gatehouse`: the gateway appliance and its offline CLI.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use appliance::cli;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A multi-tenant gateway appliance speaking the Istio networking API"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate a repository directory; exit 1 on any error.
    Validate {
        /// The repository (gatehouse.yaml, platform/, tenants/).
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
    },
    /// Print the compiled listeners, virtual hosts, routes and clusters.
    Routes {
        /// The repository.
        dir: PathBuf,
        /// Only this gateway group.
        #[arg(long)]
        group: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = match args.command {
        Command::Validate { dir, format } => {
            let f = match format {
                FormatArg::Text => cli::Format::Text,
                FormatArg::Json => cli::Format::Json,
            };
            cli::validate(&dir, f, &mut out)
        }
        Command::Routes { dir, group } => cli::routes(&dir, group.as_deref(), &mut out),
    };
    let _ = out.flush();
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gatehouse: {e}");
            ExitCode::from(2)
        }
    }
}
