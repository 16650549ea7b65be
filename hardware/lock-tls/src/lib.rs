//! The lock's TLS 1.3 client settings for embedded-tls: the broker's
//! certificate chain is checked against the CA compiled into the firmware and its name
//! against the configured host name; the lock presents its own P-256 client certificate.
//! Used by the firmware and, over a host socket, by the test that runs the firmware's
//! session through a TLS mosquitto (`tests/esp32.rs`).
//!
//! Certificate validity dates are not checked: the lock has no clock it can trust before
//! it is online (embedded-tls `NoClock`). Revocation is replacing the CA.
//!
//! A crate of its own, beside `lock-proto` (the frames and the session, which need no
//! TLS): the daemon never links it, only the firmware and that test do.
#![no_std]

use embedded_tls::pki::CertVerifier;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, NoClock, SignatureScheme, TlsError, TlsVerifier,
};
use p256::ecdsa::{DerSignature, SigningKey};
use rand_core::CryptoRngCore;

/// The largest broker certificate kept while checking the handshake.
pub const CERT_MAX: usize = 2048;

pub struct LockTls<'a, R> {
    rng: R,
    verifier: CertVerifier<'a, Aes128GcmSha256, NoClock, CERT_MAX>,
    key: SigningKey,
    cert: &'a [u8],
}

impl<'a, R: CryptoRngCore> LockTls<'a, R> {
    /// `ca_der`: the CA that signed the broker; `cert_der`, `key_der`: the lock's client
    /// certificate and its P-256 key (SEC1 or PKCS#8 DER). `None` when the key is not
    /// one.
    pub fn new(rng: R, ca_der: &'a [u8], cert_der: &'a [u8], key_der: &[u8]) -> Option<Self> {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::SecretKey::from_sec1_der(key_der)
            .or_else(|_| p256::SecretKey::from_pkcs8_der(key_der))
            .ok()?;
        Some(LockTls {
            rng,
            verifier: CertVerifier::new(Certificate::X509(ca_der)),
            key: SigningKey::from(&key),
            cert: cert_der,
        })
    }
}

impl<R: CryptoRngCore> CryptoProvider for LockTls<'_, R> {
    type CipherSuite = Aes128GcmSha256;
    type Signature = DerSignature;

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Self::CipherSuite>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(
        &mut self,
    ) -> Result<(impl signature::SignerMut<Self::Signature>, SignatureScheme), TlsError> {
        Ok((self.key.clone(), SignatureScheme::EcdsaSecp256r1Sha256))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        Some(Certificate::X509(self.cert))
    }
}
