//! Payload decoding: `decode_invoke` + `Args::decode`, and `decode` of rich types, in both serializers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmi_fuzz::payload(data));
