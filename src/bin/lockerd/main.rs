//! `lockerd`: the daemon (`lockerd run`) and its maintenance commands: what the Debian
//! package ships. The developers' measurement tools are `lockerd-lab` (`src/bin/lockerd-lab`).
//! Thin: parses arguments, sets up logging, calls the library, prints results.

mod admin_cmd;
mod ctx;
mod store_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
pub use ctx::Ctx;
use lockerd::config::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "lockerd", version, about = "Face-unlock kiosk daemon")]
pub struct Cli {
    #[command(flatten)]
    global: ctx::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (systemd Type=notify service).
    Run,
    /// Create, check or rekey the encrypted store.
    #[command(subcommand)]
    Store(store_cmd::StoreCmd),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(store_cmd::AuditCmd),
    /// The lockerctl commands, on the store in this process while no daemon runs
    /// (refused while one does: use lockerctl then).
    Admin {
        /// One JSON object per command.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: lockerd::ctl::Cmd,
    },
    /// First-run checks on the device: camera, models, key, store, bus, broker, GPIO,
    /// I2C, clock. One line each, ok or what to do; exit status 1 if any failed.
    Doctor {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// Check an installed system under this directory (a mounted image) instead of /.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

fn main() -> ExitCode {
    // Few malloc arenas: the daemon has a handful of long-lived threads, and per-thread
    // arenas would keep freed memory resident (peak RSS is a product target on a Pi).
    #[cfg(target_env = "gnu")]
    // SAFETY: set before any thread exists; mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    // The daemon and `admin` (which must notice a secret it could not show) keep EPIPE.
    let keep_epipe = matches!(cli.command, Command::Run | Command::Admin { .. });
    ctx::main_with("lockerd", keep_epipe, || real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "lockerd",
                &mut std::io::stdout(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Doctor { json, root } => {
            let (json, root) = (*json, root.clone());
            // An image's own configuration, unless one is given.
            let mut cli = cli;
            if cli.global.config.is_none() && root != std::path::Path::new("/") {
                cli.global.config = Some(root.join("etc/lockerd/lockerd.toml"));
            }
            // A configuration that does not load is the first finding, not a crash.
            let config = match cli.global.load_config() {
                Ok(c) => c,
                Err(e) => {
                    let denied = e.chain().any(|c| {
                        c.downcast_ref::<lockerd::config::ConfigError>()
                            .is_some_and(|c| {
                                matches!(c, lockerd::config::ConfigError::Read { error, .. }
                                if error.kind() == std::io::ErrorKind::PermissionDenied)
                            })
                    });
                    let c = lockerd::doctor::Check {
                        name: "config",
                        status: lockerd::doctor::Status::Fail,
                        detail: format!("{e:#}"),
                        fix: Some(if denied {
                            lockerd::doctor::NOT_ROOT_FIX.into()
                        } else {
                            "fix the file named above (`lockerd --config FILE doctor`)".into()
                        }),
                    };
                    return doctor_report(&[c], json);
                }
            };
            return doctor(&config, &root, json);
        }
        _ => {}
    }
    let ctx = cli.global.ctx()?;
    match cli.command {
        Command::Run => run_daemon(ctx),
        Command::Store(c) => store_cmd::store(&ctx, c),
        Command::Audit(c) => store_cmd::audit(&ctx, c),
        Command::Admin { json, cmd } => admin_cmd::admin(&ctx, cmd, json),
        Command::Doctor { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled before the configuration is loaded")
        }
    }
}

fn doctor(config: &Config, root: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use lockerd::doctor;
    let layout = doctor::Layout::new(root);
    let mut config = config.clone();
    if root != std::path::Path::new("/") {
        // The image's paths, not this machine's.
        config.store.path = layout.under(&config.store.path);
        if config.vision.models.as_os_str().is_empty() {
            config.vision.models = layout.under(std::path::Path::new("/usr/share/lockerd/models"));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bus = rt.block_on(doctor::bus_check(layout.setup_marker().exists()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut checks = vec![doctor::Check {
        name: "config",
        status: doctor::Status::Ok,
        detail: "loaded".into(),
        fix: None,
    }];
    checks.extend(doctor::checks(&config, &layout, &bus, now));
    doctor_report(&checks, json)
}

fn doctor_report(checks: &[lockerd::doctor::Check], json: bool) -> anyhow::Result<ExitCode> {
    let failed = checks
        .iter()
        .any(|c| c.status == lockerd::doctor::Status::Fail);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({ "ok": !failed, "checks": checks });
        writeln!(out, "{v}")?;
    } else {
        write!(out, "{}", lockerd::doctor::render(checks))?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_daemon(ctx: Ctx) -> anyhow::Result<ExitCode> {
    lockerd::safety::install_panic_hook();
    if let Err(e) = lockerd::safety::crash_signals_kill() {
        log::warn!("cannot install the crash signal handlers: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lockerd-rt")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown =
            lockerd::daemon::shutdown_signal().context("cannot install signal handlers")?;
        lockerd::daemon::run(
            ctx.config,
            lockerd::daemon::RunOptions { demo: ctx.demo },
            shutdown,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
