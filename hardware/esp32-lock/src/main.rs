//! lockerd's ESP32-C3 lock. Owns the relay (GPIO4), the door's reed switch (GPIO5) and
//! the bolt sensor (GPIO6); talks to the kiosk's MQTT broker over Wi-Fi and TLS 1.3. All
//! protocol logic is `lock_proto::session` (MQTT, authenticated frames, counters in a
//! flash log, fail-secure) and `lock-tls` (the broker checked against the CA
//! compiled in and its name; the lock's client certificate), both tested on the host
//! against the daemon and a TLS mosquitto. This file moves bytes between the socket and
//! the session and drives the pins.
//!
//! Fail-secure: the relay is released (locked) at boot, whenever the link drops, on a
//! jam, and when the firmware lacks a key or a certificate. The relay has its own task
//! that closes it when the pulse ends, whatever the network loop is doing.
//!
//! Build-time settings (`hardware/esp32-lock/README.md`): LOCK_WIFI_SSID,
//! LOCK_WIFI_PASSWORD, LOCK_BROKER (IPv4), LOCK_BROKER_NAME (the name in its
//! certificate), LOCK_BROKER_PORT, LOCK_KIOSK_ID, LOCK_ID, LOCK_KEY_HEX (the 32-byte
//! frame key), LOCK_CA_DER, LOCK_CERT_DER, LOCK_KEY_DER (DER files, see build.rs).

#![no_std]
#![no_main]

use core::cell::RefCell;
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_net::{tcp::TcpSocket, Ipv4Address, Runner, StackResources};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};
use embedded_tls::{TlsConfig, TlsConnection, TlsContext};
use esp_backtrace as _;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::rng::{Rng, Trng, TrngSource};
use esp_hal::timer::timg::TimerGroup;
use esp_println::println;
use esp_radio::wifi::{
    sta::StationConfig, AuthenticationMethodConfig, Config, ControllerConfig, Interface,
    WifiController,
};
use esp_storage::FlashStorage;
use lock_proto::flash_log::{CounterLog, Flash};
use lock_proto::session::{Session, OUT_MAX};
use lock_proto::Door;
use lock_tls::LockTls;
use static_cell::StaticCell;

esp_bootloader_esp_idf::esp_app_desc!();

/// Build-time settings; empty defaults build a firmware that stays locked.
macro_rules! setting {
    ($name:literal, $default:literal) => {
        match option_env!($name) {
            Some(v) => v,
            None => $default,
        }
    };
}
const SSID: &str = setting!("LOCK_WIFI_SSID", "");
const PASSWORD: &str = setting!("LOCK_WIFI_PASSWORD", "");
const BROKER: &str = setting!("LOCK_BROKER", "192.168.1.10");
const BROKER_NAME: &str = setting!("LOCK_BROKER_NAME", "localhost");
const BROKER_PORT: &str = setting!("LOCK_BROKER_PORT", "8883");
const KIOSK_ID: &str = setting!("LOCK_KIOSK_ID", "kiosk");
const LOCK_ID: &str = setting!("LOCK_ID", "door1");
const KEY_HEX: &str = setting!("LOCK_KEY_HEX", "");
static CA_DER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ca.der"));
static CERT_DER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cert.der"));
static TLS_KEY_DER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/key.der"));

/// Where the counters live: the `lockctr` partition (partitions.csv), two sectors.
const COUNTERS_AT: u32 = 0x9000;

