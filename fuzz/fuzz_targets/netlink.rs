//! rtnetlink neighbour dumps (from the kernel, but parsed with lengths it states).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = boxapi::card::neigh::parse(data, &mut out);
});
