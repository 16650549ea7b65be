//! `lockerctl`: control the running lockerd over the system bus
//! (`DBUS_SYSTEM_BUS_ADDRESS` is honoured), or a kiosk far away through its MQTT broker
//! with `--remote KEYFILE` (the same commands, signed). Thin: parses arguments and hands
//! the command to [`lockerd_client::ctl`]; exit codes are documented there and in the README.

use clap::{CommandFactory, Parser, Subcommand};
use lockerd_client::ctl::{self, Backend, Cmd};
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
    #[command(flatten)]
    broker: Broker,
    #[command(subcommand)]
    command: Top,
}

/// A kiosk through its broker: `--remote KEYFILE --url URL --kiosk ID` before any
/// command sends it signed with that admin key (and `remote send` uses the same flags).
#[derive(clap::Args, Debug)]
struct Broker {
    /// An admin key file (`remote keygen`): send the command, signed, to `--kiosk`
    /// through the broker at `--url` instead of over the local system bus.
    #[arg(long, global = true, value_name = "KEYFILE")]
    remote: Option<std::path::PathBuf>,
    /// The broker: mqtts://HOST[:PORT] (mqtt:// only to a loopback broker).
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// The kiosk's id (`mqtt.kiosk_id`).
    #[arg(long, global = true, value_name = "ID")]
    kiosk: Option<String>,
    /// The CA of the broker's certificate (mqtts).
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// This admin's client certificate and key for the broker (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    cert_file: Option<std::path::PathBuf>,
    /// The key of that client certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    client_key: Option<std::path::PathBuf>,
    /// Seconds to wait for each reply.
    #[arg(long, global = true, default_value_t = 15)]
    wait: u64,
}

impl Broker {
    /// The broker settings, or a usage error naming what is missing.
    fn mqtt(&self) -> Result<lockerd_client::mqtt::config::MqttConfig, ctl::CtlError> {
        let broker = self.mqtt_broker()?;
        let kiosk = self.kiosk.clone().ok_or_else(|| ctl::CtlError {
            code: 2,
            message: "--kiosk is needed to reach a kiosk through its broker".into(),
        })?;
        Ok(lockerd_client::mqtt::config::MqttConfig {
            kiosk_id: kiosk,
            ..broker
        })
    }

    /// The admin key file: `--key`, else `--remote`.
    fn admin_key(
        &self,
        key: Option<std::path::PathBuf>,
    ) -> Result<std::path::PathBuf, ctl::CtlError> {
        key.or_else(|| self.remote.clone())
            .ok_or_else(|| ctl::CtlError {
                code: 2,
                message: "--key (or --remote) names the admin key file".into(),
            })
    }

    /// Kiosk `kiosk` through this broker, signed with the admin key file `key`.
    fn remote_to(&self, kiosk: &str, key: &std::path::Path) -> Result<Backend, ctl::CtlError> {
        Ok(Backend::Remote(Box::new(ctl::RemoteTarget {
            mqtt: lockerd_client::mqtt::config::MqttConfig {
                kiosk_id: kiosk.to_string(),
                ..self.mqtt_broker()?
            },
            keys: lockerd_client::mqtt::remote::AdminKeys::load(key).map_err(|e| {
                ctl::CtlError {
                    code: 2,
                    message: e.to_string(),
                }
            })?,
            wait_s: self.wait,
        })))
    }