/// The session's flash, on the chip's SPI flash.
struct ChipFlash(FlashStorage<'static>);

impl Flash for ChipFlash {
    type Error = esp_storage::FlashStorageError;
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read_nor(offset, buf)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        self.0.write_nor(offset, data)
    }
    fn erase(&mut self, offset: u32) -> Result<(), Self::Error> {
        self.0.erase(offset, offset + lock_proto::flash_log::SECTOR)
    }
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut k = [0u8; 32];
    for (i, out) in k.iter_mut().enumerate() {
        *out = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    (k != [0u8; 32]).then_some(k)
}

fn parse_ip(s: &str) -> Option<Ipv4Address> {
    let mut o = [0u8; 4];
    let mut parts = s.split('.');
    for x in o.iter_mut() {
        *x = parts.next()?.parse().ok()?;
    }
    parts
        .next()
        .is_none()
        .then(|| Ipv4Address::new(o[0], o[1], o[2], o[3]))
}

/// What the relay task is told: open until this instant, or closed (`None`).
static RELAY: Signal<CriticalSectionRawMutex, Option<Instant>> = Signal::new();

/// Owns the relay. Opens it only with a deadline and closes it at that deadline by
/// itself, so a pulse ends on time even if the network loop is stuck in a read.
#[embassy_executor::task]
async fn relay_task(mut relay: Output<'static>) {
    relay.set_low();
    let mut until: Option<Instant> = None;
    loop {
        let next = match until {
            Some(t) => select(RELAY.wait(), Timer::at(t)).await,
            None => Either::First(RELAY.wait().await),
        };
        until = match next {
            Either::First(u) => u,
            Either::Second(()) => None,
        };
        relay.set_level(Level::from(until.is_some_and(|t| t > Instant::now())));
    }
}

/// Tell the relay task what the session wants now (`start`: the instant the session's
/// clock counts from).
fn drive_relay<F: Flash>(s: &Session<F>, start: Instant) {
    let until = s
        .lock()
        .open_until()
        .map(|ms| start + Duration::from_millis(ms));
    RELAY.signal(until);
}

/// Stay locked and say why, forever: a firmware that cannot run safely never opens.
async fn halt_locked(why: &str) -> ! {
    RELAY.signal(None);
    loop {
        println!("lock: {why}; staying locked");
        Timer::after(Duration::from_secs(10)).await;
    }
}

/// The TCP socket shared by the TLS connection and the readiness check. TLS reads are
/// only started when bytes are waiting and are never cancelled (embedded-tls reads are
/// not cancel-safe), so no borrow is ever contended.
struct Shared<'a, 'b>(&'a RefCell<TcpSocket<'b>>);

impl embedded_io_async::ErrorType for Shared<'_, '_> {
    type Error = embassy_net::tcp::Error;
}

impl embedded_io_async::Read for Shared<'_, '_> {
    #[allow(clippy::await_holding_refcell_ref)] // sequential use only (see the type)
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.borrow_mut().read(buf).await
    }
}

impl embedded_io_async::Write for Shared<'_, '_> {
    #[allow(clippy::await_holding_refcell_ref)] // sequential use only (see the type)
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.borrow_mut().write(buf).await
    }
    #[allow(clippy::await_holding_refcell_ref)] // sequential use only (see the type)
    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().flush().await
    }
}

/// True when bytes are waiting (or the connection ended) within 20 ms.
#[allow(clippy::await_holding_refcell_ref)] // no TLS operation runs meanwhile
async fn readable(cell: &RefCell<TcpSocket<'_>>) -> bool {
    let s = cell.borrow();
    let tick = Timer::after(Duration::from_millis(20));
    matches!(select(s.wait_read_ready(), tick).await, Either::First(()))
}

static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
/// TLS record buffers: a whole incoming record (16 KiB + overhead); small outgoing ones.
static TLS_RX: StaticCell<[u8; 16_640]> = StaticCell::new();
static TLS_TX: StaticCell<[u8; 4_096]> = StaticCell::new();

type Tls<'a, 'b, 'c> = TlsConnection<'a, Shared<'b, 'c>, embedded_tls::Aes128GcmSha256>;

