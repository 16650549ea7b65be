//! Home Assistant: the device-based discovery message, the retained state it reads, the
//! access and alert events it shows, and its (unsigned) lock command. Pure functions: the
//! bridge publishes what they build and hands the parsed command to the controller.
//!
//! What HA shows: a `lock` (LOCKED / UNLOCKED / JAMMED: the bolt only; HA's `open` means
//! unlatched, which a pulsed strike never is, so a door standing open is the door
//! sensor's business), the door (unknown when lockerd has no door sensor) and the keypad
//! lockout as binary sensors, an `event` entity for access (granted / denied, with who,
//! how and why as attributes) and one for alerts, the camera state, and the last access
//! and last alert as text sensors (so HA's logbook says who, how and why).
//! Availability: the bridge's LWT for every entity (a shared `availability` list); the
//! lock adds the ESP32 lock's LWT and the kiosk's own view of the lock, so a lock the
//! kiosk cannot reach is unavailable, not jammed. Every entity subscribes at QoS 1 (HA
//! does not inherit a device-level `qos`).
//!
//! HA's command topic is not signed, so it may only lock unless `allow_unlock` is set;
//! then an unlock must carry a keypad credential as its code (the keys of a keypad
//! entry without the final `#`: `*SLOT#CODE` or `NO#PINTOTP`), checked by the controller
//! like the keypad itself (same strikes and lockout) and audited as `ha`.

use super::bridge::Topics;
use super::config::MqttConfig;
use crate::api::event::{EventKind, Timed};
use crate::api::{CameraState, DoorState, LockState, Status};
use serde_json::{json, Value};

/// The lock code HA asks for: a keypad entry without its final `#`, or nothing. HA
/// checks `code_format` for lock as well as unlock, and locking needs no code; an
/// unlock without one is refused by lockerd (and HA is told, see [`refusal`]).
pub const CODE_FORMAT: &str = r"^(\*?[0-9]{1,3}#[0-9]{4,16})?$";

/// The longest state HA keeps (its limit is 255 characters).
const HA_STATE_MAX: usize = 255;

/// The retained discovery topic of this kiosk.
pub fn discovery_topic(cfg: &MqttConfig) -> String {
    format!(
        "{}/device/lockerd_{}/config",
        cfg.home_assistant.prefix, cfg.kiosk_id
    )
}

