//! The WIT ABI of the host capabilities for components:
//! `warden:host@0.1.0` (wit/host.wit), over the same host logic as the
//! preview-1 module `warden`.
//!
//! `log`, `kv` and `http` are bound with the generated `add_to_linker`
//! functions; `call.invoke` is linked by hand because it needs the
//! caller's store (its fuel), which the generated synchronous-store
//! bindings do not give.

use warden_core::LogLevel;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::StoreContextMut;

use super::{call as host_call, http as host_http, kv as host_kv, log as host_log};
use super::{HostError, HostState};
use crate::run::RunState;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "warden:host/host",
    imports: {
        "warden:host/http.send": async,
    },
});

use warden::host::types::Error;
use warden::host::{call, http, kv, log, types};

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Denied { .. } => Error::Denied,
            HostError::NotFound => Error::NotFound,
            HostError::Invalid(_) => Error::Invalid,
            HostError::TooLarge(_) => Error::TooLarge,
            HostError::Limit(_) => Error::Limit,
            HostError::Unavailable(_) => Error::Unavailable,
            HostError::Timeout => Error::Timeout,
            HostError::Failed(_) => Error::Failed,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) -> Result<(), Error> {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let limit = self.log.read_limit();
        let raw = message.as_bytes();
        let more = raw.len() > limit;
        host_log::write(
            self,
            "warden:host/log.write",
            level,
            &raw[..raw.len().min(limit)],
            more,
        )
        .map_err(Error::from)
    }
}

impl kv::Host for HostState {
    fn get(&mut self, namespace: String, key: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        host_kv::get(self, "warden:host/kv.get", &namespace, &key).map_err(Error::from)
    }

    fn set(&mut self, namespace: String, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        host_kv::set(self, "warden:host/kv.set", &namespace, &key, &value).map_err(Error::from)
    }

    fn delete(&mut self, namespace: String, key: Vec<u8>) -> Result<bool, Error> {
        host_kv::delete(self, "warden:host/kv.delete", &namespace, &key).map_err(Error::from)
    }

    fn list_keys(
        &mut self,
        namespace: String,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
    ) -> Result<kv::KeyPage, Error> {
        let page = host_kv::list(
            self,
            "warden:host/kv.list-keys",
            &namespace,
            &prefix,
            start_after.as_deref(),
        )?;
        Ok(kv::KeyPage {
            keys: page.keys,
            more: page.more,
        })
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, Error> {
        let response = host_http::send(
            self,
            "warden:host/http.send",
            host_http::Request {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
            },
        )
        .await?;
        Ok(http::Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

/// The instance name of the `call` interface.
const CALL_INTERFACE: &str = "warden:host/call@0.1.0";

/// Adds the `warden:host` interfaces to a component linker.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    fn host(state: &mut RunState) -> &mut HostState {
        &mut state.host
    }
    types::add_to_linker::<RunState, HasSelf<HostState>>(linker, host)?;
    log::add_to_linker::<RunState, HasSelf<HostState>>(linker, host)?;
    kv::add_to_linker::<RunState, HasSelf<HostState>>(linker, host)?;
    http::add_to_linker::<RunState, HasSelf<HostState>>(linker, host)?;
    linker.instance(CALL_INTERFACE)?.func_wrap_async(
        "invoke",
        |store: StoreContextMut<'_, RunState>, (module, input): (String, Vec<u8>)| {
            Box::new(async move {
                let reply =
                    host_call::invoke(store, "warden:host/call.invoke", &module, input).await?;
                let result: Result<call::Reply, Error> = reply
                    .map(|r| call::Reply {
                        exit_code: r.exit_code,
                        output: r.output,
                    })
                    .map_err(Error::from);
                Ok((result,))
            })
        },
    )?;
    Ok(())
}
