//! `lockerctl`: control the running lockerd over the system bus
//! (`DBUS_SYSTEM_BUS_ADDRESS` is honoured). Thin: parses arguments and hands the
//! command to [`lockerd::ctl`]; exit codes are documented there and in the README.

use clap::{CommandFactory, Parser, Subcommand};
use lockerd::ctl::{self, Backend, Cmd};
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lockerctl",
    version,
    about = "Control the lockerd face-unlock kiosk",
    after_help = "Exit codes: 0 ok, 1 other failure, 2 invalid argument, 3 not authorized, \
4 no such user, 5 already exists, 6 locked out, 7 busy, 8 unavailable (lockerd not running), \
9 the operation ran and failed, 10 internal error."
)]
struct Cli {
    /// One JSON object per command (JSON lines for watch and --follow).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    #[command(flatten)]
    Cmd(Cmd),
    /// Live events and property changes (Ctrl-C to stop).
    Watch,
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lockerctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = rt.block_on(async {
        match cli.command {
            Top::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "lockerctl", &mut stdout);
                Ok(0)
            }
            Top::Man => clap_mangen::Man::new(Cli::command())
                .render(&mut stdout)
                .map(|_| 0)
                .map_err(|e| ctl::CtlError {
                    code: 1,
                    message: e.to_string(),
                }),
            Top::Watch => {
                let backend = Backend::connect_bus().await?;
                match &backend {
                    Backend::Bus(p) => ctl::watch(p, cli.json, &mut stdout).await,
                    Backend::Local { .. } => Ok(0),
                }
            }
            Top::Cmd(cmd) => {
                let backend = Backend::connect_bus().await?;
                ctl::run(&backend, cmd, cli.json, &mut stdout).await
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if ctl::is_broken_pipe(&e) && !e.message.contains("could not be shown") {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "lockerctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
