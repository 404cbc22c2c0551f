//! The `boxapi` executable: everything lives in the library; this maps it to an exit code.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(boxapi::cli::main_with_args(std::env::args_os()));
}
