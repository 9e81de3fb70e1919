//! The generation manifest, as read from the persistent area:
//! `dumper::manifest::Manifest::from_bytes`, through `dumper::manifest::fuzz_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dumper::manifest::fuzz_entry(data));