/// The device-based discovery message (`dev`, `o`, `cmps`). With an ESP32 lock
/// (`esp32_lock` = its id) the lock entity is available only while both the kiosk and
/// the lock are.
pub fn discovery(
    cfg: &MqttConfig,
    topics: &Topics,
    esp32_lock: Option<&str>,
    fleet: bool,
) -> Value {
    let k = &cfg.kiosk_id;
    let id = |c: &str| format!("lockerd_{k}_{c}");
    let state = topics.state();
    let kiosk_online = json!({
        "topic": topics.availability(),
        "payload_available": "online",
        "payload_not_available": "offline",
    });
    // The lock: the kiosk, the ESP32 lock's LWT (if any) and the kiosk's own view.
    let mut lock_avail = vec![kiosk_online.clone()];
    if let Some(id) = esp32_lock {
        lock_avail.push(json!({ "topic": topics.lock_availability(id) }));
    }
    lock_avail.push(json!({
        "topic": state,
        "value_template": "{{ 'online' if value_json.lock_available else 'offline' }}",
    }));
    let mut lock = json!({
        "p": "lock",
        "unique_id": id("lock"),
        "name": "Lock",
        "state_topic": state,
        "value_template": "{{ value_json.lock }}",
        "state_locked": "LOCKED",
        "state_unlocked": "UNLOCKED",
        "state_jammed": "JAMMED",
        "command_topic": topics.ha_set(),
        "payload_lock": "LOCK",
        "payload_unlock": "UNLOCK",
        "json_attributes_topic": topics.last_access(),
        "availability": lock_avail,
        "availability_mode": "all",
    });
    if cfg.home_assistant.allow_unlock {
        lock["code_format"] = CODE_FORMAT.into();
        lock["command_template"] = r#"{"action": "{{ value }}", "code": "{{ code }}"}"#.into();
    } else {
        lock["command_template"] = r#"{"action": "{{ value }}"}"#.into();
    }
    let mut cmps = json!({
        "lock": lock,
        "door": {
            "p": "binary_sensor",
            "unique_id": id("door"),
            "name": "Door",
            "device_class": "door",
            "state_topic": state,
            // "None" is HA's unknown: a kiosk without a door sensor does not say closed.
            "value_template": "{{ value_json.door if value_json.door_known else 'None' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
        },
        "keypad_lockout": {
            "p": "binary_sensor",
            "unique_id": id("keypad_lockout"),
            "name": "Keypad lockout",
            "device_class": "problem",
            "state_topic": state,
            "value_template": "{{ value_json.keypad_lockout }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'until': value_json.keypad_locked_until} | tojson }}",
        },
        "access": {
            "p": "event",
            "unique_id": id("access"),
            "name": "Access",
            "state_topic": topics.ha_access(),
            "event_types": ["granted", "denied"],
        },
        "alert": {
            "p": "event",
            "unique_id": id("alert"),
            "name": "Alert",
            "state_topic": topics.ha_alert(),
            "event_types": [
                "keypad_lockout", "banned_user", "door_forced", "door_held_open",
                "face_rate_limited", "fault", "presentation_attack",
            ],
        },
        "camera": {
            "p": "sensor",
            "unique_id": id("camera"),
            "name": "Camera",
            "device_class": "enum",
            "options": ["ok", "unavailable", "ended"],
            "entity_category": "diagnostic",
            "state_topic": state,
            "value_template": "{{ value_json.camera }}",
        },
        // Text sensors: HA's logbook shows their changes, so who, how and why are read
        // there, not only a timestamp.
        "last_access": {
            "p": "sensor",
            "unique_id": id("last_access"),
            "name": "Last access",
            "icon": "mdi:account-key",
            "state_topic": topics.last_access(),
            "value_template": "{{ value_json.summary }}",
            "json_attributes_topic": topics.last_access(),
        },
        "last_alert": {
            "p": "sensor",
            "unique_id": id("last_alert"),
            "name": "Last alert",
            "icon": "mdi:alert",
            "state_topic": topics.ha_alert(),
            "value_template": "{{ value_json.summary }}",
            "json_attributes_topic": topics.ha_alert(),
        },
    });
    // In a fleet: whether fleet users open by face here (cut_off: they do not).
    if fleet {
        cmps["fleet"] = json!({
            "p": "sensor",
            "unique_id": id("fleet"),
            "name": "Fleet directory",
            "device_class": "enum",
            "options": ["syncing", "synced", "offline", "cut_off"],
            "entity_category": "diagnostic",
            "state_topic": state,
            "value_template": "{{ value_json.fleet }}",
        });
    }
    // HA does not pass a device-level `qos` down to the entities: each says it.
    if let Some(m) = cmps.as_object_mut() {
        for c in m.values_mut() {
            c["qos"] = 1.into();
        }
    }
    json!({
        "dev": {
            "ids": [format!("lockerd_{k}")],
            "name": format!("lockerd {k}"),
            "mf": "lockerd",
            "mdl": "walk-up face-unlock kiosk",
            "sw": env!("CARGO_PKG_VERSION"),
        },
        "o": {
            "name": "lockerd",
            "sw": env!("CARGO_PKG_VERSION"),
        },
        // Shared by every entity that has no `availability` of its own (the lock has).
        // A list, not `availability_topic`: HA copies shared options into entities
        // that lack them, and an entity may not have both forms.
        "availability": [kiosk_online],
        "cmps": cmps,
    })
}

/// The retained state every entity reads (`lockerd/<kiosk>/state`).
pub fn state(s: &Status) -> Value {
    let lock = match s.lock {
        LockState::Jammed => "JAMMED",
        // The lock entity is unavailable meanwhile (`lock_available`); "None" is HA's
        // unknown, should anything read it.
        LockState::Unavailable => "None",
        LockState::Unlocked => "UNLOCKED",
        LockState::Locked => "LOCKED",
    };
    let on_off = |b: bool| if b { "ON" } else { "OFF" };
    let locked_out = s.keypad_locked_until_ms > crate::types::now_ms();
    json!({
        "lock": lock,
        "lock_available": s.lock != LockState::Unavailable,
        "door": on_off(s.door == DoorState::Open),
        "door_known": s.door != DoorState::Unknown,
        "keypad_lockout": on_off(locked_out),
        "keypad_locked_until": if locked_out {
            Value::String(crate::timefmt::iso_utc(s.keypad_locked_until_ms))
        } else {
            Value::Null
        },
        "camera": match s.camera {
            CameraState::Ok => "ok",
            CameraState::Unavailable => "unavailable",
            CameraState::Ended => "ended",
        },
        "users": s.users,
        "fleet": crate::api::snake_name(&s.fleet),
    })
}

