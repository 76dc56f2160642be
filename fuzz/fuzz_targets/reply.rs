//! Reply decoding: what a client decodes from a daemon (exceptions, batch results, CONNECTOK).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmi_fuzz::reply(data));
