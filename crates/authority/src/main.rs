//! The `boxapi-authority` executable: everything lives in the library; this maps it to an exit
//! code.
#![forbid(unsafe_code)]

fn main() {
    boxapi_core::daemon::exit::main(boxapi_authority::cli::main_with_args)
}