/// One line for HA's state (at most 255 characters).
fn summary(parts: &[Option<&str>]) -> String {
    let text = parts
        .iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(HA_STATE_MAX - 1) {
        Some((cut, _)) => format!("{}\u{2026}", &text[..cut]),
        None => text,
    }
}

/// An access payload for HA (the event entity and the retained last access).
fn access(
    granted: bool,
    at_ms: i64,
    user: Option<&str>,
    method: Option<&str>,
    reason: Option<&str>,
) -> Value {
    let (verb, how) = if granted {
        ("granted:", method.map(|m| format!("by {m}")))
    } else {
        ("denied:", method.map(|m| format!("({m})")))
    };
    let text = summary(&[Some(verb), user, reason, how.as_deref()]);
    json!({
        "event_type": if granted { "granted" } else { "denied" },
        "at": crate::timefmt::iso_utc(at_ms),
        "user": user,
        "method": method,
        "reason": reason,
        "summary": text,
    })
}

/// An access or alert event for HA's event entities (topic, payload); the access ones
/// also become the retained last access. `None` for other events.
pub fn event(topics: &Topics, t: &Timed) -> Option<(String, Value)> {
    let e = &t.event;
    match e.event {
        EventKind::Unlock | EventKind::Deny => Some((
            topics.ha_access(),
            access(
                e.event == EventKind::Unlock,
                t.at_ms,
                e.user.as_deref(),
                e.method.map(|m| m.as_str()),
                e.reason.as_deref(),
            ),
        )),
        EventKind::Alert => e.alert.as_ref().map(|a| {
            (
                topics.ha_alert(),
                json!({
                    "event_type": a.kind.as_str(),
                    "at": crate::timefmt::iso_utc(t.at_ms),
                    "message": a.message,
                    "summary": summary(&[Some(&format!("{}:", a.kind.as_str())), Some(&a.message)]),
                }),
            )
        }),
        _ => None,
    }
}

/// What HA is told when lockerd refuses its command before any credential is checked
/// (unlock off, no code, a malformed command): a `denied` access, so the user sees why
/// in HA, not only in lockerd's audit. Never carries the code.
pub fn refusal(why: &str) -> Value {
    access(false, crate::types::now_ms(), None, Some("ha"), Some(why))
}

/// HA's lock command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lock,
    /// With the code HA's user typed (may be empty).
    Unlock {
        code: String,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the code.
        f.write_str(match self {
            Command::Lock => "LOCK",
            Command::Unlock { .. } => "UNLOCK",
        })
    }
}

