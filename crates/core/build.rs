//! Records the build date: a box whose clock reads earlier than this has not been set by NTP yet.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    // Start of that day: rebuilding the same tree on the same day gives the same binary.
    println!(
        "cargo:rustc-env=BOXAPI_BUILD_EPOCH={}",
        epoch - epoch % 86_400
    );
}
