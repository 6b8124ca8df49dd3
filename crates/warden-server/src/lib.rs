//! `warden serve`: the HTTP service in front of the engine (axum). As thin
//! over the engine as the CLI is: a request is authenticated with the
//! engine's identities, authorized by its RBAC gate, and run by the small
//! `warden` binary as a child process (see [`runner`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod bootstrap;
pub mod callback;
pub mod cases;
pub mod chunk;
pub mod error;
pub mod gates;
pub mod inproc;
pub mod metrics;
pub mod openapi;
pub mod quota;
pub mod refusals;
pub mod runner;
pub mod sandboxes;
pub mod server;
pub mod store;
pub mod stream;
pub mod submissions;
pub mod tls;
pub mod workspace;

pub use error::{ApiError, ErrorBody};
pub use server::{serve, Settings};
