//! `gatehouse-sync`: the GitOps agent and its commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sync_agent::agent::{self, Trigger};
use sync_agent::config::{self, Flags};
use sync_agent::reconcile::{self, Action, Context};
use sync_agent::release::Releases;
use sync_agent::source::isolate::Source;
use sync_agent::state::State;
use sync_agent::status::{ApplianceStatus, Status};
use sync_agent::webhook::RateLimit;
use sync_agent::{http, notify, plan, refs};

#[derive(Parser)]
#[command(
    name = "gatehouse-sync",
    version,
    about = "gatehouse's GitOps agent: fetch, verify, validate per tenant, publish releases"
)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch and reconcile once, then exit (0: published or up to date).
    Once,
    /// Show what the tracked reference (or REV) would change, per tenant; publish nothing.
    Plan {
        /// A commit id or a branch name instead of the configured reference.
        #[arg(long)]
        rev: Option<String>,
    },
    /// Per-tenant status, read from the releases folder.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Stop applying changes: the whole agent, or one tenant.
    Suspend {
        /// The tenant (default: everything).
        tenant: Option<String>,
    },
    /// Apply changes again.
    Resume {
        /// The tenant (default: everything).
        tenant: Option<String>,
    },
    /// Point `current` at an earlier release (default: the one before it) and suspend
    /// syncing until `resume`.
    Rollback {
        /// Release id (see `ls <releases>`).
        id: Option<String>,
    },
    /// Show the ssh server's host key for the configured URL; `--add` trusts it by adding it
    /// to the known_hosts file (compare the fingerprint with one obtained out of band first).
    KnownHosts {
        /// Add the key to the configured known_hosts file.
        #[arg(long)]
        add: bool,
    },
    /// Internal: one fetch in a child process (request on stdin).
    #[command(hide = true)]
    FetchWorker,
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
    if matches!(args.command, Some(Command::FetchWorker)) {
        return ExitCode::from(sync_agent::source::worker::main());
    }
    init_tracing();
    match dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gatehouse-sync: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn context(flags: &Flags) -> anyhow::Result<Context> {
    let settings = config::resolve(flags)?;
    let exe = std::env::current_exe().context("locating the gatehouse-sync executable")?;
    let releases = Releases::open(&settings.releases)?;
    Ok(Context {
        source: Source {
            exe,
            state_dir: settings.state_dir.clone(),
            settings: settings.source.clone(),
        },
        releases,
        settings,
    })
}

