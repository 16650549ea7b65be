//! MQTT pieces that stand without a broker (issue #8, in progress): sealed replies are
//! libsodium sealed boxes, checked both ways against libsodium itself (PyNaCl, Debian's
//! python3-nacl, with the system Python).

use data_encoding::BASE64;
use lockerd::mqtt::reply::{seal, unseal};
use std::process::Command;

const PY: &str = "/usr/bin/python3";

fn python(script: &str, args: &[&str]) -> String {
    let o = Command::new(PY)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the system python3 (scripts/setup.sh installs python3-nacl)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn sealed_replies_open_with_libsodium_and_libsodium_boxes_open_here() {
    // A key pair made by libsodium.
    let kp = python(
        "import nacl.public,base64;k=nacl.public.PrivateKey.generate();\
         print(base64.b64encode(bytes(k)).decode(),base64.b64encode(bytes(k.public_key)).decode())",
        &[],
    );
    let (sk, pk) = kp.split_once(' ').unwrap();
    let bytes32 =
        |s: &str| -> [u8; 32] { BASE64.decode(s.as_bytes()).unwrap().try_into().unwrap() };
    let (sk, pk) = (bytes32(sk), bytes32(pk));
    // Sealed here, opened by libsodium.
    let secret = serde_json::json!({"code": "48213907", "keys": "*7#48213907#"});
    let sealed = seal(&pk, &secret).unwrap();
    let opened = python(
        "import nacl.public,base64,sys;k=nacl.public.PrivateKey(base64.b64decode(sys.argv[1]));\
         print(nacl.public.SealedBox(k).decrypt(base64.b64decode(sys.argv[2])).decode())",
        &[&BASE64.encode(&sk), &sealed],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&opened).unwrap(),
        secret
    );
    // Sealed by libsodium, opened here.
    let theirs = python(
        "import nacl.public,base64,sys;p=nacl.public.PublicKey(base64.b64decode(sys.argv[1]));\
         print(base64.b64encode(nacl.public.SealedBox(p).encrypt(b'{\"pin\":\"4821\"}')).decode())",
        &[&BASE64.encode(&pk)],
    );
    assert_eq!(unseal(&sk, &theirs).unwrap()["pin"], "4821");
}
