//! The `boxapi` executable: everything lives in the library; this maps it to an exit code.
#![forbid(unsafe_code)]

fn main() {
    boxapi_core::daemon::exit::main(boxapi::cli::main_with_args)
}
