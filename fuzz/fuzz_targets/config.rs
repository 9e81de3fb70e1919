//! The configuration loader: TOML files (NUL-separated in the input) merged and
//! validated, through `upgraded::config::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upgraded::config::fuzz_entry(data));
