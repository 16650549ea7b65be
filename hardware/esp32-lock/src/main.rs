//! lockerd's ESP32-C3 lock. Owns the relay (GPIO4), the door's reed switch (GPIO5) and
//! the bolt sensor (GPIO6); talks to the kiosk's MQTT broker over Wi-Fi. All protocol
//! logic is `lock_proto::session` (MQTT, authenticated frames, counters in a flash log,
//! fail-secure), tested on the host against the daemon; this file only moves bytes
//! between the TCP socket and the session and drives the pins.
//!
//! Fail-secure: the relay is released (locked) at boot, whenever the link drops, at the
//! end of every pulse, on a jam, and when the firmware has no key. Build-time settings
//! (`hardware/esp32-lock/README.md`): LOCK_WIFI_SSID, LOCK_WIFI_PASSWORD, LOCK_BROKER
//! (IPv4), LOCK_BROKER_PORT, LOCK_KIOSK_ID, LOCK_ID, LOCK_KEY_HEX (the 32-byte key).
//!
//! Not done yet (said in the README): TLS to the broker. Frames are authenticated and
//! single-use without it; the broker login is not protected on the air.

#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::{tcp::TcpSocket, Ipv4Address, Runner, StackResources};
use embassy_time::{Duration, Instant, Timer};
use embedded_io_async::Write;
use esp_backtrace as _;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::rng::Rng;
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
const BROKER_PORT: &str = setting!("LOCK_BROKER_PORT", "1883");
const KIOSK_ID: &str = setting!("LOCK_KIOSK_ID", "kiosk");
const LOCK_ID: &str = setting!("LOCK_ID", "door1");
const KEY_HEX: &str = setting!("LOCK_KEY_HEX", "");

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
        *out = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
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

/// Halt with the relay released: a firmware that cannot run safely stays locked.
fn halt_locked(relay: &mut Output<'_>, why: &str) -> ! {
    relay.set_low();
    loop {
        println!("lock: {why}; staying locked");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {}
    }
}

static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let p = esp_hal::init(esp_hal::Config::default());
    // Relay first: de-energised (locked) before anything else can go wrong.
    let mut relay = Output::new(p.GPIO4, Level::Low, OutputConfig::default());
    let door = Input::new(p.GPIO5, InputConfig::default().with_pull(Pull::Up));
    let bolt = Input::new(p.GPIO6, InputConfig::default().with_pull(Pull::Up));
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(p.TIMG0);
    esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);

    let Some(key) = parse_key(KEY_HEX) else {
        halt_locked(&mut relay, "no key (build with LOCK_KEY_HEX)")
    };
    let (Some(broker), Ok(port)) = (parse_ip(BROKER), BROKER_PORT.parse::<u16>()) else {
        halt_locked(
            &mut relay,
            "LOCK_BROKER is not an IPv4 address, or LOCK_BROKER_PORT not a port",
        )
    };
    let log = match CounterLog::open(ChipFlash(FlashStorage::new(p.FLASH)), COUNTERS_AT) {
        Ok(l) => l,
        Err(_) => halt_locked(&mut relay, "cannot read the counters in flash"),
    };
    let door_now = |d: &Input<'_>| {
        if d.is_high() {
            Door::Open
        } else {
            Door::Closed
        }
    };
    let Some(mut session) = Session::boot(key, log, KIOSK_ID, LOCK_ID, door_now(&door)) else {
        halt_locked(&mut relay, "LOCK_KIOSK_ID or LOCK_ID too long")
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
        halt_locked(&mut relay, "Wi-Fi did not start")
    };
    let rng = Rng::new();
    let seed = (rng.random() as u64) << 32 | rng.random() as u64;
    let (stack, runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi_task(controller).expect("one wifi task"));
    spawner.spawn(net_task(runner).expect("one net task"));

    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let mut out = [0u8; OUT_MAX];
    let mut inbuf = [0u8; 256];
    let start = Instant::now();
    let now = || start.elapsed().as_millis();
    loop {
        // Locked while there is no link.
        if session.link_lost() {
            println!("lock: link lost; locked");
        }
        relay.set_level(Level::from(session.relay_open()));
        stack.wait_config_up().await;
        let mut sock = TcpSocket::new(stack, &mut rx, &mut tx);
        sock.set_timeout(Some(Duration::from_secs(60)));
        if sock.connect((broker, port)).await.is_err() {
            Timer::after(Duration::from_secs(2)).await;
            continue;
        }
        let Ok(n) = session.on_connect(now(), None, &mut out) else {
            continue;
        };
        if sock.write_all(&out[..n]).await.is_err() {
            continue;
        }
        println!("lock: connected to {broker}:{port}");
        loop {
            // Read with a short deadline so pulses end and inputs are seen on time.
            let read =
                embassy_time::with_timeout(Duration::from_millis(20), sock.read(&mut inbuf)).await;
            let mut send = 0;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(k)) => match session.on_bytes(now(), &inbuf[..k], &mut out) {
                    Ok(o) => {
                        if o.refused {
                            let s = session.lock().stats;
                            println!("lock: refused a frame ({} refused so far)", s.refused());
                        }
                        send = o.send;
                    }
                    Err(_) => break,
                },
                Err(_) => {}
            }
            if send > 0 && sock.write_all(&out[..send]).await.is_err() {
                break;
            }
            let jammed = bolt.is_high() && !session.relay_open();
            let n = match session.set_inputs(now(), door_now(&door), jammed, &mut out) {
                Ok(n) => n,
                Err(_) => break,
            };
            if n > 0 && sock.write_all(&out[..n]).await.is_err() {
                break;
            }
            let n = match session.poll(now(), &mut out) {
                Ok(n) => n,
                Err(_) => break,
            };
            if n > 0 && sock.write_all(&out[..n]).await.is_err() {
                break;
            }
            relay.set_level(Level::from(session.relay_open()));
        }
        sock.abort();
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
