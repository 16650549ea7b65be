//! The MQTT side of the kiosk: the signed admin command envelope ([`envelope`]) with its
//! replay guard in the store ([`StoreNonces`]), sealed replies ([`reply`]), the broker
//! connection ([`bridge`], TLS) that hands commands to the same request API as D-Bus with
//! a `Via::Mqtt` caller, the outbox publisher ([`publisher`]: events and the audit head,
//! in order, across outages), Home Assistant ([`ha`]), the ESP32 lock link ([`lock`]) and
//! the fleet's user directory ([`fleet`]).

pub mod bridge;
pub mod fleet;
pub mod ha;
pub mod lock;
pub mod lock_sim;
pub mod publisher;
// What a remote admin shares with the kiosk lives in `lockerd-client` (no store).
pub use lockerd_client::mqtt::{config, conn, envelope, remote, reply};

use crate::store::{Db, StoreError};

/// The replay guard on the encrypted store: nonces survive a restart.
pub struct StoreNonces<'a> {
    pub db: &'a mut Db,
    pub window_s: i64,
}

impl envelope::NonceGuard for StoreNonces<'_> {
    type Error = StoreError;
    fn record(&mut self, key: &str, nonce: &[u8], ts: i64, now: i64) -> Result<bool, StoreError> {
        self.db
            .mqtt_nonce_record(key, nonce, ts, now, self.window_s)
    }
}

#[cfg(test)]
mod tests {
    use super::envelope::NonceGuard;
    use super::*;
    use crate::store::{Create, DbKey};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn nonces_survive_a_reopen_and_a_clock_set_back_revives_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.db");
        let k = DbKey::from_text("nonce test key 0123456789", Path::new("t")).unwrap();
        let open = || {
            Db::open(&p, &k, Create::IfMissing, Duration::from_secs(5))
                .unwrap()
                .0
        };
        let t = 1_800_000_000;
        {
            let mut db = open();
            let mut g = StoreNonces {
                db: &mut db,
                window_s: 30,
            };
            assert!(g.record("ada", &[1; 16], t, t).unwrap());
            assert!(!g.record("ada", &[1; 16], t, t + 1).unwrap(), "replay");
            assert!(g.record("bob", &[1; 16], t, t + 1).unwrap(), "per key");
        }
        let mut db = open();
        let mut g = StoreNonces {
            db: &mut db,
            window_s: 30,
        };
        assert!(
            !g.record("ada", &[1; 16], t, t + 2).unwrap(),
            "after a restart"
        );
        // A minute on, the clock set back a minute must not let the old command in again.
        assert!(g.record("ada", &[2; 16], t + 60, t + 60).unwrap());
        assert!(!g.record("ada", &[1; 16], t, t).unwrap(), "clock set back");
        // A week later, set back a week: still remembered.
        assert!(!g.record("ada", &[2; 16], t + 60, t + 60).unwrap());
    }

    #[test]
    fn a_clock_that_once_ran_a_day_ahead_turns_no_fresh_command_away() {
        let d = tempfile::tempdir().unwrap();
        let k = DbKey::from_text("nonce test key 0123456789", Path::new("t")).unwrap();
        let (mut db, _) = Db::open(
            &d.path().join("n.db"),
            &k,
            Create::IfMissing,
            Duration::from_secs(5),
        )
        .unwrap();
        let mut g = StoreNonces {
            db: &mut db,
            window_s: 30,
        };
        let t = 1_800_000_000;
        // One command accepted while the clock ran a day ahead...
        assert!(g.record("ada", &[1; 16], t + 86_400, t + 86_400).unwrap());
        // ...then the clock is corrected: fresh commands run, replays do not.
        assert!(g.record("ada", &[2; 16], t + 5, t + 5).unwrap(), "fresh");
        assert!(g.record("ada", &[3; 16], t + 6, t + 6).unwrap(), "fresh");
        assert!(
            !g.record("ada", &[2; 16], t + 5, t + 7).unwrap(),
            "replayed"
        );
        assert!(!g.record("ada", &[1; 16], t + 86_400, t + 8).unwrap());
        // Forgotten only after the retention, by the current clock.
        assert!(g
            .record(
                "ada",
                &[2; 16],
                t + 5,
                t + 5 + crate::store::otp::NONCE_RETAIN_S + 1
            )
            .unwrap());
    }
}
