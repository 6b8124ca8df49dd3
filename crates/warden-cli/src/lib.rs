//! The `warden` command line, shared by the `warden` and `warden-wasm`
//! binaries (see [`app`]).
#![forbid(unsafe_code)]

pub mod app;
mod authz;
mod cli;
mod evidence;
mod identity;
mod processor;
mod secrets;
