//! The outbox publisher: the one owner of the events connection (client id
//! `lockerd-<kiosk>-events`). It reads the store's outbox in `seq` order, publishes each
//! event QoS 1 on `lockerd/<kiosk>/event` (alerts also on `.../alert`), and deletes a row
//! once the broker has acknowledged every publish of it. It also publishes the audit
//! chain's head, retained, on `.../audit_head` whenever it moved (checked on every wake,
//! so writes are batched).
//!
//! A session is one connection: on any error the connection is dropped whole (nothing is
//! retransmitted from a client's memory) and the next session starts again from the
//! oldest row still in the outbox, so an event is delivered at least once, in order; a
//! consumer drops repeats by `seq`. Woken by the event broadcast and by a 1 s tick.

use super::bridge::{Backoff, Connection, Topics};
use crate::api::Timed;
use crate::store::Store;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::broadcast;

/// Rows in flight at once (each alert is two publishes).
const WINDOW: usize = 32;

/// What an outgoing publish is, in the order they were asked for.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// A publish of outbox row `seq`; `last` when the row is done once it is acked.
    Row {
        seq: i64,
        last: bool,
    },
    AuditHead,
}

/// Serve until aborted.
pub async fn run(
    conn: Connection,
    topics: Topics,
    store: Store,
    mut wake: broadcast::Receiver<Timed>,
) {
    let mut backoff = Backoff::default();
    loop {
        let (client, eventloop) = conn.client(format!("{}-events", conn.client_id), 4 * WINDOW);
        let mut reached = false;
        let r = serve(
            client,
            eventloop,
            (&topics, &store),
            &mut wake,
            &mut reached,
        )
        .await;
        if reached {
            backoff.connected();
        }
        let e = match r {
            Ok(never) => match never {},
            Err(e) => e,
        };
        backoff
            .failed(format!("mqtt events: {e} (events wait in the outbox)"))
            .await;
    }
}

/// One connection, until it fails (the error says why).
async fn serve(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    (topics, store): (&Topics, &Store),
    wake: &mut broadcast::Receiver<Timed>,
    reached: &mut bool,
) -> Result<std::convert::Infallible, String> {
    let mut connected = false;
    // Publishes asked for but not yet written (rumqttc gives their packet ids in order).
    let mut asked: VecDeque<Sent> = VecDeque::new();
    let mut inflight: HashMap<u16, Sent> = HashMap::new();
    let mut rows_out = 0usize;
    let mut acked: Vec<i64> = Vec::new();
    let mut after = 0i64;
    let mut woken = true;
    let mut wake_open = true;
    // The audit head last published on this connection.
    let mut head_sent: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if connected && woken {
            woken = false;
            // The audit head, when it moved.
            if let Ok(Some((seq, hash))) = store.call(|db| db.audit_head()).await {
                let body =
                    serde_json::json!({"seq": seq, "hash": hash.to_ascii_lowercase()}).to_string();
                if head_sent.as_deref() != Some(body.as_str()) {
                    client
                        .try_publish(topics.audit_head(), QoS::AtLeastOnce, true, body.clone())
                        .map_err(|e| e.to_string())?;
                    asked.push_back(Sent::AuditHead);
                    head_sent = Some(body);
                }
            }
            // More rows, up to the window.
            if rows_out < WINDOW {
                let rows = store
                    .call(move |db| db.outbox_after(after, WINDOW - rows_out))
                    .await
                    .map_err(|e| format!("outbox: {e}"))?;
                for r in rows {
                    let payload = r.payload();
                    client
                        .try_publish(topics.event(), QoS::AtLeastOnce, false, payload.clone())
                        .map_err(|e| e.to_string())?;
                    asked.push_back(Sent::Row {
                        seq: r.seq,
                        last: !r.alert,
                    });
                    if r.alert {
                        client
                            .try_publish(topics.alert(), QoS::AtLeastOnce, false, payload)
                            .map_err(|e| e.to_string())?;
                        asked.push_back(Sent::Row {
                            seq: r.seq,
                            last: true,
                        });
                    }
                    rows_out += 1;
                    after = r.seq;
                }
            }
        }
        let mut ticked = false;
        tokio::select! {
            ev = eventloop.poll() => match ev.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    connected = true;
                    *reached = true;
                    woken = true;
                }
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if let Some(s) = asked.pop_front() {
                        inflight.insert(pkid, s);
                    }
                }
                Event::Incoming(Packet::PubAck(a)) => {
                    if let Some(Sent::Row { seq, last: true }) = inflight.remove(&a.pkid) {
                        acked.push(seq);
                        rows_out = rows_out.saturating_sub(1);
                        woken = true;
                    }
                }
                _ => {}
            },
            r = wake.recv(), if wake_open => {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    wake_open = false;
                }
                woken = true;
            }
            _ = tick.tick() => {
                woken = true;
                ticked = true;
            }
        }
        // Deletes are batched: a row acked but not yet deleted when the power goes is
        // only sent again (a repeat by seq), never lost.
        let idle = asked.is_empty() && inflight.is_empty();
        if !acked.is_empty() && (acked.len() >= WINDOW / 2 || idle || ticked) {
            let done = std::mem::take(&mut acked);
            store
                .call(move |db| db.outbox_delete(&done))
                .await
                .map_err(|e| format!("outbox: {e}"))?;
        }
    }
}
