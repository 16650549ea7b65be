//! Photo decoding with the header size checks: any bytes give a frame or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = lockerd::vision::source::decode_image(data, "fuzz") {
        assert_eq!(f.rgb.len(), (f.width * f.height * 3) as usize);
    }
});