    /// The broker alone (no kiosk named: the fleet's topics).
    fn mqtt_broker(&self) -> Result<lockerd_client::mqtt::config::MqttConfig, ctl::CtlError> {
        let need = |v: &Option<String>, flag: &str| {
            v.clone().ok_or_else(|| ctl::CtlError {
                code: 2,
                message: format!("{flag} is needed to reach the broker"),
            })
        };
        Ok(lockerd_client::mqtt::config::MqttConfig {
            enabled: true,
            url: need(&self.url, "--url")?,
            ca_file: self.ca_file.clone().unwrap_or_default(),
            cert_file: self.cert_file.clone().unwrap_or_default(),
            key_file: self.client_key.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    /// Where commands go: the kiosk through the broker with `--remote`, else the bus.
    async fn backend(&self) -> Result<Backend, ctl::CtlError> {
        let Some(key) = &self.remote else {
            return Ok(Backend::connect_bus().await?);
        };
        self.remote_to(&self.mqtt()?.kiosk_id, key)
    }
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
    /// A remote admin's client: make a key pair, send signed commands through MQTT.
    #[command(subcommand)]
    Remote(Remote),
    /// A fleet's user directory: publish signed user records every kiosk applies.
    #[command(subcommand)]
    Fleet(Fleet),
}

/// `lockerctl fleet ...`: records signed with an admin key (`remote keygen`), published
/// retained through the broker (`--url`, and `--ca-file` etc. for TLS).
#[derive(Subcommand, Debug)]
enum Fleet {
    /// Publish USER's record: role, enabled, where they may open, and their face
    /// templates, sealed by the kiosk where they are enrolled (this machine's lockerd,
    /// or `--from KIOSK` through the broker) to each kiosk where they may open. Its
    /// version is this machine's clock (ms): a newer record replaces it everywhere.
    Publish {
        user: String,
        /// The admin key file (or give it as `--remote`).
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// The fleet's id (`[fleet] id` on the kiosks).
        #[arg(long)]
        fleet: String,
        /// user, admin or banned (default: as the kiosk holds the user; else user).
        #[arg(long)]
        role: Option<String>,
        /// Publish the user disabled (kept, but their face and codes do not open).
        #[arg(long)]
        disabled: bool,
        /// Where the user may open, comma-separated kiosk ids and `@group`s (a kiosk's
        /// `[fleet] groups`; default: every kiosk).
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        kiosks: Vec<String>,
        /// Every kiosk of the fleet (the default, said out loud).
        #[arg(long)]
        all: bool,
        /// Read the user and seal their faces at this kiosk, through the broker (a
        /// signed `fleet_export` with the same key), not at this machine's lockerd.
        #[arg(long, value_name = "KIOSK", conflicts_with = "no_faces")]
        from: Option<String>,
        /// Say nothing of faces: every kiosk keeps the templates it holds (a ban or a
        /// role change from a machine with no kiosk).
        #[arg(long)]
        no_faces: bool,
    },
    /// Every kiosk of the fleet from the cards the broker holds: online, lock, door,
    /// users, the directory version applied, the audit head, when last seen.
    Status {
        #[arg(long)]
        fleet: String,
    },
    /// Every online kiosk's audit log, merged by time: each is asked (a signed audit
    /// query through the broker, with the admin key) for its newest LIMIT rows since
    /// SINCE, printed oldest first with the kiosk's id. Kiosks offline or not answering
    /// are named, and the exit code is then 8.
    Audit {
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        #[arg(long)]
        fleet: String,
        /// Only rows since: 10m, 2h, 1d, or 2026-01-31T12:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// Rows asked of each kiosk.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
    /// Publish USER's tombstone: removed from every kiosk of the fleet.
    Revoke {
        user: String,
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        #[arg(long)]
        fleet: String,
    },
}

fn fail(code: u8, message: String) -> ctl::CtlError {
    ctl::CtlError { code, message }
}

/// `lockerctl fleet ...`: status reads the cards; publish and revoke sign a record with
/// the admin key and publish it.
async fn fleet(
    f: Fleet,
    broker: &Broker,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, ctl::CtlError> {
    use lockerd_client::fleet::Record;
    use lockerd_client::mqtt::remote::{self, AdminKeys};
    let (user, fleet, kiosks, key) = match &f {
        Fleet::Status { fleet } => return fleet_status(fleet, broker, json, out).await,
        Fleet::Audit {
            key,
            fleet,
            since,
            limit,
        } => {
            let key = broker.admin_key(key.clone())?;
            let since_ms = ctl::since_ms(since.as_deref())?;
            return fleet_audit(fleet, &key, since_ms, *limit, broker, json, out).await;
        }
        Fleet::Publish {
            user,
            fleet,
            kiosks,
            key,
            ..
        } => (user, fleet, kiosks.as_slice(), key),
        Fleet::Revoke {
            user, fleet, key, ..
        } => (user, fleet, &[][..], key),
    };
    // Checked before anything is asked of a kiosk or the broker.
    check_names(fleet, user, kiosks)?;
    let key = broker.admin_key(key.clone())?;
    let keys = AdminKeys::load(&key).map_err(|e| fail(2, e.to_string()))?;
    let record = match f {
        Fleet::Publish {
            user,
            fleet,
            role,
            disabled,
            kiosks,
            from,
            no_faces,
            ..
        } => {
            let role = role
                .map(|r| {
                    lockerd_client::types::Role::parse(&r)
                        .ok_or_else(|| fail(2, format!("--role {r:?}: user, admin or banned")))
                })
                .transpose()?;
            let exported = if no_faces {
                None
            } else {
                Some(export_faces(&user, &kiosks, from, broker, &key).await?)
            };
            Record {
                fleet,
                user,
                version: lockerd_client::types::now_ms(),
                role: role
                    .or(exported.as_ref().map(|e| e.role))
                    .unwrap_or(lockerd_client::types::Role::User),
                enabled: !disabled && exported.as_ref().is_none_or(|e| e.enabled),
                kiosks,
                removed: false,
                faces: exported.map(|e| e.faces),
            }
        }
        Fleet::Status { .. } | Fleet::Audit { .. } => return Ok(0),
        Fleet::Revoke { user, fleet, .. } => Record {
            fleet,
            user,
            version: lockerd_client::types::now_ms(),
            role: lockerd_client::types::Role::User,
            enabled: false,
            kiosks: Vec::new(),
            removed: true,
            faces: None,
        },
    };
    let mut cfg = broker.mqtt_broker()?;
    cfg.kiosk_id = format!("fleet-{}", record.fleet);
    remote::publish_record(&cfg, &keys, &record, broker.wait)
        .await
        .map_err(|e| fail(8, e.to_string()))?;
    let shares: Vec<&str> = record
        .faces
        .iter()
        .flatten()
        .map(|s| s.kiosk.as_str())
        .collect();
    let line = if json {
        // The record as signed, its sealed shares named but not printed.
        let mut v = serde_json::to_value(&record).unwrap_or_default();
        if record.faces.is_some() {
            v["faces"] = serde_json::json!(shares);
        }
        v.to_string()
    } else {
        format!(
            "{} {} version {} in fleet {}{}",
            if record.removed {
                "revoked"
            } else {
                "published"
            },
            record.user,
            record.version,
            record.fleet,
            match &record.faces {
                None => String::new(),
                Some(_) if shares.is_empty() => "; no faces".into(),
                Some(_) => format!("; faces sealed for {}", shares.join(", ")),
            }
        )
    };
    let _ = writeln!(out, "{line}");
    Ok(0)
}

/// The fleet id, user name and targets (kiosk ids or `@group`s) can stand in topics.
fn check_names(fleet: &str, user: &str, kiosks: &[String]) -> Result<(), ctl::CtlError> {
    let names = [("the fleet id", fleet), ("the user name", user)];
    let targets = kiosks.iter().map(|k| ("a kiosk id or @group", k.as_str()));
    for (what, v) in names.into_iter().chain(targets) {
        let ok = if what.starts_with("a kiosk") {
            lockerd_client::fleet::valid_target(v)
        } else {
            lockerd_client::fleet::valid_name(v)
        };
        if !ok {
            return Err(fail(
                2,
                format!("{what} {v:?}: 1-64 of a-z, A-Z, 0-9, '-', '_', '.'"),
            ));
        }
    }
    Ok(())
}

/// USER's faces sealed for `kiosks` by the kiosk on this machine's bus, or by `from`
/// through the broker (a signed `fleet_export` with the key file `key`).
async fn export_faces(
    user: &str,
    kiosks: &[String],
    from: Option<String>,
    broker: &Broker,
    key: &std::path::Path,
) -> Result<lockerd_client::api::FleetFaces, ctl::CtlError> {
    use lockerd_client::api::{Request, Response};
    let backend = match from {
        Some(kiosk) => broker.remote_to(&kiosk, key)?,
        None => ctl::Backend::connect_bus().await?,
    };
    let req = Request::FleetExport {
        user: user.to_string(),
        kiosks: kiosks.to_vec(),
    };
    match backend.call(req).await? {
        Response::FleetFaces(f) => Ok(f),
        other => Err(fail(
            10,
            format!("unexpected reply {} to fleet_export", other.kind()),
        )),
    }
}

/// `lockerctl fleet audit`: each online kiosk's newest rows, merged by time.
async fn fleet_audit(
    fleet: &str,
    key: &std::path::Path,
    since_ms: i64,
    limit: u32,
    broker: &Broker,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, ctl::CtlError> {
    use lockerd_client::api::{Request, Response};
    let cards =
        lockerd_client::mqtt::remote::fleet_cards(&broker.mqtt_broker()?, fleet, broker.wait)
            .await
            .map_err(|e| fail(8, e.to_string()))?;
    // A key file that does not load is the caller's error, before any kiosk is asked.
    lockerd_client::mqtt::remote::AdminKeys::load(key).map_err(|e| fail(2, e.to_string()))?;
    let mut rows = Vec::new();
    let mut missing: Vec<(String, String)> = Vec::new();
    for c in &cards {
        if !c.online {
            missing.push((c.kiosk.clone(), "offline (not asked)".into()));
            continue;
        }
        let backend = broker.remote_to(&c.kiosk, key)?;
        match backend.call(Request::AuditQuery { since_ms, limit }).await {
            Ok(Response::Audit { rows: got }) => {
                rows.extend(got.into_iter().map(|r| (c.kiosk.clone(), r)));
            }
            Ok(other) => missing.push((c.kiosk.clone(), format!("replied {}", other.kind()))),
            Err(e) => missing.push((c.kiosk.clone(), ctl::CtlError::from(e).message)),
        }
    }
    rows.sort_by(|a, b| (a.1.ts_ms, &a.0, a.1.seq).cmp(&(b.1.ts_ms, &b.0, b.1.seq)));
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(k, r)| serde_json::json!({ "kiosk": k, "row": r }))
            .collect();
        let missing: Vec<_> = missing
            .iter()
            .map(|(k, why)| serde_json::json!({ "kiosk": k, "error": why }))
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({ "rows": rows, "unanswered": missing })
        );
    } else {
        for (k, r) in &rows {
            let _ = writeln!(out, "{:<16} {}", ctl::printable(k), ctl::audit_line(r));
        }
        for (k, why) in &missing {
            let _ = writeln!(
                out,
                "{:<16} no rows: {}",
                ctl::printable(k),
                ctl::printable(why)
            );
        }
        if cards.is_empty() {
            let _ = writeln!(
                out,
                "(no kiosk of fleet {} has a card on this broker)",
                ctl::printable(fleet)
            );
        }
    }
    Ok(if missing.is_empty() { 0 } else { 8 })
}

/// `lockerctl fleet status`: every kiosk's card the broker holds.
async fn fleet_status(
    fleet: &str,
    broker: &Broker,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, ctl::CtlError> {
    let cards =
        lockerd_client::mqtt::remote::fleet_cards(&broker.mqtt_broker()?, fleet, broker.wait)
            .await
            .map_err(|e| fail(8, e.to_string()))?;
    if json {
        let _ = writeln!(out, "{}", serde_json::json!({ "kiosks": cards }));
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:<11} {:<8} {:>5} {:>14} {:>8}  last seen",
        "kiosk", "online", "lock", "door", "users", "directory", "audit"
    );
    for c in &cards {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<11} {:<8} {:>5} {:>14} {:>8}  {}",
            ctl::printable(&c.kiosk),
            if c.online { "online" } else { "OFFLINE" },
            ctl::printable(&c.lock),
            ctl::printable(&c.door),
            c.users,
            c.directory_version,
            c.audit_head,
            lockerd_client::timefmt::iso_utc(c.at_ms)
        );
    }
    if cards.is_empty() {
        let _ = writeln!(
            out,
            "(no kiosk of fleet {} has a card on this broker)",
            ctl::printable(fleet)
        );
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
enum Remote {
    /// Make an admin key file (owner-only) and print the `[[mqtt.admins]]` table for
    /// the kiosk's lockerd.toml (public keys only).
    Keygen {
        /// The admin's key id (in topics: lockerd/<kiosk>/reply/<id>).
        #[arg(long)]
        id: String,
        /// Where to write the key file (must not exist).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The role to print in the table (admin, operator, viewer).
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// Sign a command, send it to a kiosk through a broker, print the reply (sealed
    /// secrets opened). Exit 0 when the reply says ok.
    Send {
        /// The admin key file from `keygen` (or give it as `--remote`).
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// The command (snake_case: status, unlock, otp_issue, users_list, audit_verify, ...).
        cmd: String,
        /// Its arguments as a JSON object, e.g. '{"ttl_s": 600}'.
        #[arg(default_value = "{}")]
        args: String,
    },
}

async fn remote(r: Remote, broker: &Broker, out: &mut dyn Write) -> Result<u8, ctl::CtlError> {
    use lockerd_client::mqtt::remote::{self, AdminKeys};
    match r {
        Remote::Keygen {
            id,
            out: path,
            role,
        } => {
            let role = lockerd_client::api::Clearance::parse(&role)
                .ok_or_else(|| fail(2, format!("--role {role:?}: admin, operator or viewer")))?;
            let k = AdminKeys::generate(&id);
            k.save(&path).map_err(|e| fail(1, e.to_string()))?;
            let _ = writeln!(
                out,
                "# key file written to {} (keep it secret); add this to the kiosk's lockerd.toml:\n{}",
                path.display(),
                k.admin_table(role)
            );
            Ok(0)
        }
        Remote::Send { key, cmd, args } => {
            let key = broker.admin_key(key)?;
            let keys = AdminKeys::load(&key).map_err(|e| fail(2, e.to_string()))?;
            let args: serde_json::Value = serde_json::from_str(&args)
                .map_err(|e| fail(2, format!("ARGS must be a JSON object: {e}")))?;
            let cfg = broker.mqtt()?;
            let wait = broker.wait;
            let reply = remote::send(&cfg, &keys, &cmd, args, wait)
                .await
                .map_err(|e| fail(8, e.to_string()))?;
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&reply).unwrap_or_default()
            );
            Ok(if reply["ok"] == true { 0 } else { 1 })
        }
    }
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
            Top::Watch => match Backend::connect_bus().await? {
                Backend::Bus(p) => ctl::watch(&p, cli.json, &mut stdout).await,
                _ => Ok(0),
            },
            Top::Remote(r) => remote(r, &cli.broker, &mut stdout).await,
            Top::Fleet(f) => fleet(f, &cli.broker, cli.json, &mut stdout).await,
            Top::Cmd(cmd) => {
                let backend = cli.broker.backend().await?;
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
