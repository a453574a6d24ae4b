//! `gatehouse`: the gateway appliance and its offline CLI.

/// mimalloc: per-thread heaps with cheap cross-thread frees. Access-log entries are built on
/// the worker threads and dropped on the log writer's; with glibc's arenas every such free
/// took the worker arena's lock (measured: access logging cost +15.7 % CPU per request with
/// glibc malloc; see BENCHMARKS.md). `gatehouse_alloc` calls mimalloc's unaligned entry points
/// where the layout allows, which the `mimalloc` crate does not.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: gatehouse_alloc::MiMalloc = gatehouse_alloc::MiMalloc;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use appliance::app;
use appliance::cli;
use appliance::control::ConfigSource;
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
    /// Serve a repository directory (or the sync agent's releases).
    Run {
        /// The repository directory.
        #[arg(long, conflicts_with = "releases")]
        repo: Option<PathBuf>,
        /// The releases folder of gatehouse-sync (serves `current`).
        #[arg(long)]
        releases: Option<PathBuf>,
        /// Serve only these groups (repeatable; default: every enabled group).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Credentials folder: <DIR>/<tenant>/<credentialName>/{tls.crt,tls.key,ca.crt}.
        #[arg(long, default_value = "/etc/gatehouse/credentials")]
        credentials: PathBuf,
        /// Admin endpoint address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// How long shutdown waits for connections to finish.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        drain: Duration,
        /// Control socket for the sync agent (packaged default: /run/gatehouse/<group>.sock).
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// Local settings file (TOML): `[telemetry]` endpoint, protocol, headers, intervals;
        /// `OTEL_*` variables fill what it leaves unset.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The quick start: serve examples/repo with built-in demo backends on loopback.
    Demo {
        /// The repository (default: ./examples/repo or the packaged example).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Admin endpoint address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    tenants::types::parse_go_duration(s).map_err(|e| e.to_string())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Run {
        repo,
        releases,
        groups,
        credentials,
        admin,
        workers,
        drain,
        control_socket,
        config,
    } = args.command
    {
        init_tracing();
        let source = match (repo, releases) {
            (Some(r), _) => ConfigSource::Repo(r),
            (None, Some(r)) => ConfigSource::Releases(r),
            (None, None) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "gatehouse run: give --repo DIR or --releases DIR"
                );
                return ExitCode::from(64);
            }
        };
        let opts = app::RunOptions {
            source,
            groups,
            credentials,
            admin: Some(admin),
            workers,
            drain,
            control_socket,
            config,
        };
        return match app::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "gatehouse: {e}");
                ExitCode::from(if app::is_config_error(&e) { 64 } else { 1 })
            }
        };
    }
    if let Command::Demo { repo, admin } = args.command {
        init_tracing();
        return demo(repo, admin);
    }
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
        Command::Run { .. } | Command::Demo { .. } => Ok(false),
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

fn demo(repo: Option<PathBuf>, admin: SocketAddr) -> ExitCode {
    let Some(repo) = repo.or_else(appliance::demo::find_repo) else {
        let _ = writeln!(
            std::io::stderr(),
            "gatehouse demo: no examples/repo here; pass --repo DIR"
        );
        return ExitCode::from(64);
    };
    let dir = std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()));
    let pki = match appliance::demo::pki(&dir)
        .and_then(|p| appliance::demo::start_backends(&p).map(|()| p))
    {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gatehouse demo: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return ExitCode::from(1);
        }
    };
    // With gatehouse-sync installed beside this binary, the demo is GitOps end to end: a
    // local Git repository, the sync loop, releases; otherwise it serves the folder.
    let gitops = match appliance::demo::sync_binary() {
        Some(sync) => match appliance::demo::GitOps::start(&sync, &repo, &dir) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "gatehouse demo: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let _ = appliance::demo::guide(&pki, &admin.to_string(), &mut std::io::stdout());
    if let Some(g) = &gitops {
        let _ = g.guide(&mut std::io::stdout());
    }
    let (source, control_socket) = match &gitops {
        Some(g) => (
            ConfigSource::Releases(g.releases.clone()),
            Some(g.socket.clone()),
        ),
        None => (ConfigSource::Repo(repo), None),
    };
    let opts = app::RunOptions {
        source,
        groups: Vec::new(),
        credentials: dir.join("credentials"),
        admin: Some(admin),
        workers: 0,
        drain: Duration::from_secs(5),
        control_socket,
        config: None,
    };
    let code = match app::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gatehouse demo: {e}");
            ExitCode::from(1)
        }
    };
    // The sync agent stops with its handle; then nothing uses the demo's folder.
    drop(gitops);
    let _ = std::fs::remove_dir_all(&dir);
    code
}
