//! `lockerd-lab`: the developers' measurement lab, never packaged (the .deb ships
//! `lockerd` and `lockerctl`). Accuracy evaluations (`eval`), a clip through the real
//! pipeline and access controller (`replay`), scenarios on virtual time (`simulate`),
//! test-clip tools, benchmarks and the ESP32 lock simulator. Thin like `lockerd`: parses
//! arguments and calls the library (`lockerd::eval`, `lockerd::sim`, ...). Built with the
//! `tools` feature (on by default); a daemon-only build has no lab.

mod bench_cmd;
#[path = "../lockerd/ctx.rs"]
mod ctx;
mod fleet_bench;
mod sim_cmd;
mod vision_cmd;

use clap::{Parser, Subcommand};
pub use ctx::Ctx;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lockerd-lab",
    version,
    about = "lockerd's measurement lab (developers)"
)]
pub struct Cli {
    #[command(flatten)]
    global: ctx::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks: the store, D-Bus round trips, the gallery build.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCmd),
    /// Accuracy and liveness evaluations (one JSON object with --json).
    #[command(subcommand)]
    Eval(vision_cmd::EvalCmd),
    /// Run the real pipeline and the daemon's access controller over a clip (simulated
    /// lock, throwaway store).
    Replay {
        clip: PathBuf,
        /// Enroll this gallery (DIR/<person>/ photos or clips) into a temporary store first.
        #[arg(long, value_name = "DIR")]
        gallery: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run a scenario (JSON lines of timed inputs) on virtual time with simulated
    /// hardware and a temporary store; print what happened.
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
    #[command(subcommand)]
    Tools(vision_cmd::ToolsCmd),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    ctx::main_with("lockerd-lab", false, || real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = cli.global.ctx()?;
    match cli.command {
        Command::Bench(c) => bench_cmd::bench(&ctx, c),
        Command::Eval(c) => vision_cmd::eval_cmd(&ctx, c),
        Command::Replay {
            clip,
            gallery,
            json,
        } => vision_cmd::replay_cmd(&ctx, clip, gallery, json),
        Command::Tools(c) => vision_cmd::tools_cmd(&ctx, c),
        Command::Simulate {
            scenario,
            json,
            tail,
            from_store,
        } => sim_cmd::simulate(&ctx, &scenario, json, tail, from_store),
        Command::LockSim { state, heartbeat_s } => sim_cmd::lock_sim(&ctx, state, heartbeat_s),
    }
}