fn dispatch(args: Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.command {
        None => daemon(&args.flags),
        Some(Command::Once) => {
            let ctx = context(&args.flags)?;
            let _guard = agent_lock(ctx.releases.dir())?;
            let mut status = Status::read(ctx.releases.dir()).unwrap_or_default();
            let r = reconcile::run_once(&ctx, &mut status, &AtomicBool::new(false));
            status.updated = Some(sync_agent::status::now());
            status.write(ctx.releases.dir())?;
            match r? {
                Action::Published { release, revision } => {
                    writeln!(out, "published {release} ({})", reconcile::short(&revision))?;
                    Ok(ExitCode::SUCCESS)
                }
                Action::UpToDate { revision } => {
                    writeln!(out, "up to date at {}", reconcile::short(&revision))?;
                    Ok(ExitCode::SUCCESS)
                }
                Action::Refused { revision, reason } => {
                    writeln!(out, "refused {}: {reason}", reconcile::short(&revision))?;
                    Ok(ExitCode::from(1))
                }
                Action::Suspended => {
                    writeln!(out, "suspended; `gatehouse-sync resume` to sync again")?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        Some(Command::Plan { rev }) => {
            let ctx = context(&args.flags)?;
            let selector = rev.map(|r| {
                if refs::is_full_oid(&r) {
                    refs::RefSelector::Commit(r)
                } else {
                    refs::RefSelector::Branch(r)
                }
            });
            let req = ctx.source.request(selector);
            let fetched = ctx.source.fetch(&req, &AtomicBool::new(false))?;
            let repo = git2::Repository::open_bare(ctx.source.repo_path())?;
            let served = reconcile::served(&ctx.releases);
            let state = State::read(ctx.releases.dir());
            let p = reconcile::reconcile(&ctx.settings, &repo, &fetched, served.as_ref(), &state)?;
            let before = plan::served_snapshot(served.as_ref());
            let errors = plan::print(&p, &fetched.commit, before.as_ref(), &mut out)?;
            Ok(if errors {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(Command::Status { format }) => {
            let dir = config::releases_dir(&args.flags)?;
            let Some(mut st) = Status::read(&dir) else {
                bail!(
                    "no status in {} yet (has gatehouse-sync run?)",
                    dir.display()
                );
            };
            // The appliances as they are now, not as they were when last told.
            let mut sockets: Vec<String> = st.appliances.iter().map(|a| a.socket.clone()).collect();
            if let Ok(s) = config::resolve(&args.flags) {
                sockets.extend(s.control_sockets.iter().map(|p| p.display().to_string()));
            }
            sockets.sort();
            sockets.dedup();
            st.appliances = ApplianceStatus::refresh(
                &st.appliances,
                &sockets,
                std::time::Duration::from_secs(5),
            );
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &st)?;
                    writeln!(out)?;
                }
                Format::Text => st.print(&mut out)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Suspend { tenant }) => suspend(&args.flags, tenant, true, &mut out),
        Some(Command::Resume { tenant }) => suspend(&args.flags, tenant, false, &mut out),
        Some(Command::Rollback { id }) => rollback(&args.flags, id, &mut out),
        Some(Command::KnownHosts { add }) => known_hosts(&args.flags, add, &mut out),
        Some(Command::FetchWorker) => Ok(ExitCode::SUCCESS),
    }
}

/// Held for the life of a syncing process: one agent per releases folder.
fn agent_lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let p = dir.join(".agent.lock");
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| p.display().to_string())?;
    if f.try_lock().is_err() {
        bail!("another gatehouse-sync is syncing {}", dir.display());
    }
    Ok(f)
}

fn daemon(flags: &Flags) -> anyhow::Result<ExitCode> {
    let ctx = context(flags)?;
    let _guard = agent_lock(ctx.releases.dir())?;
    let status = Arc::new(Mutex::new(
        Status::read(ctx.releases.dir()).unwrap_or_default(),
    ));
    let trigger = Arc::new(Trigger::default());
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(h) = &ctx.settings.http {
        http::start(http::Shared {
            settings: h.clone(),
            status: status.clone(),
            trigger: trigger.clone(),
            limit: Mutex::new(RateLimit::new(h.per_minute)),
        })
        .with_context(|| format!("listening on {}", h.listen))?;
    }
    {
        let (stop, trigger) = (stop.clone(), trigger.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            stop.store(true, Ordering::Relaxed);
            trigger.fire();
        });
    }
    tracing::info!(
        url = %sync_agent::source::url::redact(&ctx.settings.source.url),
        reference = %ctx.settings.source.selector.describe(),
        interval = ?ctx.settings.interval,
        releases = %ctx.settings.releases.display(),
        "gatehouse-sync starting"
    );
    agent::run(&ctx, &status, &trigger, &stop);
    Ok(ExitCode::SUCCESS)
}

fn suspend(
    flags: &Flags,
    tenant: Option<String>,
    on: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let dir = config::releases_dir(flags)?;
    let r = Releases::open(&dir)?;
    let _lock = r.lock()?;
    let mut state = State::read(&dir);
    match (&tenant, on) {
        (Some(t), true) => {
            state.suspended_tenants.insert(t.clone());
            writeln!(
                out,
                "{t}: suspended (its served configuration stays as it is)"
            )?;
        }
        (Some(t), false) => {
            state.suspended_tenants.remove(t);
            writeln!(out, "{t}: resumed")?;
        }
        (None, true) => {
            state.suspended = Some(format!(
                "suspended by an operator at {}",
                sync_agent::status::now()
            ));
            writeln!(out, "syncing suspended")?;
        }
        (None, false) => {
            state.suspended = None;
            writeln!(out, "syncing resumed")?;
        }
    }
    state.write(&dir)?;
    Ok(ExitCode::SUCCESS)
}

fn known_hosts(flags: &Flags, add: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use sync_agent::source::{known_hosts, url};
    let ctx = context(flags)?;
    let key = ctx.source.scan_host_key()?;
    let u = url::parse(&ctx.settings.source.url)?;
    let line = format!("{} {key}", known_hosts::host_token(&u.host, u.port));
    let fingerprint = ssh_key::PublicKey::from_openssh(&key)
        .map(|k| known_hosts::describe(k.key_data()))
        .unwrap_or_default();
    writeln!(out, "{line}\n# {fingerprint}")?;
    if !add {
        return Ok(ExitCode::SUCCESS);
    }
    let file = ctx
        .settings
        .source
        .known_hosts
        .context("no known_hosts file configured (known_hosts = ...)")?;
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    if existing.lines().any(|l| l.trim() == line) {
        writeln!(out, "already in {}", file.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| file.display().to_string())?;
    if !existing.is_empty() && !existing.ends_with('\n') {
        writeln!(f)?;
    }
    writeln!(f, "{line}")?;
    f.sync_all()?;
    writeln!(out, "added to {}", file.display())?;
    Ok(ExitCode::SUCCESS)
}

fn rollback(flags: &Flags, id: Option<String>, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = config::releases_dir(flags)?;
    let r = Releases::open(&dir)?;
    let lock = r.lock()?;
    let cur = r.current_id();
    let target = match id {
        Some(id) => r.manifest(&id)?,
        None => {
            let cur = cur.clone().context("no current release")?;
            r.previous(&cur)
                .ok_or(sync_agent::release::ReleaseError::NoPrevious)?
        }
    };
    r.swap(&target.id)?;
    let mut state = State::read(&dir);
    state.suspended = Some(format!(
        "rolled back to {} at {}; `gatehouse-sync resume` tracks the repository again",
        target.id,
        sync_agent::status::now()
    ));
    state.write(&dir)?;
    drop(lock);
    writeln!(
        out,
        "current -> {} (revision {}), was {}; syncing suspended until `gatehouse-sync resume`",
        target.id,
        reconcile::short(&target.revision),
        cur.as_deref().unwrap_or("none")
    )?;
    let sockets: Vec<PathBuf> = match config::resolve(flags) {
        Ok(s) => s.control_sockets,
        Err(_) => flags.control_sockets.clone(),
    };
    let timeout = std::time::Duration::from_secs(30);
    for s in &sockets {
        match notify::send(s, &notify::apply(&target.id, &target.revision), timeout) {
            Ok(rep) if rep.accepted() => writeln!(
                out,
                "{}: serving generation {}",
                s.display(),
                rep.generation.unwrap_or(0)
            )?,
            Ok(rep) => writeln!(out, "{}: refused: {}", s.display(), rep.reason())?,
            Err(e) => writeln!(out, "{e} (it will notice the new current by itself)")?,
        }
    }
    if let Some(mut st) = Status::read(&dir) {
        st.release = Some(target.id.clone());
        st.revision = Some(target.revision.clone());
        st.suspended = state.suspended;
        st.write(&dir)?;
    }
    Ok(ExitCode::SUCCESS)
}