/// Parse a payload of the command template (or a bare `LOCK` / `UNLOCK`).
pub fn parse_command(payload: &[u8]) -> Result<Command, String> {
    if payload.len() > 512 {
        return Err(format!("{} bytes; at most 512", payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
    let (action, code) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (
            v.get("action")
                .and_then(Value::as_str)
                .ok_or("no action")?
                .to_owned(),
            v.get("code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        Err(_) => (text.trim().to_owned(), String::new()),
    };
    match action.as_str() {
        "LOCK" => Ok(Command::Lock),
        "UNLOCK" | "OPEN" => Ok(Command::Unlock { code }),
        other => Err(format!(
            "unknown action {:?}",
            other.chars().take(16).collect::<String>()
        )),
    }
}

/// Is `code` shaped like [`CODE_FORMAT`] (the pattern Home Assistant is given)? Only a
/// pre-filter, so text that is no credential at all is refused here, without a strike;
/// the controller parses the entry with the keypad's own rules
/// (`access::credentials::parse_entry`, which knows the configured lengths).
pub fn code_well_formed(code: &str) -> bool {
    let rest = code.strip_prefix('*').unwrap_or(code);
    let Some((a, b)) = rest.split_once('#') else {
        return false;
    };
    let digits = |s: &str, lo: usize, hi: usize| {
        (lo..=hi).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
    };
    digits(a, 1, 3) && digits(b, 4, 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    // The options Home Assistant documents for each MQTT platform (home-assistant.io,
    // integrations/lock.mqtt, binary_sensor.mqtt, event.mqtt, sensor.mqtt and the
    // "Device discovery payload" of integrations/mqtt), as of HA 2024.12.
    const COMMON: &[&str] = &[
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "payload_available",
        "payload_not_available",
        "platform",
        "qos",
        "unique_id",
    ];
    const LOCK: &[&str] = &[
        "code_format",
        "command_template",
        "command_topic",
        "optimistic",
        "payload_lock",
        "payload_open",
        "payload_reset",
        "payload_unlock",
        "retain",
        "state_jammed",
        "state_locked",
        "state_locking",
        "state_open",
        "state_opening",
        "state_topic",
        "state_unlocked",
        "state_unlocking",
        "value_template",
    ];
    const BINARY_SENSOR: &[&str] = &[
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_off",
        "payload_on",
        "state_topic",
        "value_template",
    ];
    const EVENT: &[&str] = &[
        "device_class",
        "event_types",
        "state_topic",
        "value_template",
    ];
    const SENSOR: &[&str] = &[
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
        "state_class",
        "state_topic",
        "suggested_display_precision",
        "unit_of_measurement",
        "value_template",
    ];
    // HA's binary_sensor and sensor device classes used here.
    const BINARY_SENSOR_CLASSES: &[&str] = &["door", "problem", "lock", "opening"];
    const SENSOR_CLASSES: &[&str] = &["enum", "timestamp"];

    fn expand(k: &str) -> &str {
        match k {
            "p" => "platform",
            "dev" => "device",
            "o" => "origin",
            "cmps" => "components",
            other => other,
        }
    }

    fn check_discovery(allow_unlock: bool, esp32: Option<&str>) {
        let mut cfg = MqttConfig {
            kiosk_id: "k1".into(),
            ..Default::default()
        };
        cfg.home_assistant.allow_unlock = allow_unlock;
        let topics = Topics::new("k1");
        let d = discovery(&cfg, &topics, esp32, esp32.is_some());
        let top: BTreeSet<&str> = d.as_object().unwrap().keys().map(|k| expand(k)).collect();
        for k in &top {
            assert!(
                [
                    "device",
                    "origin",
                    "components",
                    "availability",
                    "command_topic",
                    "encoding"
                ]
                .contains(k),
                "top-level {k}"
            );
        }
        assert!(top.contains("device") && top.contains("origin") && top.contains("components"));
        assert!(d["dev"]["ids"][0].is_string() && d["o"]["name"].is_string());
        let cmps = d["cmps"].as_object().unwrap();
        let mut platforms = BTreeSet::new();
        let mut uids = BTreeSet::new();
        for (name, c) in cmps {
            let c = c.as_object().unwrap();
            let p = c["p"].as_str().unwrap();
            platforms.insert(p);
            assert!(uids.insert(c["unique_id"].as_str().unwrap()), "unique ids");
            let own: &[&str] = match p {
                "lock" => LOCK,
                "binary_sensor" => BINARY_SENSOR,
                "event" => EVENT,
                "sensor" => SENSOR,
                other => panic!("platform {other}"),
            };
            for k in c.keys().map(|k| expand(k)) {
                assert!(
                    COMMON.contains(&k) || own.contains(&k),
                    "{name}: {k} is not a documented {p} option"
                );
            }
            if p == "event" {
                assert!(c["event_types"].as_array().is_some_and(|a| !a.is_empty()));
                assert!(c["state_topic"].is_string());
            }
            if p == "binary_sensor" {
                assert!(BINARY_SENSOR_CLASSES.contains(&c["device_class"].as_str().unwrap()));
            }
            if let (true, Some(class)) = (p == "sensor", c.get("device_class")) {
                assert!(SENSOR_CLASSES.contains(&class.as_str().unwrap()));
            }
            // HA does not hand a device-level qos down: every entity says QoS 1.
            assert_eq!(c["qos"], 1, "{name}");
            // One availability form per entity, after HA merges the shared options in
            // (HA refuses an entity with both `availability` and `availability_topic`).
            assert!(!c.contains_key("availability_topic"), "{name}");
            if p == "lock" {
                assert!(
                    c["command_topic"].is_string(),
                    "a lock must have a command topic"
                );
                assert_eq!(c.contains_key("code_format"), allow_unlock);
                // Available only while the kiosk, the ESP32 lock (if any) and the
                // kiosk's view of the lock all are.
                let avail: Vec<&str> = c["availability"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["topic"].as_str())
                    .collect();
                let mut want = vec![topics.availability()];
                want.extend(esp32.map(|id| topics.lock_availability(id)));
                want.push(topics.state());
                assert_eq!(avail, want);
                assert_eq!(c["availability_mode"], "all");
                assert!(
                    !c.contains_key("payload_open") && !c.contains_key("state_open"),
                    "no open: an unlock is a pulse, and HA's open means unlatched"
                );
                if allow_unlock {
                    // Locking needs no code; an unlock needs a keypad-shaped one.
                    let re = c["code_format"].as_str().unwrap();
                    assert!(re.starts_with("^(") && re.ends_with(")?$"), "{re}");
                }
            }
        }
        // Entities without their own availability inherit the kiosk's LWT.
        assert_eq!(d["availability"][0]["topic"], topics.availability());
        assert_eq!(
            platforms,
            ["binary_sensor", "event", "lock", "sensor"]
                .into_iter()
                .collect()
        );
        // Every alert kind the kiosk raises is an event type HA knows.
        let types = cmps["alert"]["event_types"].as_array().unwrap();
        for k in crate::api::event::AlertKind::ALL {
            assert!(types.iter().any(|t| t == k.as_str()), "{k:?}");
        }
    }

    #[test]
    fn discovery_uses_only_documented_options() {
        check_discovery(false, None);
        check_discovery(true, None);
        check_discovery(false, Some("door1"));
    }

    #[test]
    fn the_lock_state_is_the_bolt_and_the_door_is_its_own_sensor() {
        let mut s = Status::default();
        assert_eq!(state(&s)["lock"], "LOCKED");
        s.lock = LockState::Unlocked;
        assert_eq!(state(&s)["lock"], "UNLOCKED");
        s.door = DoorState::Open;
        assert_eq!(state(&s)["lock"], "UNLOCKED", "the bolt, not the door");
        assert_eq!(state(&s)["door"], "ON");
        // Forced open while bolted: the lock still says locked; the door says open.
        s.lock = LockState::Locked;
        assert_eq!(state(&s)["lock"], "LOCKED");
        assert_eq!(state(&s)["door_known"], true);
        s.door = DoorState::Unknown;
        assert_eq!(state(&s)["door_known"], false);
        s.lock = LockState::Jammed;
        assert_eq!(state(&s)["lock"], "JAMMED");
        assert_eq!(state(&s)["lock_available"], true);
        s.lock = LockState::Unavailable;
        assert_eq!(state(&s)["lock_available"], false);
        s.keypad_locked_until_ms = crate::types::now_ms() + 60_000;
        assert_eq!(state(&s)["keypad_lockout"], "ON");
    }

    #[test]
    fn access_and_alert_payloads_carry_a_summary_for_the_logbook() {
        let topics = Topics::new("k1");
        let mut ev = crate::api::event::Event::new(EventKind::Deny);
        ev.method = Some(crate::store::Method::Face);
        ev.reason = Some("unknown face".into());
        let (topic, body) = event(
            &topics,
            &Timed {
                at_ms: 0,
                event: ev,
            },
        )
        .unwrap();
        assert_eq!(topic, topics.ha_access());
        assert_eq!(body["summary"], "denied: unknown face (face)");
        let r = refusal(&"x".repeat(600));
        assert_eq!(r["event_type"], "denied");
        assert_eq!(r["method"], "ha");
        assert_eq!(r["summary"].as_str().unwrap().chars().count(), HA_STATE_MAX);
    }

    #[test]
    fn commands_parse_and_codes_are_checked_for_shape() {
        assert_eq!(parse_command(br#"{"action": "LOCK"}"#), Ok(Command::Lock));
        assert_eq!(parse_command(b"LOCK"), Ok(Command::Lock));
        assert_eq!(
            parse_command(br#"{"action": "UNLOCK", "code": "*3#123456"}"#),
            Ok(Command::Unlock {
                code: "*3#123456".into()
            })
        );
        assert!(parse_command(br#"{"action": "EXPLODE"}"#).is_err());
        assert!(parse_command(&[b'x'; 600]).is_err());
        assert!(parse_command(&[0xff, 0xfe]).is_err());
        assert!(code_well_formed("*3#123456"));
        assert!(code_well_formed("12#1234567890"));
        assert!(!code_well_formed(""));
        assert!(!code_well_formed("*3#12"));
        assert!(!code_well_formed("*3#123456#"));
        assert!(!code_well_formed("abc#123456"));
        assert_eq!(
            format!(
                "{}",
                Command::Unlock {
                    code: "*3#123456".into()
                }
            ),
            "UNLOCK"
        );
    }
}
