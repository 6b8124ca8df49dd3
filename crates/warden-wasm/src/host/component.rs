//! The WIT ABI of the host capabilities for components:
//! `warden:host@0.1.0` (wit/host.wit), over the same host logic as the
//! preview-1 module `warden`.
//!
//! Every function is linked by hand, with its strings and lists taken as
//! views of the guest's memory (`WasmStr`, `WasmList`) rather than as
//! `String`s and `Vec`s: a size is checked against its cap *before* the
//! host copies anything, as the preview-1 ABI does. (Bindings that lift
//! arguments into owned values would copy whatever the guest passes — a
//! 100 MiB "log message", or a million header pairs that cost the host
//! several times their size in the guest — before any check could run;
//! only wasmtime's per-call transfer budget, 128 MiB, would stop them.)
//! The generated bindings still provide the result types and the `types`
//! interface.

use std::borrow::Cow;

use warden_core::LogLevel;
use wasmtime::component::{ComponentType, HasSelf, Lift, Linker, WasmList, WasmStr};
use wasmtime::{AsContext, StoreContextMut};

use super::secret as host_secret;
use super::{call as host_call, http as host_http, kv as host_kv, log as host_log};
use super::{HostError, HostState, MAX_METHOD, MAX_NAME};
use crate::run::RunState;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "warden:host/host",
});

use warden::host::types::Error;
use warden::host::{call, http, kv, log, types};

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Denied { .. } | HostError::LeaseEnded { .. } | HostError::Refused(_) => {
                Error::Denied
            }
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

type Ctx<'a> = StoreContextMut<'a, RunState>;

/// The instance names of the interfaces (as the component imports them).
const LOG: &str = "warden:host/log@0.1.0";
const KV: &str = "warden:host/kv@0.1.0";
const HTTP: &str = "warden:host/http@0.1.0";
const CALL: &str = "warden:host/call@0.1.0";
const SECRET: &str = "warden:host/secret@0.1.0";

fn too_large(what: &str, len: usize, max: usize) -> HostError {
    HostError::TooLarge(format!("{what} of {len} bytes (at most {max})"))
}

/// A view of a guest string (not copied).
fn view<'a>(store: &'a Ctx<'_>, s: &WasmStr) -> Result<Cow<'a, str>, HostError> {
    s.to_str(store.as_context())
        .map_err(|_| HostError::Invalid("a string argument is not valid".into()))
}

/// A guest string of at most `max` bytes, copied.
fn string(store: &Ctx<'_>, s: &WasmStr, what: &str, max: usize) -> Result<String, HostError> {
    let text = view(store, s)?;
    if text.len() > max {
        return Err(too_large(what, text.len(), max));
    }
    Ok(text.into_owned())
}

/// A guest byte list of at most `max` bytes, copied.
fn bytes(store: &Ctx<'_>, l: &WasmList<u8>, what: &str, max: usize) -> Result<Vec<u8>, HostError> {
    if l.len() > max {
        return Err(too_large(what, l.len(), max));
    }
    Ok(l.as_le_slice(store.as_context()).to_vec())
}

fn namespace(store: &Ctx<'_>, s: &WasmStr) -> Result<String, HostError> {
    string(store, s, "namespace", MAX_NAME)
}

fn key(store: &Ctx<'_>, l: &WasmList<u8>) -> Result<Vec<u8>, HostError> {
    bytes(store, l, "key", host_kv::MAX_KEY_BYTES)
}

fn log_write(store: &mut Ctx<'_>, level: log::Level, message: &WasmStr) -> Result<(), HostError> {
    let level = match level {
        log::Level::Trace => LogLevel::Trace,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Info => LogLevel::Info,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Error => LogLevel::Error,
    };
    // Only what a record can keep is copied.
    let limit = store.data().host.log.read_limit();
    let (raw, more) = {
        let text = view(store, message)?;
        let b = text.as_bytes();
        (b[..b.len().min(limit)].to_vec(), b.len() > limit)
    };
    host_log::write(
        &mut store.data_mut().host,
        "warden:host/log.write",
        level,
        &raw,
        more,
    )
}

fn kv_get(
    store: &mut Ctx<'_>,
    ns: &WasmStr,
    k: &WasmList<u8>,
) -> Result<Option<Vec<u8>>, HostError> {
    let (ns, k) = (namespace(store, ns)?, key(store, k)?);
    host_kv::get(&mut store.data_mut().host, "warden:host/kv.get", &ns, &k)
}

fn kv_set(
    store: &mut Ctx<'_>,
    ns: &WasmStr,
    k: &WasmList<u8>,
    value: &WasmList<u8>,
) -> Result<(), HostError> {
    let (ns, k) = (namespace(store, ns)?, key(store, k)?);
    let value = bytes(store, value, "value", host_kv::MAX_VALUE_BYTES)?;
    host_kv::set(
        &mut store.data_mut().host,
        "warden:host/kv.set",
        &ns,
        &k,
        &value,
    )
}

fn kv_delete(store: &mut Ctx<'_>, ns: &WasmStr, k: &WasmList<u8>) -> Result<bool, HostError> {
    let (ns, k) = (namespace(store, ns)?, key(store, k)?);
    host_kv::delete(&mut store.data_mut().host, "warden:host/kv.delete", &ns, &k)
}

fn kv_list(
    store: &mut Ctx<'_>,
    ns: &WasmStr,
    prefix: &WasmList<u8>,
    after: Option<&WasmList<u8>>,
) -> Result<kv::KeyPage, HostError> {
    let ns = namespace(store, ns)?;
    let prefix = bytes(store, prefix, "prefix", host_kv::MAX_KEY_BYTES)?;
    let after = after.map(|a| key(store, a)).transpose()?;
    let page = host_kv::list(
        &mut store.data_mut().host,
        "warden:host/kv.list-keys",
        &ns,
        &prefix,
        after.as_deref(),
    )?;
    Ok(kv::KeyPage {
        keys: page.keys,
        more: page.more,
    })
}

