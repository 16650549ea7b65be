//! `lockerd`: the daemon (`lockerd run`) and its maintenance commands.
//! Thin: parses arguments, sets up logging, calls the library, prints results.

mod admin_cmd;
mod store_cmd;
#[cfg(feature = "tools")]
mod vision_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lockerd::config::{Config, Overrides};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "lockerd", version, about = "Face-unlock kiosk daemon")]
pub struct Cli {
    /// Configuration file (default: /etc/lockerd/lockerd.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database file (overrides store.path).
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Owner-only file holding the database passphrase (overrides store.key_file).
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Directory with the dlib model files (overrides vision.models).
    #[arg(long, global = true, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Demo mode: allow a generated database key, kept owner-only beside the database.
    #[arg(long, global = true)]
    demo: bool,
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
    /// Measurements.
    #[command(subcommand)]
    Bench(store_cmd::BenchCmd),
    /// Accuracy and liveness evaluations (one JSON object with --json).
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Eval(vision_cmd::EvalCmd),
    /// Run the real pipeline and the daemon's access controller over a clip (simulated
    /// lock, throwaway store).
    #[cfg(feature = "tools")]
    Replay {
        clip: PathBuf,
        /// Enroll this gallery (DIR/<person>/ photos or clips) into a temporary store first.
        #[arg(long, value_name = "DIR")]
        gallery: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The lockerctl commands, on the store in this process while no daemon runs
    /// (refused while one does: use lockerctl then).
    Admin {
        /// One JSON object per command.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: lockerd::ctl::Cmd,
    },
    /// Run a scenario (JSON lines of timed inputs) on virtual time with simulated
    /// hardware and a temporary store; print what happened.
    #[cfg(feature = "tools")]
    Simulate {
        scenario: PathBuf,
        /// One JSON object per event instead of a readable timeline.
        #[arg(long)]
        json: bool,
        /// Virtual seconds to keep running after the last input.
        #[arg(long, default_value_t = 10.0)]
        tail: f64,
        /// Start from a copy of the configured store (`--db`, `--key-file`) with its
        /// users and templates, instead of an empty one; the store is not written.
        #[arg(long)]
        from_store: bool,
    },
    /// Test-clip tools.
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Tools(vision_cmd::ToolsCmd),
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
    /// Simulate the ESP32 lock of `[lock]` on the `[mqtt]` broker (the firmware's state
    /// machine on this host). Reads control lines on stdin (jam, unjam, door open,
    /// door closed, deaf, hear, mute, unmute, quit); prints one JSON object per line.
    LockSim {
        /// The simulated flash holding the lock's counters (created if missing).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Seconds between reports.
        #[arg(long, default_value_t = 10.0)]
        heartbeat_s: f64,
    },
}

/// Everything a subcommand needs from the global flags.
pub struct Ctx {
    pub config: Config,
    pub demo: bool,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    config.apply(&Overrides {
        db: cli.db.clone(),
        key_file: cli.key_file.clone(),
        models: cli.models.clone(),
    });
    Ok(config)
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
    // Output commands end quietly when their reader goes (`simulate | head -1`); the
    // daemon and `admin` (which must notice a secret it could not show) keep EPIPE.
    if !matches!(cli.command, Command::Run | Command::Admin { .. }) {
        // SAFETY: restoring the default action before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    lockerd::logging::init(log::LevelFilter::Info);
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            let _ = writeln!(std::io::stderr(), "lockerd: {e:#}");
            ExitCode::from(1)
        }
    }
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
            if cli.config.is_none() && root != std::path::Path::new("/") {
                cli.config = Some(root.join("etc/lockerd/lockerd.toml"));
            }
            // A configuration that does not load is the first finding, not a crash.
            let config = match load_config(&cli) {
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
    let config = load_config(&cli)?;
    lockerd::logging::set_level(lockerd::logging::parse_level(&config.daemon.log_level));
    let ctx = Ctx {
        config,
        demo: cli.demo,
    };
    match cli.command {
        Command::Run => run_daemon(ctx),
        Command::Store(c) => store_cmd::store(&ctx, c),
        Command::Audit(c) => store_cmd::audit(&ctx, c),
        Command::Bench(c) => store_cmd::bench(&ctx, c),
        #[cfg(feature = "tools")]
        Command::Eval(c) => vision_cmd::eval_cmd(&ctx, c),
        #[cfg(feature = "tools")]
        Command::Replay {
            clip,
            gallery,
            json,
        } => vision_cmd::replay_cmd(&ctx, clip, gallery, json),
        Command::Admin { json, cmd } => admin_cmd::admin(&ctx, cmd, json),
        #[cfg(feature = "tools")]
        Command::Tools(c) => vision_cmd::tools_cmd(&ctx, c),
        #[cfg(feature = "tools")]
        Command::Simulate {
            scenario,
            json,
            tail,
            from_store,
        } => simulate(&ctx, &scenario, json, tail, from_store),
        Command::LockSim { state, heartbeat_s } => lock_sim(&ctx, state, heartbeat_s),
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

fn lock_sim(ctx: &Ctx, state: PathBuf, heartbeat_s: f64) -> anyhow::Result<ExitCode> {
    if !heartbeat_s.is_finite() || !(0.05..=3600.0).contains(&heartbeat_s) {
        anyhow::bail!("--heartbeat-s {heartbeat_s}: give seconds from 0.05 to 3600");
    }
    use lockerd::mqtt::lock_sim::{self, Control, SimOptions};
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            match Control::parse(&line) {
                Some(c) => {
                    if tx.blocking_send(c).is_err() {
                        break;
                    }
                }
                None => log::warn!("lock-sim: unknown control {line:?}"),
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let opts = SimOptions {
        state_file: state,
        heartbeat: std::time::Duration::from_secs_f64(heartbeat_s),
    };
    let mut stdout = std::io::stdout();
    rt.block_on(lock_sim::run(
        &ctx.config.mqtt,
        &ctx.config.lock,
        opts,
        rx,
        |v| {
            let _ = writeln!(stdout, "{v}");
            let _ = stdout.flush();
        },
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tools")]
fn simulate(
    ctx: &Ctx,
    scenario: &std::path::Path,
    json: bool,
    tail: f64,
    from_store: bool,
) -> anyhow::Result<ExitCode> {
    if !tail.is_finite() || !(0.0..=86_400.0).contains(&tail) {
        anyhow::bail!("--tail {tail}: give virtual seconds from 0 to 86400");
    }
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("cannot read {}", scenario.display()))?;
    let steps = lockerd::sim::parse(&text, scenario)?;
    let from_store = if from_store {
        let c = &ctx.config.store;
        let (key, _) = lockerd::store::resolve_key(&c.key_file, &c.path, ctx.demo)?;
        Some((c.path.clone(), key))
    } else {
        None
    };
    let opts = lockerd::sim::SimOptions {
        tail_s: tail,
        from_store,
        ..Default::default()
    };
    lockerd::sim::run(steps, &ctx.config, &opts, |line| {
        if json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            println!("{}", timeline_line(&line));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One readable timeline line, e.g. `   12.30 s  unlock       alice (face: match)`.
#[cfg(feature = "tools")]
fn timeline_line(l: &lockerd::sim::OutLine) -> String {
    let b = &l.body;
    let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    let ev = s("event");
    let who = if s("user").is_empty() {
        String::new()
    } else {
        format!(" {}", s("user"))
    };
    let what = match ev.as_str() {
        "unlock" => format!("{} ({}: {})", s("user"), s("method"), s("reason")),
        "deny" => format!("{}{} ({})", s("method"), who, s("reason")),
        "alert" => format!("{}: {}", s("kind"), s("message")),
        "lockout" => format!(
            "keypad locked for {} s (lockout {})",
            b["detail"]["seconds"], b["detail"]["level"]
        ),
        "code_issued" => format!("one-time code{who} in slot {}", b["detail"]["slot"]),
        "code_reply" => format!(
            "(the admin's reply: type {})",
            b["keys"].as_str().unwrap_or_default()
        ),
        "clip" => format!(
            "{} ({} frames, {} liveness-grade blinks)",
            s("file"),
            b["frames"],
            b["live_blinks"]
        ),
        "keys" => format!("{} keys typed", b["count"]),
        "user_changed" => format!("{} {}", s("user"), s("reason")),
        "enroll" => format!(
            "{} {}: {}",
            s("user"),
            b["enroll"]["status"].as_str().unwrap_or_default(),
            b["enroll"]["message"].as_str().unwrap_or_default()
        ),
        "ignored" => s("reason"),
        _ => String::new(),
    };
    format!("{:>8.2} s  {:<12} {}", l.at_s, ev, what)
}
