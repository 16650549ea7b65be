//! How a program reaches the kiosk's broker: the URL (TLS, or plain TCP to a loopback
//! broker only), rustls with roots from `ca_file` alone and an optional client
//! certificate, or a username and password file; and the topics of one kiosk. The
//! daemon's bridge and `lockerctl --remote` both connect through [`Connection`].

use super::config::MqttConfig;
use rumqttc::{AsyncClient, MqttOptions};
use std::sync::Arc;
use std::time::Duration;

/// The largest packet the client takes in. A larger one drops the whole connection (the
/// client cannot skip it), and a retained one would do so on every reconnect: so this is
/// far above `max_payload_bytes`, whose check then refuses an oversized message alone
/// (`too_large`), and the broker should cap messages below it (README: `max_packet_size`).
/// One message at a time is buffered; only its size travels on (`Cmd::Signed`).
pub const INCOMING_PACKET_MAX: usize = 16 << 20;

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
    fn at(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.base)
    }
    pub fn cmd(&self) -> String {
        self.at("cmd")
    }
    pub fn reply(&self, key: &str) -> String {
        format!("{}/reply/{key}", self.base)
    }
    pub fn rejected(&self) -> String {
        self.at("rejected")
    }
    pub fn availability(&self) -> String {
        self.at("availability")
    }
    pub fn event(&self) -> String {
        self.at("event")
    }
    pub fn alert(&self) -> String {
        self.at("alert")
    }
    pub fn audit_head(&self) -> String {
        self.at("audit_head")
    }
    /// Retained JSON state (lock, door, lockout, camera) for HA and dashboards.
    pub fn state(&self) -> String {
        self.at("state")
    }
    pub fn last_access(&self) -> String {
        self.at("last_access")
    }
    pub fn ha_set(&self) -> String {
        self.at("ha/set")
    }
    pub fn ha_access(&self) -> String {
        self.at("ha/access")
    }
    pub fn ha_alert(&self) -> String {
        self.at("ha/alert")
    }
    /// An ESP32 lock's commands (daemon -> lock, binary frames).
    pub fn lock_cmd(&self, lock_id: &str) -> String {
        format!("{}/lock/{lock_id}/cmd", self.base)
    }
    /// An ESP32 lock's reports (lock -> daemon, binary frames).
    pub fn lock_state(&self, lock_id: &str) -> String {
        format!("{}/lock/{lock_id}/state", self.base)
    }
    /// Whether the daemon hears the lock (retained online/offline, written by the daemon).
    pub fn lock_availability(&self, lock_id: &str) -> String {
        format!("{}/lock/{lock_id}/availability", self.base)
    }
}

/// How to reach the broker; each connection makes its options from it.
#[derive(Clone)]
pub struct Connection {
    pub client_id: String,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<(String, String)>,
    max_packet: usize,
}

impl Connection {
    pub fn new(cfg: &MqttConfig) -> Result<Connection, MqttError> {
        let (tls, host, port) = endpoint(&cfg.url)?;
        let tls = if tls {
            Some(Arc::new(tls_config(cfg)?))
        } else {
            None
        };
        let credentials = if cfg.username.is_empty() {
            None
        } else {
            let pw = std::fs::read_to_string(&cfg.password_file).map_err(|e| {
                MqttError::Password(cfg.password_file.display().to_string(), e.to_string())
            })?;
            Some((
                cfg.username.clone(),
                pw.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        };
        Ok(Connection {
            client_id: format!("lockerd-{}", cfg.kiosk_id),
            host,
            port,
            tls,
            credentials,
            max_packet: (cfg.max_payload_bytes as usize + 4096).max(INCOMING_PACKET_MAX),
        })
    }

    pub fn options(&self, client_id: String) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, self.host.clone(), self.port);
        if let Some(t) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(t.clone()),
            ));
        }
        if let Some((u, p)) = &self.credentials {
            opts.set_credentials(u.clone(), p.clone());
        }
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        opts.set_max_packet_size(self.max_packet, 1 << 20);
        opts
    }

    /// A client and its event loop for `client_id`, with TCP_NODELAY: every message here
    /// is small and waiting on Nagle's algorithm (and the peer's delayed ACK) cost an
    /// unlock about 40 ms (scripts/bench-esp32.sh).
    pub fn client(&self, client_id: String, cap: usize) -> (AsyncClient, rumqttc::EventLoop) {
        let (client, mut eventloop) = AsyncClient::new(self.options(client_id), cap);
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        (client, eventloop)
    }
}

/// Scheme (true for TLS), host and port of the broker URL. Plain `mqtt://` only to a
/// loopback host.
pub fn endpoint(url: &str) -> Result<(bool, String, u16), MqttError> {
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
