//! `lockerd-lab simulate` (a scenario on virtual time, simulated hardware, a temporary
//! store) and `lockerd-lab lock-sim` (the ESP32 lock's state machine on this host).

use crate::Ctx;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn lock_sim(ctx: &Ctx, state: PathBuf, heartbeat_s: f64) -> anyhow::Result<ExitCode> {
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

pub fn simulate(
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
