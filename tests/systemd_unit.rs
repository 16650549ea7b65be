//! The shipped unit passes `systemd-analyze verify` and rates 2.0 or lower ("OK") in
//! `systemd-analyze security --offline=true`. scripts/setup.sh installs systemd-analyze;
//! a missing tool is a failure, not a skip.

use std::path::Path;
use std::process::Command;

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/lockerd.service")
}

/// The shipped unit (plus `extra`, e.g. a drop-in) with ExecStart pointing at the binary
/// just built (verify checks that it exists), written to `dir`; verify's output is
/// asserted clean. Returns the written copy.
fn verified_copy(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(unit()).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/lockerd "),
        "ExecStart changed; update this test"
    );
    let text = text.replace(
        "ExecStart=/usr/bin/lockerd ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_lockerd")),
    ) + extra;
    let copy = dir.join("lockerd.service");
    std::fs::write(&copy, text).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze must be installed (scripts/setup.sh installs it)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "verify failed: {err}");
    assert!(err.trim().is_empty(), "verify printed warnings: {err}");
    copy
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let d = tempfile::tempdir().unwrap();
    verified_copy(d.path(), "");
}

#[test]
fn unit_has_no_network_no_core_dumps_and_a_pid_only_proc() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/lockerd.service");
    let text = std::fs::read_to_string(p).unwrap();
    for line in [
        "ProcSubset=pid",
        "LimitCORE=0",
        "IPAddressDeny=any",
        "RestrictAddressFamilies=AF_UNIX\n",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
    assert!(
        !text.contains("network-online"),
        "no wait for a network it does not use"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("IPAddressAllow=")),
        "no network until MQTT is configured"
    );
}

#[test]
fn unit_security_exposure_is_ok_or_better() {
    let (score, line, ok) = exposure(&unit());
    println!("{line}");
    assert!(score <= 2.0, "{line}");
    assert!(ok, "threshold exceeded: {line}");
}

/// `systemd-analyze security --offline` of a unit file: the overall exposure, its line,
/// and whether the command passed (threshold 2.0).
fn exposure(unit: &Path) -> (f64, String, bool) {
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze must be installed");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line}"));
    (score, line, o.status.success())
}

#[test]
fn dbus_policy_lets_only_lockerd_and_root_own_the_name() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/org.lockerd.Locker1.conf");
    let text = std::fs::read_to_string(p).unwrap();
    assert!(text.contains(r#"<policy user="lockerd">"#));
    assert!(text.contains(r#"<allow own="org.lockerd.Locker1"/>"#));
    assert!(text.contains(r#"<deny own="org.lockerd.Locker1"/>"#));
    assert_eq!(
        text.matches("allow own=").count(),
        2,
        "only the lockerd user and root may own the name"
    );
    assert!(text.contains(r#"<policy user="root">"#));
    // Well-formed enough for dbus-daemon: load it into a private bus config.
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={}/bus</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow own="*"/></policy>
<includedir>{}</includedir></busconfig>"#,
            d.path().display(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--print-address")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dbus-daemon must be installed");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        line.starts_with("unix:"),
        "dbus-daemon did not start: {err}"
    );
    // dbus-daemon skips a malformed included file with only a message: look for it.
    assert!(
        !err.contains("Error in file"),
        "policy file rejected: {err}"
    );
}

#[test]
fn the_mqtt_drop_in_opens_only_ip_sockets_to_the_broker_and_stays_ok() {
    // The unit with the drop-in applied (systemd appends the drop-in's list settings).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let drop_in = std::fs::read_to_string(dir.join("drop-ins/mqtt.conf")).unwrap();
    assert!(drop_in.contains("\nIPAddressAllow="));
    assert!(
        !drop_in.lines().any(|l| l.starts_with("IPAddressDeny")),
        "the unit's deny-all stays"
    );
    let d = tempfile::tempdir().unwrap();
    let copy = verified_copy(d.path(), &format!("\n{drop_in}"));
    let (score, _, _) = exposure(&copy);
    eprintln!("exposure with the MQTT drop-in: {score}");
    assert!(score <= 2.0, "exposure {score} with the drop-in");
}

/// `key=value` lines of the shipped unit (the last one of a key).
fn setting(key: &str) -> String {
    let text = std::fs::read_to_string(unit()).unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

fn seconds(v: &str) -> f64 {
    match v.strip_suffix("min") {
        Some(m) => m.parse::<f64>().unwrap() * 60.0,
        None => v.trim_end_matches('s').parse().unwrap(),
    }
}

/// A start while the first-run marker exists fails and says why (an assertion), instead
/// of exiting 0 with nothing started (a condition).
#[test]
fn a_start_before_configuration_fails_visibly() {
    assert_eq!(setting("AssertPathExists"), "!/etc/lockerd/setup-pending");
    let text = std::fs::read_to_string(unit()).unwrap();
    assert!(
        !text.contains("\nConditionPathExists="),
        "a silent condition"
    );
}

/// systemd counts manual starts in the start limit: an admin's `systemctl restart`s in a
/// row must not leave the unit failed, while a crash loop still stops.
#[test]
fn the_start_limit_leaves_room_for_manual_restarts_but_stops_a_crash_loop() {
    let burst: u32 = setting("StartLimitBurst").parse().unwrap();
    let interval = seconds(&setting("StartLimitIntervalSec"));
    let restart = seconds(&setting("RestartSec"));
    assert!(
        burst >= 20,
        "{burst} starts: an admin restarting a few times in a row hits it"
    );
    // A crash loop restarts every RestartSec: more starts than the burst fit in the interval.
    assert!(
        interval / restart > f64::from(burst),
        "a crash loop ({restart} s apart) never reaches {burst} starts in {interval} s"
    );
}

/// `lockerd doctor` run by an admin who is not root (the README's flow before the fix)
/// says to run it as root, instead of "no database key" and checks of the defaults.
#[test]
fn doctor_as_a_non_root_admin_says_to_use_sudo() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let etc = root.join("etc/lockerd");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("lockerd.toml"), "").unwrap();
    std::fs::write(etc.join("db.key"), "00").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o750)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_lockerd"))
        .args(["doctor", "--json", "--root"])
        .arg(root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("sudo lockerd doctor"), "{out}");
    assert!(!out.contains("no database key"), "{out}");
}
