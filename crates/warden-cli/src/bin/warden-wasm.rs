//! `warden-wasm`: the command line with every backend, the WASM backend
//! (wasmtime) included. `warden` hands WebAssembly runs to it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    warden_cli::app::main(warden_cli::app::Backends::ALL)
}