fn secret_read(store: &mut Ctx<'_>, name: &WasmStr) -> Result<Vec<u8>, HostError> {
    let name = string(store, name, "secret name", MAX_NAME)?;
    let value = host_secret::read(&mut store.data_mut().host, "warden:host/secret.read", &name)?;
    // This copy is lowered into the guest and then freed unwiped:
    // wasmtime lowers only owned lists here.
    Ok(value.to_vec())
}

/// `warden:host/http.request`, as views of the guest's memory.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RequestView {
    method: WasmStr,
    url: WasmStr,
    headers: WasmList<(WasmStr, WasmStr)>,
    body: WasmList<u8>,
}

/// Copies a request out of the guest, each part checked against its cap
/// first.
fn http_request(store: &mut Ctx<'_>, req: &RequestView) -> Result<host_http::Request, HostError> {
    let method = string(store, &req.method, "method", MAX_METHOD)?;
    let url = string(store, &req.url, "URL", host_http::MAX_URL_BYTES)?;
    if req.headers.len() > host_http::MAX_HEADERS {
        return Err(HostError::TooLarge(format!(
            "{} request headers (at most {})",
            req.headers.len(),
            host_http::MAX_HEADERS
        )));
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut header_bytes = 0usize;
    for i in 0..req.headers.len() {
        let (name, value) = match req.headers.get(&mut *store, i) {
            Some(Ok(pair)) => pair,
            _ => return Err(HostError::Invalid("a request header".into())),
        };
        let name = view(store, &name)?;
        let value = view(store, &value)?;
        header_bytes = header_bytes
            .saturating_add(name.len())
            .saturating_add(value.len());
        if header_bytes > host_http::MAX_HEADER_BYTES {
            return Err(too_large(
                "request headers",
                header_bytes,
                host_http::MAX_HEADER_BYTES,
            ));
        }
        headers.push((name.into_owned(), value.into_owned()));
    }
    let max_body = store.data().host.shared()?.http.max_request_bytes;
    let body = bytes(store, &req.body, "request body", max_body)?;
    Ok(host_http::Request {
        method,
        url,
        headers,
        body,
    })
}

/// Adds the `warden:host` interfaces to a component linker.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    fn host(state: &mut RunState) -> &mut HostState {
        &mut state.host
    }
    types::add_to_linker::<RunState, HasSelf<HostState>>(linker, host)?;

    linker.instance(LOG)?.func_wrap(
        "write",
        |mut store: Ctx<'_>, (level, message): (log::Level, WasmStr)| {
            Ok((log_write(&mut store, level, &message).map_err(Error::from),))
        },
    )?;

    let mut kv = linker.instance(KV)?;
    kv.func_wrap(
        "get",
        |mut store: Ctx<'_>, (ns, k): (WasmStr, WasmList<u8>)| {
            Ok((kv_get(&mut store, &ns, &k).map_err(Error::from),))
        },
    )?;
    kv.func_wrap(
        "set",
        |mut store: Ctx<'_>, (ns, k, value): (WasmStr, WasmList<u8>, WasmList<u8>)| {
            Ok((kv_set(&mut store, &ns, &k, &value).map_err(Error::from),))
        },
    )?;
    kv.func_wrap(
        "delete",
        |mut store: Ctx<'_>, (ns, k): (WasmStr, WasmList<u8>)| {
            Ok((kv_delete(&mut store, &ns, &k).map_err(Error::from),))
        },
    )?;
    kv.func_wrap(
        "list-keys",
        |mut store: Ctx<'_>, (ns, prefix, after): (WasmStr, WasmList<u8>, Option<WasmList<u8>>)| {
            Ok((kv_list(&mut store, &ns, &prefix, after.as_ref()).map_err(Error::from),))
        },
    )?;

    linker
        .instance(SECRET)?
        .func_wrap("read", |mut store: Ctx<'_>, (name,): (WasmStr,)| {
            Ok((secret_read(&mut store, &name).map_err(Error::from),))
        })?;

    linker.instance(HTTP)?.func_wrap_async(
        "send",
        |mut store: Ctx<'_>, (req,): (RequestView,)| {
            Box::new(async move {
                let request = match http_request(&mut store, &req) {
                    Ok(r) => r,
                    Err(e) => return Ok((Err(Error::from(e)),)),
                };
                let sent =
                    host_http::send(&mut store.data_mut().host, "warden:host/http.send", request)
                        .await;
                let result: Result<http::Response, Error> = sent
                    .map(|r| http::Response {
                        status: r.status,
                        headers: r.headers,
                        body: r.body,
                    })
                    .map_err(Error::from);
                Ok((result,))
            })
        },
    )?;

    // `call.invoke` needs the caller's store itself (its fuel).
    linker.instance(CALL)?.func_wrap_async(
        "invoke",
        |mut store: Ctx<'_>, (module, input): (WasmStr, WasmList<u8>)| {
            Box::new(async move {
                let args = string(&store, &module, "module name", MAX_NAME).and_then(|m| {
                    Ok((
                        m,
                        bytes(&store, &input, "input", host_call::MAX_INPUT_BYTES)?,
                    ))
                });
                let (module, input) = match args {
                    Ok(a) => a,
                    Err(e) => return Ok((Err(Error::from(e)),)),
                };
                let reply =
                    host_call::invoke(&mut store, "warden:host/call.invoke", &module, input)
                        .await?;
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
