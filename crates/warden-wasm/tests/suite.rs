//! warden-wasm's integration tests, one binary: every test binary links
//! wasmtime statically, so one binary instead of fifteen saves minutes of
//! linking and gigabytes of disk. Suites that need a process of their own
//! (a global allocator, the environment, process RSS, a re-executed child,
//! a latency measurement) stay separate files beside this one.

mod common;

#[path = "suite/basics.rs"]
mod basics;
#[path = "suite/cache.rs"]
mod cache;
#[path = "suite/components.rs"]
mod components;
#[path = "suite/fs_limits.rs"]
mod fs_limits;
#[path = "suite/grants.rs"]
mod grants;
#[path = "suite/host_call.rs"]
mod host_call;
#[path = "suite/host_clock.rs"]
mod host_clock;
#[path = "suite/host_component.rs"]
mod host_component;
#[path = "suite/host_http.rs"]
mod host_http;
#[path = "suite/host_kv.rs"]
mod host_kv;
#[path = "suite/host_log.rs"]
mod host_log;
#[path = "suite/host_secret.rs"]
mod host_secret;
#[path = "suite/hostile.rs"]
mod hostile;
#[path = "suite/limits.rs"]
mod limits;
#[path = "suite/redteam_host.rs"]
mod redteam_host;
#[path = "suite/sync_path.rs"]
mod sync_path;
