//! What the two binaries that work on the configured store and models share (`lockerd`,
//! and the developers' `lockerd-lab`, which includes this file): the global flags, the
//! loaded configuration a subcommand gets ([`Ctx`]), and opening the store directly.

use lockerd::config::{Config, Overrides};
use lockerd::store::{self, Create, Db};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A binary's `main` after parsing: the default SIGPIPE action unless `keep_epipe` (output
/// commands then end quietly when their reader goes, `simulate | head -1`), logging, and
/// an error as one line with its whole cause chain, exit status 1.
pub fn main_with(
    name: &str,
    keep_epipe: bool,
    body: impl FnOnce() -> anyhow::Result<ExitCode>,
) -> ExitCode {
    if !keep_epipe {
        // SAFETY: restoring the default action before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    lockerd::logging::init(log::LevelFilter::Info);
    match body() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The flags every subcommand takes.
#[derive(clap::Args, Debug)]
pub struct Global {
    /// Configuration file (default: /etc/lockerd/lockerd.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database file (overrides store.path).
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Owner-only file holding the database passphrase (overrides store.key_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Directory with the dlib model files (overrides vision.models).
    #[arg(long, global = true, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Demo mode: allow a generated database key, kept owner-only beside the database.
    #[arg(long, global = true)]
    pub demo: bool,
}

impl Global {
    /// The configuration file (or the defaults) with the flags applied.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        config.apply(&Overrides {
            db: self.db.clone(),
            key_file: self.key_file.clone(),
            models: self.models.clone(),
        });
        Ok(config)
    }

    /// Loaded configuration, logging at its level.
    pub fn ctx(&self) -> anyhow::Result<Ctx> {
        let config = self.load_config()?;
        lockerd::logging::set_level(lockerd::logging::parse_level(&config.daemon.log_level));
        Ok(Ctx {
            config,
            demo: self.demo,
        })
    }
}

/// Everything a subcommand needs from the global flags.
pub struct Ctx {
    pub config: Config,
    pub demo: bool,
}

/// Open the configured store directly (CLI use: no store thread needed).
pub fn open_db(
    ctx: &Ctx,
    create: Create,
) -> anyhow::Result<(Db, store::OpenInfo, store::KeySource)> {
    let (k, source) =
        store::resolve_key(&ctx.config.store.key_file, &ctx.config.store.path, ctx.demo)?;
    let (db, info) = Db::open(
        &ctx.config.store.path,
        &k,
        create,
        Duration::from_millis(ctx.config.store.busy_timeout_ms),
    )?;
    Ok((db, info, source))
}
