//! Domain types shared by the store, vision and access modules.
//!
//! Kept free of any I/O so every module can depend on it without pulling in another
//! module's resources (the store's SQLite thread, the vision thread's dlib models).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Dimension of a face embedding (SFace's and dlib's ResNet's alike).
pub const EMBEDDING_DIM: usize = 128;

/// Which network made an embedding. Templates carry it: distances between embeddings of
/// different models mean nothing, and each model has its own thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmbeddingModel {
    /// OpenCV Zoo's SFace (2021dec, int8bq dequantized to float32), L2-normalised; the
    /// match embedding since schema 6.
    #[serde(rename = "sface_2021dec")]
    Sface,
    /// dlib's ResNet (`dlib_face_recognition_resnet_model_v1`), the embedding of every
    /// template written before schema 6 (kept so that an upgraded kiosk locks nobody out).
    #[serde(rename = "dlib_resnet_v1")]
    DlibResnet,
}

impl EmbeddingModel {
    /// What templates are made with now.
    pub const CURRENT: EmbeddingModel = EmbeddingModel::Sface;

    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingModel::Sface => "sface_2021dec",
            EmbeddingModel::DlibResnet => "dlib_resnet_v1",
        }
    }

    pub fn parse(s: &str) -> Option<EmbeddingModel> {
        match s {
            "sface_2021dec" => Some(EmbeddingModel::Sface),
            "dlib_resnet_v1" => Some(EmbeddingModel::DlibResnet),
            _ => None,
        }
    }
}

impl fmt::Display for EmbeddingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 128-d face embedding. `Debug` deliberately prints no values: embeddings are
/// biometric data and must not reach logs.
#[derive(Clone, PartialEq)]
pub struct Embedding(pub [f32; EMBEDDING_DIM]);

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Embedding(<128 values redacted>)")
    }
}

impl Embedding {
    pub fn from_f64(values: &[f64]) -> Option<Self> {
        if values.len() != EMBEDDING_DIM {
            return None;
        }
        let mut out = [0f32; EMBEDDING_DIM];
        for (o, v) in out.iter_mut().zip(values) {
            if !v.is_finite() {
                return None;
            }
            *o = *v as f32;
        }
        Some(Self(out))
    }

    /// Euclidean distance (dlib's metric; for SFace's unit vectors, `sqrt(2 - 2 cos)`).
    pub fn distance(&self, other: &Embedding) -> f32 {
        self.distance_squared(other).sqrt()
    }

    /// The squared distance (orders like the distance, without the square root).
    pub fn distance_squared(&self, other: &Embedding) -> f32 {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
    }

    /// Little-endian f32 bytes, the storage form (512 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EMBEDDING_DIM * 4 {
            return None;
        }
        let mut out = [0f32; EMBEDDING_DIM];
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !o.is_finite() {
                return None;
            }
        }
        Some(Self(out))
    }

    /// Scaled to unit length (SFace's embeddings are compared as unit vectors); None for a
    /// zero or non-finite vector.
    pub fn unit(&self) -> Option<Embedding> {
        let norm = self.0.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm < 1e-6 {
            return None;
        }
        let mut out = self.0;
        for o in out.iter_mut() {
            *o /= norm;
        }
        Some(Embedding(out))
    }

    /// Mean of several embeddings (used to fuse frames of one track).
    pub fn mean(items: &[Embedding]) -> Option<Embedding> {
        if items.is_empty() {
            return None;
        }
        let mut out = [0f32; EMBEDDING_DIM];
        for e in items {
            for (o, v) in out.iter_mut().zip(e.0.iter()) {
                *o += v;
            }
        }
        let n = items.len() as f32;
        for o in out.iter_mut() {
            *o /= n;
        }
        Some(Embedding(out))
    }
}

/// A user's role. `Banned` users are kept (so a match can raise an alert) but never
/// granted access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Banned,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Banned => "banned",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "banned" => Some(Role::Banned),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type UserId = i64;

/// SplitMix64: a small deterministic generator (the challenge's prompt draw, synthetic
/// test clips, benchmarks). Not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1 (24 bits).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    pub created_ms: i64,
}

impl User {
    /// May this user be granted access at all?
    pub fn may_enter(&self) -> bool {
        self.enabled && self.role != Role::Banned
    }
}

/// Milliseconds since the Unix epoch from the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where enrollment takes its faces from (the request API's `EnrollSource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollInput {
    /// Photos, clips or folders of frames on the kiosk's file system.
    Files(Vec<std::path::PathBuf>),
    /// The kiosk camera for up to this many seconds (the person must blink).
    Camera { seconds: u32 },
    /// A photo sent with the request (MQTT, `{"photo": BASE64}`): JPEG or PNG. Its size
    /// is capped by the request's (`mqtt.max_payload_bytes`) and the decoder's limits.
    Photo(String),
}

/// How an attempt or action came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Face,
    Totp,
    Otp,
    Keypad,
    Door,
    Admin,
    Dbus,
    Mqtt,
    /// Home Assistant's (unsigned) lock command, with a keypad credential as its code.
    Ha,
    System,
    Bench,
    /// A fleet user record (signed by an admin, carried by the broker).
    Fleet,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Face => "face",
            Method::Totp => "totp",
            Method::Otp => "otp",
            Method::Keypad => "keypad",
            Method::Door => "door",
            Method::Admin => "admin",
            Method::Dbus => "dbus",
            Method::Mqtt => "mqtt",
            Method::Ha => "ha",
            Method::System => "system",
            Method::Bench => "bench",
            Method::Fleet => "fleet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_bytes_round_trip_and_reject_bad_input() {
        let mut v = [0f32; EMBEDDING_DIM];
        for (i, x) in v.iter_mut().enumerate() {
            *x = i as f32 * 0.01 - 0.5;
        }
        let e = Embedding(v);
        let b = e.to_bytes();
        assert_eq!(b.len(), 512);
        assert_eq!(Embedding::from_bytes(&b), Some(e.clone()));
        assert_eq!(Embedding::from_bytes(&b[..511]), None);
        let mut nan = b.clone();
        nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Embedding::from_bytes(&nan), None);
        assert_eq!(e.distance(&e), 0.0);
    }

    #[test]
    fn debug_never_prints_values() {
        let e = Embedding([0.123_456; EMBEDDING_DIM]);
        assert!(!format!("{e:?}").contains("0.123"));
    }

    #[test]
    fn distance_and_mean() {
        let a = Embedding([0.0; EMBEDDING_DIM]);
        let mut bv = [0.0; EMBEDDING_DIM];
        bv[0] = 3.0;
        bv[1] = 4.0;
        let b = Embedding(bv);
        assert!((a.distance(&b) - 5.0).abs() < 1e-6);
        let m = Embedding::mean(&[a, b]).unwrap();
        assert!((m.0[0] - 1.5).abs() < 1e-6 && (m.0[1] - 2.0).abs() < 1e-6);
        assert!(Embedding::mean(&[]).is_none());
    }
}
