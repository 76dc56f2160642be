//! Pyro5 framing: `frame::check`, then `Message::parse`, re-encode and re-parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmi_fuzz::frame(data));
