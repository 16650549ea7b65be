//! The broker connection (issue #8, in progress): one rumqttc client that subscribes to
//! `lockerd/<kiosk_id>/cmd`, checks every command ([`super::envelope`], nonces in the
//! store), hands the good ones to the request API as a `Via::Mqtt` caller, and publishes
//! the replies, the availability (retained `online`, last will `offline`) and the
//! secret-free events. TLS (rustls with ring): the broker checked against `ca_file`, a
//! client certificate and key from files, or a username and password file; plain TCP only
//! to a loopback broker (tests). Not yet: the persistent outbox (events published while
//! the broker is down are lost), the audit head, Home Assistant.
//!
//! Three tasks: the poll loop owns the connection and never waits on anything else; it
//! passes commands through a bounded queue (a flood beyond it is dropped and counted) to
//! the command task; the event task forwards API events.

use super::envelope::{self, Admin, Check, Refusal, Refused};
use super::reply;
use super::StoreNonces;
use crate::api::service::ApiHandle;
use crate::api::{Caller, Via};
use crate::config::MqttConfig;
use crate::store::{AuditEntry, Method, Outcome, Store};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Commands waiting for the command task; more are dropped (and counted).
const QUEUE: usize = 256;
/// Refusals before the signature (anyone can send them) audited and answered per minute.
const UNSIGNED_REFUSALS_PER_MIN: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url {0:?}: {1}")]
    Url(String, String),
    #[error("mqtt.admins: {0}")]
    Admins(String),
    #[error("mqtt TLS: {0}")]
    Tls(String),
    #[error("mqtt.password_file {0}: {1}")]
    Password(String, String),
}

/// The topics of one kiosk.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
}

impl Topics {
    pub fn new(kiosk: &str) -> Topics {
        Topics {
            base: format!("lockerd/{kiosk}"),
        }
    }
    pub fn cmd(&self) -> String {
        format!("{}/cmd", self.base)
    }
    pub fn reply(&self, key: &str) -> String {
        format!("{}/reply/{key}", self.base)
    }
    pub fn rejected(&self) -> String {
        format!("{}/rejected", self.base)
    }
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }
    pub fn event(&self) -> String {
        format!("{}/event", self.base)
    }
    pub fn alert(&self) -> String {
        format!("{}/alert", self.base)
    }
}

