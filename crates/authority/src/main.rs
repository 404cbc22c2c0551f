//! The `boxapi-authority` executable: everything lives in the library; this maps it to an exit code.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(boxapi_authority::cli::main_with_args(std::env::args_os()));
}
