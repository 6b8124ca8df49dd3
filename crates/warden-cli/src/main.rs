//! `warden`: the command line, without the WASM backend linked in (WASM
//! runs are handed to `warden-wasm`; see `warden_cli::app`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    warden_cli::app::main(warden_cli::app::Backends::JAIL_HERE)
}