/// Scheme (true for TLS), host and port of the broker URL. Plain `mqtt://` only to a
/// loopback host.
fn endpoint(url: &str) -> Result<(bool, String, u16), MqttError> {
    let bad = |why: &str| MqttError::Url(url.to_string(), why.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let tls = match scheme {
        "mqtts" => true,
        "mqtt" => false,
        _ => return Err(bad("the scheme must be mqtts or mqtt")),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.chars().all(|c| c.is_ascii_digit()) => {
            (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !tls && !matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return Err(bad("plain mqtt:// only to a loopback host"));
    }
    Ok((tls, host.to_string(), port))
}

/// The rustls client configuration: roots from `ca_file` only (not the system store),
/// the client certificate when configured.
fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let e = |what: &str, p: &std::path::Path, err: &dyn std::fmt::Display| {
        MqttError::Tls(format!("{what} {}: {err}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(&cfg.ca_file).map_err(|x| e("ca_file", &cfg.ca_file, &x))?
    {
        let c = c.map_err(|x| e("ca_file", &cfg.ca_file, &x))?;
        roots.add(c).map_err(|x| e("ca_file", &cfg.ca_file, &x))?;
    }
    if roots.is_empty() {
        return Err(e("ca_file", &cfg.ca_file, &"no certificate in it"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| MqttError::Tls(x.to_string()))?
        .with_root_certificates(roots);
    if cfg.cert_file.as_os_str().is_empty() {
        return Ok(b.with_no_client_auth());
    }
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .map_err(|x| e("cert_file", &cfg.cert_file, &x))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|x| e("cert_file", &cfg.cert_file, &x))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|x| e("key_file", &cfg.key_file, &x))?;
    b.with_client_auth_cert(certs, key)
        .map_err(|x| e("cert_file", &cfg.cert_file, &x))
}

struct Cmd {
    payload: Vec<u8>,
    retained: bool,
}

/// Connect and serve until the returned handles are aborted. Never blocks the caller:
/// a broker that is down is retried with back-off inside the poll task.
pub fn spawn(
    cfg: &MqttConfig,
    api: ApiHandle,
    store: Store,
) -> Result<Vec<JoinHandle<()>>, MqttError> {
    let (tls, host, port) = endpoint(&cfg.url)?;
    let admins = Arc::new(cfg.admins().map_err(MqttError::Admins)?);
    let topics = Topics::new(&cfg.kiosk_id);
    let mut opts = MqttOptions::new(format!("lockerd-{}", cfg.kiosk_id), host, port);
    if tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(cfg)?)),
        ));
    }
    if !cfg.username.is_empty() {
        let pw = std::fs::read_to_string(&cfg.password_file).map_err(|e| {
            MqttError::Password(cfg.password_file.display().to_string(), e.to_string())
        })?;
        opts.set_credentials(cfg.username.clone(), pw.trim_end_matches(['\r', '\n']));
    }
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    opts.set_max_packet_size(cfg.max_payload_bytes as usize + 4096, 1 << 20);
    opts.set_last_will(LastWill::new(
        topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::channel::<Cmd>(QUEUE);

    // 1. The poll loop: owns the connection.
    let (c1, t1) = (client.clone(), topics.clone());
    let max_payload = cfg.max_payload_bytes as usize;
    let poll = tokio::spawn(async move {
        let mut failures = 0u32;
        let mut dropped = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    log::info!("mqtt: connected; serving {}", t1.cmd());
                    let _ = c1.subscribe(t1.cmd(), QoS::AtLeastOnce).await;
                    let _ = c1
                        .publish(t1.availability(), QoS::AtLeastOnce, true, "online")
                        .await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t1.cmd() => {
                    // Oversized payloads are cut here already: only their size travels on.
                    let payload = if p.payload.len() > max_payload {
                        vec![0u8; max_payload + 1]
                    } else {
                        p.payload.to_vec()
                    };
                    let cmd = Cmd {
                        payload,
                        retained: p.retain,
                    };
                    if tx.try_send(cmd).is_err() {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            log::warn!("mqtt: {dropped} commands dropped (queue full: a flood?)");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_millis(500 * (1 << failures.min(6)));
                    if failures == 1 || failures.is_power_of_two() {
                        log::warn!("mqtt: {e}; retrying in {} ms", wait.as_millis());
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });

    // 2. Commands.
    let (c2, t2, api2) = (client.clone(), topics.clone(), api.clone());
    let check = CheckCfg {
        topic: topics.cmd(),
        kiosk: cfg.kiosk_id.clone(),
        admins,
        max_skew_s: cfg.max_skew_s as i64,
        max_payload_bytes: max_payload,
    };
    let commands = tokio::spawn(serve_commands(rx, check, c2, t2, api2, store));

    // 3. Events (secret-free by construction), alerts also on their own topic.
    let (c3, t3) = (client, topics);
    let mut events = api.subscribe();
    let forward = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(t) => {
                    let body = serde_json::to_vec(&t).unwrap_or_default();
                    let is_alert = t.event.alert.is_some();
                    let _ = c3
                        .publish(t3.event(), QoS::AtLeastOnce, false, body.clone())
                        .await;
                    if is_alert {
                        let _ = c3.publish(t3.alert(), QoS::AtLeastOnce, false, body).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("mqtt: {n} events not forwarded (too many at once)");
                }
                Err(_) => break,
            }
        }
    });
    Ok(vec![poll, commands, forward])
}

#[derive(Clone)]
struct CheckCfg {
    topic: String,
    kiosk: String,
    admins: Arc<Vec<Admin>>,
    max_skew_s: i64,
    max_payload_bytes: usize,
}

async fn serve_commands(
    mut rx: mpsc::Receiver<Cmd>,
    check: CheckCfg,
    client: AsyncClient,
    topics: Topics,
    api: ApiHandle,
    store: Store,
) {
    let mut minute = Instant::now();
    let mut unsigned = 0u32;
    while let Some(cmd) = rx.recv().await {
        let c = check.clone();
        let retained = cmd.retained;
        let verdict = store
            .call(move |db| {
                if retained {
                    return Ok(Err(Refused {
                        kind: Refusal::Invalid,
                        message: "a retained command is refused".into(),
                        key: None,
                        id: None,
                    }));
                }
                let chk = Check {
                    topic: &c.topic,
                    kiosk: &c.kiosk,
                    admins: &c.admins,
                    now_s: crate::types::now_ms().div_euclid(1000),
                    max_skew_s: c.max_skew_s,
                    max_payload_bytes: c.max_payload_bytes,
                };
                let mut g = StoreNonces {
                    db,
                    window_s: c.max_skew_s,
                };
                Ok(envelope::open(&cmd.payload, &chk, &mut g))
            })
            .await;
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                log::error!("mqtt: the store cannot check a command: {e}; not run");
                continue;
            }
        };
        match verdict {
            Ok(v) => {
                let caller = Caller {
                    id: format!("mqtt:{}", v.admin),
                    via: Via::Mqtt,
                    role: v.role,
                    bus_name: None,
                };
                let body = match api.call(&caller, v.request).await {
                    Ok(resp) => reply::ok(&v.id, &resp, &v.seal_key)
                        .unwrap_or_else(|e| reply::error(Some(&v.id), "internal", &e.to_string())),
                    Err(e) => reply::api_error(&v.id, &e),
                };
                let _ = client
                    .publish(
                        topics.reply(&v.admin),
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                    .await;
            }
            Err(r) => {
                if minute.elapsed() >= Duration::from_secs(60) {
                    minute = Instant::now();
                    unsigned = 0;
                }
                let before = r.kind.before_signature();
                if before {
                    unsigned += 1;
                    if unsigned > UNSIGNED_REFUSALS_PER_MIN {
                        continue;
                    }
                }
                log::info!("mqtt: command refused: {r}");
                let entry = AuditEntry::new(Method::Mqtt, Outcome::Deny, "command_refused")
                    .evidence(json!({
                        "error": r.kind.as_str(),
                        "key": r.key,
                        "id": r.id,
                        "signed": !before,
                    }));
                if let Err(e) = store.call(move |db| db.audit_append(&entry)).await {
                    log::error!("could not audit a refused command: {e}");
                }
                let body = reply::error(r.id.as_deref(), r.kind.as_str(), &r.message);
                let topic = match (&r.key, before) {
                    (Some(k), false) => topics.reply(k),
                    _ => topics.rejected(),
                };
                let _ = client
                    .publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                    .await;
            }
        }
    }
}
