//! Pyro framing: `frame::check_any` (Pyro5, or Pyro4 by the first header), then parse,
//! re-encode and re-parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmi_fuzz::frame(data));