/// Write and flush one burst through TLS.
async fn send(tls: &mut Tls<'_, '_, '_>, bytes: &[u8]) -> Result<(), embedded_tls::TlsError> {
    if bytes.is_empty() {
        return Ok(());
    }
    tls.write(bytes).await?;
    tls.flush().await
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let p = esp_hal::init(esp_hal::Config::default());
    // Relay first: de-energised (locked) before anything else can go wrong.
    let relay = Output::new(p.GPIO4, Level::Low, OutputConfig::default());
    let door = Input::new(p.GPIO5, InputConfig::default().with_pull(Pull::Up));
    let bolt = Input::new(p.GPIO6, InputConfig::default().with_pull(Pull::Up));
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(p.TIMG0);
    esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);
    spawner.spawn(relay_task(relay).expect("one relay task"));

    let Some(key) = parse_key(KEY_HEX) else {
        halt_locked("no key (build with LOCK_KEY_HEX)").await
    };
    if CA_DER.is_empty() || CERT_DER.is_empty() || TLS_KEY_DER.is_empty() {
        halt_locked("no TLS CA, certificate or key (LOCK_CA_DER, LOCK_CERT_DER, LOCK_KEY_DER)")
            .await
    }
    let (Some(broker), Ok(port)) = (parse_ip(BROKER), BROKER_PORT.parse::<u16>()) else {
        halt_locked("LOCK_BROKER is not an IPv4 address, or LOCK_BROKER_PORT not a port").await
    };
    let log = match CounterLog::open(ChipFlash(FlashStorage::new(p.FLASH)), COUNTERS_AT) {
        Ok(l) => l,
        Err(_) => halt_locked("cannot read the counters in flash").await,
    };
    let door_now = |d: &Input<'_>| {
        if d.is_high() {
            Door::Open
        } else {
            Door::Closed
        }
    };
    // The radio and the SAR ADC make the RNG a true one (the boot session and the TLS
    // keys come from it).
    let _entropy = TrngSource::new(p.RNG, p.ADC1);
    let rng = Rng::new();
    // A new boot session every boot: commands made for an earlier boot are refused.
    let mut boot_session = [0u8; lock_proto::SESSION_LEN];
    for chunk in boot_session.chunks_mut(4) {
        let r = rng.random().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let Some(mut session) =
        Session::boot(key, log, KIOSK_ID, LOCK_ID, door_now(&door), boot_session)
    else {
        halt_locked("LOCK_KIOSK_ID or LOCK_ID too long").await
    };
    let c = session.lock().counters();
    println!(
        "lock {LOCK_ID}: booted locked (counters reserved {} seen {})",
        c.reserved, c.seen
    );

    let station = Config::Station(
        StationConfig::default()
            .with_ssid(SSID.try_into().unwrap_or_default())
            .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
                PASSWORD.try_into().unwrap_or_default(),
            )),
    );
    let Ok(controller) = WifiController::new(
        p.WIFI,
        ControllerConfig::default().with_initial_config(station),
    ) else {
        halt_locked("Wi-Fi did not start").await
    };
    let seed = ((rng.random() as u64) << 32) | rng.random() as u64;
    let (stack, runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi_task(controller).expect("one wifi task"));
    spawner.spawn(net_task(runner).expect("one net task"));

    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let (tls_rx, tls_tx) = (TLS_RX.init([0; 16_640]), TLS_TX.init([0; 4_096]));
    let mut out = [0u8; OUT_MAX];
    let mut inbuf = [0u8; 256];
    let start = Instant::now();
    let now = || start.elapsed().as_millis();
    loop {
        // Locked while there is no link.
        if session.link_lost() {
            println!("lock: link lost; locked");
        }
        drive_relay(&session, start);
        stack.wait_config_up().await;
        let mut sock = TcpSocket::new(stack, &mut rx, &mut tx);
        sock.set_timeout(Some(Duration::from_secs(45)));
        if sock.connect((broker, port)).await.is_err() {
            Timer::after(Duration::from_secs(2)).await;
            continue;
        }
        let cell = RefCell::new(sock);
        let Ok(trng) = Trng::try_new() else {
            halt_locked("no true random number source").await
        };
        let Some(provider) = LockTls::new(trng, CA_DER, CERT_DER, TLS_KEY_DER) else {
            halt_locked("LOCK_KEY_DER is not a P-256 key").await
        };
        let config = TlsConfig::new().with_server_name(BROKER_NAME);
        let mut tls: Tls = TlsConnection::new(Shared(&cell), &mut tls_rx[..], &mut tls_tx[..]);
        if let Err(e) = tls.open(TlsContext::new(&config, provider)).await {
            println!("lock: TLS to {BROKER_NAME} refused: {e:?}");
            Timer::after(Duration::from_secs(5)).await;
            continue;
        }
        let sent = match session.on_connect(now(), None, &mut out) {
            Ok(n) => send(&mut tls, &out[..n]).await.is_ok(),
            Err(_) => false,
        };
        if !sent {
            continue;
        }
        println!("lock: connected to {BROKER_NAME} ({broker}:{port}) over TLS");
        loop {
            // Wait for bytes or 20 ms; only then read (never cancelling a TLS read).
            let ready = readable(&cell).await;
            if ready {
                let k = match tls.read(&mut inbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => k,
                };
                match session.on_bytes(now(), &inbuf[..k], &mut out) {
                    Ok(o) => {
                        if o.refused {
                            let s = session.lock().stats;
                            println!("lock: refused a frame ({} refused so far)", s.refused());
                        }
                        if send(&mut tls, &out[..o.send]).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let jammed = bolt.is_high() && !session.relay_open();
            let n = match session.set_inputs(now(), door_now(&door), jammed, &mut out) {
                Ok(n) => n,
                Err(_) => break,
            };
            if send(&mut tls, &out[..n]).await.is_err() {
                break;
            }
            let n = match session.poll(now(), &mut out) {
                Ok(n) => n,
                Err(_) => break,
            };
            if send(&mut tls, &out[..n]).await.is_err() {
                break;
            }
            drive_relay(&session, start);
        }
        cell.borrow_mut().abort();
    }
}

#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                let _ = controller.wait_for_disconnect_async().await;
                println!("lock: Wi-Fi disconnected");
            }
            Err(_) => Timer::after(Duration::from_secs(5)).await,
        }
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) {
    runner.run().await
}
