//! Puts the broker's CA and the lock's client certificate and key (DER files named by
//! LOCK_CA_DER, LOCK_CERT_DER, LOCK_KEY_DER) into OUT_DIR for `include_bytes!`; empty
//! when unset (the firmware then refuses to run, staying locked).
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for (var, name) in [
        ("LOCK_CA_DER", "ca.der"),
        ("LOCK_CERT_DER", "cert.der"),
        ("LOCK_KEY_DER", "key.der"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let bytes = match std::env::var(var) {
            Ok(path) => {
                println!("cargo:rerun-if-changed={path}");
                std::fs::read(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"))
            }
            Err(_) => Vec::new(),
        };
        std::fs::write(out.join(name), bytes).expect("write OUT_DIR");
    }
}
